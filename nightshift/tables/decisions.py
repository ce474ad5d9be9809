"""Decision records: every retrain decision, promotion verdict, rollback and skipped night, with its evidence.

`decisions/ds=D/` holds one file per kind of decision taken on day D (`retrain` from the
nightly run, `promotion` from a retrain, `rollback`, `night` for a night skipped by the
calendar), each replaced atomically on a rerun. A shadow trial's state (`trial`) is one file
per trial and day (`part`: `trial-<id>`, see `nightshift.tables.trials`), since two trials
can change on one day. Evidence is JSON, so the record stays one
flat, queryable row.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any

import pyarrow as pa

from nightshift.lake import DECISIONS, Lake, PartitionRef
from nightshift.tables._scan import lake_history

KINDS = ("retrain", "promotion", "rollback", "night", "trial")

SCHEMA = pa.schema(
    [
        ("kind", pa.string()),
        ("verdict", pa.string()),
        ("reasons", pa.list_(pa.string())),
        ("model_version", pa.string()),
        ("mlflow_run_id", pa.string()),
        ("evidence", pa.string()),
    ]
)


def write_decision(
    lake: Lake,
    ds: str,
    kind: str,
    verdict: str,
    reasons: list[str] | tuple[str, ...],
    evidence: dict[str, Any],
    model_version: str | None = None,
    mlflow_run_id: str | None = None,
    part: str | None = None,
) -> PartitionRef:
    """Commit one decision as file `part` (default: its kind) of `decisions/ds=D/`, replacing that file only."""
    if kind not in KINDS:
        raise ValueError(f"unknown decision kind {kind!r}; kinds are {KINDS}")
    row = {
        "kind": [kind],
        "verdict": [verdict],
        "reasons": [list(reasons)],
        "model_version": [model_version],
        "mlflow_run_id": [mlflow_run_id],
        "evidence": [json.dumps(evidence, sort_keys=True, default=str)],
    }
    return lake.commit_part(DECISIONS, ds, part or kind, pa.table(row, schema=SCHEMA))


def read_decision(lake: Lake, ds: str, kind: str) -> dict[str, Any] | None:
    """The `kind` decision taken on `ds`, or None."""
    if not lake.exists(DECISIONS, ds):
        return None
    rows = [r for r in lake.read(DECISIONS, ds).to_pylist() if r["kind"] == kind]
    if not rows:
        return None
    row = rows[-1]
    row["evidence"] = json.loads(row["evidence"]) if row["evidence"] else {}
    row["ds"] = ds
    return row


def read_decisions(lake: Lake, days: Iterable[str], kind: str) -> list[dict[str, Any]]:
    """The `kind` decisions of the given days that have one, oldest first."""
    return [d for ds in days if (d := read_decision(lake, ds, kind)) is not None]


def latest_decision(lake: Lake, kind: str, before: str,
                    where: Callable[[dict[str, Any]], bool] = lambda d: True) -> dict[str, Any] | None:
    """The newest `kind` decision taken strictly before day `before` that satisfies `where`."""
    for ds in reversed([d for d in lake.partitions(DECISIONS) if d < before]):
        d = read_decision(lake, ds, kind)
        if d is not None and where(d):
            return d
    return None


def history(lake: Lake, kinds: Iterable[str] = KINDS, days: list[str] | None = None) -> list[dict[str, Any]]:
    """Every decision of the given kinds (of `days`, or all), oldest day first, evidence parsed (one scan)."""
    table = lake_history(lake, DECISIONS, SCHEMA, days=days)
    rows = [r for r in table.to_pylist() if r["kind"] in set(kinds)]
    for r in rows:
        r["evidence"] = json.loads(r["evidence"]) if r["evidence"] else {}
    return sorted(rows, key=lambda r: (r["ds"], KINDS.index(r["kind"]) if r["kind"] in KINDS else 99))
