"""The retrain policy: a pure decision over evidence gathered from the lake.

`should_retrain` is pure and typed (table-driven tests pin it down); `decide_retrain`
gathers its evidence for night D from the lake and commits the decision record
`decisions/ds=D/retrain.parquet`, reasons and evidence included. It reads earlier nights'
records, so nights must be decided in date order.

The primary metric and its direction come from the task: a floor is "worse than" in that
direction (an AUC below 0.70, an RMSE above 12). Model age and the cooldown count days that
had data (features partitions), not calendar days, so data that arrives in blocks does not
age a model through its gaps.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from nightshift.choices import Trigger
from nightshift.lake import FEATURES, Lake
from nightshift.registry import Registry
from nightshift.tables import drift as drift_table
from nightshift.tables import performance
from nightshift.tables.decisions import read_decisions, write_decision
from nightshift.task import Metric, metric_floor, task_for

if TYPE_CHECKING:
    from nightshift.settings import PolicySettings, Settings

RETRAIN, COOLDOWN, NO_ACTION = "RETRAIN", "COOLDOWN", "NO_ACTION"
DRIFT_REASON = "drift persisted"


@dataclass(frozen=True)
class RetrainEvidence:
    has_champion: bool
    metric: str = "auc"
    higher_is_better: bool = True
    floor: float | None = None  # the primary metric's floor in force (in its direction)
    drift_flags: tuple[bool, ...] = ()  # day-level drift verdicts of the last n nights with data, oldest first
    drift_days: tuple[str, ...] = ()  # the nights those flags belong to
    realized: float | None = None  # newest matured day scored by the champion in force
    realized_day: str | None = None
    estimated: float | None = None  # tonight's estimate from the predictions alone
    model_age_days: int | None = None  # days with data since the champion took effect
    days_since_last_retrain: int | None = None  # days with data since the last RETRAIN decision
    manual: bool = False


@dataclass(frozen=True)
class RetrainDecision:
    verdict: str  # RETRAIN | COOLDOWN | NO_ACTION
    reasons: tuple[str, ...]

    @property
    def retrain(self) -> bool:
        return self.verdict == RETRAIN


def should_retrain(ev: RetrainEvidence, policy: "PolicySettings") -> RetrainDecision:
    """Retrain on persistent drift, a poor realized or estimated metric, old age, no champion, or by hand."""
    if ev.manual:
        return RetrainDecision(RETRAIN, ("requested by hand",))
    metric = Metric(ev.metric, ev.higher_is_better)
    triggers = []
    if not ev.has_champion:
        triggers.append("no champion yet")
    recent = ev.drift_flags[-policy.drift_n:]
    if sum(recent) >= policy.drift_k:
        triggers.append(f"{DRIFT_REASON} on {sum(recent)} of the last {len(recent)} nights (k={policy.drift_k})")
    if ev.floor is not None and ev.realized is not None and metric.worse(ev.realized, ev.floor):
        triggers.append(f"realized {ev.metric} {ev.realized:.4f} on matured day {ev.realized_day} is "
                        f"{metric.floor_words()} the floor {ev.floor}")
    if ev.floor is not None and ev.estimated is not None and metric.worse(ev.estimated, ev.floor):
        triggers.append(f"estimated {ev.metric} {ev.estimated:.4f} is {metric.floor_words()} the floor {ev.floor}")
    if ev.model_age_days is not None and ev.model_age_days >= policy.max_model_age_days:
        triggers.append(f"champion is {ev.model_age_days} days with data old (max {policy.max_model_age_days})")
    if not triggers:
        return RetrainDecision(NO_ACTION, ("no trigger fired",))
    if ev.days_since_last_retrain is not None and ev.days_since_last_retrain < policy.cooldown_days:
        held = (f"cooldown: last retrain was {ev.days_since_last_retrain} days with data ago "
                f"(cooldown {policy.cooldown_days})")
        return RetrainDecision(COOLDOWN, (held, *triggers))
    return RetrainDecision(RETRAIN, tuple(triggers))


def gather_evidence(settings: "Settings", ds: str, lake: Lake, manual: bool = False) -> RetrainEvidence:
    """What night `ds` knows: earlier drift verdicts, ground truth, champion age, last retrain."""
    policy, task = settings.policy, task_for(settings.dataset.task)
    in_force = Registry(settings, lake).version_as_of(ds)  # the champion that scored tonight
    data_days = [d for d in lake.partitions(FEATURES) if d <= ds]

    recent_days = data_days[-policy.drift_n:]
    flags = [(d, a) for d in recent_days if (a := drift_table.day_alarm(lake, d)) is not None]

    realized = realized_day = estimated = None
    if in_force is not None:
        mine = [r for r in performance.read(lake, ds) if r["model_version"] == in_force.version]
        matured = [r for r in mine if r["matured"] and r["realized"] is not None]
        if matured:
            realized, realized_day = matured[-1]["realized"], matured[-1]["prediction_ds"]
        tonight = [r for r in mine if r["prediction_ds"] == ds]
        if tonight:
            estimated = tonight[0]["estimated"]

    # Only the cooldown reads the last retrain, so only the nights it spans are read.
    earlier = [d for d in data_days if d < ds][-policy.cooldown_days:] if policy.cooldown_days else []
    retrains = [d for d in read_decisions(lake, earlier, "retrain") if d["verdict"] == RETRAIN]
    last = retrains[-1] if retrains else None
    return RetrainEvidence(
        has_champion=in_force is not None,
        metric=task.primary.name,
        higher_is_better=task.primary.higher_is_better,
        floor=metric_floor(task, policy.metric_floor),
        drift_flags=tuple(a for _, a in flags),
        drift_days=tuple(d for d, _ in flags),
        realized=realized,
        realized_day=realized_day,
        estimated=estimated,
        model_age_days=sum(1 for d in data_days if d > in_force.ds) if in_force else None,
        days_since_last_retrain=sum(1 for d in data_days if d > last["ds"]) if last else None,
        manual=manual,
    )


def decide_retrain(settings: "Settings", ds: str, *, lake: Lake | None = None, manual: bool = False) -> dict:
    """Decide night `ds` and commit the record; returns the decision and, when it retrains, the retrain's conf."""
    lake = lake or Lake(settings.lake_uri)
    evidence = gather_evidence(settings, ds, lake, manual)
    decision = should_retrain(evidence, settings.policy)
    champion = Registry(settings, lake).version_as_of(ds)
    write_decision(lake, ds, "retrain", decision.verdict, decision.reasons,
                   {"evidence": asdict(evidence), "policy": settings.policy.model_dump(),
                    "counted": "model age and cooldown count days with data (features partitions)"},
                   model_version=champion.version if champion else None)
    trigger = Trigger.MANUAL if manual else (Trigger.NIGHTLY if evidence.has_champion else Trigger.BOOTSTRAP)
    return {"ds": ds, "retrain": decision.retrain, "verdict": decision.verdict, "reasons": list(decision.reasons),
            "retrain_conf": {"ds": ds, "trigger": trigger.value, "reasons": list(decision.reasons)}}

