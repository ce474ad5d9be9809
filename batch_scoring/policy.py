"""The retrain policy: a pure decision over evidence gathered from the lake.

`should_retrain` is pure and typed (table-driven tests pin it down); `decide_retrain`
gathers its evidence for night D from the lake and commits the decision record
`decisions/ds=D/retrain.parquet`, reasons and evidence included. It reads earlier nights'
records, so nights must be decided in date order.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from nightshift.dates import add_days, days_between, ds_range
from nightshift.decisions import read_decision, read_decisions, write_decision
from nightshift.lake import DRIFT, PERFORMANCE, Lake
from nightshift.registry import Registry

if TYPE_CHECKING:
    from nightshift.settings import PolicySettings, Settings

RETRAIN, COOLDOWN, NO_ACTION = "RETRAIN", "COOLDOWN", "NO_ACTION"


@dataclass(frozen=True)
class RetrainEvidence:
    has_champion: bool
    drift_flags: tuple[bool, ...] = ()  # day-level drift verdicts of the last n nights, oldest first
    realized_auc: float | None = None  # newest matured day scored by the champion in force
    realized_day: str | None = None
    estimated_auc: float | None = None  # tonight's estimate from calibrated scores
    model_age_days: int | None = None
    days_since_last_retrain: int | None = None
    manual: bool = False


@dataclass(frozen=True)
class RetrainDecision:
    verdict: str  # RETRAIN | COOLDOWN | NO_ACTION
    reasons: tuple[str, ...]

    @property
    def retrain(self) -> bool:
        return self.verdict == RETRAIN


def should_retrain(ev: RetrainEvidence, policy: "PolicySettings") -> RetrainDecision:
    """Retrain on persistent drift, poor realized or estimated AUC, old age, no champion, or by hand."""
    if ev.manual:
        return RetrainDecision(RETRAIN, ("requested by hand",))
    triggers = []
    if not ev.has_champion:
        triggers.append("no champion yet")
    recent = ev.drift_flags[-policy.drift_n:]
    if sum(recent) >= policy.drift_k:
        triggers.append(f"drift persisted on {sum(recent)} of the last {len(recent)} nights (k={policy.drift_k})")
    if ev.realized_auc is not None and ev.realized_auc < policy.min_auc:
        triggers.append(f"realized AUC {ev.realized_auc:.4f} on matured day {ev.realized_day} is below {policy.min_auc}")
    if ev.estimated_auc is not None and ev.estimated_auc < policy.min_auc:
        triggers.append(f"estimated AUC {ev.estimated_auc:.4f} is below {policy.min_auc}")
    if ev.model_age_days is not None and ev.model_age_days >= policy.max_model_age_days:
        triggers.append(f"champion is {ev.model_age_days} days old (max {policy.max_model_age_days})")
    if not triggers:
        return RetrainDecision(NO_ACTION, ("no trigger fired",))
    if ev.days_since_last_retrain is not None and ev.days_since_last_retrain < policy.cooldown_days:
        held = f"cooldown: last retrain was {ev.days_since_last_retrain} days ago (cooldown {policy.cooldown_days})"
        return RetrainDecision(COOLDOWN, (held, *triggers))
    return RetrainDecision(RETRAIN, tuple(triggers))


def gather_evidence(settings: "Settings", ds: str, lake: Lake, manual: bool = False) -> RetrainEvidence:
    """What night `ds` knows: earlier drift verdicts, ground truth, champion age, last retrain."""
    policy = settings.policy
    registry = Registry(settings, lake)
    in_force = registry.version_as_of(ds)  # the champion that scored tonight

    flags = []
    for day in ds_range(add_days(ds, -(policy.drift_n - 1)), ds):
        if lake.exists(DRIFT, day):
            flags.append(bool(lake.read(DRIFT, day, columns=["day_drift"]).column(0)[0].as_py()))

    realized = realized_day = estimated = None
    if in_force is not None and lake.exists(PERFORMANCE, ds):
        perf = lake.read(PERFORMANCE, ds).to_pylist()
        mine = [r for r in perf if r["model_version"] == in_force.version]
        matured = [r for r in mine if r["matured"] and r["realized_auc"] is not None]
        if matured:
            realized, realized_day = matured[-1]["realized_auc"], matured[-1]["prediction_ds"]
        tonight = [r for r in mine if r["prediction_ds"] == ds]
        if tonight:
            estimated = tonight[0]["estimated_auc"]

    last = [d for d in read_decisions(lake, ds_range(add_days(ds, -policy.cooldown_days), add_days(ds, -1)), "retrain")
            if d["verdict"] == RETRAIN]
    return RetrainEvidence(
        has_champion=in_force is not None,
        drift_flags=tuple(flags),
        realized_auc=realized,
        realized_day=realized_day,
        estimated_auc=estimated,
        model_age_days=days_between(in_force.ds, ds) if in_force else None,
        days_since_last_retrain=days_between(last[-1]["ds"], ds) if last else None,
        manual=manual,
    )


def decide_retrain(settings: "Settings", ds: str, *, lake: Lake | None = None, manual: bool = False) -> dict:
    """Decide night `ds` and commit the record; returns {'retrain': bool, 'verdict', 'reasons'}."""
    lake = lake or Lake(settings.lake_uri)
    evidence = gather_evidence(settings, ds, lake, manual)
    decision = should_retrain(evidence, settings.policy)
    champion = Registry(settings, lake).version_as_of(ds)
    write_decision(lake, ds, "retrain", decision.verdict, decision.reasons,
                   {"evidence": asdict(evidence), "policy": settings.policy.model_dump()},
                   model_version=champion.version if champion else None)
    return {"ds": ds, "retrain": decision.retrain, "verdict": decision.verdict, "reasons": list(decision.reasons)}


def retrain_reasons(settings: "Settings", ds: str) -> list[str]:
    """The reasons recorded by night `ds`'s decision (what a triggered retrain cites)."""
    record = read_decision(Lake(settings.lake_uri), ds, "retrain")
    return list(record["reasons"]) if record else []

