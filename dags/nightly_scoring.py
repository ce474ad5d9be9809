"""
### Nightly scoring

Scores the day's features into `predictions/ds=D/`, checks them for drift, brings in the
ground truth that has arrived, and decides whether the model needs retraining. When it
does, it starts the `retrain` DAG and waits for its verdict.

**Time is the logical date.** A run for D reads `features/ds=D` and only labels that
arrived on or before D, so a backfill reproduces history without leakage.

**Order.** `validate`, `score` and `detect_drift` may run for several nights at once.
Everything from `confirm_champion` on runs in date order: it waits until the previous
night is closed (its decision taken and any retrain it started finished), then makes sure
tonight was scored by the champion really in force on D, rescoring if a promotion landed
in the meantime.

**Params.** `model`: `as_of` (default: the champion in force on D, from the alias history,
so a backfill gives what the nightly run gave) or `champion` (today's champion).
`settings`: overrides, e.g. `{"drift.p_val": 0.01}`.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timezone

from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import Asset, Param, dag, task

from nightshift.settings import run_settings  # pydantic only: Airflow has it loaded already

log = logging.getLogger(__name__)

PREDICTIONS = Asset(name="predictions", uri="file:///nightshift/lake/predictions")


@dag(
    dag_id="nightly_scoring",
    schedule="@daily",
    start_date=datetime(2026, 1, 1, tzinfo=timezone.utc),
    catchup=False,
    max_active_runs=4,
    doc_md=__doc__,
    tags=["nightshift"],
    default_args={"owner": "nightshift", "retries": 0},
    params={
        "model": Param("as_of", enum=["as_of", "champion"], description="which champion scores the night"),
        "settings": Param({}, type="object", description="settings overrides, 'section.key': value"),
    },
)
def nightly_scoring():
    @task
    def validate(ds: str | None = None, params: dict | None = None) -> dict:
        from batch_scoring.nightly import validate_night

        settings = run_settings(params)
        log.info("resolved settings: %s", json.dumps(settings.resolved(), default=str))
        return validate_night(settings, ds)

    @task(outlets=[PREDICTIONS])
    def score(ds: str | None = None, params: dict | None = None) -> dict:
        from batch_scoring.nightly import score_night

        return score_night(run_settings(params), ds, params["model"])

    @task
    def detect_drift(ds: str | None = None, params: dict | None = None) -> dict:
        from batch_scoring.nightly import check_drift

        return check_drift(run_settings(params), ds)

    @task(depends_on_past=True, wait_for_downstream=True, outlets=[PREDICTIONS])
    def confirm_champion(ds: str | None = None, params: dict | None = None) -> dict:
        from batch_scoring.nightly import confirm_champion as confirm

        return confirm(run_settings(params), ds, params["model"])

    @task(depends_on_past=True)
    def measure_ground_truth(ds: str | None = None, params: dict | None = None) -> dict:
        from batch_scoring.nightly import measure_night

        return measure_night(run_settings(params), ds)

    @task(depends_on_past=True)
    def decide_retrain(ds: str | None = None, params: dict | None = None) -> dict:
        from batch_scoring.nightly import decide_night

        return decide_night(run_settings(params), ds)

    @task.branch
    def request_retrain(decision: dict) -> str:
        return "trigger_retrain" if decision["retrain"] else "no_retrain"

    trigger_retrain = TriggerDagRunOperator(
        task_id="trigger_retrain",
        trigger_dag_id="retrain",
        trigger_run_id="nightly__{{ ds }}",
        conf={"ds": "{{ ds }}", "trigger": "nightly"},
        logical_date=None,  # the retrain's day is its `ds` Param; its run has no logical date of its own
        reset_dag_run=True,  # rerunning a night reruns the retrain it started
        wait_for_completion=True,  # the next night's decisions must see this verdict
        poke_interval=5,
        deferrable=True,  # wait in the triggerer, not in a worker slot
    )
    no_retrain = EmptyOperator(task_id="no_retrain")
    close_night = EmptyOperator(task_id="close_night", trigger_rule="none_failed_min_one_success")

    # main flow
    confirmed = confirm_champion()
    validate() >> score() >> detect_drift() >> confirmed
    decision = decide_retrain()
    confirmed >> measure_ground_truth() >> decision
    request_retrain(decision) >> [trigger_retrain, no_retrain] >> close_night
    confirmed >> close_night  # so the next night's confirm_champion waits for this night to close


nightly_scoring()
