"""The population stability index per feature, with the industry's bands. Family REPORT_ONLY: a
report the risk and credit world reads, never a verdict and never the alarm.

    PSI = sum over bins of (day share - reference share) * ln(day share / reference share)

- numeric: `BINS` (10) bins at the reference's deciles. Edges that tie (a value repeated over
  several deciles, a constant column) are merged, so a bin is never empty by construction; a
  bin is right-closed, (edge[i-1], edge[i]], and the outer ones are open-ended. A missing value
  is a bin of its own.
- categorical: per category, over the categories either side has (a missing value is a
  category; one the reference never saw is a bin whose reference share is empty).
- an empty bin's share is taken as `EPS` (1e-4), so a share that appears from nothing costs a
  large but finite PSI instead of an infinite one.

Bands (`band`): below 0.1 `stable`, 0.1 to 0.25 `moderate`, 0.25 and above `significant`.

PSI has no noise floor: between two samples of one distribution its expectation is about
(bins - 1) * (1/n + 1/m), so at 10 bins a 200-row night reads about 0.05 by chance alone and a
50-row night about 0.2. The bands are the industry's, fixed; read them with the night's size.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from monitoring.detectors import DetectorResult, Family, Night
from monitoring.detectors.common import categories
from nightshift.tables.drift import PSI_MODERATE as MODERATE
from nightshift.tables.drift import PSI_SIGNIFICANT as SIGNIFICANT

BINS = 10
EPS = 1e-4
STABLE_BAND, MODERATE_BAND, SIGNIFICANT_BAND = "stable", "moderate", "significant"


class PSI:
    family = Family.REPORT_ONLY

    def run(self, night: Night) -> list[DetectorResult]:
        if not night.sample.num_rows or not night.reference.num_rows:
            return []
        out = []
        for c in night.numeric:
            ref, day = numeric_shares(_floats(night.reference, c), _floats(night.sample, c))
            out.append(_result(c, "numeric", psi(ref, day)))
        for c in night.categorical:
            ref, day = category_shares(categories(night.reference, c), categories(night.sample, c))
            out.append(_result(c, "categorical", psi(ref, day)))
        return out


def _result(feature: str, of: str, value: float) -> DetectorResult:
    return DetectorResult(feature, "psi", f"PSI ({of})", value, None, value, "psi", None, band=band(value))


def band(value: float) -> str:
    """The industry's reading of a PSI: stable below 0.1, moderate to 0.25, significant from 0.25."""
    return STABLE_BAND if value < MODERATE else MODERATE_BAND if value < SIGNIFICANT else SIGNIFICANT_BAND


def psi(ref_share: np.ndarray, day_share: np.ndarray, eps: float = EPS) -> float:
    """PSI between two share vectors over the same bins (an empty share counts as `eps`)."""
    p = np.maximum(np.asarray(ref_share, np.float64), eps)
    q = np.maximum(np.asarray(day_share, np.float64), eps)
    return float(np.sum((q - p) * np.log(q / p)))


def _floats(t: pa.Table, c: str) -> np.ndarray:
    return pc.fill_null(pc.cast(t.column(c), pa.float64()), np.nan).to_numpy(zero_copy_only=False)


def edges(reference: np.ndarray, bins: int = BINS) -> np.ndarray:
    """Inner bin edges at the reference's quantiles, ties merged (missing values ignored)."""
    real = reference[~np.isnan(reference)]
    if not len(real):
        return np.empty(0)
    return np.unique(np.quantile(real, np.linspace(0, 1, bins + 1)[1:-1]))


def numeric_shares(reference: np.ndarray, day: np.ndarray, bins: int = BINS) -> tuple[np.ndarray, np.ndarray]:
    """(reference shares, day shares) over the reference's quantile bins, plus a last bin for missing values."""
    e = edges(reference, bins)

    def shares(x: np.ndarray) -> np.ndarray:
        missing = np.isnan(x)
        counts = np.bincount(np.searchsorted(e, x[~missing], side="left"), minlength=len(e) + 1)
        return np.append(counts, missing.sum()) / max(len(x), 1)

    return shares(reference), shares(day)


def category_shares(reference: pa.Array, day: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(reference shares, day shares) per category either side has, in order of first appearance."""
    both = pa.concat_arrays([reference, day]).dictionary_encode()
    codes, k = both.indices.to_numpy(zero_copy_only=False), len(both.dictionary)
    m = len(reference)
    return (np.bincount(codes[:m], minlength=k) / max(m, 1),
            np.bincount(codes[m:], minlength=k) / max(len(day), 1))
