"""`labels/ds=A/` as known on a day: the labels that had arrived by then, joined to what they label.

A label partition `labels/ds=A` holds the labels that *arrived* on day A: entity id,
`event_ds` (the day of the row it labels) and the label. Reading "as known on D" takes only
partitions with A <= D, so a backfill never sees a label that had not arrived yet.

Every partition read is checked (`check_partition`): the id and `event_ds` are present, of
the right type and never null, `event_ds` is a day no later than the arrival, and the label
is valid for the task. A violation raises `ContractViolation` naming the partition, the
column and the rule. When an (entity, event day) pair was labelled more than once, the
latest arrival wins (within one arrival day, the last row), deterministically; the extra
rows are counted as duplicates, and pairs whose values disagree as conflicts. A label whose
prediction does not exist yet is simply kept where it landed: it is read again every night
and joins once the prediction is committed. This is the one place the labels ->
predictions/features join is written.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from nightshift.dates import parse_ds
from nightshift.lake import LABELS, Lake
from nightshift.spec import DS, EVENT_DS, DatasetSpec
from nightshift.violation import ContractViolation

_ORDER = "__order__"


@dataclass(frozen=True)
class Known:
    """Labels as known on a day, one row per (entity, event day), and what deduplication found."""

    table: pa.Table
    rows: int = 0  # label rows read, before deduplication
    duplicates: dict[str, int] = field(default_factory=dict)  # per event day: rows a later arrival (or row) superseded
    conflicts: dict[str, int] = field(default_factory=dict)  # per event day: (entity) pairs whose values disagree


def known(lake: Lake, spec: DatasetSpec, as_of: str, event_days: Iterable[str], since: str | None = None) -> Known:
    """Labels for `event_days` that arrived on or before `as_of` (and on or after `since`):
    entity id, `event_ds`, label; one row per (entity, event day), checked against the contract."""
    event_days = sorted(set(event_days))
    empty = pa.table({spec.entity_id: pa.array([], pa.string()), EVENT_DS: pa.array([], pa.string()),
                      spec.label: pa.array([], pa.float64())})
    if not event_days:
        return Known(empty)
    first = since or event_days[0]  # a label never arrives before the day it labels (checked below)
    arrivals = [a for a in lake.partitions(LABELS) if first <= a <= as_of]
    parts = []
    for a in arrivals:
        t = checked(lake, spec, a)
        t = t.filter(pc.is_in(t[EVENT_DS], pa.array(event_days, pa.string())))
        if t.num_rows:
            parts.append(t.append_column(DS, pa.repeat(pa.scalar(a, pa.string()), t.num_rows)))
    if not parts:
        return Known(empty)
    try:
        table = pa.concat_tables(parts, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise ContractViolation(f"labels/{DS}={arrivals[0]}..{arrivals[-1]}", spec.entity_id,
                                "label columns have one type across arrival days", str(exc).splitlines()[0],
                                "Land every day's labels with the same column types (ids as strings, say).") from None
    latest, duplicates, conflicts = latest_arrival(table, spec.entity_id, spec.label)
    return Known(latest.drop_columns([DS]), table.num_rows, duplicates, conflicts)


def arrived(lake: Lake, spec: DatasetSpec, as_of: str, event_days: Iterable[str], since: str | None = None) -> pa.Table:
    """The label table of `known()`: one row per (entity, event day)."""
    return known(lake, spec, as_of, event_days, since).table


def check_partition(lake: Lake, spec: DatasetSpec, arrival: str) -> int:
    """Check `labels/ds=arrival` against the contract; returns its row count."""
    return checked(lake, spec, arrival).num_rows


def checked(lake: Lake, spec: DatasetSpec, arrival: str) -> pa.Table:
    """`labels/ds=arrival` (id, `event_ds` as YYYY-MM-DD strings, label), checked against the contract."""
    from nightshift.task import LabelError, task_for

    partition = f"labels/{DS}={arrival}"
    schema = lake.dataset(LABELS, arrival).schema
    names = set(schema.names)
    for col in (spec.entity_id, EVENT_DS, spec.label):
        if col not in names:
            raise ContractViolation(partition, col, "required column present", "the column is missing",
                                    f"A label partition holds {spec.entity_id!r}, {EVENT_DS!r} (the day of the prediction "
                                    f"it resolves) and {spec.label!r}; present columns: {sorted(names)[:12]}.")
    id_type = schema.field(spec.entity_id).type
    if not (pa.types.is_string(id_type) or pa.types.is_large_string(id_type) or pa.types.is_integer(id_type)):
        raise ContractViolation(partition, spec.entity_id, "entity id is a string or integer", f"its type is {id_type}",
                                "Land the ids with the type the features use (string or integer).")
    ev_type = schema.field(EVENT_DS).type
    if not (pa.types.is_string(ev_type) or pa.types.is_large_string(ev_type) or pa.types.is_date(ev_type)):
        raise ContractViolation(partition, EVENT_DS, "event day is a YYYY-MM-DD string or a date", f"its type is {ev_type}",
                                "Land event_ds as the prediction's day, e.g. '2026-01-15'.")
    t = lake.read(LABELS, arrival, columns=[spec.entity_id, EVENT_DS, spec.label])
    for col in (spec.entity_id, EVENT_DS):
        if t.column(col).null_count:
            raise ContractViolation(partition, col, f"{col} is never null", f"{t.column(col).null_count} null values "
                                    f"among {t.num_rows} rows", "Fix the upstream extract: a label must say which "
                                    "prediction it resolves.")
    t = t.set_column(1, EVENT_DS, _event_strings(t.column(EVENT_DS)))
    days = pc.unique(t.column(EVENT_DS)).to_pylist()
    for day in days:
        try:
            parse_ds(day)
        except ValueError:
            raise ContractViolation(partition, EVENT_DS, "event day is a YYYY-MM-DD string or a date",
                                    f"{day!r} is not a day", "Write the prediction's day as YYYY-MM-DD.") from None
    future = sorted(d for d in days if d > arrival)
    if future:
        raise ContractViolation(partition, EVENT_DS, "a label arrives on or after the day it labels",
                                f"labels for {future[:3]} arrived on {arrival}",
                                "Check event_ds upstream (it is the day of the prediction the label resolves), "
                                "or land the labels under their real arrival day.")
    try:
        task_for(spec.task).labels(t.column(spec.label), f"{partition}, column {spec.label!r}")
    except LabelError as exc:
        raise ContractViolation(partition, spec.label, f"label is valid for the {spec.task} task", str(exc).split(": ", 1)[-1],
                                "Fix the labels upstream and land the day again; a missing label is simply not landed.") from None
    return t


def for_day(labels: pa.Table, day: str, spec: DatasetSpec) -> pa.Table:
    """The (entity id, label) rows of one event day."""
    return labels.filter(pc.equal(labels[EVENT_DS], day)).select([spec.entity_id, spec.label])


def join(rows: pa.Table, labels: pa.Table, day: str, spec: DatasetSpec) -> pa.Table:
    """The rows of day `day` (predictions or features) that have a label, with the label,
    in entity-id order (joins do not keep order; sorting makes the result deterministic)."""
    day_labels = _typed(rows, for_day(labels, day, spec), day, spec)
    return rows.join(day_labels, keys=spec.entity_id, join_type="inner").sort_by(spec.entity_id)


def unknown_ids(rows: pa.Table, labels: pa.Table, day: str, spec: DatasetSpec) -> int:
    """How many of day `day`'s labelled entities have no row in `rows` (labels nothing can use)."""
    day_labels = _typed(rows, for_day(labels, day, spec), day, spec)
    return day_labels.join(rows.select([spec.entity_id]), keys=spec.entity_id, join_type="left anti").num_rows


def latest_arrival(labels: pa.Table, entity_id: str, label: str) -> tuple[pa.Table, dict[str, int], dict[str, int]]:
    """One row per (entity, event day): the latest arrival (`ds`), and within it the last row.

    Also returns, per event day, how many rows were superseded (duplicates) and how many
    (entity, event day) pairs had more than one distinct value (conflicts).
    """
    n = labels.num_rows
    t = labels.append_column(_ORDER, pa.array(np.arange(n, dtype=np.int64)))
    t = t.sort_by([(entity_id, "ascending"), (EVENT_DS, "ascending"), (DS, "descending"), (_ORDER, "descending")])
    ids = t.column(entity_id).to_numpy(zero_copy_only=False)
    ev = t.column(EVENT_DS).to_numpy(zero_copy_only=False)
    first = np.ones(n, dtype=bool)
    first[1:] = (ids[1:] != ids[:-1]) | (ev[1:] != ev[:-1])
    dropped = Counter(t.filter(pa.array(~first)).column(EVENT_DS).to_pylist())
    duplicates = dict(sorted(dropped.items()))
    conflicts: dict[str, int] = {}
    if dropped:
        col = t.column(label)
        if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):  # class names: compared by their code
            values = np.unique(np.asarray(col.to_pylist(), dtype=object).astype(str), return_inverse=True)[1]
            values = values.reshape(-1).astype(np.float64)
        else:
            values = pc.fill_null(pc.cast(col, pa.float64()), np.nan).to_numpy(zero_copy_only=False)
        starts = np.flatnonzero(first)  # each (entity, event day) group is a run of sorted rows
        lo, hi = np.minimum.reduceat(values, starts), np.maximum.reduceat(values, starts)
        kept_days = ev[first]
        for g in np.flatnonzero(lo != hi):
            conflicts[kept_days[g]] = conflicts.get(kept_days[g], 0) + 1
    return t.filter(pa.array(first)).drop_columns([_ORDER]), duplicates, dict(sorted(conflicts.items()))


def _event_strings(col: pa.ChunkedArray | pa.Array) -> pa.ChunkedArray | pa.Array:
    if pa.types.is_date(col.type):
        return pc.strftime(pc.cast(col, pa.timestamp("s")), format="%Y-%m-%d")
    return pc.cast(col, pa.string())


def _typed(rows: pa.Table, day_labels: pa.Table, day: str, spec: DatasetSpec) -> pa.Table:
    """The labels with the id type of the rows they join, or a named error when the ids cannot match."""
    id_type = rows.schema.field(spec.entity_id).type
    try:
        return day_labels.cast(pa.schema([(spec.entity_id, id_type), (spec.label, day_labels.schema.field(spec.label).type)]))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise ContractViolation(f"labels for {day}", spec.entity_id, "label ids have the type of the ids they label",
                                f"the predictions' ids are {id_type}, and {str(exc).splitlines()[0]}",
                                "Land the label ids with the same type as the features' ids.") from None


def is_matured(coverage: float, age_days: int, min_coverage: float, max_delay_days: int) -> bool:
    """The maturity rule: a day's realized figures are final once this share is labelled or it is this old.

    Ground truth (`monitoring/ground_truth.py`) and the shadow trial's judgement (`training/shadow.py`) both
    go by it, so it lives with the labels."""
    return coverage >= min_coverage or age_days >= max_delay_days
