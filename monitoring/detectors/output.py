"""The model's own output against its output on the reference: a KS test (alibi-detect's `KSDrift`)
on the score (binary), the prediction (regression) or the confidence, the top class probability
(multiclass). Family REPORT_ONLY: it moves with drift the features already show, so it is
recorded and judged at `drift.p_val` for the record, and never raises the alarm on its own.
"""

from __future__ import annotations

import numpy as np

from monitoring.detectors import DetectorResult, Family, Night
from monitoring.detectors.common import ks_floor
from nightshift.tables.drift import OUTPUT_FEATURE


class OutputDrift:
    family = Family.REPORT_ONLY

    def run(self, night: Night) -> list[DetectorResult]:
        if night.ref_out is None or night.day_out is None:
            return []
        from alibi_detect.cd import KSDrift

        ref, day = night.ref_out, night.day_out
        if np.ndim(ref) == 2:  # class probabilities: the confidence (the class mix is `class_mix`'s)
            ref, day = np.max(ref, axis=1), np.max(day, axis=1)
        detector = KSDrift(ref.reshape(-1, 1).astype(np.float64), p_val=night.cfg.p_val)
        out = detector.predict(day.reshape(-1, 1).astype(np.float64), return_p_val=True, return_distance=True)["data"]
        p_val, dist = float(np.ravel(out["p_val"])[0]), float(np.ravel(out["distance"])[0])
        floor = ks_floor(len(day), len(ref), night.cfg.p_val, night.cfg.min_effect_numeric)
        return [DetectorResult(OUTPUT_FEATURE, "score", "KS", dist, p_val, dist, "ks_distance", floor)]
