"""The retrain flow's step functions (`training.flows.RETRAIN`): each takes a `StepContext`, calls
one function of `training.retrain` or `training.promotion`, and returns a small dict.

The DAG and `nightshift retrain` both call these, so the two cannot drift apart.
"""

from __future__ import annotations

from typing import Any

from nightshift.flow import StepContext
from training import promotion, retrain


def prepare_window(ctx: StepContext) -> dict[str, Any]:
    p = ctx.params
    return retrain.prepare_window(ctx.settings, ctx.ds, trigger=p.get("trigger") or "manual", reasons=p.get("reasons"))


def ready_to_train(ctx: StepContext) -> bool:
    return retrain.ready_to_train(ctx.results["prepare_window"])


def train_challenger(ctx: StepContext) -> dict[str, Any]:
    return retrain.train_challenger(ctx.settings, ctx.ds, ctx.results["prepare_window"], progress=ctx.progress)


def defer(ctx: StepContext) -> dict[str, Any]:
    return promotion.record_deferral(ctx.settings, ctx.ds, ctx.results["prepare_window"])


def evaluate_challenger(ctx: StepContext) -> dict[str, Any]:
    return retrain.evaluate_challenger(ctx.settings, ctx.ds, ctx.results["prepare_window"],
                                       ctx.results["train_challenger"]["version"])


def judge(ctx: StepContext) -> str:
    """The branch's choice: `promote`, `reject`, or (gate.mode = "shadow:N") `open_trial`."""
    from training.shadow import route

    evaluation = ctx.results["evaluate_challenger"]
    return route(evaluation["verdict"], bool(evaluation["evidence"].get("first_model")), ctx.settings.gate.shadow_nights)


def promote(ctx: StepContext) -> dict[str, Any]:
    return promotion.promote_challenger(ctx.settings, ctx.ds, ctx.results["evaluate_challenger"])


def reject(ctx: StepContext) -> dict[str, Any]:
    return promotion.reject_challenger(ctx.settings, ctx.ds, ctx.results["evaluate_challenger"])


def open_trial(ctx: StepContext) -> dict[str, Any]:
    from training.shadow import open_trial as open_

    return open_(ctx.settings, ctx.ds, ctx.results["evaluate_challenger"])
