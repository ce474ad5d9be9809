"""Ground truth as known on night D: join the labels that have arrived to past predictions.

For every prediction day P in the last `max_delay_days` days, `monitoring/performance/ds=D/`
holds one row (see `nightshift.tables.performance`): how many predictions, how many have a
label by D (coverage), whether P has matured (coverage >= `min_coverage` or age >=
`max_delay_days`), every metric of the task realized on the labels so far, and the metrics
estimated from the predictions alone where the task has a sound method (binary: the
expected values if the scores are calibrated; regression: not estimated). Only matured days'
realized figures drive decisions.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from nightshift.dates import add_days, days_between, ds_range
from nightshift.lake import PREDICTIONS, Lake
from nightshift.tables import labels as labels_table
from nightshift.tables import performance
from nightshift.task import task_for

if TYPE_CHECKING:
    from nightshift.settings import Settings


def measure_ground_truth(settings: "Settings", ds: str, *, lake: Lake | None = None) -> dict:
    """Commit the performance picture as known on `ds`; returns a summary of matured days."""
    lake = lake or Lake(settings.lake_uri)
    spec, policy, task = settings.dataset, settings.dataset.label_delay, task_for(settings.dataset.task)
    threshold = settings.scoring.threshold
    out = task.prediction_column
    days = [d for d in ds_range(add_days(ds, -policy.max_delay_days), ds) if lake.exists(PREDICTIONS, d)]
    labels = labels_table.arrived(lake, spec, ds, days)  # arrival <= ds only

    rows = []
    for day in days:
        preds = lake.read(PREDICTIONS, day, columns=[spec.entity_id, out, "model_version"])
        pred = preds.column(out).to_numpy()
        joined = labels_table.join(preds, labels, day, spec)
        n_lab = joined.num_rows
        coverage = n_lab / max(len(pred), 1)
        age = days_between(day, ds)
        matured = coverage >= policy.min_coverage or age >= policy.max_delay_days
        realized, label_mean = {}, None
        if n_lab:
            y = task.labels(joined.column(spec.label), f"labels for predictions/ds={day}")
            label_mean = float(np.mean(y))
            realized = task.evaluate(y, joined.column(out).to_numpy(), threshold)
        estimated = task.estimate(pred, threshold) or {}
        versions = sorted(set(preds.column("model_version").to_pylist()))
        rows.append({
            "prediction_ds": day, "age_days": age, "rows": len(pred), "labelled": n_lab,
            "coverage": round(coverage, 6), "matured": matured, "status": "matured" if matured else "provisional",
            "metric": task.primary.name, "realized": realized.get(task.primary.name),
            "estimated": estimated.get(task.primary.name), "estimate_method": task.estimate_method,
            "realized_metrics": realized, "estimated_metrics": estimated, "label_mean": label_mean,
            "mean_prediction": float(pred.mean()) if len(pred) else None, "model_version": ",".join(versions),
        })
    performance.write(lake, ds, rows)
    matured = [r for r in rows if r["matured"] and r["realized"] is not None]
    latest = matured[-1] if matured else None
    return {"ds": ds, "days": len(rows), "matured_days": len(matured), "metric": task.primary.name,
            "latest_matured_day": latest["prediction_ds"] if latest else None,
            "latest_matured": latest["realized"] if latest else None}
