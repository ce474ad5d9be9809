"""`monitoring/drift/ds=D/`: one row per test of the night (see `monitoring.drift`).

Rows: one per result of each enabled drift detector (`monitoring.detectors`): one per feature
(KS or chi-squared), one per categorical feature for its unseen categories, two multivariate
(Hotelling's T² on the numeric means, MMD), one for the model's own output (two for multiclass),
one PSI report per feature, and one per feature that failed a data-quality check (`quality`
says why). Each holds the test, its statistic and p-value, the threshold it was judged at
(the FDR threshold, or its own level), the effect size and its size-dependent floor, and its
verdict. `detector` names the detector that wrote it (`quality` for a data-quality row) and
`family` how it was judged: `fdr` (Benjamini-Hochberg across the night's per-feature tests),
`own_level` (at `drift.p_val` alone), `report_only` (recorded, never counted towards the
alarm). A report without a test (PSI, `kind` psi) has no p-value, never drifts, and carries
its `band` (stable / moderate / significant). Partitions written before these three columns
read them as null.

Every row also carries the night: its Simes p-value and z-score (`night_p`, `night_z`),
whether any test drifted tonight (`night_drift`), the reference it was tested against
(`reference_kind`, `reference_id`, `model_version`), and the alarm after this night: the
method and its parameters (`alarm_method`, `cusum_k`, `cusum_h`,
`alarm_target_per_100_nights`) and its state (`cusum`, `episode_start`, `quiet_nights`,
`alarm_reference_id`). `day_drift` is the alarm; null until the night is settled in date
order, or on a night that was skipped.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from nightshift.lake import DRIFT, Lake, PartitionRef
from nightshift.tables._scan import lake_history

# The PSI bands the record's `band` column reads by (the industry's: stable below 0.1, moderate to 0.25,
# significant from 0.25). The PSI detector (monitoring/detectors/psi.py) and the Model health page share them.
PSI_MODERATE, PSI_SIGNIFICANT = 0.1, 0.25

OUTPUT_FEATURE = "__score__"  # the row that tests the model's own output

SCHEMA = pa.schema([
    ("feature", pa.string()), ("kind", pa.string()), ("test", pa.string()),
    ("statistic", pa.float64()), ("p_value", pa.float64()), ("threshold", pa.float64()),
    ("significant", pa.bool_()), ("effect_size", pa.float64()), ("effect_metric", pa.string()),
    ("min_effect", pa.float64()), ("drifted", pa.bool_()),
    ("day_drift", pa.bool_()), ("model_version", pa.string()), ("reference_rows", pa.int64()), ("sample_rows", pa.int64()),
    ("unseen_rows", pa.int64()), ("unseen_values", pa.string()), ("quality", pa.string()),
    ("night_p", pa.float64()), ("night_z", pa.float64()), ("night_drift", pa.bool_()),
    ("reference_kind", pa.string()), ("reference_id", pa.string()),
    ("alarm_method", pa.string()), ("cusum", pa.float64()), ("cusum_k", pa.float64()), ("cusum_h", pa.float64()),
    ("alarm_target_per_100_nights", pa.float64()), ("episode_start", pa.string()), ("quiet_nights", pa.int64()),
    ("alarm_reference_id", pa.string()),
    ("detector", pa.string()), ("family", pa.string()), ("band", pa.string()),
])


def write(lake: Lake, ds: str, rows: list[dict[str, Any]]) -> PartitionRef:
    return lake.commit(DRIFT, ds, pa.Table.from_pylist(rows, schema=SCHEMA))


def read(lake: Lake, ds: str) -> list[dict[str, Any]]:
    """The night's rows, or [] if it was not checked (columns an older partition lacks read as None)."""
    if not lake.exists(DRIFT, ds):
        return []
    names = SCHEMA.names
    return [{k: r.get(k) for k in names} for r in lake.read(DRIFT, ds).to_pylist()]


def day_alarm(lake: Lake, ds: str) -> bool | None:
    """Whether a drift alarm was on after night `ds` (None: not checked, skipped, or not settled yet)."""
    if not lake.exists(DRIFT, ds):
        return None
    col = lake.read(DRIFT, ds, columns=["day_drift"]).column(0)
    return col[0].as_py() if len(col) else None


def tested_against(lake: Lake, ds: str) -> str | None:
    """The model version whose reference night `ds` was tested against (None: not checked)."""
    if not lake.exists(DRIFT, ds):
        return None
    col = lake.read(DRIFT, ds, columns=["model_version"]).column(0)
    return col[0].as_py() if len(col) else None


def history(lake: Lake, columns: list[str] | None = None, days: list[str] | None = None) -> pa.Table:
    """Every checked night's rows in one scan, with `ds` (for the UI: one read, not one per night)."""
    return lake_history(lake, DRIFT, SCHEMA, columns, days)


def words(r: dict[str, Any]) -> str:
    """One test's row in words, for logs and alerts: "x03 ks_distance 0.310 (floor 0.1, p=1e-09)"."""
    name = "model score" if r["feature"] == OUTPUT_FEATURE else r["feature"]
    if r.get("quality"):
        return f"{name} (data quality: {r['quality']})"
    if r.get("kind") == "unseen":
        return f"{name} {r['unseen_rows']} rows in unseen categories ({r['unseen_values']})"
    if r.get("band"):  # a report without a test (PSI): its value and its band
        return f"{name} {r['effect_metric']} {r['effect_size']:.3f} ({r['band']})"
    p = r["p_value"]
    p_words = "p=?" if p is None else (f"p={p:.2g}" if p > 0 else "p<1e-300")  # an underflowed p-value is not 0
    return f"{name} {r['effect_metric']} {r['effect_size']:.3f} (floor {r['min_effect']:.3g}, {p_words})"
