"""Evidence in words a person reads: one line for a gate verdict, a retrain decision, a segment
table. The Model health page, the task logs and the alerts all say it the same way."""

from __future__ import annotations

import math
from typing import Any


def number(x: float | None, fmt: str = ".4f") -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, fmt)


def gate_words(verdict: str | None, reasons: list[str], ev: dict[str, Any]) -> str:
    """A gate verdict and its evidence in one line a person reads."""
    parts = [verdict or "?"]
    if ev.get("first_model"):
        parts.append(f"first model: holdout {ev.get('metric')} {number(ev.get('value'))} on {ev.get('holdout_rows')} rows")
    elif isinstance(ev.get("gain"), (int, float)):
        parts.append(f"{ev.get('metric')} champion v{ev.get('champion_version', '?')} {number(ev.get('champion'))} → "
                     f"challenger {number(ev.get('challenger'))}, gain {ev['gain']:+.4f} "
                     f"({number(ev.get('confidence', 0), '.0%')} CI {number(ev.get('ci_low'), '+.4f')}…{number(ev.get('ci_high'), '+.4f')}), "
                     f"n={ev.get('n')}")
    elif ev.get("from_version"):
        parts.append(f"v{ev['from_version']} → v{ev.get('to_version')}")
    if value := value_words(ev):
        parts.append(value)
    if reasons:
        parts.append("rule: " + "; ".join(reasons))
    if ev.get("caveats"):  # multiclass: classes left out of the macro AUC, labels of classes the models never saw
        parts.append("note: " + "; ".join(ev["caveats"]))
    return " · ".join(parts)


def value_words(ev: dict[str, Any]) -> str:
    """The business value beside the metric (a cost matrix set): per row, with its paired CI; '' without one."""
    v = ev.get("business_value") or {}
    if not v:
        return ""
    unit = f" {v['currency']}/row" if v.get("currency") else "/row"
    thresholds = v.get("thresholds") or {}
    if "gain" not in v:  # the first model: recorded, not judged
        at = f" at threshold {thresholds['challenger']:.3g}" if thresholds.get("challenger") is not None else ""
        return f"value {number(v.get('challenger'), '.4g')}{unit}{at}"
    deciding = " (deciding)" if ev.get("decided_on") == "value" else ""
    at = ""
    if thresholds.get("champion") is not None and thresholds.get("challenger") is not None \
            and thresholds["champion"] != thresholds["challenger"]:
        at = f", thresholds {thresholds['champion']:.3g} → {thresholds['challenger']:.3g}"
    crossfit = ", challenger cross-fitted" if v.get("crossfit") else ""
    return (f"value{deciding} {number(v.get('champion'), '.4g')} → {number(v.get('challenger'), '.4g')}{unit}, "
            f"gain {v['gain']:+.4g} ({number(v.get('confidence', 0), '.0%')} CI {number(v.get('ci_low'), '+.4g')}…"
            f"{number(v.get('ci_high'), '+.4g')}){at}{crossfit}")


def segment_words(ev: dict[str, Any]) -> str:
    segs = ev.get("segments") or []
    return "; ".join(f"{s.get('segment')}: {s.get('gain', 0):+.4f} (n={s.get('n')})" for s in segs)


def retrain_words(ev: dict[str, Any], policy: dict[str, Any], signals: list[dict[str, Any]] = ()) -> str:
    """The nightly policy's evidence and thresholds in words (`signals`: the record's, each with its threshold)."""
    flags = ev.get("drift_flags") or []
    parts = [(f"drift on {sum(bool(f) for f in flags)} of the last {len(flags)} nights "
             f"(retrain at {policy.get('drift_k')} of {policy.get('drift_n')})")]
    cusum = next((x for x in signals if x.get("name") == "drift_cusum" and x.get("value") is not None), None)
    if cusum:
        at = "no retrain on it: off" if cusum.get("threshold") is None else f"retrain at {cusum['threshold']:.2f}"
        parts.append(f"drift CUSUM {cusum['value']:.2f} ({at})")
    metric = ev.get("metric", "metric")
    if ev.get("realized") is not None:
        parts.append(f"realized {metric} {number(ev['realized'])} on {ev.get('realized_day')} (floor {ev.get('floor')})")
    if ev.get("estimated") is not None:
        parts.append(f"estimated {metric} {number(ev['estimated'])}")
    if ev.get("model_age_days") is not None:
        parts.append(f"model age {ev['model_age_days']} days with data (max {policy.get('max_model_age_days')})")
    if ev.get("days_since_last_retrain") is not None:
        parts.append(f"last retrain {ev['days_since_last_retrain']} days ago (cooldown {policy.get('cooldown_days')})")
    return "; ".join(parts)
