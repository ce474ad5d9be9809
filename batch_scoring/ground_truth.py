"""Ground truth as known on night D: join the labels that have arrived to past predictions.

For every prediction day P in the last `max_delay_days` days, `monitoring/performance/ds=D/`
holds one row: how many predictions, how many have a label by D (coverage), whether P has
matured (coverage >= `min_coverage` or age >= `max_delay_days`), the realized AUC on the
labels so far, and an estimated AUC from the model's own scores. For a calibrated model the
expected AUC follows from the scores alone (each row is a positive with weight p and a
negative with weight 1-p), so the page can show performance for days whose labels are
still in flight. Only matured days' realized figures drive decisions.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from nightshift.dates import add_days, days_between, ds_range
from nightshift.lake import LABELS, PERFORMANCE, PREDICTIONS, Lake
from nightshift.spec import EVENT_DS

if TYPE_CHECKING:
    from nightshift.settings import Settings

SCHEMA = pa.schema([
    ("prediction_ds", pa.string()), ("age_days", pa.int32()), ("rows", pa.int64()), ("labelled", pa.int64()),
    ("coverage", pa.float64()), ("matured", pa.bool_()), ("status", pa.string()),
    ("realized_auc", pa.float64()), ("estimated_auc", pa.float64()), ("positive_rate", pa.float64()),
    ("mean_score", pa.float64()), ("model_version", pa.string()),
])


def measure_ground_truth(settings: "Settings", ds: str, *, lake: Lake | None = None) -> dict:
    """Commit the performance picture as known on `ds`; returns a summary of matured days."""
    from training.evaluate import auc

    lake = lake or Lake(settings.lake_uri)
    spec, policy = settings.dataset, settings.dataset.label_delay
    days = [d for d in ds_range(add_days(ds, -policy.max_delay_days), ds) if lake.exists(PREDICTIONS, d)]
    arrivals = [a for a in ds_range(add_days(ds, -policy.max_delay_days), ds) if lake.exists(LABELS, a)]
    labels = lake.read_days(LABELS, arrivals, columns=[spec.entity_id, EVENT_DS, spec.label])  # arrival <= ds only

    rows = []
    for day in days:
        preds = lake.read(PREDICTIONS, day, columns=[spec.entity_id, "score", "model_version"])
        scores = preds.column("score").to_numpy()
        joined = None
        if labels is not None:
            day_labels = labels.filter(pc.equal(labels[EVENT_DS], day)).select([spec.entity_id, spec.label])
            joined = preds.join(day_labels, keys=spec.entity_id, join_type="inner")
        n_lab = 0 if joined is None else joined.num_rows
        coverage = n_lab / max(len(scores), 1)
        age = days_between(day, ds)
        matured = coverage >= policy.min_coverage or age >= policy.max_delay_days
        realized, pos_rate = None, None
        if n_lab:
            y = joined.column(spec.label).to_numpy(zero_copy_only=False).astype(np.int64)
            pos_rate = float(y.mean())
            if 0 < y.sum() < len(y):
                realized = auc(y, joined.column("score").to_numpy())
        versions = sorted(set(preds.column("model_version").to_pylist()))
        rows.append({
            "prediction_ds": day, "age_days": age, "rows": len(scores), "labelled": n_lab,
            "coverage": round(coverage, 6), "matured": matured, "status": "matured" if matured else "provisional",
            "realized_auc": realized, "estimated_auc": estimated_auc(scores), "positive_rate": pos_rate,
            "mean_score": float(scores.mean()) if len(scores) else None, "model_version": ",".join(versions),
        })
    lake.commit(PERFORMANCE, ds, pa.Table.from_pylist(rows, schema=SCHEMA))
    matured = [r for r in rows if r["matured"] and r["realized_auc"] is not None]
    latest = matured[-1] if matured else None
    return {"ds": ds, "days": len(rows), "matured_days": len(matured),
            "latest_matured_day": latest["prediction_ds"] if latest else None,
            "latest_matured_auc": latest["realized_auc"] if latest else None}


def estimated_auc(scores: np.ndarray) -> float | None:
    """Expected AUC if the scores are calibrated probabilities (no labels needed)."""
    from training.evaluate import auc

    if len(scores) < 2:
        return None
    p = np.clip(scores.astype(np.float64), 0.0, 1.0)
    y = np.concatenate([np.ones(len(p), np.int64), np.zeros(len(p), np.int64)])
    return float(auc(y, np.concatenate([p, p]), np.concatenate([p, 1.0 - p])))
