"""The retrain flow's step functions (`training.flows.RETRAIN`): each takes a `StepContext`, calls
one function of `training.retrain` or `training.promotion`, and returns a small dict.

The DAG and `nightshift retrain` both call these, so the two cannot drift apart. Each imports its
work inside the function (`training.retrain` brings pyarrow and numpy): DAG files read the flow at
parse time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nightshift.flow import StepContext


def prepare_window(ctx: StepContext) -> dict[str, Any]:
    """The training window as known on `ds` (features joined to the labels that had arrived), its
    holdout, and whether training can pay off: enough rows to judge, and data that changed."""
    from training import retrain

    p = ctx.params
    return retrain.prepare_window(ctx.settings, ctx.ds, trigger=p.get("trigger") or "manual", reasons=p.get("reasons"),
                                  registry=ctx.registry)


def ready_to_train(ctx: StepContext) -> bool:
    """True when the window can be judged and has changed since the last training; False defers."""
    from training import retrain

    return retrain.ready_to_train(ctx.results["prepare_window"])


def train_challenger(ctx: StepContext) -> dict[str, Any]:
    """Train on the window (warm-started or transferred from the champion where the settings say so),
    log the run to MLflow and register the model as `challenger`."""
    from training import retrain

    return retrain.train_challenger(ctx.settings, ctx.ds, ctx.results["prepare_window"], progress=ctx.progress,
                                    registry=ctx.registry)


def defer(ctx: StepContext) -> dict[str, Any]:
    """Record why the retrain did not train (the power check, or unchanged data), once."""
    from training import promotion

    return promotion.record_deferral(ctx.settings, ctx.ds, ctx.results["prepare_window"], registry=ctx.registry)


def evaluate_challenger(ctx: StepContext) -> dict[str, Any]:
    """Champion and challenger on the same holdout rows: the paired bootstrap and the gate's verdict."""
    from training import retrain

    return retrain.evaluate_challenger(ctx.settings, ctx.ds, ctx.results["prepare_window"],
                                       ctx.results["train_challenger"]["version"], registry=ctx.registry)


def judge(ctx: StepContext) -> str:
    """The branch's choice: `promote`, `reject`, or (gate.mode = "shadow:N") `open_trial`."""
    from training.shadow import route

    evaluation = ctx.results["evaluate_challenger"]
    return route(evaluation["verdict"], bool(evaluation["evidence"].get("first_model")), ctx.settings.gate.shadow_nights)


def promote(ctx: StepContext) -> dict[str, Any]:
    """Move `champion` to the challenger (the old one becomes `previous_champion`), with the verdict
    in the alias history and the decisions table."""
    from training import promotion

    return promotion.promote_challenger(ctx.settings, ctx.ds, ctx.results["evaluate_challenger"], registry=ctx.registry)


def reject(ctx: StepContext) -> dict[str, Any]:
    """Keep the champion, and record the verdict and its reasons."""
    from training import promotion

    return promotion.reject_challenger(ctx.settings, ctx.ds, ctx.results["evaluate_challenger"], registry=ctx.registry)


def open_trial(ctx: StepContext) -> dict[str, Any]:
    """Move `candidate` to the challenger and open its shadow trial (gate.mode = "shadow:N"): it scores
    the next N nights beside the champion and is judged again on their matured labels."""
    from training.shadow import open_trial as open_

    return open_(ctx.settings, ctx.ds, ctx.results["evaluate_challenger"], registry=ctx.registry)
