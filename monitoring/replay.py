"""Replay the retrain policy over recorded nights: what another policy would have decided.

From the lake's records only (drift verdicts, performance as known on each night, the decision
records, the champions' holdout references); no model is re-run. Each night's evidence is
gathered as the nightly decision gathered it (`policy.gather_evidence`), except that the
cooldown and a waiting retrain are held to the replay's own earlier decisions, and the policy
is the one asked for. What cannot be replayed: the champion in force is the recorded one (a
retrain the replayed policy decides does not change the model that scored the next nights),
and the deferrals are the recorded ones.

Replaying the recorded policy reproduces the recorded decisions night for night
(`replay_matches_history`); a night without a decision record (or without its drift or
performance partitions) is named as missing and skipped.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from nightshift.lake import DRIFT, FEATURES, Lake
from nightshift.tables.decisions import read_decision, read_decisions
from nightshift.task import drop_margin, task_for

if TYPE_CHECKING:
    from nightshift.settings import Settings

# The signals that say the model's own performance is known to have degraded (not only that its inputs moved).
DEGRADED_SIGNALS = frozenset({"realized_below_floor", "estimated_below_floor", "realized_drop", "realized_change",
                              "estimated_drop", "alarm_estimated_drop"})


def replay_policy(settings: "Settings", start: str, end: str, *, retrain_cost_s: float | None = None) -> dict[str, Any]:
    """Replay `settings.policy` over the nights `start`..`end` with data; the recorded decisions beside it."""
    from monitoring.policy import RETRAIN, gather_evidence, should_retrain

    lake = Lake.of(settings)
    days = lake.partitions(FEATURES)
    nights = [d for d in days if start <= d <= end]
    if not nights:
        raise ValueError(f"no night with data in {start}..{end}: features has {len(days)} partitions "
                         f"({days[0] if days else '-'}..{days[-1] if days else '-'}); pick dates inside them")
    task = task_for(settings.dataset.task)
    margin = drop_margin(task, settings.policy.drop_margin)
    history = read_decisions(lake, [d for d in days if d < start], "retrain")  # before the replay: as recorded
    rows, missing = [], []
    for ds in nights:
        recorded = read_decision(lake, ds, "retrain")
        if recorded is None or not lake.exists(DRIFT, ds):
            missing.append(ds)
            continue
        manual = bool((recorded["evidence"].get("evidence") or {}).get("manual"))
        ev = gather_evidence(settings, ds, lake, manual, history=history)
        decision = should_retrain(ev, settings.policy, margin)
        history.append({"ds": ds, "verdict": decision.verdict, "reasons": list(decision.reasons),
                        "evidence": {"evidence": asdict(ev), "signals": [asdict(s) for s in decision.signals]}})
        fired = {s.name for s in decision.signals if s.fired}
        was = {s["name"] for s in recorded["evidence"].get("signals") or () if s.get("fired")}
        rows.append({"ds": ds, "alarm": bool(ev.drift_flags and ev.drift_days and ev.drift_days[-1] == ds
                                             and ev.drift_flags[-1]),
                     "recorded": recorded["verdict"], "replayed": decision.verdict,
                     "recorded_degraded": bool(was & DEGRADED_SIGNALS), "replayed_degraded": bool(fired & DEGRADED_SIGNALS),
                     "reasons": list(decision.reasons)})
    side = {name: _figures([(r["ds"], r[name], r[f"{name}_degraded"]) for r in rows], RETRAIN, retrain_cost_s)
            for name in ("recorded", "replayed")}
    return {"start": start, "end": end, "policy": settings.policy.model_dump(), "nights": len(nights),
            "replayed_nights": len(rows), "missing": missing, "nights_alarmed": sum(r["alarm"] for r in rows),
            "recorded": side["recorded"], "replayed": side["replayed"],
            "replay_matches_history": int(all(r["recorded"] == r["replayed"] for r in rows)),
            "differ": [r for r in rows if r["recorded"] != r["replayed"]], "rows": rows}


def _figures(nights: list[tuple[str, str, bool]], retrain: str, cost_s: float | None) -> dict[str, Any]:
    """Retrains decided, their training time at the per-retrain cost, and the nights of known degraded performance
    before an answer: nights a performance signal fired while no retrain had been decided since the degradation began."""
    retrains = sum(v == retrain for _, v, _ in nights)
    unanswered, answered = 0, False
    for _, verdict, degraded in nights:
        if not degraded:
            answered = False  # the degradation ended: the next one needs its own answer
            continue
        if not answered:
            unanswered += 1
        answered = answered or verdict == retrain
    return {"retrains": retrains, "training_s": None if cost_s is None else retrains * cost_s,
            "degraded_nights_before_answer": unanswered}


def render(result: dict[str, Any]) -> str:
    """The replay side by side with what happened, in a few lines."""
    rec, rep = result["recorded"], result["replayed"]
    cost = (lambda s: "n/a (pass --retrain-cost-s)" if s is None else f"{s:,.0f} s")  # noqa: E731
    lines = [f"policy replay {result['start']}..{result['end']}: {result['replayed_nights']} of {result['nights']} nights "
             f"replayed; drift alarm on {result['nights_alarmed']} of them",
             f"{'':38s}{'recorded':>14s}{'replayed':>14s}",
             f"{'retrains decided':38s}{rec['retrains']:>14d}{rep['retrains']:>14d}",
             f"{'training time at the per-retrain cost':38s}{cost(rec['training_s']):>14s}{cost(rep['training_s']):>14s}",
             f"{'degraded nights before an answer':38s}{rec['degraded_nights_before_answer']:>14d}"
             f"{rep['degraded_nights_before_answer']:>14d}"]
    if result["missing"]:
        lines.append(f"missing (no decision or drift record, not replayed): {', '.join(result['missing'])}")
    for r in result["differ"]:
        lines.append(f"  {r['ds']}: recorded {r['recorded']}, replayed {r['replayed']} ({'; '.join(r['reasons'][:2])})")
    lines.append(f"RESULT replay_matches_history={result['replay_matches_history']} recorded_retrains={rec['retrains']} "
                 f"replayed_retrains={rep['retrains']} nights_alarmed={result['nights_alarmed']} "
                 f"missing={len(result['missing'])}")
    return "\n".join(lines)
