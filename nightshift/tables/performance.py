"""`monitoring/performance/ds=D/`: the model's performance as known on night D.

One row per prediction day P of the last `max_delay_days` days: rows, labels arrived by D,
coverage, whether P has matured, the primary metric (`metric`) realized on the labels so far
and estimated from the predictions alone, and every metric of the task in
`realized_metrics` / `estimated_metrics`; and what the labels got wrong (`duplicate_labels`,
`conflicting_labels`, `unknown_ids`).

Added with the calibrated estimate (None in nights written before them): `signal_ready`, the
primary metric's standard errors (`realized_se`, `estimated_se`), the estimate from the raw
scores (`estimated_uncalibrated`), whether the estimate used a calibrator (`calibrated`),
`estimate_error` (estimated - realized, once the day has matured), and the rolling window
ending at the day: `rolling_first_ds`, `rolling_days`, `rolling_rows`, `rolling_labelled`,
`rolling_realized` / `_se` / `_metrics`, `rolling_estimated` / `_se` / `_metrics` (pooled
rows of the days scored by the same model version; see `monitoring.ground_truth`).

Added with business value (None without a `[value]` cost matrix, and in nights before it):
`realized_value` / `_total` (per labelled row, and summed over them, at the decisions scoring
made), `estimated_value` / `_total` (expected per scored row, and summed over the day, from the
calibrated scores: binary only), `value_estimate_error` (estimated - realized per row, once
matured) and `decision_threshold` (binary: the threshold the day was decided at).
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from nightshift.lake import PERFORMANCE, Lake, PartitionRef
from nightshift.tables._scan import lake_history

_METRICS = pa.map_(pa.string(), pa.float64())

SCHEMA = pa.schema([
    ("prediction_ds", pa.string()), ("age_days", pa.int32()), ("rows", pa.int64()), ("labelled", pa.int64()),
    ("coverage", pa.float64()), ("matured", pa.bool_()), ("status", pa.string()),
    ("metric", pa.string()), ("realized", pa.float64()), ("estimated", pa.float64()), ("estimate_method", pa.string()),
    ("realized_metrics", _METRICS), ("estimated_metrics", _METRICS),
    ("label_mean", pa.float64()), ("mean_prediction", pa.float64()), ("model_version", pa.string()),
    # What the labels got wrong (see nightshift.tables.labels): rows a later arrival superseded, ids whose
    # arrivals disagree, and labelled ids that day never scored. Absent (None) in nights before these counts.
    ("duplicate_labels", pa.int64()), ("conflicting_labels", pa.int64()), ("unknown_ids", pa.int64()),
    ("signal_ready", pa.bool_()), ("realized_se", pa.float64()), ("estimated_se", pa.float64()),
    ("estimated_uncalibrated", pa.float64()), ("calibrated", pa.bool_()), ("estimate_error", pa.float64()),
    ("rolling_first_ds", pa.string()), ("rolling_days", pa.int32()), ("rolling_rows", pa.int64()),
    ("rolling_labelled", pa.int64()), ("rolling_realized", pa.float64()), ("rolling_realized_se", pa.float64()),
    ("rolling_estimated", pa.float64()), ("rolling_estimated_se", pa.float64()),
    ("rolling_realized_metrics", _METRICS), ("rolling_estimated_metrics", _METRICS),
    # Multiclass only (None otherwise, and in nights before them): labels of classes the scoring model never
    # saw (counted, left out of the metrics), their names, and the classes too rare that day for the macro AUC.
    ("unseen_labels", pa.int64()), ("unseen_classes", pa.string()), ("rare_classes", pa.string()),
    # Business value, with a [value] cost matrix (None without one, and in nights before it): per labelled row and
    # in total at the decisions scoring made, expected per scored row and in total before labels (binary), the
    # estimate's error once matured, and the threshold the day was decided at (binary).
    ("realized_value", pa.float64()), ("realized_value_total", pa.float64()), ("estimated_value", pa.float64()),
    ("estimated_value_total", pa.float64()), ("value_estimate_error", pa.float64()), ("decision_threshold", pa.float64()),
])
_MAPS = ("realized_metrics", "estimated_metrics", "rolling_realized_metrics", "rolling_estimated_metrics")
VALUE_COLUMNS = ("realized_value", "realized_value_total", "estimated_value", "estimated_value_total",
                 "value_estimate_error", "decision_threshold")
_LATER = ("duplicate_labels", "conflicting_labels", "unknown_ids", "unseen_labels", "unseen_classes", "rare_classes",
          *VALUE_COLUMNS,
          *(f.name for f in SCHEMA if f.name.startswith(
    ("signal_ready", "realized_se", "estimated_se", "estimated_uncalibrated", "calibrated", "estimate_error", "rolling_"))))


def write(lake: Lake, ds: str, rows: list[dict[str, Any]]) -> PartitionRef:
    rows = [{**r, **{k: _pairs(r.get(k)) for k in _MAPS}} for r in rows]
    return lake.commit(PERFORMANCE, ds, pa.Table.from_pylist(rows, schema=SCHEMA))


def read(lake: Lake, ds: str) -> list[dict[str, Any]]:
    """The rows committed on night `ds`, oldest prediction day first ([] if none)."""
    if not lake.exists(PERFORMANCE, ds):
        return []
    rows = lake.read(PERFORMANCE, ds).to_pylist()
    for r in rows:
        for name in _LATER:
            r.setdefault(name, None)
        for name in _MAPS:
            r[name] = dict(r.get(name) or [])
    return rows


def _pairs(d: dict[str, float | None] | None) -> list[tuple[str, float]]:
    return [(k, float(v)) for k, v in (d or {}).items() if v is not None]


def history(lake: Lake, columns: list[str] | None = None, days: list[str] | None = None) -> pa.Table:
    """Every night's rows in one scan, with `ds` (the night that knew them)."""
    return lake_history(lake, PERFORMANCE, SCHEMA, columns, days)
