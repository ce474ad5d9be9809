"""What happened over a range of nights: the account `make demo` ends with, and `nightshift report` prints.

Periods are split by cause, not by the first alarm or the first promotion:
- **drift onset** is the first drifted night counted by the first *drift-triggered* retrain
  decision (a lone false alarm that triggered nothing does not start a period);
- **after promotion** starts the night after the first promotion that answered that
  decision (an age-based promotion before it does not count).
Without a drift-triggered decision there is one period. The realized primary metric is
computed from every label that has arrived by the last night, pooled per period, each with
its label coverage, because recent nights' labels are still arriving.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from nightshift.dates import ds_range
from nightshift.lake import PREDICTIONS, Lake
from nightshift.registry import Registry
from nightshift.tables import drift as drift_table
from nightshift.tables import labels as labels_table
from nightshift.tables.decisions import read_decisions
from nightshift.task import task_for

if TYPE_CHECKING:
    from nightshift.settings import Settings


def summarize(settings: "Settings", start: str, end: str) -> dict[str, Any]:
    from monitoring.policy import DRIFT_REASONS, RETRAIN

    lake = Lake.of(settings)
    spec, task = settings.dataset, task_for(settings.dataset.task)
    metric = task.primary.name
    days = [d for d in ds_range(start, end) if lake.exists(PREDICTIONS, d)]
    alarms = [d for d in days if drift_table.day_alarm(lake, d)]
    decisions = read_decisions(lake, days, "retrain")
    retrains = [d for d in decisions if d["verdict"] == RETRAIN]
    verdicts = read_decisions(lake, ds_range(start, end), "promotion")
    promotions = [v for v in verdicts if v["verdict"] == "PROMOTE"]
    from nightshift.tables import trials

    promotions = sorted(promotions + [{"ds": t["ds"], "model_version": str(t["candidate"]), "verdict": "PROMOTE"}
                                      for t in trials.history(lake, days=ds_range(start, end))
                                      if t["state"] == trials.PROMOTED], key=lambda p: p["ds"])
    history = [e for e in Registry(settings, lake).history() if e.alias == "champion"]

    labels = labels_table.arrived(lake, spec, end, days)
    nights = []
    for d in days:
        # Multiclass: each night's predictions follow the vocabulary of the model that scored it (its p__ columns).
        night_task = task.from_schema(lake.dataset(PREDICTIONS, d).schema.names)
        preds = lake.read(PREDICTIONS, d, columns=[spec.entity_id, *night_task.prediction_columns(), "model_version"])
        joined = labels_table.join(preds, labels, d, spec)
        y = task.labels(joined.column(spec.label), f"labels for {d}") if joined.num_rows else np.array([])
        p = night_task.pred_of(joined) if joined.num_rows else np.array([])
        nights.append({"ds": d, "rows": preds.num_rows, "labelled": len(y), "y": y, "p": p,
                       "classes": getattr(night_task, "classes", None),
                       "model_version": preds.column("model_version")[0].as_py() if preds.num_rows else None,
                       "drift": d in alarms, metric: night_task.primary_value(y, p) if len(y) else None})

    periods, cause = _periods(nights, retrains, promotions, DRIFT_REASONS)
    pooled = {}
    for name, group in periods.items():
        group_task = task.bind(tuple(dict.fromkeys(c for n in group for c in (n["classes"] or ()))) or None)
        y = np.concatenate([n["y"] for n in group if len(n["y"])] or [np.array([])])
        p = np.concatenate([group_task.align(n["p"], n["classes"]) for n in group if len(n["y"])] or [np.array([])])
        rows = sum(n["rows"] for n in group)
        pooled[name] = {"nights": f"{group[0]['ds']}..{group[-1]['ds']}" if group else "-", "n_nights": len(group),
                        metric: group_task.primary_value(y, p) if len(y) else None,
                        "labelled": int(len(y)), "coverage": len(y) / rows if rows else None}
    for n in nights:
        del n["y"], n["p"], n["classes"]
    return {"start": start, "end": end, "metric": metric, "higher_is_better": task.primary.higher_is_better,
            "days_scored": len(days), "drift_alarms": alarms, "cause": cause,
            "retrains": [{"ds": r["ds"], "reasons": r["reasons"]} for r in retrains],
            "verdicts": [{"ds": v["ds"], "verdict": v["verdict"], "version": v["model_version"], "reasons": v["reasons"]}
                         for v in verdicts],
            "promotions": [{"ds": p["ds"], "version": p["model_version"]} for p in promotions],
            "champion_history": [{"ds": e.ds, "version": e.version, "by": e.decided_by} for e in history],
            "periods": pooled, "nights": nights}


def _periods(nights: list[dict], retrains: list[dict], promotions: list[dict], drift_reasons: tuple[str, ...]):
    """Split nights at the drift onset behind the first drift-triggered retrain, and at the promotion that answered it."""
    by_drift = [r for r in retrains if any(w in reason for reason in r["reasons"] for w in drift_reasons)]
    if not by_drift:
        return {"all nights": nights}, {"onset": None, "decision": None, "started": None, "promotion": None,
                                        "promoted_version": None}
    decision = by_drift[0]
    ev = decision["evidence"].get("evidence", {})
    flagged = [d for d, f in zip(ev.get("drift_days", []), ev.get("drift_flags", [])) if f]
    onset = ev.get("onset") or (flagged[0] if flagged else decision["ds"])  # a retrain that waited recorded its onset
    answered = [p for p in promotions if p["ds"] >= decision["ds"]]
    promoted = answered[0]["ds"] if answered else None
    periods = {
        "before drift": [n for n in nights if n["ds"] < onset],
        "after drift": [n for n in nights if n["ds"] >= onset and (promoted is None or n["ds"] <= promoted)],
        "after promotion": [n for n in nights if promoted and n["ds"] > promoted],
    }
    return periods, {"onset": onset, "decision": ev.get("pending_since") or decision["ds"], "started": decision["ds"],
                     "promotion": promoted,
                     "promoted_version": answered[0]["model_version"] if answered else None}


def render(summary: dict[str, Any]) -> str:
    """A plain-text account (rich markup-free, so it reads the same in a log)."""
    fmt = lambda v: "-" if v is None else f"{v:.4f}"  # noqa: E731
    metric = summary["metric"]
    promoted = ", ".join("v{} on {}".format(p["version"], p["ds"]) for p in summary["promotions"])
    cause = summary["cause"]
    lines = [
        f"Nights {summary['start']}..{summary['end']}: {summary['days_scored']} scored",
        f"Drift alarms:  {len(summary['drift_alarms'])} ({', '.join(summary['drift_alarms']) or 'none'})",
        f"Retrains:      {len(summary['retrains'])} requested by the nightly policy "
        f"({', '.join(r['ds'] for r in summary['retrains']) or 'none'})",
        "Verdicts:      " + ("; ".join(f"{v['ds']} {('v' + v['version'] + ' ') if v['version'] else ''}{v['verdict']}"
                                      for v in summary["verdicts"]) or "none"),
        f"Promotions:    {len(summary['promotions'])} ({promoted or 'none'})",
    ]
    if cause["decision"]:
        answer = f"answered by v{cause['promoted_version']} promoted on {cause['promotion']}" if cause["promotion"] else "not answered yet"
        waited = (f" (it waited for the new regime's labels until {cause['started']})"
                  if cause.get("started") and cause["started"] != cause["decision"] else "")
        lines.append(f"Drift:         onset {cause['onset']}, first drift-triggered retrain decided on {cause['decision']}"
                     f"{waited}, {answer}")
    lines += ["", f"{'Realized ' + metric.upper():<18}{'nights':<26}{metric.upper():>8}{'labelled':>10}{'coverage':>10}"]
    for name, p in summary["periods"].items():
        cov = "-" if p["coverage"] is None else f"{p['coverage']:.0%}"
        lines.append(f"{name:<18}{p['nights']:<26}{fmt(p[metric]):>8}{p['labelled']:>10}{cov:>10}")
    return "\n".join(lines)


def plot(summary: dict[str, Any], path: str | Path) -> Path:
    """Per-night realized metric, drift alarms shaded, promotions marked: one picture of the run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    nights, metric = summary["nights"], summary["metric"]
    x = np.arange(len(nights))
    fig, ax = plt.subplots(figsize=(10, 4))
    ax.plot(x, [n[metric] if n[metric] is not None else np.nan for n in nights], marker="o",
            label=f"realized {metric.upper()} (labels so far)")
    for i, n in enumerate(nights):
        if n["drift"]:
            ax.axvspan(i - 0.5, i + 0.5, color="tab:red", alpha=0.15, lw=0)
    days = [n["ds"] for n in nights]
    for p in summary["promotions"]:
        if p["ds"] in days:
            i = days.index(p["ds"])
            ax.axvline(i + 0.5, color="tab:green", ls="--")
            ax.text(i + 0.6, ax.get_ylim()[0], f" v{p['version']} promoted", color="tab:green", va="bottom")
    ticks = x[::max(1, len(x) // 10)]
    ax.set_xticks(ticks, [days[i] for i in ticks], rotation=30)
    better = "higher" if summary["higher_is_better"] else "lower"
    ax.set_ylabel(f"{metric.upper()} ({better} is better)")
    ax.set_title(f"Nightshift: realized {metric.upper()} per night (red: drift alarm)")
    ax.legend(loc="lower left")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
