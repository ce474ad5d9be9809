"""Ground truth as known on night D: join the labels that have arrived to past predictions.

For every prediction day P in the last `max_delay_days` days, `monitoring/performance/ds=D/`
holds one row (see `nightshift.tables.performance`): how many predictions, how many have a
label by D (coverage), whether P has matured (coverage >= `min_coverage` or age >=
`max_delay_days`), every metric of the task realized on the labels so far, and the metrics
estimated from the predictions alone where the task has a sound method (binary: the
expected values if the scores are calibrated; regression: not estimated). Only matured days'
realized figures drive decisions.

Labels are checked and deduplicated by `nightshift.tables.labels` (the latest arrival
wins). Each row also counts what the labels got wrong: duplicate rows, conflicting values,
and labels for ids that day never scored. Coverage counts each scored row once, so it can
never exceed 1. Labels for a day whose predictions are not committed yet are held (counted
in the summary) and join once the day is scored.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from nightshift.dates import add_days, days_between, ds_range
from nightshift.lake import PREDICTIONS, Lake
from nightshift.spec import EVENT_DS
from nightshift.tables import labels as labels_table
from nightshift.tables import performance
from nightshift.task import task_for

if TYPE_CHECKING:
    from nightshift.settings import Settings

log = logging.getLogger("nightshift.ground_truth")


def measure_ground_truth(settings: "Settings", ds: str, *, lake: Lake | None = None) -> dict:
    """Commit the performance picture as known on `ds`; returns a summary of matured days."""
    lake = lake or Lake(settings.lake_uri)
    spec, policy, task = settings.dataset, settings.dataset.label_delay, task_for(settings.dataset.task)
    threshold = settings.scoring.threshold
    out = task.prediction_column
    window = ds_range(add_days(ds, -policy.max_delay_days), ds)
    days = [d for d in window if lake.exists(PREDICTIONS, d)]
    known = labels_table.known(lake, spec, ds, window)  # arrival <= ds only
    labels = known.table
    scored = pc.is_in(labels[EVENT_DS], pa.array(days, pa.string()))
    held = labels.num_rows - (pc.sum(pc.cast(scored, pa.int64())).as_py() or 0)  # labels waiting for their predictions

    rows = []
    for day in days:
        preds = lake.read(PREDICTIONS, day, columns=[spec.entity_id, out, "model_version"])
        pred = preds.column(out).to_numpy()
        joined = labels_table.join(preds, labels, day, spec)
        # Each scored row counts once, whatever the labels hold, so coverage never exceeds 1.
        n_lab = min(joined.num_rows, len(pred))
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
            "duplicate_labels": known.duplicates.get(day, 0), "conflicting_labels": known.conflicts.get(day, 0),
            "unknown_ids": labels_table.unknown_ids(preds, labels, day, spec),
        })
    performance.write(lake, ds, rows)
    counts = {"label_rows": known.rows, "duplicate_labels": sum(known.duplicates.values()),
              "conflicting_labels": sum(known.conflicts.values()), "unknown_ids": sum(r["unknown_ids"] for r in rows),
              "held_labels": held}
    for r in rows:
        if r["duplicate_labels"] or r["conflicting_labels"] or r["unknown_ids"]:
            log.warning("labels for predictions/ds=%s as known on %s: %d duplicate rows (the latest arrival wins), "
                        "%d ids with conflicting values, %d ids that day never scored", r["prediction_ds"], ds,
                        r["duplicate_labels"], r["conflicting_labels"], r["unknown_ids"])
    if held:
        log.info("%d labels as known on %s wait for predictions that are not committed yet", held, ds)
    matured = [r for r in rows if r["matured"] and r["realized"] is not None]
    latest = matured[-1] if matured else None
    return {"ds": ds, "days": len(rows), "matured_days": len(matured), "metric": task.primary.name,
            "latest_matured_day": latest["prediction_ds"] if latest else None,
            "latest_matured": latest["realized"] if latest else None, "labels": counts}
