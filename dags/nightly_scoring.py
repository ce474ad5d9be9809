"""
### Nightly scoring

Scores the day's features into `predictions/ds=D/`, checks them for drift, brings in the
ground truth that has arrived, and decides whether the model needs retraining. When it
does, it starts the `retrain` DAG, passing the decision's reasons, and waits for its verdict.

**Scale-out.** `score` is mapped: one task per group of the day's files (about
`scoring.group_mb` each), so a day that lands as many files is scored by many workers; a
failed group retries alone. `commit_scores` commits the groups' parts as one partition,
atomically, once every group is in.

The steps are defined once, in `batch_scoring/flows.py`; `nightshift nightly` runs the same
definition in-process, and a test holds this DAG's tasks and edges to it.

**Time is the logical date.** A run for D reads `features/ds=D` and only labels that
arrived on or before D, so a backfill reproduces history without leakage. A day the
dataset's calendar does not expect is skipped with a record (`validate` is a short-circuit).

**Order.** `validate`, `score` and `detect_drift` may run for several nights at once.
Everything from `confirm_champion` on runs in date order: it waits until the previous
night is closed (its decision taken and any retrain it started finished), then makes sure
tonight was scored by the champion really in force on D, rescoring if a promotion landed
in the meantime.

**In the grid.** `flag_drift` is green only on a night with a drift alarm (its log names the
drifted features) and skipped otherwise; `trigger_retrain` runs only when the policy asked
for a retrain (`no_retrain` otherwise). The "Model health" page (Browse menu) shows the
evidence behind both.

**Assets.** `confirm_champion` emits the `predictions` Asset (the lake's real location) once
the night's partition is final, with `{"ds", "rows", "model_version", "rescored"}` in the
event's extra. `predictions_consumer` is an example DAG scheduled on it.

**Alerts** (see `[alerts]` in the settings): a drift alarm when it starts and when it ends, a
retrain decision, and any failed task.

**Params.** `model`: `as_of` (default: the champion in force on D, from the alias history,
so a backfill gives what the nightly run gave) or `champion` (today's champion).
`settings`: overrides, e.g. `{"drift.p_val": 0.01}`.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timedelta, timezone

from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import Asset, Param, dag, task

from batch_scoring.flows import NIGHTLY  # step definitions only: nothing heavy
from nightshift.alerts import NightshiftNotifier
from nightshift.choices import ModelSelection, values
from nightshift.links import ModelHealthLink
from nightshift.settings import (  # pydantic only: Airflow has it loaded already
    lake_table_uri,
    run_settings,
)
from training.flows import RETRAIN  # step definitions only: nothing heavy

log = logging.getLogger(__name__)
STEP = NIGHTLY.step

# Where the lake really is (from the settings file; no data is read at parse time).
PREDICTIONS = Asset(name="predictions", uri=lake_table_uri("predictions"))


def _run(step: str, ds: str, params: dict, *, item=None, run_id: str = "", **results) -> dict:
    """Run one step of the nightly flow, as `nightshift nightly` does."""
    from nightshift.flow import StepContext, run_step

    ctx = StepContext(lambda: run_settings(params), ds, dict(params), results, item=item, run_id=run_id or "")
    return run_step(NIGHTLY, step, ctx)


@dag(
    dag_id=NIGHTLY.id,
    schedule="@daily",
    start_date=datetime(2026, 1, 1, tzinfo=timezone.utc),
    catchup=False,
    max_active_runs=4,
    doc_md=__doc__,
    tags=["nightshift"],
    default_args={"owner": "nightshift", "retries": 0, "on_failure_callback": NightshiftNotifier("failure")},
    params={
        "model": Param(ModelSelection.AS_OF.value, enum=values(ModelSelection), description="which champion scores the night"),
        "settings": Param({}, type="object", description="settings overrides, 'section.key': value"),
    },
)
def nightly_scoring():
    @task.short_circuit  # returns the night's scoring plan: what `score` maps over
    def validate(ds: str | None = None, params: dict | None = None) -> list[dict] | None:
        log.info("resolved settings: %s", json.dumps(run_settings(params).resolved(), default=str))
        return _run("validate", ds, params)  # None: a day off the calendar, skipped with a record

    @task(map_index_template="{{ scoring_group }}", retries=1, retry_delay=timedelta(seconds=10))
    def score(group: dict, ds: str | None = None, params: dict | None = None, run_id: str | None = None) -> dict:
        from airflow.sdk import get_current_context

        files = group["files"]
        get_current_context()["scoring_group"] = (f"group {group['index'] + 1}/{group['of']}: {files[0]}"
                                                  + (f" +{len(files) - 1} files" if len(files) > 1 else ""))
        return _run("score", ds, params, item=group, run_id=run_id)

    @task
    def commit_scores(groups: list[dict], ds: str | None = None, params: dict | None = None) -> dict:
        return _run("commit_scores", ds, params, score=list(groups))

    @task
    def detect_drift(ds: str | None = None, params: dict | None = None) -> dict:
        return _run("detect_drift", ds, params)

    # The night's predictions are final here (rescored if a promotion landed meanwhile), so the
    # Asset event is emitted here, once, and not by the speculative `score`.
    @task(depends_on_past=STEP("confirm_champion").ordered, wait_for_downstream=True, outlets=[PREDICTIONS],
          on_success_callback=NightshiftNotifier("drift"))
    def confirm_champion(ds: str | None = None, params: dict | None = None, outlet_events=None) -> dict:
        result = _run("confirm_champion", ds, params)
        outlet_events[PREDICTIONS].extra = {k: result[k] for k in ("ds", "rows", "model_version", "rescored")}
        return result

    @task(show_return_value_in_logs=False)  # the drifted features are logged in words
    def flag_drift(ds: str | None = None, params: dict | None = None) -> dict:
        from airflow.sdk.exceptions import AirflowSkipException

        result = _run("flag_drift", ds, params)
        if not result["alarm"]:
            raise AirflowSkipException(f"no drift alarm on {ds}")
        return result

    @task(depends_on_past=STEP("measure_ground_truth").ordered)
    def measure_ground_truth(ds: str | None = None, params: dict | None = None) -> dict:
        return _run("measure_ground_truth", ds, params)

    @task(depends_on_past=STEP("decide_retrain").ordered, on_success_callback=NightshiftNotifier("retrain"),
          show_return_value_in_logs=False)  # the decision is logged in words
    def decide_retrain(ds: str | None = None, params: dict | None = None) -> dict:
        result = _run("decide_retrain", ds, params)
        log.info("retrain decision for %s: %s, because %s", ds, result["verdict"], "; ".join(result["reasons"]))
        return result

    @task.branch
    def request_retrain(decision: dict, ds: str | None = None, params: dict | None = None) -> str:
        yes, no = STEP("request_retrain").choices
        return yes if _run("request_retrain", ds, params, decide_retrain=decision) else no

    trigger_retrain = TriggerDagRunOperator(
        task_id="trigger_retrain",
        trigger_dag_id=RETRAIN.id,
        trigger_run_id="nightly__{{ ds }}",
        # The decision's day, trigger and reasons, passed on as they were recorded (never re-derived).
        conf="{{ ti.xcom_pull(task_ids='decide_retrain')['retrain_conf'] | tojson }}",
        logical_date=None,  # the retrain's day is its `ds` Param; its run has no logical date of its own
        reset_dag_run=True,  # rerunning a night reruns the retrain it started
        wait_for_completion=True,  # the next night's decisions must see this verdict
        poke_interval=5,
        deferrable=True,  # wait in the triggerer, not in a worker slot
    )
    no_retrain = EmptyOperator(task_id="no_retrain")
    close_night = EmptyOperator(task_id="close_night", trigger_rule=STEP("close_night").trigger_rule)

    # main flow
    confirmed = confirm_champion()
    validated = validate()
    committed = commit_scores(score.expand(group=validated))  # one mapped task per file group
    committed >> detect_drift() >> confirmed
    decision = decide_retrain()
    confirmed >> measure_ground_truth() >> decision
    flagged = flag_drift()
    confirmed >> flagged
    for evidence in (flagged, decision):  # a button to the page that shows the evidence
        evidence.operator.operator_extra_links = [ModelHealthLink()]
    request_retrain(decision) >> [trigger_retrain, no_retrain] >> close_night
    confirmed >> close_night  # so the next night's confirm_champion waits for this night to close


nightly_scoring()
