"""What several detectors share: how a column is read, and the noise floors of their effects.

Not a detector (the registry does not name it).
"""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from nightshift.columns import category_strings

MISSING = -1e300  # below every real value: KS treats missing as its own, lowest, value
NULL = "\x00null"  # a missing category is a category of its own
TVD_DRAWS = 2000  # Monte Carlo draws for a categorical feature's noise level


def numeric(t: pa.Table, c: str) -> np.ndarray:
    """A numeric column as float64, missing values at `MISSING`."""
    v = pc.fill_null(pc.cast(t.column(c), pa.float64()), np.nan).to_numpy(zero_copy_only=False)
    return np.where(np.isnan(v), MISSING, v)


def categories(t: pa.Table, c: str) -> pa.Array:
    """A categorical column as strings, missing values as the category `NULL`."""
    return pc.fill_null(category_strings(t.column(c)), NULL).combine_chunks()


def ks_floor(n: int, m: int, alpha: float, minimum: float) -> float:
    """KS distance noise level: the asymptotic (1 - alpha) critical value at sample sizes n, m."""
    if not n or not m:
        return minimum
    return max(minimum, math.sqrt(-0.5 * math.log(alpha / 2)) * math.sqrt((n + m) / (n * m)))


def tvd(a: np.ndarray, b: np.ndarray) -> float:
    """Total variation distance between two samples' category shares."""
    cats = np.union1d(a, b)
    pa_ = (a[:, None] == cats).mean(axis=0)
    pb_ = (b[:, None] == cats).mean(axis=0)
    return float(0.5 * np.abs(pa_ - pb_).sum())


def tvd_floor(ref_codes: np.ndarray, n: int, alpha: float, minimum: float, seed: int) -> float:
    """TVD noise level: its (1 - alpha) quantile between two samples of sizes len(ref), n of the same categories."""
    m = len(ref_codes)
    if not n or not m:
        return minimum
    _, counts = np.unique(ref_codes, return_counts=True)
    p = counts / m
    rng = np.random.default_rng(seed)
    a = rng.multinomial(m, p, size=TVD_DRAWS) / m
    b = rng.multinomial(n, p, size=TVD_DRAWS) / n
    # effect >= floor must be rarer than alpha by chance: the quantile, and ties at it, fall below the floor
    q = float(np.quantile(0.5 * np.abs(a - b).sum(axis=1), 1 - alpha, method="higher"))
    return max(minimum, float(np.nextafter(q, np.inf)))
