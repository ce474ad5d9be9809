"""A multiclass model's mix of predicted classes against the mix it predicted on the reference:
chi-squared (alibi-detect's `ChiSquareDrift`), judged like a categorical feature (total variation
and its noise floor). Family REPORT_ONLY, as the output drift. Row `__predicted_class__`.
"""

from __future__ import annotations

import numpy as np

from monitoring.detectors import DetectorResult, Family, Night
from monitoring.detectors.common import tvd, tvd_floor

OUTPUT_CLASS_FEATURE = "__predicted_class__"  # the row that tests a multiclass model's mix of predicted classes


class ClassMix:
    family = Family.REPORT_ONLY

    def run(self, night: Night) -> list[DetectorResult]:
        if night.ref_out is None or night.day_out is None or np.ndim(night.ref_out) != 2:
            return []
        from alibi_detect.cd import ChiSquareDrift

        ref_classes, day_classes = np.argmax(night.ref_out, axis=1), np.argmax(night.day_out, axis=1)
        # Codes 0..n-1 over the classes either side predicted: a class the reference never predicted is a category too.
        cats, codes = np.unique(np.concatenate([ref_classes, day_classes]), return_inverse=True)
        x_ref = codes[:len(ref_classes)].astype(np.float64).reshape(-1, 1)
        x = codes[len(ref_classes):].astype(np.float64).reshape(-1, 1)
        detector = ChiSquareDrift(x_ref, p_val=night.cfg.p_val, categories_per_feature={0: len(cats)})
        out = detector.predict(x, return_p_val=True, return_distance=True)["data"]
        p_val, stat = float(np.ravel(out["p_val"])[0]), float(np.ravel(out["distance"])[0])
        effect = tvd(x_ref[:, 0], x[:, 0])
        floor = tvd_floor(x_ref[:, 0], len(x), night.cfg.p_val, night.cfg.min_effect_categorical, night.seed)
        return [DetectorResult(OUTPUT_CLASS_FEATURE, "score", "chi2", stat, p_val, effect, "total_variation", floor)]
