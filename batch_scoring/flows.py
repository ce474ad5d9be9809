"""The nightly flow, defined once: the `nightly_scoring` DAG wires these steps, `nightshift nightly` runs them.

Import-light: DAG files read it at parse time. The step functions are named directly; their
module imports what each step needs inside the step, so reading the flow imports nothing heavy.
"""

from batch_scoring import nightly
from nightshift.flow import BRANCH, GATE, HANDOFF, Flow, Step
from training.flows import RETRAIN

NIGHTLY = Flow("nightly_scoring", (
    Step("validate", nightly.validate, kind=GATE,
         doc="the input contract on features/ds=D, then the scoring plan (the day's file groups); "
             "a day the calendar does not expect is skipped with a record"),
    Step("score", nightly.score, after=("validate",), map_over="validate",
         doc="one file group of features/ds=D scored into a staged part (mapped: one task per group, each retried alone)"),
    Step("commit_scores", nightly.commit_scores, after=("score",),
         doc="predictions/ds=D, with lineage: the groups' parts committed at once, when all are in"),
    Step("detect_drift", nightly.detect_drift, after=("commit_scores",), doc="monitoring/drift/ds=D"),
    Step("confirm_champion", nightly.confirm_champion, after=("detect_drift",), ordered=True,
         doc="rescore if a promotion landed after tonight was scored"),
    Step("flag_drift", nightly.flag_drift, after=("confirm_champion",),
         doc="runs (green in the grid) only on a drift alarm, naming the drifted features; skipped otherwise"),
    Step("measure_ground_truth", nightly.measure_ground_truth, after=("confirm_champion",), ordered=True,
         doc="monitoring/performance/ds=D, as known on D"),
    Step("decide_retrain", nightly.decide_retrain, after=("measure_ground_truth",), ordered=True,
         kind=BRANCH, choose=nightly.wants_retrain, choices=("trigger_retrain",),
         doc="the retrain policy's record; it goes on to trigger_retrain only when the policy asks for a retrain"),
    Step("settle_trial", nightly.settle_trial, after=("confirm_champion",), ordered=True,
         doc="an open shadow trial's night (gate.mode = 'shadow:N'): end it (drift alarm, newer challenger, "
             "candidate deleted, champion changed), judge it once its nights' labels matured (PROMOTE moves "
             "champion), or carry it on; a record of its state either way. Nothing to do without a trial"),
    Step("trial_night", nightly.trial_night, after=("settle_trial",), kind=GATE,
         doc="goes on to score_shadow only on an open trial's scoring nights; skipped otherwise"),
    Step("score_shadow", nightly.score_shadow, after=("trial_night",), map_over="validate",
         doc="one file group of features/ds=D scored by the candidate into a staged part of shadow/ds=D (mapped, "
             "like score)"),
    Step("commit_shadow", nightly.commit_shadow, after=("score_shadow", "confirm_champion"),
         doc="shadow/ds=D, the candidate's rows tagged with its version, committed at once. Downstream of "
             "confirm_champion too, so the next night waits for it"),
    Step("trigger_retrain", nightly.retrain_conf, after=("decide_retrain", "confirm_champion",
                                                                          "settle_trial"), kind=HANDOFF,
         flow=RETRAIN,
         doc="start the retrain with the decision's reasons, and wait for its verdict. It is downstream of "
             "confirm_champion too, so the next night's ordered steps wait for it: the night is closed when it has "
             "run or been skipped; and of settle_trial, so a retrain sees the night's trial settled"),
))
