"""`monitoring/drift/ds=D/`: one row per tested feature (and one for the model's own output).

Each row holds the test, its statistic and p-value, the corrected threshold, the effect size
and its floor, the feature's verdict, and the night's verdict (`day_drift`), plus which model's
reference it was tested against.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from nightshift.lake import DRIFT, Lake, PartitionRef
from nightshift.tables._scan import lake_history

OUTPUT_FEATURE = "__score__"  # the row that tests the model's own output

SCHEMA = pa.schema([
    ("feature", pa.string()), ("kind", pa.string()), ("test", pa.string()),
    ("statistic", pa.float64()), ("p_value", pa.float64()), ("threshold", pa.float64()),
    ("significant", pa.bool_()), ("effect_size", pa.float64()), ("effect_metric", pa.string()),
    ("min_effect", pa.float64()), ("drifted", pa.bool_()),
    ("day_drift", pa.bool_()), ("model_version", pa.string()), ("reference_rows", pa.int64()), ("sample_rows", pa.int64()),
])


def write(lake: Lake, ds: str, rows: list[dict[str, Any]]) -> PartitionRef:
    return lake.commit(DRIFT, ds, pa.Table.from_pylist(rows, schema=SCHEMA))


def read(lake: Lake, ds: str) -> list[dict[str, Any]]:
    """The night's rows, or [] if it was not checked."""
    return lake.read(DRIFT, ds).to_pylist() if lake.exists(DRIFT, ds) else []


def day_alarm(lake: Lake, ds: str) -> bool | None:
    """Whether night `ds` drifted (None: not checked)."""
    if not lake.exists(DRIFT, ds):
        return None
    col = lake.read(DRIFT, ds, columns=["day_drift"]).column(0)
    return bool(col[0].as_py()) if len(col) else False


def tested_against(lake: Lake, ds: str) -> str | None:
    """The model version whose reference night `ds` was tested against (None: not checked)."""
    if not lake.exists(DRIFT, ds):
        return None
    col = lake.read(DRIFT, ds, columns=["model_version"]).column(0)
    return col[0].as_py() if len(col) else None


def history(lake: Lake, columns: list[str] | None = None, days: list[str] | None = None) -> pa.Table:
    """Every checked night's rows in one scan, with `ds` (for the UI: one read, not one per night)."""
    return lake_history(lake, DRIFT, SCHEMA, columns, days)
