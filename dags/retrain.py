"""
### Retrain

Trains a challenger on the labels that had arrived by day `ds`, judges it against the
champion on the same holdout, and promotes it or rejects it.

`prepare_window` -> `ready_to_train` -> `train_challenger` (gpu queue and pool) ->
`evaluate_challenger` -> `judge` -> `promote` | `reject` | `open_trial`; or `defer` when training cannot
pay off: the holdout cannot resolve the gate's margin (the record names the numbers), or
the window's data and the champion are unchanged since the last retrain.

The steps are defined once, in `training/flows.py`; `nightshift retrain` runs the same
definition in-process, and a test holds this DAG's tasks and edges to it.

Started by `nightly_scoring` when its policy asks (conf `{"ds": D, "trigger": "nightly",
"reasons": [...]}`: the reasons the night recorded), or by hand from this form. A promotion
takes effect from the night after `ds`. The first model ever trained is promoted on
absolute thresholds; later ones need a paired-bootstrap win (see `training/evaluate.py`).

**Shadow trials.** With `gate.mode = "shadow:N"`, a challenger the gate would promote goes to
`open_trial` instead: it becomes the `candidate`, scores the next N nights beside the champion
(the nightly DAG's `score_shadow`), and is promoted only when the gate, run again on those
nights' matured labels, says so (see `training/shadow.py`).

**Alerts:** the gate's verdict (a promotion, a rejection, too little evidence, a deferral),
a shadow trial's opening, and any failed task, on the channels `[alerts]` names.

**Params.** `ds` (required): the logical day whose arrived labels the retrain may see. The
form will not trigger without it: a retrain has no "today" of its own (a replayed world
lives in its own dates), and a run without one could only fail. `init_from`: `warm`
(champion weights, grown embeddings), `scratch`, or `transfer` (the champion's or
`training.transfer_from`'s embeddings and backbone under a new head, frozen first). A retrain
may also run a tournament of `init_from:window` candidates (`training.candidates`; a
drift-triggered retrain runs `training.drift_candidates`), each a child MLflow run. `trigger` (`manual`, `nightly`, `bootstrap`), `reasons`: who asked and why.
`settings`: overrides.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timezone

from airflow.sdk import Param, dag, task

from airflow_integration.alerts import NightshiftNotifier
from nightshift.choices import InitFrom, Trigger, values
from airflow_integration.links import MLFLOW_LINKS
from nightshift.settings import (
    run_settings,  # pydantic only: Airflow has it loaded already
)
from training.flows import RETRAIN  # step definitions only: nothing heavy

log = logging.getLogger(__name__)
STEP = RETRAIN.step
DATE_PATTERN = r"^\d{4}-\d{2}-\d{2}$"
VERDICT = NightshiftNotifier("verdict")


def _run(step: str, ds: str | None, params: dict, **results):
    """Run one step of the retrain flow, as `nightshift retrain` does."""
    from nightshift.flow import StepContext

    day = params.get("ds") or ds
    if not day:
        raise ValueError("retrain needs a day: set the `ds` param (YYYY-MM-DD) or trigger with a logical date")
    def settings():
        return run_settings(params, training__init_from=params.get("init_from"))

    return STEP(step).run(StepContext(settings, day, dict(params), results))


def doc(step: str) -> str:
    """The task's doc_md: the flow's doc for the step, and its function's docstring."""
    return STEP(step).doc_md


@dag(
    dag_id=RETRAIN.id,
    schedule=None,
    start_date=datetime(2026, 1, 1, tzinfo=timezone.utc),
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    tags=["nightshift"],
    default_args={"owner": "nightshift", "retries": 0, "on_failure_callback": NightshiftNotifier("failure")},
    params={
        # Required, with no default: the form refuses to trigger until a day is given (see the docstring).
        "ds": Param(type="string", format="date", pattern=DATE_PATTERN, title="ds (logical day, required)",
                    description="YYYY-MM-DD: the retrain trains on the labels that had arrived by this day, and a "
                                "promotion takes effect from the night after it. Required: a retrain has no 'today' "
                                "of its own, so there is no safe default."),
        "init_from": Param(InitFrom.WARM.value, enum=values(InitFrom), description="warm: the champion's weights; scratch; transfer: its backbone under a new head"),
        "trigger": Param(Trigger.MANUAL.value, enum=values(Trigger), description="who asked"),
        "reasons": Param(["requested by hand"], type="array", items={"type": "string"}, description="why: recorded with the verdict"),
        "settings": Param({}, type="object", description="settings overrides, 'section.key': value"),
    },
)
def retrain():
    # multiple_outputs=False: a task returns one XCom, not one more API call per key of its dict
    @task(multiple_outputs=False, doc_md=doc("prepare_window"))
    def prepare_window(params: dict | None = None, ds: str | None = None) -> dict:
        """The training window as known on the day, and whether training can pay off."""
        log.info("resolved settings: %s", json.dumps(run_settings(params).resolved(), default=str))
        return _run("prepare_window", ds, params)

    @task.branch(doc_md=doc("ready_to_train"))
    def ready_to_train(window: dict, params: dict | None = None, ds: str | None = None) -> str:
        """Train, or defer with the reason."""
        yes, no = STEP("ready_to_train").choices
        return yes if _run("ready_to_train", ds, params, prepare_window=window) else no

    @task(multiple_outputs=False, queue=STEP("train_challenger").queue, pool=STEP("train_challenger").pool,
          doc_md=doc("train_challenger"))
    def train_challenger(window: dict, params: dict | None = None, ds: str | None = None) -> dict:
        """Train, log to MLflow, register the challenger (on the gpu queue)."""
        return _run("train_challenger", ds, params, prepare_window=window)

    @task(multiple_outputs=False, on_success_callback=VERDICT, doc_md=doc("defer"))
    def defer(window: dict, params: dict | None = None, ds: str | None = None) -> dict:
        """Record why the retrain did not train."""
        return _run("defer", ds, params, prepare_window=window)

    # the evidence is logged in words, not as a dict
    @task(multiple_outputs=False, show_return_value_in_logs=False, doc_md=doc("evaluate_challenger"))
    def evaluate_challenger(window: dict, trained: dict, params: dict | None = None, ds: str | None = None) -> dict:
        """The paired bootstrap on the holdout, and the gate's verdict, logged in words."""
        from airflow_integration.words import gate_words, segment_words

        result = _run("evaluate_challenger", ds, params, prepare_window=window, train_challenger=trained)
        log.info("gate for challenger v%s: %s", result["version"],
                 gate_words(result["verdict"], result["reasons"], result["evidence"]))
        if segments := segment_words(result["evidence"]):
            log.info("per segment (gain, rows): %s", segments)
        return result

    @task.branch(show_return_value_in_logs=False, doc_md=doc("judge"))
    def judge(evaluation: dict, params: dict | None = None, ds: str | None = None) -> str:
        """Promote, reject, or (gate.mode = shadow:N) open a shadow trial, as the verdict says."""
        chosen = _run("judge", ds, params, evaluate_challenger=evaluation)  # promote, reject or open_trial
        log.info("verdict %s for v%s, so: %s (%s)", evaluation["verdict"], evaluation["version"], chosen,
                 "; ".join(evaluation["reasons"]))
        return chosen

    @task(multiple_outputs=False, on_success_callback=VERDICT, doc_md=doc("promote"))
    def promote(evaluation: dict, params: dict | None = None, ds: str | None = None) -> dict:
        """Move champion to the challenger."""
        return _run("promote", ds, params, evaluate_challenger=evaluation)

    @task(multiple_outputs=False, on_success_callback=VERDICT, doc_md=doc("reject"))
    def reject(evaluation: dict, params: dict | None = None, ds: str | None = None) -> dict:
        """Keep the champion, with the reasons."""
        return _run("reject", ds, params, evaluate_challenger=evaluation)

    @task(multiple_outputs=False, on_success_callback=NightshiftNotifier("trial"), doc_md=doc("open_trial"))
    def open_trial(evaluation: dict, params: dict | None = None, ds: str | None = None) -> dict:
        """Move candidate to the challenger: its shadow trial begins."""
        return _run("open_trial", ds, params, evaluate_challenger=evaluation)

    # main flow
    window = prepare_window()
    trained = train_challenger(window)
    ready_to_train(window) >> [trained, defer(window)]
    evaluation = evaluate_challenger(window, trained)
    promoted = promote(evaluation)
    judge(evaluation) >> [promoted, reject(evaluation), open_trial(evaluation)]
    for made in (trained, evaluation, promoted):  # buttons to the MLflow run and model version, and the page
        made.operator.operator_extra_links = MLFLOW_LINKS


retrain()
