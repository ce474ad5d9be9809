"""
### Retrain

Trains a challenger on the labels that had arrived by day `ds`, judges it against the
champion on the same holdout, and promotes it or rejects it.

`prepare_window` -> `train_challenger` (gpu queue and pool) -> `evaluate_challenger` ->
`judge` -> `promote` | `reject`.

Started by `nightly_scoring` when its policy asks (conf `{"ds": D, "trigger": "nightly"}`),
or by hand from this form. A promotion takes effect from logical day `ds`: nights after it
are scored by the new champion. The first model ever trained is promoted on absolute
thresholds; later ones need a paired-bootstrap win (see `training/evaluate.py`).

**Params.** `ds`: the logical day (default: the run's logical date). `init_from`: `warm`
(champion weights, grown embeddings) or `scratch`. `settings`: overrides.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timezone

from airflow.sdk import Param, dag, task

from nightshift.settings import run_settings  # pydantic only: Airflow has it loaded already

log = logging.getLogger(__name__)


def _ds(params: dict, ds: str | None) -> str:
    day = params.get("ds") or ds
    if not day:
        raise ValueError("retrain needs a day: set the `ds` param (YYYY-MM-DD) or trigger with a logical date")
    return day


@dag(
    dag_id="retrain",
    schedule=None,
    start_date=datetime(2026, 1, 1, tzinfo=timezone.utc),
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    tags=["nightshift"],
    default_args={"owner": "nightshift", "retries": 0},
    params={
        "ds": Param(None, type=["null", "string"], format="date", description="logical day the retrain may see up to"),
        "init_from": Param("warm", enum=["warm", "scratch"], description="start from the champion's weights or from scratch"),
        "trigger": Param("manual", type="string", description="who asked: manual or nightly"),
        "settings": Param({}, type="object", description="settings overrides, 'section.key': value"),
    },
)
def retrain():
    @task
    def prepare_window(params: dict | None = None, ds: str | None = None) -> dict:
        from training.retrain import prepare_window as prepare

        settings = run_settings(params, training__init_from=params.get("init_from"))
        log.info("resolved settings: %s", json.dumps(settings.resolved(), default=str))
        return prepare(settings, _ds(params, ds))

    @task(queue="gpu", pool="gpu")
    def train_challenger(window: dict, params: dict | None = None) -> dict:
        from batch_scoring.policy import retrain_reasons
        from training.retrain import train_challenger as train

        settings = run_settings(params, training__init_from=params.get("init_from"))
        day = window["ds"]
        reasons = retrain_reasons(settings, day) if params.get("trigger") == "nightly" else ["requested by hand"]
        return train(settings, day, window, trigger=params.get("trigger", "manual"), reasons=reasons)

    @task
    def evaluate_challenger(window: dict, trained: dict, params: dict | None = None) -> dict:
        from training.retrain import evaluate_challenger as evaluate

        return evaluate(run_settings(params), window["ds"], window, trained["version"])

    @task.branch
    def judge(evaluation: dict) -> str:
        return "promote" if evaluation["verdict"] == "PROMOTE" else "reject"

    @task
    def promote(evaluation: dict, params: dict | None = None) -> dict:
        from training.retrain import promote_challenger

        return promote_challenger(run_settings(params), evaluation["ds"], evaluation)

    @task
    def reject(evaluation: dict, params: dict | None = None) -> dict:
        from training.retrain import reject_challenger

        return reject_challenger(run_settings(params), evaluation["ds"], evaluation)

    # main flow
    window = prepare_window()
    trained = train_challenger(window)
    evaluation = evaluate_challenger(window, trained)
    judge(evaluation) >> [promote(evaluation), reject(evaluation)]


retrain()
