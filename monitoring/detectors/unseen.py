"""Unseen categories, per categorical feature: the share of the night's rows whose category the
reference never saw, against the share chance gives. Family FDR.

Under no change, the chance that a row's category is unseen in a reference of m rows is about
the Good-Turing missing mass: (categories seen exactly once) / m. The p-value is the binomial
tail of the night's unseen count at that rate (at least 1/m); the floor is the larger of
`drift.min_unseen_share` and that rate.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from monitoring.detectors import DetectorResult, Family, Night
from monitoring.detectors.common import categories


class UnseenCategories:
    family = Family.FDR

    def run(self, night: Night) -> list[DetectorResult]:
        return [unseen_share(night.reference, night.sample, c, night.cfg.min_unseen_share) for c in night.categorical]


def unseen_share(reference: pa.Table, sample: pa.Table, feature: str, min_share: float) -> DetectorResult:
    """One categorical feature's unseen-category test."""
    from scipy.stats import binom

    r, x = categories(reference, feature), categories(sample, feature)
    m, n = len(r), len(x)
    values, counts = np.unique(r.to_numpy(zero_copy_only=False), return_counts=True)
    missing_mass = max(float((counts == 1).sum()) / max(m, 1), 1.0 / max(m, 1))
    new = pc.invert(pc.is_in(x, pa.array(values, pa.string())))
    unseen = x.filter(new)
    k = len(unseen)
    p = float(binom.sf(k - 1, n, missing_mass)) if k else 1.0
    share = k / n if n else 0.0
    top = []
    if k:
        vc = pc.value_counts(unseen).to_pylist()
        top = [v["values"] for v in sorted(vc, key=lambda v: -v["counts"])[:5]]
    return DetectorResult(feature, "unseen", "unseen_share", share, p, share, "unseen_share",
                          max(min_share, missing_mass), unseen_rows=k, unseen_values=", ".join(top) or None)
