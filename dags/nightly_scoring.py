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
Everything from `confirm_champion` on runs in date order, and first when tasks queue for a
slot: it waits until the previous night is closed (its decision taken and any retrain it
started finished, i.e. `trigger_retrain` done or skipped), then makes sure
tonight was scored by the champion really in force on D, rescoring if a promotion landed
in the meantime.

**In the grid.** `flag_drift` is green only on a night with a drift alarm (its log names the
drifted features) and skipped otherwise; `trigger_retrain` runs only when the policy asked
for a retrain, and is skipped otherwise (`decide_retrain` logs the decision and its reasons).
The "Model health" page (Browse menu) shows the evidence behind both.

**Shadow trials** (`gate.mode = "shadow:N"`). `settle_trial` runs every night, in date
order: with a trial open it ends it (a drift alarm that started after it opened, a newer
challenger, its candidate deleted from MLflow, a changed champion), judges it once its N
nights' labels have matured (the gate, paired on the same rows, same rules: PROMOTE moves the
champion), or carries it on; without one it does nothing. `trial_night` lets `score_shadow`
(mapped, like `score`) and `commit_shadow` through only on a trial's N scoring nights, so they
are green in the grid only while a candidate scores `shadow/ds=D/`.

**Assets.** `confirm_champion` emits the `predictions` Asset (the lake's real location) once
the night's partition is final, with `{"ds", "rows", "model_version", "rescored"}` in the
event's extra. `predictions_consumer` is an example DAG scheduled on it.

**Alerts** (see `[alerts]` in the settings): a drift alarm when it starts and when it ends, a
retrain decision, a shadow trial's conclusion, and any failed task.

**Params.** `model`: `as_of` (default: the champion in force on D, from the alias history,
so a backfill gives what the nightly run gave) or `champion` (today's champion).
`settings`: overrides, e.g. `{"drift.p_val": 0.01}`.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timedelta, timezone

from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import Asset, Param, dag, task

from batch_scoring.flows import NIGHTLY  # step definitions only: nothing heavy
from airflow_integration.alerts import NightshiftNotifier
from nightshift.choices import ModelSelection, values
from nightshift.flow import StepContext
from airflow_integration.links import ModelHealthLink
from nightshift.settings import (  # pydantic only: Airflow has it loaded already
    lake_table_uri,
    run_settings,
)
from training.flows import RETRAIN  # step definitions only: nothing heavy

log = logging.getLogger(__name__)
STEP = NIGHTLY.step

# Where the lake really is (from the settings file; no data is read at parse time).
PREDICTIONS = Asset(name="predictions", uri=lake_table_uri("predictions"))
# The nights' date-ordered steps go first when tasks queue for the executor's slots: later nights' speculative
# scoring can wait, the path every night waits for cannot. (Absolute weights: by default, Airflow ranks a task by
# the number of tasks downstream of it, which puts every night's `validate` ahead of the previous night's decision.)
ORDERED, SPECULATIVE = 10, 1
DECISION = "decision"  # decide_retrain's XCom key for the policy's record (its return value is the branch)


def _context(ds: str, params: dict, *, item=None, run_id: str = "", **results) -> StepContext:
    return StepContext(lambda: run_settings(params), ds, dict(params), results, item=item, run_id=run_id or "")


def _run(step: str, ds: str, params: dict, **kwargs) -> dict:
    """Run one step of the nightly flow, as `nightshift nightly` does."""
    return STEP(step).run(_context(ds, params, **kwargs))


def doc(step: str) -> str:
    """The task's doc_md: the flow's doc for the step, and its function's docstring."""
    return STEP(step).doc_md


@dag(
    dag_id=NIGHTLY.id,
    schedule="@daily",
    start_date=datetime(2026, 1, 1, tzinfo=timezone.utc),
    catchup=False,
    max_active_runs=4,
    doc_md=__doc__,
    tags=["nightshift"],
    default_args={"owner": "nightshift", "retries": 0, "on_failure_callback": NightshiftNotifier("failure"),
                  "weight_rule": "absolute", "priority_weight": SPECULATIVE},
    params={
        "model": Param(ModelSelection.AS_OF.value, enum=values(ModelSelection), description="which champion scores the night"),
        "settings": Param({}, type="object", description="settings overrides, 'section.key': value"),
    },
)
def nightly_scoring():
    @task.short_circuit(doc_md=doc("validate"))  # returns the night's scoring plan: what `score` maps over
    def validate(ds: str | None = None, params: dict | None = None) -> list[dict] | None:
        """The input contract on the night's features, then the scoring plan."""
        log.info("resolved settings: %s", json.dumps(run_settings(params).resolved(), default=str))
        return _run("validate", ds, params)  # None: a day off the calendar, skipped with a record

    # multiple_outputs=False: a task returns one XCom, not one more API call per key of its dict
    @task(multiple_outputs=False, map_index_template="{{ scoring_group }}", retries=1,
          retry_delay=timedelta(seconds=10), doc_md=doc("score"))
    def score(group: dict, ds: str | None = None, params: dict | None = None, run_id: str | None = None) -> dict:
        """One file group scored into a staged part."""
        from airflow.sdk import get_current_context

        files = group["files"]
        get_current_context()["scoring_group"] = (f"group {group['index'] + 1}/{group['of']}: {files[0]}"
                                                  + (f" +{len(files) - 1} files" if len(files) > 1 else ""))
        return _run("score", ds, params, item=group, run_id=run_id)

    @task(multiple_outputs=False, doc_md=doc("commit_scores"))
    def commit_scores(groups: list[dict], ds: str | None = None, params: dict | None = None) -> dict:
        """The staged parts committed as predictions/ds=D, at once."""
        return _run("commit_scores", ds, params, score=list(groups))

    @task(multiple_outputs=False, doc_md=doc("detect_drift"))
    def detect_drift(ds: str | None = None, params: dict | None = None) -> dict:
        """The night's drift tests."""
        return _run("detect_drift", ds, params)

    # The night's predictions are final here (rescored if a promotion landed meanwhile), so the
    # Asset event is emitted here, once, and not by the speculative `score`.
    @task(multiple_outputs=False, depends_on_past=STEP("confirm_champion").ordered, wait_for_downstream=True,
          outlets=[PREDICTIONS], priority_weight=ORDERED,
          on_success_callback=NightshiftNotifier("drift"), doc_md=doc("confirm_champion"))
    def confirm_champion(ds: str | None = None, params: dict | None = None, outlet_events=None) -> dict:
        """The night scored by the champion really in force; its drift alarm settled in order."""
        result = _run("confirm_champion", ds, params)
        outlet_events[PREDICTIONS].extra = {k: result[k] for k in ("ds", "rows", "model_version", "rescored")}
        return result

    # the drifted features are logged in words
    @task(multiple_outputs=False, show_return_value_in_logs=False, priority_weight=ORDERED, doc_md=doc("flag_drift"))
    def flag_drift(ds: str | None = None, params: dict | None = None) -> dict:
        """Green on a drift alarm, skipped otherwise."""
        from airflow.sdk.exceptions import AirflowSkipException

        result = _run("flag_drift", ds, params)
        if not result["alarm"]:
            raise AirflowSkipException(f"no drift alarm on {ds}")
        return result

    @task(multiple_outputs=False, depends_on_past=STEP("measure_ground_truth").ordered, priority_weight=ORDERED,
          doc_md=doc("measure_ground_truth"))
    def measure_ground_truth(ds: str | None = None, params: dict | None = None) -> dict:
        """The labels that have arrived: realized and estimated performance."""
        return _run("measure_ground_truth", ds, params)

    # The decision and its branch are one task: a task less on the path each night waits for.
    @task.branch(depends_on_past=STEP("decide_retrain").ordered, priority_weight=ORDERED,
                 on_success_callback=NightshiftNotifier("retrain"), doc_md=doc("decide_retrain"))
    def decide_retrain(ds: str | None = None, params: dict | None = None, ti=None) -> list[str]:
        """The retrain policy's decision, and its branch: trigger_retrain only when it asks for a retrain."""
        ctx = _context(ds, params)
        result = STEP("decide_retrain").run(ctx)
        log.info("retrain decision for %s: %s, because %s", ds, result["verdict"], "; ".join(result["reasons"]))
        ti.xcom_push(key=DECISION, value=result)  # the record, for trigger_retrain's conf
        chosen, _ = STEP("decide_retrain").follow(STEP("decide_retrain").taken(ctx, result))
        return [chosen] if chosen else []  # nothing chosen: trigger_retrain is skipped

    # A shadow trial's night (gate.mode = "shadow:N"): settled in date order, every night (a no-op without a trial).
    @task(multiple_outputs=False, depends_on_past=STEP("settle_trial").ordered, priority_weight=ORDERED,
          on_success_callback=NightshiftNotifier("trial"), doc_md=doc("settle_trial"))
    def settle_trial(ds: str | None = None, params: dict | None = None) -> dict:
        """An open shadow trial's night: ended, judged, or carried on."""
        return _run("settle_trial", ds, params)

    @task.short_circuit(priority_weight=ORDERED, doc_md=doc("trial_night"))  # green only on a trial's scoring nights
    def trial_night(settled: dict, ds: str | None = None, params: dict | None = None) -> dict | None:
        """Go on to score_shadow only on an open trial's scoring nights."""
        return _run("trial_night", ds, params, settle_trial=settled)

    @task(multiple_outputs=False, map_index_template="{{ scoring_group }}", retries=1,
          retry_delay=timedelta(seconds=10), doc_md=doc("score_shadow"))
    def score_shadow(group: dict, tonight: dict, ds: str | None = None, params: dict | None = None,
                     run_id: str | None = None) -> dict:
        """One file group scored by the candidate into shadow/ds=D."""
        from airflow.sdk import get_current_context

        get_current_context()["scoring_group"] = f"v{tonight['version']}: group {group['index'] + 1}/{group['of']}"
        return _run("score_shadow", ds, params, item=group, run_id=run_id, trial_night=tonight)

    @task(multiple_outputs=False, doc_md=doc("commit_shadow"))
    def commit_shadow(groups: list[dict], ds: str | None = None, params: dict | None = None) -> dict:
        """The candidate's rows committed as shadow/ds=D, at once."""
        return _run("commit_shadow", ds, params, score_shadow=list(groups))

    trigger_retrain = TriggerDagRunOperator(
        task_id="trigger_retrain",
        trigger_dag_id=RETRAIN.id,
        trigger_run_id="nightly__{{ ds }}",
        # The decision's day, trigger and reasons, passed on as they were recorded (never re-derived).
        conf="{{ ti.xcom_pull(task_ids='decide_retrain', key='%s')['retrain_conf'] | tojson }}" % DECISION,
        logical_date=None,  # the retrain's day is its `ds` Param; its run has no logical date of its own
        reset_dag_run=True,  # rerunning a night reruns the retrain it started
        wait_for_completion=True,  # the next night's decisions must see this verdict
        poke_interval=5,
        deferrable=True,  # wait in the triggerer, not in a worker slot
        priority_weight=ORDERED,
        doc_md=doc("trigger_retrain"),
    )

    # main flow
    confirmed = confirm_champion()
    validated = validate()
    committed = commit_scores(score.expand(group=validated))  # one mapped task per file group
    committed >> detect_drift() >> confirmed
    decision = decide_retrain()
    confirmed >> measure_ground_truth() >> decision >> trigger_retrain
    # confirm_champion waits for its previous night's direct downstream (wait_for_downstream): with this edge,
    # that includes trigger_retrain, so the next night starts after this night's retrain (or its skip).
    confirmed >> trigger_retrain
    flagged = flag_drift()
    confirmed >> flagged
    settled = settle_trial()
    confirmed >> settled >> trigger_retrain  # a retrain sees tonight's trial settled
    shadowed = commit_shadow(score_shadow.partial(tonight=trial_night(settled)).expand(group=validated))
    confirmed >> shadowed  # so the next night's confirm_champion waits for tonight's shadow partition too
    for evidence in (flagged, decision):  # a button to the page that shows the evidence
        evidence.operator.operator_extra_links = [ModelHealthLink()]

nightly_scoring()
