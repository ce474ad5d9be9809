"""What happened over a range of nights: the account `make demo` ends with, and `nightshift report` prints.

Realized AUC is computed from every label that has arrived by the last night, pooled over
three periods: before the first drift alarm, from that alarm until a promotion takes
effect, and after it. Each figure comes with its label coverage, because recent nights'
labels are still arriving.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow.compute as pc

from nightshift.dates import ds_range
from nightshift.decisions import read_decisions
from nightshift.lake import DRIFT, LABELS, PREDICTIONS, Lake
from nightshift.registry import Registry
from nightshift.spec import EVENT_DS

if TYPE_CHECKING:
    from nightshift.settings import Settings


def summarize(settings: "Settings", start: str, end: str) -> dict[str, Any]:
    from training.evaluate import auc

    lake = Lake(settings.lake_uri)
    spec = settings.dataset
    days = [d for d in ds_range(start, end) if lake.exists(PREDICTIONS, d)]
    alarms = [d for d in days if lake.exists(DRIFT, d)
              and lake.read(DRIFT, d, columns=["day_drift"]).column(0)[0].as_py()]
    retrains = [d for d in read_decisions(lake, days, "retrain") if d["verdict"] == "RETRAIN"]
    verdicts = read_decisions(lake, ds_range(start, end), "promotion")
    promotions = [v for v in verdicts if v["verdict"] == "PROMOTE"]
    history = [e for e in Registry(settings, lake).history() if e.alias == "champion"]

    labels = lake.read_days(LABELS, [a for a in lake.partitions(LABELS) if a <= end],
                            columns=[spec.entity_id, EVENT_DS, spec.label])
    nights = []
    for d in days:
        preds = lake.read(PREDICTIONS, d, columns=[spec.entity_id, "score", "model_version"])
        lab = labels.filter(pc.equal(labels[EVENT_DS], d)).select([spec.entity_id, spec.label]) if labels else None
        joined = preds.join(lab, keys=spec.entity_id, join_type="inner") if lab is not None else None
        y = joined.column(spec.label).to_numpy(zero_copy_only=False) if joined is not None else np.array([])
        s = joined.column("score").to_numpy() if joined is not None else np.array([])
        nights.append({"ds": d, "rows": preds.num_rows, "labelled": len(y), "y": y, "s": s,
                       "model_version": preds.column("model_version")[0].as_py(),
                       "drift": d in alarms,
                       "auc": auc(y, s) if len(y) and 0 < y.sum() < len(y) else None})

    first_alarm = alarms[0] if alarms else None
    promoted_from = next((p["ds"] for p in promotions if first_alarm and p["ds"] >= first_alarm), None)
    periods = {
        "before drift": [n for n in nights if first_alarm is None or n["ds"] < first_alarm],
        "after drift": [n for n in nights if first_alarm and n["ds"] >= first_alarm and (promoted_from is None or n["ds"] <= promoted_from)],
        "after promotion": [n for n in nights if promoted_from and n["ds"] > promoted_from],
    }
    pooled = {}
    for name, group in periods.items():
        y = np.concatenate([n["y"] for n in group]) if group else np.array([])
        s = np.concatenate([n["s"] for n in group]) if group else np.array([])
        rows = sum(n["rows"] for n in group)
        pooled[name] = {"nights": f"{group[0]['ds']}..{group[-1]['ds']}" if group else "-", "n_nights": len(group),
                        "auc": auc(y, s) if len(y) and 0 < y.sum() < len(y) else None,
                        "labelled": int(len(y)), "coverage": len(y) / rows if rows else None}
    for n in nights:
        del n["y"], n["s"]
    return {"start": start, "end": end, "days_scored": len(days), "drift_alarms": alarms,
            "retrains": [r["ds"] for r in retrains],
            "verdicts": [{"ds": v["ds"], "verdict": v["verdict"], "version": v["model_version"], "reasons": v["reasons"]} for v in verdicts],
            "promotions": [{"ds": p["ds"], "version": p["model_version"]} for p in promotions],
            "champion_history": [{"ds": e.ds, "version": e.version, "by": e.decided_by} for e in history],
            "periods": pooled, "nights": nights}


def render(summary: dict[str, Any]) -> str:
    """A plain-text account (rich markup-free, so it reads the same in a log)."""
    fmt = lambda v: "-" if v is None else f"{v:.4f}"  # noqa: E731
    promoted = ", ".join("v{} on {}".format(p["version"], p["ds"]) for p in summary["promotions"])
    lines = [
        f"Nights {summary['start']}..{summary['end']}: {summary['days_scored']} scored",
        f"Drift alarms:  {len(summary['drift_alarms'])} ({', '.join(summary['drift_alarms']) or 'none'})",
        f"Retrains:      {len(summary['retrains'])} requested by the nightly policy ({', '.join(summary['retrains']) or 'none'})",
        f"Verdicts:      " + ("; ".join(f"{v['ds']} v{v['version']} {v['verdict']}" for v in summary["verdicts"]) or "none"),
        f"Promotions:    {len(summary['promotions'])} ({promoted or 'none'})",
        "",
        f"{'Realized AUC':<18}{'nights':<26}{'AUC':>8}{'labelled':>10}{'coverage':>10}",
    ]
    for name, p in summary["periods"].items():
        cov = "-" if p["coverage"] is None else f"{p['coverage']:.0%}"
        lines.append(f"{name:<18}{p['nights']:<26}{fmt(p['auc']):>8}{p['labelled']:>10}{cov:>10}")
    return "\n".join(lines)


def plot(summary: dict[str, Any], path: str | Path) -> Path:
    """Per-night realized AUC, drift alarms shaded, promotions marked: one picture of the run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    nights = summary["nights"]
    x = np.arange(len(nights))
    fig, ax = plt.subplots(figsize=(10, 4))
    ax.plot(x, [n["auc"] if n["auc"] is not None else np.nan for n in nights], marker="o", label="realized AUC (labels so far)")
    for i, n in enumerate(nights):
        if n["drift"]:
            ax.axvspan(i - 0.5, i + 0.5, color="tab:red", alpha=0.15, lw=0)
    for p in summary["promotions"]:
        if p["ds"] in [n["ds"] for n in nights]:
            i = [n["ds"] for n in nights].index(p["ds"])
            ax.axvline(i + 0.5, color="tab:green", ls="--")
            ax.text(i + 0.6, ax.get_ylim()[0], f" v{p['version']} promoted", color="tab:green", va="bottom")
    ax.set_xticks(x[::max(1, len(x) // 10)], [nights[i]["ds"] for i in x[::max(1, len(x) // 10)]], rotation=30)
    ax.set_ylabel("AUC")
    ax.set_title("Nightshift: realized AUC per night (red: drift alarm)")
    ax.legend(loc="lower left")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
