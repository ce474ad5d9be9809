"""Land a simulated date range in the lake: `features/ds=D` for every day, `labels/ds=A` for every arrival day.

A label partition gathers labels from earlier feature days, so all days are drawn first
(features are committed as they are drawn; only each row's label and delay are kept, a few
bytes a row) and the label partitions are written after. Labels that would arrive after the
last simulated day have "not arrived yet" and are not written. Every day in the range gets a
label partition, empty when nothing arrived, so a reader can tell "no labels arrived" from
"not landed". The label column is int64 for a binary spec and float64 for a regression one.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TypeVar

import numpy as np
import pyarrow as pa

from nightshift.dates import add_days, parse_ds
from nightshift.lake import FEATURES, LABELS, Lake
from nightshift.spec import EVENT_DS, DatasetSpec
from simulator.world import MULTICLASS_SCENARIOS, SCENARIOS, LabelDelay, World, entity_ids

T = TypeVar("T")


def simulate(
    lake: Lake,
    spec: DatasetSpec,
    *,
    start: str,
    days: int,
    rows_per_day: int,
    scenario: str = "none",
    onset: int = 0,
    seed: int = 0,
    label_delay: LabelDelay = LabelDelay(),
    progress: bool = True,
) -> dict:
    """Write `days` days of features and their late labels from `start`; return a small summary."""
    parse_ds(start)
    if days < 1:
        raise ValueError(f"days must be >= 1, got {days}")
    if rows_per_day < 1:
        raise ValueError(f"rows_per_day must be >= 1, got {rows_per_day}")
    if scenario not in SCENARIOS + MULTICLASS_SCENARIOS:
        raise ValueError(f"unknown scenario {scenario!r}; valid scenarios: {', '.join(SCENARIOS + MULTICLASS_SCENARIOS)}")
    if scenario != "none" and not 0 <= onset < days:
        raise ValueError(f"onset must be a day index in 0..{days - 1} (day 0 is {start}), got {onset}")
    world = World(spec, seed=seed, scenario=scenario, onset=onset if scenario != "none" else 0, label_delay=label_delay)
    day_ds = [add_days(start, i) for i in range(days)]

    small = pa.types.is_integer(world.label_type)  # 0/1 labels are kept as int8: a byte a row
    drawn: list[tuple[np.ndarray, np.ndarray]] = []  # per feature day: (label int8, float64 or class names, delay int16)
    for i in _track(range(days), progress, f"features {start}..{day_ds[-1]}"):
        table = world.features(i, day_ds[i], rows_per_day)
        lake.commit(FEATURES, day_ds[i], table)
        y, delay = world.draw_labels(table, i)
        drawn.append((y.astype(np.int8) if small else y, delay))
        del table

    schema = pa.schema([(spec.entity_id, pa.string()), (EVENT_DS, pa.string()), (spec.label, world.label_type)])
    landed = 0
    for a in _track(range(days), progress, "labels"):
        parts = []
        for d in range(max(0, a - label_delay.max_days), a):  # oldest event day first, rows in feature order
            y, delay = drawn[d]
            idx = np.flatnonzero(delay == a - d)
            if idx.size:
                parts.append(
                    pa.table(
                        [entity_ids(day_ds[d], idx), pa.repeat(pa.scalar(day_ds[d], pa.string()), idx.size), pa.array(y[idx], world.label_type)],
                        schema=schema,
                    )
                )
        table = pa.concat_tables(parts) if parts else schema.empty_table()
        lake.commit(LABELS, day_ds[a], table)
        landed += table.num_rows

    return {
        "start": start,
        "end": day_ds[-1],
        "days": days,
        "rows": days * rows_per_day,
        "labels_landed": landed,
        "scenario": scenario,
        "onset_ds": day_ds[onset] if scenario != "none" else None,
    }


def _track(items: Iterable[T], progress: bool, description: str) -> Iterator[T] | Iterable[T]:
    if not progress:
        return items
    from rich.progress import track

    return track(items, description=description)
