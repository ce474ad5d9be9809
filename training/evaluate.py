"""The promotion gate: a paired bootstrap of the task's gain, segment guardrails, a power check, and the verdict.

The metric, its direction and what a "gain" is come from the task (`nightshift.task`):
AUC points for binary, the relative RMSE reduction for regression. The judges are pure
functions of the evidence, so every rule has a table-driven test.

With a `[value]` cost matrix the bootstrap also gives the business value gain per row
(`nightshift.value`) its interval, on the same resamples; `gate.metric = "value"` makes it the
deciding gain (`deciding`), judged by the same rules.

The power check runs before training. From the champion's predictions on the holdout the
retrain would get, it estimates the standard error of the paired gain and the minimum
detectable gain at the configured confidence. If that exceeds the margin, no challenger
could be shown non-inferior on this holdout (a truly equal one would end
INSUFFICIENT_EVIDENCE more often than not), so the retrain defers with the numbers instead
of spending a GPU on it.
"""

from __future__ import annotations

from dataclasses import dataclass
from statistics import NormalDist
from typing import TYPE_CHECKING, Any

import numpy as np

from nightshift.metrics import auc, resample_indices  # noqa: F401 - `auc` is part of this module's API
from nightshift.task import Task, task_for
from nightshift.value import resampled_mean_gain

if TYPE_CHECKING:
    from nightshift.settings import GateSettings

PROMOTE, REJECT, INSUFFICIENT_EVIDENCE = "PROMOTE", "REJECT", "INSUFFICIENT_EVIDENCE"
BINARY = task_for("binary")

_resample_indices = resample_indices  # kept for the tests that pin the resampling


def effective_gate(gate: "GateSettings", task: Task) -> "GateSettings":
    """The gate settings with the task's defaults filled in where they were left unset."""
    return gate.model_copy(update={
        "margin": task.default_margin if gate.margin is None else gate.margin,
        "segment_margin": task.default_segment_margin if gate.segment_margin is None else gate.segment_margin,
    })


# -- paired bootstrap ------------------------------------------------------------------
def paired_bootstrap(y: np.ndarray, p_champion: np.ndarray, p_challenger: np.ndarray, *, n_boot: int,
                     confidence: float, seed: int, task: Task = BINARY,
                     values: tuple[np.ndarray, np.ndarray] | None = None) -> dict[str, Any]:
    """Percentile CI of the challenger's gain over the champion, both scored on the same resampled rows.

    Pairing matters: the two models err on many of the same rows, so the gain varies far
    less than either metric, and an unpaired comparison would rarely find a real difference.

    `values`: each holdout row's business value under the champion and under the challenger
    (`nightshift.value.row_values`, each at its own decision threshold). Their mean's gain gets
    its interval from the very same resamples, under `business_value`.
    """
    y = np.asarray(y)
    n = len(y)
    champion, challenger = task.primary_value(y, p_champion), task.primary_value(y, p_challenger)
    on_champion, on_challenger = task.resampled(y, p_champion), task.resampled(y, p_challenger)
    gains, value_gains = [], []
    for idx in resample_indices(n, n_boot, seed):
        gains.append(task.gain(on_champion(idx), on_challenger(idx)))
        if values is not None:
            value_gains.append(resampled_mean_gain(values[0], values[1], idx))
    gains = np.concatenate(gains)
    defined = ~np.isnan(gains)  # a resample with one class only has no AUC
    gains = gains[defined]
    if gains.size == 0:
        raise ValueError("no bootstrap resample had a defined metric (one class only?)")
    alpha = 1.0 - confidence
    extra = {}
    if values is not None:
        vg = np.concatenate(value_gains)[defined]  # the resamples the metric's interval counts, no other
        a, b = float(np.mean(values[0])), float(np.mean(values[1]))
        extra["business_value"] = {"champion": a, "challenger": b, "gain": b - a, "ci_low": float(np.quantile(vg, alpha / 2)),
                          "ci_high": float(np.quantile(vg, 1 - alpha / 2)),
                          "se": float(np.std(vg, ddof=1)) if vg.size > 1 else 0.0, "n": int(n),
                          "confidence": float(confidence), "n_boot": int(vg.size)}
    return {**extra, 
        "n": int(n),
        "metric": task.primary.name,
        "gain_unit": task.gain_unit,
        "champion": champion,
        "challenger": challenger,
        "gain": float(task.gain(champion, challenger)),
        "ci_low": float(np.quantile(gains, alpha / 2)),
        "ci_high": float(np.quantile(gains, 1 - alpha / 2)),
        "se": float(np.std(gains, ddof=1)) if gains.size > 1 else 0.0,
        "confidence": float(confidence),
        "n_boot": int(gains.size),
    }


VALUE_UNIT = "value per row"


def deciding(evidence: dict[str, Any], metric: str) -> dict[str, Any]:
    """The evidence `judge_challenger` decides on: the task metric's as it is, or with `gate.metric = "value"`
    the value gain's figures in its place (the same rules then read them: superior, non-inferior and stale)."""
    if metric != "value":
        return evidence
    v = evidence.get("business_value")
    if v is None:
        raise ValueError("gate.metric = \"value\" but the evidence has no value: the gate needs a [value] cost matrix")
    return {**evidence, "metric": "value", "gain_unit": VALUE_UNIT,
            **{k: v[k] for k in ("champion", "challenger", "gain", "ci_low", "ci_high", "se")}}


def segment_deltas(y: np.ndarray, p_champion: np.ndarray, p_challenger: np.ndarray, segments: np.ndarray,
                   min_rows: int, task: Task = BINARY) -> list[dict[str, Any]]:
    """The gain per segment value with at least `min_rows` rows and a defined metric, by segment name."""
    y = np.asarray(y)
    names = np.array(["null" if s is None else str(s) for s in np.asarray(segments, dtype=object)], dtype=object)
    if names.shape != y.shape:
        raise ValueError(f"got {names.shape[0]} segment values for {y.shape[0]} rows")
    p_champion, p_challenger = np.asarray(p_champion, np.float64), np.asarray(p_challenger, np.float64)
    out = []
    for name in sorted(set(names.tolist())):
        mask = names == name
        if mask.sum() < min_rows:
            continue
        a, b = task.primary_value(y[mask], p_champion[mask]), task.primary_value(y[mask], p_challenger[mask])
        if a is None or b is None:
            continue
        out.append({"segment": name, "n": int(mask.sum()), "champion": a, "challenger": b, "gain": float(task.gain(a, b))})
    return out


# -- power ------------------------------------------------------------------------------
def detectable_gain(y: np.ndarray, p_champion: np.ndarray, *, confidence: float, correlation: float,
                    task: Task = BINARY, n_boot: int = 200, seed: int = 0) -> dict[str, Any]:
    """The smallest gain the gate could tell from zero on this holdout, before any challenger exists.

    The champion's metric is bootstrapped on the holdout; its standard error, in the gain's
    unit, times sqrt(2 (1 - rho)) is the standard error of a paired gain between two models
    whose resampled metrics correlate at rho; z of the confidence times that is the minimum
    detectable gain (the half-width of the gate's interval).
    """
    y = np.asarray(y)
    n = len(y)
    base = task.primary_value(y, p_champion)
    if base is None or n < 2:
        return {"n": int(n), "mde": float("inf"), "se_metric": None, "se_gain": None, "z": None,
                "correlation": correlation, "confidence": confidence}
    on_champion = task.resampled(y, p_champion)
    values = np.concatenate([on_champion(idx) for idx in resample_indices(n, n_boot, seed)])
    values = values[~np.isnan(values)]
    # The same metric shift seen as a gain: for a relative gain, divide by the metric's level.
    se_metric = float(np.std(values, ddof=1))
    se_in_gain = abs(float(task.gain(base, base + se_metric)))
    se_gain = se_in_gain * float(np.sqrt(2.0 * (1.0 - correlation)))
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    return {"n": int(n), "metric": task.primary.name, "champion": base, "se_metric": se_metric,
            "se_gain": se_gain, "z": z, "mde": z * se_gain, "correlation": correlation, "confidence": confidence}


def detectable_value_gain(v_champion: np.ndarray, *, confidence: float, correlation: float) -> dict[str, Any]:
    """`detectable_gain` for the business value per row (gate.metric = "value"), in closed form: the mean's
    standard error is sd / sqrt(n), and a paired gain's is that times sqrt(2 (1 - rho))."""
    v = np.asarray(v_champion, np.float64)
    n = len(v)
    if n < 2:
        return {"n": int(n), "metric": "value", "mde": float("inf"), "se_metric": None, "se_gain": None, "z": None,
                "correlation": correlation, "confidence": confidence}
    se_metric = float(np.std(v, ddof=1) / np.sqrt(n))
    se_gain = se_metric * float(np.sqrt(2.0 * (1.0 - correlation)))
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    return {"n": int(n), "metric": "value", "champion": float(np.mean(v)), "se_metric": se_metric, "se_gain": se_gain,
            "z": z, "mde": z * se_gain, "correlation": correlation, "confidence": confidence}


@dataclass(frozen=True)
class PowerVerdict:
    enough: bool
    reasons: tuple[str, ...]
    required_rows: int | None


def judge_power(power: dict[str, Any], gate: "GateSettings") -> PowerVerdict:
    """Can this holdout resolve the gate's margin? If not, how many rows would."""
    n, mde = power["n"], power["mde"]
    if not np.isfinite(mde):
        return PowerVerdict(False, (f"the holdout's {n} rows give no defined {power.get('metric', 'metric')} for the champion",), None)
    required = int(np.ceil(round(n * (mde / gate.margin) ** 2, 6))) if gate.margin > 0 else None
    if gate.margin > 0 and mde <= gate.margin:
        return PowerVerdict(True, (f"the holdout's {n} rows resolve a gain of {mde:.4f} at {power['confidence']:.0%}, "
                                   f"within the margin {gate.margin:.4f}",), required)
    need = f"about {required} holdout rows" if required else "a positive gate.margin"
    return PowerVerdict(False, (
        f"the holdout's {n} rows cannot resolve the margin: the minimum detectable gain is {mde:.4f} "
        f"(standard error {power['se_gain']:.4f}, {power['confidence']:.0%} confidence, assumed correlation "
        f"{power['correlation']:.2f}) but gate.margin is {gate.margin:.4f}; a challenger would end INSUFFICIENT_EVIDENCE. "
        f"It would take {need} (more days of labels, or raise training.holdout_max_days), or a wider gate.margin",), required)


def judgeable_by(rows: int, days: int, max_days: int, required_rows: int | None, mde: float | None,
                 gate: "GateSettings") -> dict[str, Any]:
    """What would make a holdout that cannot judge able to (pure): the rows and days it would take, and the margin
    its rows resolve now; with the settings it was sized under, so a policy can tell when its grounds change."""
    need = max(int(required_rows or 0), gate.min_rows)
    per_day = rows / days if days else 0.0
    days_needed = int(np.ceil(need / per_day)) if per_day > 0 else None
    words = [f"the holdout holds {rows} rows over {days} labelled days ({per_day:.1f} a day) and judging needs about {need}"]
    if days_needed is not None:
        words.append(f"set training.holdout_max_days to at least {days_needed} (now {max_days})")
    if mde is not None and np.isfinite(mde) and rows >= gate.min_rows:
        words.append(f"or gate.margin to {mde:.4f}, the gain these {rows} rows can resolve (now {gate.margin:.4f})")
    return {"rows": int(rows), "days": int(days), "max_days": int(max_days), "required_rows": need,
            "days_needed": days_needed, "resolvable_margin": None if mde is None or not np.isfinite(mde) else float(mde),
            "settings": judge_settings(gate, max_days), "words": "; ".join(words[:1]) + (": " + ", ".join(words[1:]) if words[1:] else "")}


def judge_settings(gate: "GateSettings", max_days: int) -> dict[str, Any]:
    """The settings that decide whether a holdout can judge: a deferral's grounds change when they do."""
    return {"margin": gate.margin, "min_rows": gate.min_rows, "confidence": gate.confidence, "power_check": gate.power_check,
            "assumed_correlation": gate.assumed_correlation, "holdout_max_days": max_days}


# -- which holdout judges ----------------------------------------------------------------
@dataclass(frozen=True)
class HoldoutChoice:
    since_onset: bool  # judge on the holdout's rows from the onset on; else on the whole holdout
    reasons: tuple[str, ...]  # what the verdict and the record say about the choice (empty: nothing to say)
    power_short: bool = False  # judged since the onset although those rows cannot resolve the margin


def choose_holdout(onset: str | None, holdout_days: list[str], onset_rows: int, too_few: tuple[str, ...],
                   power: dict[str, Any] | None, gate: "GateSettings") -> HoldoutChoice:
    """Judge on the holdout's rows since the drift onset, or on the whole holdout?

    After a drift, production is in the world since the onset, and a holdout of mostly older
    days judges the challenger on a world production has left: a bias that no number of rows
    removes. The rows since the onset answer the right question. They are fewer, which only
    widens the interval: a wide interval ends INSUFFICIENT_EVIDENCE more often, it never lets a
    worse challenger through (the lower bound must still clear -margin). So they judge whenever
    they hold the minimum evidence (`too_few`: the task's reasons they do not, computed on
    them), and, with `gate.onset_needs_power`, when they can also resolve the margin
    (`power`: `detectable_gain` on the same rows, None when not checked).
    """
    if onset is None or not gate.onset_aware:
        return HoldoutChoice(False, () if onset is None else (f"judged on the whole holdout: gate.onset_aware is off "
                                                              f"(drift onset {onset})",))
    since = [d for d in holdout_days if d >= onset]
    if not since:
        return HoldoutChoice(False, (f"judged on the whole holdout: none of its days is on or after the drift onset {onset}",))
    if len(since) == len(holdout_days):
        return HoldoutChoice(False, ())  # every day is since the onset: the whole holdout is the new world
    span = f"{onset_rows} rows of the {len(since)} of {len(holdout_days)} holdout days since the drift onset {onset}"
    if too_few:
        return HoldoutChoice(False, (f"judged on the whole holdout: the {span} are too few ({'; '.join(too_few)})",))
    judged = judge_power(power, gate) if power is not None and gate.power_check else None
    short = judged is not None and not judged.enough
    if short and gate.onset_needs_power:
        return HoldoutChoice(False, (f"judged on the whole holdout: the {span} cannot resolve the margin "
                                     f"(minimum detectable gain {power['mde']:.4f} > {gate.margin:.4f}; gate.onset_needs_power)",))
    reasons = [f"judged on the {span}: production is in the world since the onset"]
    if short:
        reasons.append(f"those rows resolve a gain of {power['mde']:.4f}, wider than the margin {gate.margin:.4f}: a challenger "
                       f"equal to the champion would end INSUFFICIENT_EVIDENCE; one is promoted more often than not only with "
                       f"a gain above about {power['mde'] - gate.margin:+.4f}")
    return HoldoutChoice(True, tuple(reasons), short)


# -- verdicts -------------------------------------------------------------------------
SUPERIOR, STALE = "superior", "stale"  # why a PROMOTE replaces the champion (`Verdict.basis`)

# The policy's signal names (`monitoring.policy`) that make a champion known stale: the inputs
# moved (a drift episode), or its realized metric fell below its own holdout reference beyond noise.
DRIFT_SIGNALS = frozenset({"drift_persisted", "drift_cusum", "alarm_estimated_drop"})
REALIZED_DROP_SIGNALS = frozenset({"realized_drop", "realized_change"})


@dataclass(frozen=True)
class Verdict:
    verdict: str  # PROMOTE | REJECT | INSUFFICIENT_EVIDENCE
    reasons: tuple[str, ...]
    basis: str | None = None  # a PROMOTE's reason to swap: SUPERIOR or STALE

    def as_dict(self) -> dict[str, Any]:
        return {"verdict": self.verdict, "reasons": list(self.reasons), "basis": self.basis}


def champion_staleness(fired: frozenset[str] | set[str], onset: str | None, judged_days: list[str]) -> str | None:
    """Why the champion is known stale, or None (pure).

    Known stale: the retrain's decision fired a realized drop (the champion's realized metric
    below its own holdout reference beyond noise), or it answered a drift (a drift signal fired)
    and the challenger was judged on rows since the onset only, i.e. on the world production is in.
    A drift whose challenger was judged on older rows says nothing about the champion there.
    """
    realized = sorted(set(fired) & REALIZED_DROP_SIGNALS)
    if realized:
        return f"the champion's realized metric is below its own holdout reference beyond noise ({', '.join(realized)})"
    drift = sorted(set(fired) & DRIFT_SIGNALS)
    if drift and onset is not None and judged_days and min(judged_days) >= onset:
        return (f"a drift since {onset} ({', '.join(drift)}) and the challenger was judged on the rows since the onset "
                f"({len(judged_days)} days)")
    return None


def prediction_churn(task: Task, p_champion: np.ndarray, p_challenger: np.ndarray, threshold: float,
                     challenger_threshold: float | None = None) -> dict[str, Any]:
    """What a swap changes for the consumers of the predictions, on the holdout.

    Where the task scores a decision (binary: score >= threshold), the share of rows whose
    decision flips; otherwise the mean absolute change of the prediction. Both report the mean
    absolute change of the score. `challenger_threshold`: where the challenger decides at a
    threshold of its own (scoring.threshold = "value"); None: at the champion's.
    """
    a, b = np.asarray(p_champion, np.float64), np.asarray(p_challenger, np.float64)
    names = [name for name, _ in task.output_fields()]
    out: dict[str, Any] = {"n": int(len(a)), "mean_abs_change": float(np.mean(np.abs(a - b))) if len(a) else 0.0}
    if "decision" in names:
        i = names.index("decision")
        tb = threshold if challenger_threshold is None else challenger_threshold
        da = task.output_arrays(a, threshold)[i].to_numpy(zero_copy_only=False)
        db = task.output_arrays(b, tb)[i].to_numpy(zero_copy_only=False)
        out.update(kind="decision_flips", value=float(np.mean(da != db)) if len(a) else 0.0, threshold=float(threshold))
        if tb != threshold:
            out["challenger_threshold"] = float(tb)
    else:
        out.update(kind="mean_abs_change", value=out["mean_abs_change"])
    return out


def _churn_words(churn: dict[str, Any] | None) -> str:
    if not churn:
        return ""
    if churn["kind"] == "decision_flips":
        at = (f"thresholds {churn['threshold']:g} -> {churn['challenger_threshold']:g}" if churn.get("challenger_threshold")
              is not None else f"threshold {churn['threshold']:g}")
        return f"the swap flips {churn['value']:.2%} of the holdout's decisions ({at})"
    return f"the swap changes the holdout's predictions by {churn['value']:.4g} on average"


def judge_challenger(evidence: dict[str, Any], segments: list[dict[str, Any]], gate: "GateSettings", *,
                     stale: str | None = None) -> Verdict:
    """Promote only with a reason to swap: superior, or non-inferior while the champion is known stale.

    `evidence`: `paired_bootstrap`'s output plus `too_few`, the task's reasons the holdout is
    too small (empty when it is not), and optionally `churn` (`prediction_churn`).
    `stale`: why the champion is known stale (`champion_staleness`), None when it is not.

    - SUPERIOR: the interval's lower bound is above gate.min_gain (0 by default): the challenger
      is better, at the gate's confidence.
    - STALE: the lower bound is above -gate.margin (non-inferior) and the champion is known stale.
    Without either, a swap would change predictions (churn) for no shown gain: REJECT. An equal
    challenger is thus promoted at most (1 - confidence) / 2 of the time on a fresh champion,
    and one worse by the margin at most that often on a stale one (benchmarks/gate_calibration.py).
    """
    metric = evidence.get("metric", "metric")
    gain, lo, hi = evidence["gain"], evidence["ci_low"], evidence["ci_high"]
    ci = f"gain {gain:+.4f}, {evidence.get('confidence', gate.confidence):.0%} CI [{lo:+.4f}, {hi:+.4f}]"
    churn = evidence.get("churn")

    if evidence.get("too_few"):
        return Verdict(INSUFFICIENT_EVIDENCE, tuple(evidence["too_few"]))

    worse = [s for s in segments if s["gain"] < -gate.segment_margin]
    if worse:
        return Verdict(REJECT, tuple(
            f"segment {s['segment']!r} loses {s['gain']:+.4f} on {s['n']} rows, more than the segment margin {gate.segment_margin:.4f}"
            for s in worse
        ))

    if lo <= -gate.margin:
        if hi < 0:
            return Verdict(REJECT, (f"challenger is worse: {ci} lies entirely below 0",))
        return Verdict(INSUFFICIENT_EVIDENCE, (
            f"cannot rule out a loss larger than the margin {gate.margin:.4f}: {ci} reaches {lo:+.4f} <= {-gate.margin:+.4f}",
        ))

    superior = lo > gate.min_gain
    if not superior and stale is None:
        return Verdict(REJECT, tuple(x for x in (
            f"no reason to swap: non-inferior within the margin {gate.margin:.4f} but not shown superior ({ci}: the lower "
            f"bound is not above gate.min_gain {gate.min_gain:.4f}), and the champion is not known stale (no drift answered "
            f"on the rows since its onset, no realized drop below its holdout reference)",
            _churn_words(churn)) if x))

    if not superior and hi < 0:  # a stale champion is still better on the rows judged: the swap would lose
        return Verdict(REJECT, (f"the champion is known stale ({stale}) but the challenger is shown worse on the rows "
                                f"judged: {ci} lies entirely below 0",))

    if gate.max_churn is not None and churn and churn["value"] > gate.max_churn:
        return Verdict(REJECT, (f"{_churn_words(churn)}, more than gate.max_churn {gate.max_churn:g}: raise gate.max_churn "
                                f"to allow it, or keep the champion ({ci})",))

    scored = f"{metric} {evidence['champion']:.4f} -> {evidence['challenger']:.4f} on {evidence['n']} rows"
    words = [_churn_words(churn)] if churn else []
    if superior:
        why = f"superior: {ci}, the lower bound above gate.min_gain {gate.min_gain:.4f}; {scored}"
        return Verdict(PROMOTE, (why, *([f"the champion is also known stale: {stale}"] if stale else []), *words), SUPERIOR)
    return Verdict(PROMOTE, (f"non-inferior within the margin {gate.margin:.4f} and the champion is known stale: {stale}; "
                             f"{ci}; {scored}", *words), STALE)


def judge_first_model(value: float | None, metric: str, floor: float, higher_is_better: bool,
                      too_few: tuple[str, ...], n: int) -> Verdict:
    """No champion yet: promote on absolute thresholds (enough rows, the task's bar)."""
    if too_few:
        return Verdict(INSUFFICIENT_EVIDENCE, too_few)
    if value is None:
        return Verdict(INSUFFICIENT_EVIDENCE, (f"first model's holdout {metric} is undefined on {n} rows",))
    if (value < floor) if higher_is_better else (value > floor):
        side = "below" if higher_is_better else "above"
        return Verdict(REJECT, (f"first model's holdout {metric} {value:.4f} is {side} the bar {floor:.4f} (gate.first_model_floor)",))
    return Verdict(PROMOTE, (f"first model: holdout {metric} {value:.4f} meets the bar {floor:.4f} on {n} rows",), "first_model")
