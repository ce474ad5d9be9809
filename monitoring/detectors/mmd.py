"""Maximum mean discrepancy (alibi-detect's `MMDDrift`, `backend="pytorch"`) between fixed-size
samples of the reference and the night, in the model's own input space (standardised numerics,
missing flags, category embeddings), with its permutation-test p-value. Family OWN_LEVEL: it
tests the joint distribution, a question of its own, at `drift.p_val`.

Runs when the night has the model's `embed` and `drift.mmd_sample_size` > 0. Its floor is the
larger of `drift.min_effect_mmd` and the permutation null's (1 - p_val) quantile.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from monitoring.detectors import DetectorResult, Family, Night

MMD_FEATURE = "(all features)"  # the row of the MMD test


class MMD:
    family = Family.OWN_LEVEL

    def run(self, night: Night) -> list[DetectorResult]:
        if night.embed is None or not night.cfg.mmd_sample_size:
            return []
        import torch
        from alibi_detect.cd import MMDDrift

        cfg = night.cfg
        rng = np.random.default_rng(night.seed)

        def pick(t: pa.Table) -> pa.Table:
            k = min(cfg.mmd_sample_size, t.num_rows)
            return t.take(pa.array(np.sort(rng.choice(t.num_rows, size=k, replace=False))))

        x_ref, x = night.embed(pick(night.reference)), night.embed(pick(night.sample))
        torch.manual_seed(night.seed % (2**31))
        detector = MMDDrift(x_ref, backend="pytorch", p_val=cfg.p_val, n_permutations=cfg.mmd_permutations, device="cpu")
        out = detector.predict(x, return_p_val=True, return_distance=True)["data"]
        stat, null_q = float(out["distance"]), float(out["distance_threshold"])
        # the permutation p-value counts the observed statistic among the permutations: never below 1/(B+1)
        p = max(float(out["p_val"]), 1.0 / (cfg.mmd_permutations + 1))
        return [DetectorResult(MMD_FEATURE, "multivariate", "MMD", stat, p, stat, "mmd2", max(cfg.min_effect_mmd, null_q))]
