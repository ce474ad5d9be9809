"""Shadow trials: each trial's state, day by day, as `trial` decision records (`decisions/ds=D/trial-<id>.parquet`).

With `gate.mode = "shadow:N"` a challenger that passes the offline gate becomes the `candidate`
and goes on trial: it scores the next N nights into `shadow/ds=D/` beside the champion, and the
gate runs again, paired, on those nights once their labels have matured (`training.shadow`).

A trial's record is written when a retrain opens it, then again on every night it is open, with
what that night knew (the nights scored, their label coverage, the running gain), and a last
time when it concludes (`promoted`, `rejected`) or ends (`ended:drift`, `ended:newer`,
`ended:deleted`, `ended:champion`), with its evidence. One file per trial and day, so two trials
changing on one day (a newer one superseding an older) never overwrite each other, and a rerun
of a night replaces that night's file only. The newest record of a trial up to a day is its
state as of that day; the record's `evidence` holds the whole state (a `Trial` as a dict).
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Iterable
from typing import Any

import pyarrow.parquet as pq

from nightshift.lake import DECISIONS, Lake
from nightshift.tables.decisions import write_decision

KIND = "trial"
OPEN = "open"
PROMOTED = "promoted"
REJECTED = "rejected"
ENDED_DRIFT = "ended:drift"
ENDED_NEWER = "ended:newer"
ENDED_DELETED = "ended:deleted"
ENDED_CHAMPION = "ended:champion"
STATES = (OPEN, PROMOTED, REJECTED, ENDED_DRIFT, ENDED_NEWER, ENDED_DELETED, ENDED_CHAMPION)
_PREFIX = "trial-"


def trial_id(opened_ds: str, version: str) -> str:
    """A trial's name: the day it opened and its candidate (`2026-03-12-v3`)."""
    return f"{opened_ds}-v{version}"


def write(lake: Lake, ds: str, record: dict[str, Any]) -> None:
    """Commit a trial's state as known on day `ds` (replacing that trial's record of `ds`, if any)."""
    if record["state"] not in STATES:
        raise ValueError(f"unknown trial state {record['state']!r}; states are {STATES}")
    body = {k: v for k, v in record.items() if k != "ds"}
    write_decision(lake, ds, KIND, record["state"], record.get("reasons") or [], body,
                   model_version=str(record["candidate"]), part=_PREFIX + record["trial"])


def history(lake: Lake, *, before: str | None = None, days: Iterable[str] | None = None) -> list[dict[str, Any]]:
    """Every trial record (of days before `before`, or of `days`), oldest day first, each the trial's state with its `ds`.

    One listing of the decisions table, then only the trial files are read."""
    wanted = set(days) if days is not None else None
    out = []
    for day, paths in lake.committed_files(DECISIONS).items():
        if (before is not None and day >= before) or (wanted is not None and day not in wanted):
            continue
        for path in paths:
            if not posixpath.basename(path).startswith(_PREFIX):
                continue
            for row in pq.read_table(path, filesystem=lake.fs).to_pylist():
                if row["kind"] == KIND:
                    out.append({**json.loads(row["evidence"]), "ds": day})
    return sorted(out, key=order)


def order(record: dict[str, Any]) -> tuple:
    """Records in the order they were decided: by day, then by the trial's opening (older trials first)."""
    return record["ds"], record["opened_ds"], int(record["candidate"])


def latest(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each trial's newest record, by trial id (pure; `records` oldest first)."""
    out: dict[str, dict[str, Any]] = {}
    for r in sorted(records, key=order):
        out[r["trial"]] = r
    return out


def open_before(lake: Lake, ds: str) -> list[dict[str, Any]]:
    """The trials open once the days before `ds` were settled (their newest record before `ds` is open), oldest first."""
    found = [r for r in latest(history(lake, before=ds)).values() if r["state"] == OPEN]
    return sorted(found, key=lambda r: (r["opened_ds"], int(r["candidate"])))


def on_day(lake: Lake, ds: str) -> list[dict[str, Any]]:
    """The trial records written on day `ds` (openings by the retrain, nightly states, conclusions)."""
    return history(lake, days=[ds])
