"""The training window: labelled rows a retrain for day `ds` may use, and its holdout.

Only labels that had *arrived* by `ds` are read (`nightshift.tables.labels`), so a replay of
an old retrain sees exactly what the original run saw.

The window is a range of prediction days (`event_ds`), sized by days and by rows:
- `sliding`: the `window_days` days before `ds`, reaching further back, day by day, until
  it holds `window_min_rows` labelled rows (never beyond `window_max_days`). If those days
  hold no labelled data at all (a gap in the data), it reaches back to the newest labelled
  data and says so in its notes.
- `expanding`: from `window_start` to the day before `ds`;
- `fixed`: `window_start` to `window_end`.
- `representative` and `recent`: the days of `sliding`, then weighted when training
  (`training.reweight`): importance weights that make history look like the newest nights,
  or the days since the drift onset weighted up.

The holdout is a deterministic half (by a hash of the entity id) of the labelled rows of
the newest labelled days: at least `holdout_days` of them, and more, up to
`holdout_max_days`, until it holds what the gate needs (the caller says what that is). The
rest trains. Champion and challenger are both judged on it, and neither has seen it. It uses
every label that has arrived rather than waiting for days to mature: a gate that waited for
90% label coverage would be blind to the newest regime for weeks. The per-day label
coverage goes into the evidence. When a retrain knows the drift onset, the gate may judge on
the holdout's rows since it alone (`since_onset`, `training.evaluate.choose_holdout`).

Validation (`split_validation`, early stopping and the tournament's choice) is time-based too:
a hash half of the rows of the newest days that remain after the holdout, over as many days
as hold about `training.valid_share` of them; the other half of those days trains. Its hash
is salted apart from the holdout's, which already took its own half of those days. After a
drift the newest days are often the only rows from the new regime: were they all
validation, the candidates that weigh those rows up (`recent`, `representative`) would train
on none of them. For the same reason a retrain that knows the drift onset validates on the
days since (when they hold enough rows): older days would judge the candidates on a world
that production has left.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from nightshift.choices import WindowKind
from nightshift.dates import add_days, ds_range
from nightshift.lake import FEATURES, Lake
from nightshift.spec import EVENT_DS
from nightshift.tables import labels as labels_table

if TYPE_CHECKING:
    from nightshift.settings import TrainingSettings
    from nightshift.spec import DatasetSpec

HOLDOUT_SHARE = 0.5
VALID_HALF = 0.5  # of the rows of the validation days; the rest of them trains
_VALID_SALT = b"nightshift-valid"  # blake2b's salt (16 bytes at most): a hash independent of the holdout's
# Kinds that choose their days as `sliding` does; the last two differ only in sample weights.
SLIDING_KINDS = (WindowKind.SLIDING, WindowKind.REPRESENTATIVE, WindowKind.RECENT)
_REACH_CHUNK_DAYS = 7  # days read at a time while a sliding window reaches back for rows


class EmptyWindow(ValueError):
    """The window holds too few labelled rows to train on."""


@dataclass
class Window:
    ds: str
    days: list[str]
    train: pa.Table
    holdout: pa.Table
    coverage: dict[str, float] = field(default_factory=dict)  # event day -> labelled share of its rows
    notes: list[str] = field(default_factory=list)  # how the window was sized, in words

    def summary(self) -> dict:
        return {
            "ds": self.ds,
            "first_day": self.days[0] if self.days else None,
            "last_day": self.days[-1] if self.days else None,
            "days": len(self.days),
            "train_rows": self.train.num_rows,
            "holdout_rows": self.holdout.num_rows,
            "holdout_days": sorted(set(self.holdout.column(EVENT_DS).to_pylist())) if self.holdout.num_rows else [],
            "coverage": self.coverage,
            "notes": self.notes,
        }


def build_window(lake: Lake, spec: "DatasetSpec", ds: str, settings: "TrainingSettings",
                 holdout_enough: Callable[[pa.Table], bool] | None = None) -> Window:
    """Join the window's features to the labels that had arrived by `ds`, and split off the holdout.

    `holdout_enough(holdout)` says whether a candidate holdout is big enough for the gate;
    the holdout grows over older labelled days until it is (or `holdout_max_days` is reached).
    """
    available = [d for d in lake.partitions(FEATURES) if d < ds]
    days, labels, notes = _choose_days(lake, spec, ds, settings, available)

    parts, coverage = [], {}
    for day in days:
        feats = lake.read(FEATURES, day, columns=[spec.entity_id, *spec.features])
        joined = labels_table.join(feats, labels, day, spec)
        coverage[day] = round(joined.num_rows / max(feats.num_rows, 1), 4)
        if joined.num_rows:
            parts.append(joined.append_column(EVENT_DS, pa.repeat(pa.scalar(day, pa.string()), joined.num_rows)))
    if not parts:
        raise EmptyWindow(f"none of the labels that arrived by {ds} match features in {days[0]}..{days[-1]}")
    table = pa.concat_tables(parts, promote_options="permissive")

    labelled_days = sorted({d for d, c in coverage.items() if c > 0})
    in_half = _unit_hash(table.column(spec.entity_id)) < HOLDOUT_SHARE
    event = table.column(EVENT_DS).to_numpy(zero_copy_only=False)
    n_days = min(settings.holdout_days, len(labelled_days))
    while True:
        in_holdout = in_half & np.isin(event, labelled_days[-n_days:])
        holdout = table.filter(pa.array(in_holdout))
        if holdout_enough is None or holdout_enough(holdout) or n_days >= min(settings.holdout_max_days, len(labelled_days)):
            break
        n_days += 1
    if n_days > settings.holdout_days:
        notes.append(f"holdout grew to the newest {n_days} labelled days ({holdout.num_rows} rows) to hold what the gate needs")
    return Window(ds=ds, days=days, train=table.filter(pa.array(~in_holdout)), holdout=holdout, coverage=coverage, notes=notes)


def since_onset(holdout: pa.Table, onset: str) -> pa.Table:
    """The holdout's rows from prediction days on or after a drift onset: the world production is in now."""
    return holdout.filter(pc.greater_equal(holdout.column(EVENT_DS), pa.scalar(onset, pa.string())))


def window_days(ds: str, settings: "TrainingSettings") -> list[str]:
    """The calendar days a retrain on `ds` draws from before any reaching back (all before `ds`)."""
    last = add_days(ds, -1)
    if settings.window in SLIDING_KINDS:
        return ds_range(add_days(ds, -settings.window_days), last)
    if settings.window_start is None:
        raise ValueError(f"training.window={settings.window.value!r} needs training.window_start")
    if settings.window == WindowKind.EXPANDING:
        return ds_range(settings.window_start, last)
    end = min(settings.window_end or last, last)
    return ds_range(settings.window_start, end)


def _choose_days(lake: Lake, spec: "DatasetSpec", ds: str, settings: "TrainingSettings",
                 available: list[str]) -> tuple[list[str], pa.Table, list[str]]:
    """The feature days of the window, the labels for them that arrived by `ds`, and notes."""
    wanted = set(window_days(ds, settings))
    days = [d for d in available if d in wanted]
    notes: list[str] = []
    labels = labels_table.arrived(lake, spec, ds, days) if days else None
    if settings.window not in SLIDING_KINDS:
        if not days or labels.num_rows == 0:
            raise EmptyWindow(f"no labelled data in the {settings.window.value} window before {ds} "
                              f"(training.window_start={settings.window_start}): land data first or move the window")
        return days, labels, notes

    horizon = add_days(ds, -settings.window_max_days)
    older = [d for d in available if horizon <= d < (days[0] if days else ds)]
    if labels is None or labels.num_rows == 0:
        # A gap: nothing labelled in the usual days. Reach back to the newest labelled data.
        found = labels_table.arrived(lake, spec, ds, older) if older else None
        if found is None or found.num_rows == 0:
            raise EmptyWindow(f"no labelled data before {ds} within training.window_max_days={settings.window_max_days}: "
                              "land features and labels first")
        newest = max(found.column(EVENT_DS).to_pylist())
        first = add_days(newest, -(settings.window_days - 1))
        days = [d for d in older if first <= d <= newest]
        labels = found.filter(pc.is_in(found[EVENT_DS], pa.array(days, pa.string())))
        notes.append(f"no labelled data in the {settings.window_days} days before {ds}: reached back to "
                     f"{days[0]}..{days[-1]}, the newest labelled data")
        older = [d for d in older if d < days[0]]

    # Sized by rows too: a few hundred rows a day need more days than a few million.
    grew = False
    while labels.num_rows < settings.window_min_rows and older:
        chunk, older = older[-_REACH_CHUNK_DAYS:], older[:-_REACH_CHUNK_DAYS]
        more = labels_table.arrived(lake, spec, ds, chunk, since=chunk[0])
        if more.num_rows:
            labels = pa.concat_tables([more, labels], promote_options="permissive")
        days = chunk + days
        grew = True
    if grew:
        notes.append(f"reached back to {days[0]} to hold {labels.num_rows} labelled rows "
                     f"(training.window_min_rows={settings.window_min_rows})")
    return days, labels, notes


def fingerprint(window: Window, spec: "DatasetSpec") -> str:
    """A content hash of the window's labelled rows: the same data, the same fingerprint."""
    h = hashlib.sha256()
    for t in (window.train, window.holdout):
        for name in (spec.entity_id, EVENT_DS, spec.label):
            h.update("\x1f".join(map(str, t.column(name).to_pylist())).encode())  # values, never buffer padding
            h.update(b"\x1e")
    return h.hexdigest()[:16]


def _unit_hash(ids: pa.ChunkedArray | pa.Array, salt: bytes = b"") -> np.ndarray:
    """A stable value in [0, 1) per id, the same on every machine and Python version; another `salt`, another draw."""
    out = np.empty(len(ids), dtype=np.float64)
    for i, v in enumerate(ids.to_pylist()):
        out[i] = int.from_bytes(hashlib.blake2b(str(v).encode(), digest_size=8, salt=salt).digest(), "big") / 2.0**64
    return out


def split_validation(table: pa.Table, share: float, entity_id: str,
                     since: str | None = None) -> tuple[pa.Table, pa.Table]:
    """(train, validation): a hash half of the rows of the newest prediction days, over as many days as hold about `share` of the rows.

    Time-based, so the validation loss says how the model does on the newest data, as it
    will in production; the other half of those days trains, so that every candidate learns
    from the newest regime. The half is drawn by a hash of `entity_id` salted apart from the
    holdout's, so it is the same on every call and an entity is on one side only. It never
    reaches the oldest day, nor a day before `since` (a drift onset: production looks like
    the days since); no split (an empty validation) when `share` is 0, there is only one day
    or no day from `since` on.
    """
    empty = table.slice(0, 0)
    if share <= 0 or table.num_rows == 0:
        return table, empty
    event = table.column(EVENT_DS).to_numpy(zero_copy_only=False).astype(str)
    days, counts = np.unique(event, return_counts=True)
    if len(days) < 2:
        return table, empty
    # Only half of the chosen days' rows validate, so the days must hold share / VALID_HALF of them.
    newest_first = np.cumsum(counts[::-1])
    n_days = min(int(np.searchsorted(newest_first, share * table.num_rows / VALID_HALF)) + 1, len(days) - 1)
    if since is not None:
        n_days = min(n_days, int(np.sum(days >= since)))
        if n_days == 0:
            return table, empty
    in_valid = np.zeros(table.num_rows, dtype=bool)
    rows = np.flatnonzero(np.isin(event, days[-n_days:]))
    in_valid[rows] = _unit_hash(table.column(entity_id).take(pa.array(rows)), _VALID_SALT) < VALID_HALF
    mask = pa.array(in_valid)
    return table.filter(pc.invert(mask)), table.filter(mask)
