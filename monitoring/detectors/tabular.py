"""Each feature on its own: Kolmogorov-Smirnov for numeric, chi-squared for categorical (alibi-detect's
`TabularDrift`). Family FDR: Benjamini-Hochberg runs across these and the unseen-category tests.

A missing numeric value is a value below every real one, so a change in missingness is drift
too; a category unseen in the reference is its own category. The effect is the KS distance
(numeric) or the total variation distance (categorical), and its floor the larger of the
configured minimum and the statistic's own noise level at the night's sample sizes.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from monitoring.detectors import DetectorResult, Family, Night
from monitoring.detectors.common import categories, ks_floor, numeric, tvd, tvd_floor


class TabularTests:
    family = Family.FDR

    def run(self, night: Night) -> list[DetectorResult]:
        from alibi_detect.cd import TabularDrift

        num, cat, cfg = list(night.numeric), list(night.categorical), night.cfg
        if not num and not cat:
            return []
        ref_cols = [numeric(night.reference, c) for c in num]
        x_cols = [numeric(night.sample, c) for c in num]
        for c in cat:
            r, x = categories(night.reference, c), categories(night.sample, c)
            vocab = pc.unique(pa.concat_arrays([r, x])).sort()
            ref_cols.append(pc.index_in(r, vocab).to_numpy(zero_copy_only=False).astype(np.float64))
            x_cols.append(pc.index_in(x, vocab).to_numpy(zero_copy_only=False).astype(np.float64))
        x_ref, x = np.column_stack(ref_cols), np.column_stack(x_cols)
        n_num, n, m = len(num), len(x), len(x_ref)
        cat_idx = {n_num + j: None for j in range(len(cat))}
        # FDR is applied across the whole FDR family by the orchestration, so here each test keeps its own p-value.
        detector = TabularDrift(x_ref, p_val=cfg.p_val, categories_per_feature=cat_idx or None, correction="fdr")
        out = detector.predict(x, drift_type="feature", return_p_val=True, return_distance=True)["data"]
        p_vals, dist = np.asarray(out["p_val"], np.float64), np.asarray(out["distance"], np.float64)

        results = []
        for i, name in enumerate([*num, *cat]):
            if i < n_num:
                effect, floor = float(dist[i]), ks_floor(n, m, cfg.p_val, cfg.min_effect_numeric)
            else:
                effect = tvd(x_ref[:, i], x[:, i])
                floor = tvd_floor(x_ref[:, i], n, cfg.p_val, cfg.min_effect_categorical, night.seed + i)
            results.append(DetectorResult(name, "numeric" if i < n_num else "categorical", "KS" if i < n_num else "chi2",
                                          float(dist[i]), float(p_vals[i]), effect,
                                          "ks_distance" if i < n_num else "total_variation", floor))
        return results
