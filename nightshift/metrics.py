"""Metric math that a vectorised bootstrap needs (numpy only): exact AUC, resampled AUC and RMSE.

Everything else (log loss, Brier, accuracy, MAE, R²) comes from scikit-learn in
`nightshift.task`. AUC is here because the gate computes a thousand weighted AUCs at once,
which scikit-learn cannot do without a Python loop; `auc` agrees with
`sklearn.metrics.roc_auc_score` (tested).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

_CELLS_PER_CHUNK = 250_000  # resample index cells held at once: bounds bootstrap memory, and keeps the bincount's
# counts in cache (2,000,000 took 2.5x as long at 200,000 rows; the draws are the same for any chunk)


# -- AUC ------------------------------------------------------------------------------
def auc(y: np.ndarray, p: np.ndarray, w: np.ndarray | None = None) -> float:
    """Exact ROC AUC; tied scores count 1/2; optional non-negative row weights."""
    y, p = check_binary(y, p)
    w = np.ones(len(y)) if w is None else np.asarray(w, dtype=np.float64)
    if w.shape != y.shape or np.any(w < 0) or not np.all(np.isfinite(w)):
        raise ValueError("weights must be finite, non-negative and one per row")
    groups, n_groups = score_groups(p)
    pos = np.bincount(groups, weights=w * y, minlength=n_groups)
    neg = np.bincount(groups, weights=w * (1 - y), minlength=n_groups)
    value = auc_from_groups(pos, neg)
    if np.isnan(value):
        raise ValueError("AUC is undefined: the (weighted) data has only one class")
    return float(value)


def score_groups(p: np.ndarray) -> tuple[np.ndarray, int]:
    """Each row's rank among the distinct scores (ties share one), and how many there are."""
    distinct, groups = np.unique(p, return_inverse=True)
    return groups.reshape(-1), len(distinct)


def auc_from_groups(pos: np.ndarray, neg: np.ndarray) -> np.ndarray:
    """AUC from positive/negative weight per score group, groups in ascending score; [..., G] -> [...]."""
    # A positive beats every negative in a lower group and ties half of those in its own.
    neg_below = np.cumsum(neg, axis=-1) - neg
    num = np.sum(pos * (neg_below + 0.5 * neg), axis=-1)
    den = pos.sum(axis=-1) * neg.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def resampled_aucs(y: np.ndarray, groups: np.ndarray, n_groups: int, idx: np.ndarray) -> np.ndarray:
    """AUC of each resample (row of `idx`) at once: one bincount over (resample, score group, label)."""
    b = idx.shape[0]
    key = (groups * 2 + y)[idx]  # one gather: the row's (score group, label) cell
    key += (np.arange(b, dtype=np.int64) * (n_groups * 2))[:, None]
    counts = np.bincount(key.ravel(), minlength=b * n_groups * 2).reshape(b, n_groups, 2)
    pos, neg = counts[..., 1], counts[..., 0]
    # As `auc_from_groups`, in integer sums without the temporaries: a positive beats every negative
    # in a lower group and ties half of those in its own.
    num = np.einsum("ij,ij->i", pos, np.cumsum(neg, axis=-1)) - 0.5 * np.einsum("ij,ij->i", pos, neg)
    den = pos.sum(axis=-1) * neg.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)


def resampled_rmses(y: np.ndarray, p: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """RMSE of each resample (row of `idx`) at once."""
    sq = (np.asarray(y, np.float64) - np.asarray(p, np.float64)) ** 2
    return np.sqrt(sq[idx].mean(axis=1))


def resample_indices(n: int, n_boot: int, seed: int) -> Iterator[np.ndarray]:
    """Row indices of each resample, [chunk, n] at a time; the same for the same (n, n_boot, seed)."""
    rng = np.random.default_rng(seed)
    chunk = max(1, min(n_boot, _CELLS_PER_CHUNK // max(n, 1)))
    for start in range(0, n_boot, chunk):
        yield rng.integers(0, n, size=(min(chunk, n_boot - start), n))


# -- checks ---------------------------------------------------------------------------
def check_binary(y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y, p = check_pair(y, p)
    if not np.all((y == 0) | (y == 1)):
        raise ValueError("labels must be 0/1")
    return y.astype(np.int64), p


def check_pair(y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y)
    p = np.asarray(p, dtype=np.float64)
    if y.ndim != 1 or y.shape != p.shape:
        raise ValueError(f"labels and predictions must be 1-d and the same length, got {y.shape} and {p.shape}")
    if not np.all(np.isfinite(p)):
        raise ValueError("predictions must be finite")
    return y, p


# -- standard errors and pooled statistics ----------------------------------------------
def hanley_mcneil_se(auc_value: float, n_pos: float, n_neg: float) -> float | None:
    """Standard error of an AUC from Hanley & McNeil (1982): closed form, from the AUC and the class counts.

    Used instead of a bootstrap because the policy needs it every night, on pooled windows of
    up to millions of rows, at no cost; it is close to the bootstrap's for AUCs away from 1.
    Counts may be fractional (expected counts under calibrated scores).
    """
    if auc_value is None or not np.isfinite(auc_value) or n_pos <= 0 or n_neg <= 0:
        return None
    a = float(auc_value)
    q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
    var = (a * (1 - a) + (n_pos - 1) * (q1 - a * a) + (n_neg - 1) * (q2 - a * a)) / (n_pos * n_neg)
    return float(np.sqrt(max(var, 0.0)))


SCORE_BINS = 1 << 14  # pooled AUC: scores binned this finely (ties within a bin count 1/2: error < 1e-4)


def score_bins(p: np.ndarray) -> np.ndarray:
    """Each score's bin in [0, SCORE_BINS): additive histograms make pooled AUCs cheap."""
    return np.minimum((np.clip(np.asarray(p, np.float64), 0.0, 1.0) * SCORE_BINS).astype(np.int64), SCORE_BINS - 1)


def pool(parts: "list[dict[str, np.ndarray | float]]") -> "dict[str, np.ndarray | float] | None":
    """Add sufficient statistics (dicts of the same keys) over days: the pooled rows' statistics."""
    parts = [p for p in parts if p]
    if not parts:
        return None
    return {k: sum((p[k] for p in parts[1:]), parts[0][k]) for k in parts[0]}
