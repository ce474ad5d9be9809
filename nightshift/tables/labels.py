"""`labels/ds=A/` as known on a day: the labels that had arrived by then, joined to what they label.

A label partition `labels/ds=A` holds the labels that *arrived* on day A: entity id,
`event_ds` (the day of the row it labels) and the label. Reading "as known on D" takes only
partitions with A <= D, so a backfill never sees a label that had not arrived yet. When an
(entity, event day) pair was labelled more than once, the latest arrival wins (within one
arrival day, the last row). This is the one place the labels -> predictions/features join
is written.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from nightshift.lake import LABELS, Lake
from nightshift.spec import DS, EVENT_DS, DatasetSpec

_ORDER = "__order__"


def arrived(lake: Lake, spec: DatasetSpec, as_of: str, event_days: Iterable[str], since: str | None = None) -> pa.Table:
    """Labels for `event_days` that arrived on or before `as_of` (and on or after `since`):
    entity id, `event_ds`, label; one row per (entity, event day), checked against the task."""
    from nightshift.task import task_for

    event_days = sorted(set(event_days))
    empty = pa.table({spec.entity_id: pa.array([], pa.string()), EVENT_DS: pa.array([], pa.string()),
                      spec.label: pa.array([], pa.float64())})
    if not event_days:
        return empty
    first = since or event_days[0]
    arrivals = [a for a in lake.partitions(LABELS) if first <= a <= as_of]
    parts = []
    for a in arrivals:
        t = lake.read(LABELS, a, columns=[spec.entity_id, EVENT_DS, spec.label])
        t = t.filter(pc.is_in(t[EVENT_DS], pa.array(event_days, pa.string())))
        if t.num_rows:
            task_for(spec.task).labels(t.column(spec.label), f"labels/{DS}={a}, column {spec.label!r}")
            parts.append(t.append_column(DS, pa.repeat(pa.scalar(a, pa.string()), t.num_rows)))
    if not parts:
        return empty
    table = pa.concat_tables(parts, promote_options="permissive")
    return _latest_arrival(table, spec.entity_id).drop_columns([DS])


def for_day(labels: pa.Table, day: str, spec: DatasetSpec) -> pa.Table:
    """The (entity id, label) rows of one event day."""
    return labels.filter(pc.equal(labels[EVENT_DS], day)).select([spec.entity_id, spec.label])


def join(rows: pa.Table, labels: pa.Table, day: str, spec: DatasetSpec) -> pa.Table:
    """The rows of day `day` (predictions or features) that have a label, with the label,
    in entity-id order (joins do not keep order; sorting makes the result deterministic)."""
    day_labels = for_day(labels, day, spec)
    day_labels = day_labels.cast(pa.schema([(spec.entity_id, rows.schema.field(spec.entity_id).type),
                                            (spec.label, day_labels.schema.field(spec.label).type)]))
    return rows.join(day_labels, keys=spec.entity_id, join_type="inner").sort_by(spec.entity_id)


def _latest_arrival(labels: pa.Table, entity_id: str) -> pa.Table:
    """One row per (entity, event day): the latest arrival, and within it the last row."""
    n = labels.num_rows
    t = labels.append_column(_ORDER, pa.array(np.arange(n, dtype=np.int64)))
    t = t.sort_by([(entity_id, "ascending"), (EVENT_DS, "ascending"), (DS, "descending"), (_ORDER, "descending")])
    ids = t.column(entity_id).to_numpy(zero_copy_only=False)
    ev = t.column(EVENT_DS).to_numpy(zero_copy_only=False)
    first = np.ones(n, dtype=bool)
    first[1:] = (ids[1:] != ids[:-1]) | (ev[1:] != ev[:-1])
    return t.filter(pa.array(first)).drop_columns([_ORDER])
