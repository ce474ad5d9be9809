"""The training window: labelled rows a retrain for day `ds` may use, and its holdout.

Only labels that had *arrived* by `ds` are read (label partitions `labels/ds=A` with
A <= ds), so a replay of an old retrain sees exactly what the original run saw.

The window is a range of prediction days (`event_ds`):
- `sliding`: the `window_days` days before `ds`;
- `expanding`: from `window_start` to the day before `ds`;
- `fixed`: `window_start` to `window_end`.

The holdout is a deterministic half (by a hash of the entity id) of the labelled rows of
the newest `holdout_days` labelled days; the rest trains. Champion and challenger are both
judged on it, and neither has seen it. It uses every label that has arrived rather than
waiting for days to mature: a gate that waited for 90% label coverage would be blind to
the newest regime for weeks. The per-day label coverage goes into the evidence.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from nightshift.dates import add_days, ds_range
from nightshift.lake import FEATURES, LABELS, Lake
from nightshift.spec import DS, EVENT_DS

if TYPE_CHECKING:
    from nightshift.settings import TrainingSettings
    from nightshift.spec import DatasetSpec

HOLDOUT_SHARE = 0.5


class EmptyWindow(ValueError):
    """The window holds too few labelled rows to train on."""


@dataclass
class Window:
    ds: str
    days: list[str]
    train: pa.Table
    holdout: pa.Table
    coverage: dict[str, float] = field(default_factory=dict)  # event day -> labelled share of its rows

    def summary(self) -> dict:
        return {
            "ds": self.ds,
            "first_day": self.days[0] if self.days else None,
            "last_day": self.days[-1] if self.days else None,
            "train_rows": self.train.num_rows,
            "holdout_rows": self.holdout.num_rows,
            "holdout_days": sorted(set(self.holdout.column(EVENT_DS).to_pylist())) if self.holdout.num_rows else [],
            "coverage": self.coverage,
        }


def window_days(ds: str, settings: "TrainingSettings") -> list[str]:
    """The prediction days a retrain on `ds` draws from (all strictly before `ds`)."""
    last = add_days(ds, -1)
    if settings.window == "sliding":
        return ds_range(add_days(ds, -settings.window_days), last)
    if settings.window_start is None:
        raise ValueError(f"training.window={settings.window!r} needs training.window_start")
    if settings.window == "expanding":
        return ds_range(settings.window_start, last)
    end = min(settings.window_end or last, last)
    return ds_range(settings.window_start, end)


def build_window(lake: Lake, spec: "DatasetSpec", ds: str, settings: "TrainingSettings") -> Window:
    """Join the window's features to the labels that had arrived by `ds`, and split off the holdout."""
    days = [d for d in window_days(ds, settings) if lake.exists(FEATURES, d)]
    if not days:
        raise EmptyWindow(f"no features partitions in the training window before {ds}: land data first")

    arrivals = [a for a in ds_range(days[0], ds) if lake.exists(LABELS, a)]  # arrival day <= ds: no leakage
    labels = lake.read_days(LABELS, arrivals, columns=[spec.entity_id, EVENT_DS, spec.label])
    if labels is None or labels.num_rows == 0:
        raise EmptyWindow(f"no labels had arrived by {ds} for prediction days {days[0]}..{days[-1]}")
    labels = labels.filter(pc.is_in(labels[EVENT_DS], pa.array(days)))
    labels = _latest_label_per_entity(labels, spec.entity_id)

    parts, coverage = [], {}
    for day in days:
        feats = lake.read(FEATURES, day, columns=[spec.entity_id, *spec.features])
        day_labels = labels.filter(pc.equal(labels[EVENT_DS], day)).select([spec.entity_id, EVENT_DS, spec.label])
        joined = feats.join(day_labels, keys=spec.entity_id, join_type="inner")
        coverage[day] = round(joined.num_rows / max(feats.num_rows, 1), 4)
        if joined.num_rows:
            parts.append(joined.sort_by(spec.entity_id))  # joins do not keep order: sort for determinism
    if not parts:
        raise EmptyWindow(f"none of the labels that arrived by {ds} match features in {days[0]}..{days[-1]}")
    table = pa.concat_tables(parts, promote_options="permissive")

    labelled_days = sorted({d for d, c in coverage.items() if c > 0})
    newest = labelled_days[-settings.holdout_days:]
    in_newest = np.isin(table.column(EVENT_DS).to_numpy(zero_copy_only=False), newest)
    in_holdout = in_newest & (_unit_hash(table.column(spec.entity_id)) < HOLDOUT_SHARE)
    mask = pa.array(in_holdout)
    return Window(ds=ds, days=days, train=table.filter(pc.invert(mask)), holdout=table.filter(mask), coverage=coverage)


def _latest_label_per_entity(labels: pa.Table, entity_id: str) -> pa.Table:
    """A corrected label arriving later replaces the earlier one."""
    if labels.num_rows == 0:
        return labels
    ordered = labels.sort_by([(entity_id, "ascending"), (DS, "descending")])
    ids = ordered.column(entity_id).to_numpy(zero_copy_only=False)
    first = np.ones(len(ids), dtype=bool)
    first[1:] = ids[1:] != ids[:-1]
    return ordered.filter(pa.array(first))


def _unit_hash(ids: pa.ChunkedArray) -> np.ndarray:
    """A stable value in [0, 1) per id, the same on every machine and Python version."""
    out = np.empty(len(ids), dtype=np.float64)
    for i, v in enumerate(ids.to_pylist()):
        out[i] = int.from_bytes(hashlib.blake2b(str(v).encode(), digest_size=8).digest(), "big") / 2.0**64
    return out
