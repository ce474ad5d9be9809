"""Hotelling's two-sample T² on the numeric features' means, all at once, with its exact F p-value
(scipy; no alibi-detect). Family OWN_LEVEL: it asks its own question, at `drift.p_val`.

Each feature is standardised by the reference's mean and sd, and a missing value is put at the
reference's mean (missingness is the KS tests' business). The effect is the Mahalanobis
distance between the two means, in reference sd; its floor is the larger of
`drift.min_effect_mean` and the distance's own (1 - p_val) quantile when nothing changed. It
weighs every feature's shift together, in the features' own correlation: a drift that has moved
10% of a 200-row night is one clear number here, and below every KS floor. Time-index features
(`dataset.time_index`) stay out of it. Off with `drift.mean_test = false`.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from monitoring.detectors import DetectorResult, Family, Night

MEAN_FEATURE = "(numeric means)"  # the row of the multivariate mean test


class MeanShift:
    family = Family.OWN_LEVEL

    def run(self, night: Night) -> list[DetectorResult]:
        if not night.cfg.mean_test:
            return []
        numeric = [c for c in night.numeric if c not in night.time_index]
        result = hotelling(night.reference, night.sample, numeric, night.cfg.p_val, night.cfg.min_effect_mean)
        return [] if result is None else [result]


def hotelling(reference: pa.Table, sample: pa.Table, numeric: list[str], alpha: float,
              min_effect: float) -> DetectorResult | None:
    """The test on `numeric`; None when it cannot run (too few rows, nothing left to test)."""
    from scipy.stats import f as f_dist

    def matrix(t: pa.Table) -> np.ndarray:
        return np.column_stack([pc.fill_null(pc.cast(t.column(c), pa.float64()), np.nan).to_numpy(zero_copy_only=False)
                                for c in numeric]) if numeric else np.empty((t.num_rows, 0))

    if reference.num_rows <= len(numeric):
        return None
    x_ref, x = matrix(reference), matrix(sample)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-missing reference column: NaN, dropped below
        mu, sd = np.nanmean(x_ref, axis=0), np.nanstd(x_ref, axis=0)
    keep = np.isfinite(mu) & np.isfinite(sd) & (sd > 0)  # a constant or all-missing reference column carries no mean test
    x_ref, x = (np.nan_to_num((a[:, keep] - mu[keep]) / sd[keep]) for a in (x_ref, x))
    p, m, n = int(keep.sum()), len(x_ref), len(x)
    if p == 0 or n < 2 or n + m - p - 1 < 1 or m <= p or n + m - 2 <= p:
        return None
    d = x.mean(axis=0) - x_ref.mean(axis=0)
    pooled = ((m - 1) * np.cov(x_ref, rowvar=False).reshape(p, p) + (n - 1) * np.cov(x, rowvar=False).reshape(p, p)) / (n + m - 2)
    pooled += np.eye(p) * 1e-9 * max(float(np.trace(pooled)) / p, 1e-12)  # collinear features: still invertible
    dist2 = float(d @ np.linalg.solve(pooled, d))  # squared Mahalanobis distance between the means
    t2 = dist2 / (1.0 / n + 1.0 / m)
    df2 = n + m - p - 1
    scale = p * (n + m - 2) / df2
    p_value = float(f_dist.sf(t2 / scale, p, df2))
    null_q = math.sqrt(scale * float(f_dist.isf(alpha, p, df2)) * (1.0 / n + 1.0 / m))
    return DetectorResult(MEAN_FEATURE, "multivariate", "Hotelling T2", t2, p_value, math.sqrt(max(dist2, 0.0)),
                          "mahalanobis", max(min_effect, null_q))
