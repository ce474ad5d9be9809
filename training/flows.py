"""The retrain flow, defined once: the `retrain` DAG wires these steps, `nightshift retrain` runs them.

Import-light: DAG files read it at parse time. The step functions are named directly; their
module imports what each step needs inside the step, so reading the flow imports nothing heavy.
"""

from nightshift.flow import BRANCH, Flow, Step
from training import steps

RETRAIN = Flow("retrain", (
    Step("prepare_window", steps.prepare_window,
         doc="build the window as known on ds, size the holdout, and decide whether training can pay off"),
    Step("ready_to_train", steps.ready_to_train, after=("prepare_window",), kind=BRANCH,
         choices=("train_challenger", "defer"), doc="train, or record why not (power, unchanged data)"),
    Step("train_challenger", steps.train_challenger, after=("ready_to_train",), needs=("prepare_window",),
         queue="gpu", pool="gpu",
         doc="train, log to MLflow, register as challenger"),
    Step("defer", steps.defer, after=("ready_to_train",), needs=("prepare_window",), doc="record why the retrain did not train"),
    Step("evaluate_challenger", steps.evaluate_challenger, after=("train_challenger",), needs=("prepare_window",),
         doc="paired bootstrap against the champion on the same holdout"),
    Step("judge", steps.judge, after=("evaluate_challenger",), kind=BRANCH,
         choices=("promote", "reject", "open_trial"),
         doc="the gate's verdict decides: promote, or reject; with gate.mode = 'shadow:N' a challenger it would "
             "promote goes on trial instead"),
    Step("promote", steps.promote, after=("judge",), needs=("evaluate_challenger",), doc="move champion, keep previous_champion"),
    Step("reject", steps.reject, after=("judge",), needs=("evaluate_challenger",), doc="keep the champion; record why"),
    Step("open_trial", steps.open_trial, after=("judge",), needs=("evaluate_challenger",),
         doc="gate.mode = 'shadow:N': move `candidate` to the challenger, which scores the next N nights into "
             "shadow/ beside the champion and is judged again on their matured labels (training/shadow.py)"),
))
