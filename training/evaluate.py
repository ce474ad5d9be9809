"""The promotion gate: AUC, paired bootstrap, segment guardrails, and the verdict.

Statistics are numpy only (no scikit-learn at runtime) because the bootstrap computes a
thousand weighted AUCs at once, which sklearn cannot do without a Python loop. `auc`
agrees with `sklearn.metrics.roc_auc_score` (tested). The judges are pure functions of
the evidence, so every rule has a table-driven test.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from nightshift.settings import GateSettings

PROMOTE, REJECT, INSUFFICIENT_EVIDENCE = "PROMOTE", "REJECT", "INSUFFICIENT_EVIDENCE"
MIN_CLASS_ROWS = 20  # fewer positives or negatives than this and an AUC says little
_CELLS_PER_CHUNK = 2_000_000  # resample index cells held at once: bounds bootstrap memory


# -- AUC ------------------------------------------------------------------------------
def auc(y: np.ndarray, p: np.ndarray, w: np.ndarray | None = None) -> float:
    """Exact ROC AUC; tied scores count 1/2; optional non-negative row weights."""
    y, p = _check(y, p)
    w = np.ones(len(y)) if w is None else np.asarray(w, dtype=np.float64)
    if w.shape != y.shape or np.any(w < 0) or not np.all(np.isfinite(w)):
        raise ValueError("weights must be finite, non-negative and one per row")
    groups, n_groups = _score_groups(p)
    pos = np.bincount(groups, weights=w * y, minlength=n_groups)
    neg = np.bincount(groups, weights=w * (1 - y), minlength=n_groups)
    value = _auc_from_groups(pos, neg)
    if np.isnan(value):
        raise ValueError("AUC is undefined: the (weighted) data has only one class")
    return float(value)


def _score_groups(p: np.ndarray) -> tuple[np.ndarray, int]:
    """Each row's rank among the distinct scores (ties share one), and how many there are."""
    distinct, groups = np.unique(p, return_inverse=True)
    return groups.reshape(-1), len(distinct)


def _auc_from_groups(pos: np.ndarray, neg: np.ndarray) -> np.ndarray:
    """AUC from positive/negative weight per score group, groups in ascending score; [..., G] -> [...]."""
    # A positive beats every negative in a lower group and ties half of those in its own.
    neg_below = np.cumsum(neg, axis=-1) - neg
    num = np.sum(pos * (neg_below + 0.5 * neg), axis=-1)
    den = pos.sum(axis=-1) * neg.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def _check(y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y)
    p = np.asarray(p, dtype=np.float64)
    if y.ndim != 1 or y.shape != p.shape:
        raise ValueError(f"labels and scores must be 1-d and the same length, got {y.shape} and {p.shape}")
    if not np.all((y == 0) | (y == 1)):
        raise ValueError("labels must be 0/1")
    if not np.all(np.isfinite(p)):
        raise ValueError("scores must be finite")
    return y.astype(np.int64), p


# -- paired bootstrap ------------------------------------------------------------------
def paired_bootstrap(
    y: np.ndarray, p_champion: np.ndarray, p_challenger: np.ndarray, *, n_boot: int, confidence: float, seed: int
) -> dict[str, Any]:
    """Percentile CI of AUC(challenger) - AUC(champion), both scored on the same resampled rows.

    Pairing matters: the two models err on many of the same rows, so the delta varies far
    less than either AUC, and an unpaired comparison would rarely find a real difference.
    """
    y, p_champion = _check(y, p_champion)
    _, p_challenger = _check(y, p_challenger)
    n = len(y)
    auc_champion, auc_challenger = auc(y, p_champion), auc(y, p_challenger)
    champion_groups, challenger_groups = _score_groups(p_champion), _score_groups(p_challenger)
    deltas = []
    for idx in _resample_indices(n, n_boot, seed):
        deltas.append(_resampled_aucs(y, *challenger_groups, idx) - _resampled_aucs(y, *champion_groups, idx))
    delta = np.concatenate(deltas)
    delta = delta[~np.isnan(delta)]  # a resample with one class only has no AUC
    if delta.size == 0:
        raise ValueError("no bootstrap resample had both classes")
    alpha = 1.0 - confidence
    return {
        "n": int(n),
        "n_pos": int(y.sum()),
        "auc_champion": auc_champion,
        "auc_challenger": auc_challenger,
        "delta": auc_challenger - auc_champion,
        "ci_low": float(np.quantile(delta, alpha / 2)),
        "ci_high": float(np.quantile(delta, 1 - alpha / 2)),
        "confidence": float(confidence),
        "n_boot": int(delta.size),
    }


def _resample_indices(n: int, n_boot: int, seed: int) -> Iterator[np.ndarray]:
    """Row indices of each resample, [chunk, n] at a time; the same for the same (n, n_boot, seed)."""
    rng = np.random.default_rng(seed)
    chunk = max(1, min(n_boot, _CELLS_PER_CHUNK // max(n, 1)))
    for start in range(0, n_boot, chunk):
        yield rng.integers(0, n, size=(min(chunk, n_boot - start), n))


def _resampled_aucs(y: np.ndarray, groups: np.ndarray, n_groups: int, idx: np.ndarray) -> np.ndarray:
    """AUC of each resample (row of `idx`) at once: one bincount over (resample, score group, label)."""
    b = idx.shape[0]
    key = (np.arange(b, dtype=np.int64)[:, None] * n_groups + groups[idx]) * 2 + y[idx]
    counts = np.bincount(key.ravel(), minlength=b * n_groups * 2).reshape(b, n_groups, 2)
    return _auc_from_groups(counts[..., 1], counts[..., 0])


def segment_deltas(
    y: np.ndarray, p_champion: np.ndarray, p_challenger: np.ndarray, segments: np.ndarray, min_rows: int
) -> list[dict[str, Any]]:
    """AUC delta per segment value with at least `min_rows` rows and both classes, by segment name."""
    y, p_champion = _check(y, p_champion)
    _, p_challenger = _check(y, p_challenger)
    names = np.array(["null" if s is None else str(s) for s in np.asarray(segments, dtype=object)], dtype=object)
    if names.shape != y.shape:
        raise ValueError(f"got {names.shape[0]} segment values for {y.shape[0]} rows")
    out = []
    for name in sorted(set(names.tolist())):
        mask = names == name
        ys = y[mask]
        if mask.sum() < min_rows or ys.min() == ys.max():
            continue
        a_champion, a_challenger = auc(ys, p_champion[mask]), auc(ys, p_challenger[mask])
        out.append({"segment": name, "n": int(mask.sum()), "auc_champion": a_champion,
                    "auc_challenger": a_challenger, "delta": a_challenger - a_champion})
    return out


# -- verdicts -------------------------------------------------------------------------
@dataclass(frozen=True)
class Verdict:
    verdict: str  # PROMOTE | REJECT | INSUFFICIENT_EVIDENCE
    reasons: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        return {"verdict": self.verdict, "reasons": list(self.reasons)}


def judge_challenger(evidence: dict[str, Any], segments: list[dict[str, Any]], gate: GateSettings) -> Verdict:
    """Promote only on enough rows, no segment regression, non-inferiority and the minimum gain."""
    n, n_pos = int(evidence["n"]), int(evidence["n_pos"])
    delta, lo, hi = evidence["delta"], evidence["ci_low"], evidence["ci_high"]
    ci = f"delta {delta:+.4f}, {evidence.get('confidence', gate.confidence):.0%} CI [{lo:+.4f}, {hi:+.4f}]"

    too_few = _too_few(n, n_pos, gate)
    if too_few:
        return Verdict(INSUFFICIENT_EVIDENCE, too_few)

    worse = [s for s in segments if s["delta"] < -gate.segment_margin]
    if worse:
        return Verdict(REJECT, tuple(
            f"segment {s['segment']!r} loses {s['delta']:+.4f} AUC on {s['n']} rows, more than the segment margin {gate.segment_margin:.4f}"
            for s in worse
        ))

    if lo <= -gate.margin:
        if hi < 0:
            return Verdict(REJECT, (f"challenger is worse: {ci} lies entirely below 0",))
        return Verdict(INSUFFICIENT_EVIDENCE, (
            f"cannot rule out a loss larger than the margin {gate.margin:.4f}: {ci} reaches {lo:+.4f} <= {-gate.margin:+.4f}",
        ))

    if delta < gate.min_gain:
        return Verdict(REJECT, (f"non-inferior but the gain is below the minimum {gate.min_gain:.4f}: {ci}",))

    return Verdict(PROMOTE, (
        f"non-inferior within margin {gate.margin:.4f} and gain at least {gate.min_gain:.4f}: {ci}; "
        f"AUC {evidence['auc_champion']:.4f} -> {evidence['auc_challenger']:.4f} on {n} rows",
    ))


def judge_first_model(auc_value: float, n: int, n_pos: int, gate: GateSettings) -> Verdict:
    """No champion yet: promote on absolute thresholds (rows, both classes, AUC bar)."""
    too_few = _too_few(n, n_pos, gate)
    if too_few:
        return Verdict(INSUFFICIENT_EVIDENCE, too_few)
    if auc_value < gate.first_model_min_auc:
        return Verdict(REJECT, (f"first model's holdout AUC {auc_value:.4f} is below the bar {gate.first_model_min_auc:.4f}",))
    return Verdict(PROMOTE, (
        f"first model: holdout AUC {auc_value:.4f} meets the bar {gate.first_model_min_auc:.4f} on {n} rows ({n_pos} positive)",
    ))


def _too_few(n: int, n_pos: int, gate: GateSettings) -> tuple[str, ...]:
    reasons = []
    if n < gate.min_rows:
        reasons.append(f"holdout has {n} rows, the gate needs {gate.min_rows}")
    if n_pos < MIN_CLASS_ROWS or n - n_pos < MIN_CLASS_ROWS:
        reasons.append(f"holdout has {n_pos} positives and {n - n_pos} negatives, the gate needs {MIN_CLASS_ROWS} of each")
    return tuple(reasons)
