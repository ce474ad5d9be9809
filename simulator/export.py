"""Flat files for import tests: one CSV (or .csv.gz, or Parquet) row per event, with a timestamp column.

`nightshift import` reads one flat file and lays it out in the lake. These generators write
such files a day at a time, so a large file never has to fit in memory:

- `world_csv`: the simulator's world (its scenarios, drift and late labels) as a flat file:
  `entity_id`, `timestamp`, the spec's features, the label and, optionally, `label_time`.
- `odd_table_csv`: a table shaped nothing like the simulator's (other names, integer,
  boolean and high-cardinality string columns, gaps), to show the system takes "any table".

Timestamps are ISO-8601 strings without a zone (read as UTC). Missing values are empty
fields (pyarrow reads an empty string field as "", pandas as NaN). The format follows the
path: `.parquet` writes Parquet (timestamps as `timestamp[ms]`, the coarsest unit Parquet
has; missing categories null), `.gz` a gzip-compressed CSV, anything else a plain CSV. The
same arguments give the same bytes. Each generator draws from its own RNG streams, apart
from the world's, so adding a column here never moves the world's numbers.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from nightshift.choices import TaskName
from nightshift.dates import add_days, parse_ds
from nightshift.spec import DatasetSpec
from simulator.world import MULTICLASS_SCENARIOS, SCENARIOS, LabelDelay, World

TIMESTAMP = "timestamp"  # world_csv: when the row happened
LABEL_TIME = "label_time"  # world_csv: when its label arrived

_DAY_SECONDS = 86_400
# Streams of a day, far from the world's own (1..7), so the two never share random numbers.
_ROW_TIME, _LABEL_CLOCK = 1_001, 1_002
_ODD_PARAMS = 2**41  # "day index" of the odd table's fixed parameters
(_ODD_NUMERIC, _ODD_INTEGER, _ODD_FLAGS, _ODD_CATEGORY, _ODD_MISSING, _ODD_LABEL, _ODD_DELAY, _ODD_TIME) = range(2_001, 2_009)


# -- shared ------------------------------------------------------------------------------
class _Sink:
    """Writes tables of one schema to a CSV, gzip CSV or Parquet file, chosen by suffix.

    The file is written under a `.partial` name and renamed into place by `close`, so a
    reader (or a test that failed half-way) never finds half a file under the real name.
    """

    def __init__(self, path: str, schema: pa.Schema, timestamps: Sequence[str]):
        self.path, self.schema, self.timestamps = path, schema, tuple(timestamps)
        self.parquet = path.endswith(".parquet")
        self.rows = 0
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self._partial = path + ".partial"
        if self.parquet:
            import pyarrow.parquet as pq

            fields = [pa.field(f.name, pa.timestamp("ms")) if f.name in self.timestamps else f for f in schema]
            self._writer = pq.ParquetWriter(self._partial, pa.schema(fields))
            self._stream = None
        else:
            import pyarrow.csv as pacsv

            self._stream = pa.CompressedOutputStream(self._partial, "gzip") if path.endswith(".gz") else pa.OSFile(self._partial, "wb")
            self._writer = pacsv.CSVWriter(self._stream, schema)

    def __enter__(self) -> "_Sink":
        return self

    def __exit__(self, kind, *_) -> None:
        if kind is not None:  # failed half-way: leave nothing behind
            with contextlib.suppress(Exception):
                self._writer.close()
                if self._stream is not None:
                    self._stream.close()
            with contextlib.suppress(FileNotFoundError):
                os.remove(self._partial)

    def write(self, table: pa.Table) -> None:
        table = table.select(self.schema.names).cast(self.schema)
        if self.parquet:
            for name in self.timestamps:
                i = table.column_names.index(name)
                table = table.set_column(i, name, pc.cast(table[name], pa.timestamp("ms")))
        self._writer.write_table(table)
        self.rows += table.num_rows

    def close(self) -> int:
        """Close the file, move it into place and return its size in bytes."""
        self._writer.close()
        if self._stream is not None:
            self._stream.close()
        os.replace(self._partial, self.path)
        return os.path.getsize(self.path)


def _iso(day: str, seconds: np.ndarray, sep: str = "T") -> pa.Array:
    """'YYYY-MM-DDThh:mm:ss' strings for `seconds` after midnight of `day` (seconds may run past a day)."""
    t = np.datetime64(day, "s") + seconds.astype("timedelta64[s]")
    text = np.datetime_as_string(t, unit="s")
    if sep != "T":
        text = np.char.replace(text, "T", sep)
    return pa.array(text.tolist(), pa.string())


def _check_range(start: str, days: int, rows_per_day: int) -> None:
    parse_ds(start)
    if days < 1:
        raise ValueError(f"days must be >= 1, got {days}")
    if rows_per_day < 1:
        raise ValueError(f"rows_per_day must be >= 1, got {rows_per_day}")


def _gz_path(path: str | os.PathLike, compress: bool) -> str:
    path = os.fspath(path)
    if compress and not path.endswith(".gz"):
        path += ".gz"
    return path


# -- the simulator's world as a flat file ------------------------------------------------------
def world_csv(
    path: str | os.PathLike,
    spec: DatasetSpec,
    *,
    start: str,
    days: int,
    rows_per_day: int,
    scenario: str = "none",
    onset: int = 0,
    seed: int = 0,
    task: TaskName | str | None = None,
    compress: bool = False,
    label_time: bool = True,
    censor: bool = False,
    label_delay: LabelDelay = LabelDelay(),
) -> dict:
    """Write `days` days of the world from `start` as one flat file; return a small summary.

    Columns: the spec's entity id (the simulator's ids), `timestamp` (a seeded second of the
    row's day; rows in time order), every feature (NaN written as missing), the label (0/1
    or minutes, by `task`, default the spec's) and, when `label_time`, `label_time` (a
    seeded second of the day the label arrives, from the world's delays: always a later day).
    `censor=True` blanks the label (and its time) of rows whose label arrives after the last
    day, as in an export taken at the end of the range. `compress=True` writes `PATH.gz`.
    """
    _check_range(start, days, rows_per_day)
    if scenario not in SCENARIOS + MULTICLASS_SCENARIOS:
        raise ValueError(f"unknown scenario {scenario!r}; valid scenarios: {', '.join(SCENARIOS + MULTICLASS_SCENARIOS)}")
    if scenario != "none" and not 0 <= onset < days:
        raise ValueError(f"onset must be a day index in 0..{days - 1} (day 0 is {start}), got {onset}")
    if task is not None:
        spec = spec.model_copy(update={"task": TaskName(task)})
    reserved = {TIMESTAMP, LABEL_TIME} & {spec.entity_id, spec.label, *spec.features}
    if reserved:
        raise ValueError(f"the spec uses column names this file reserves: {sorted(reserved)}")
    world = World(spec, seed=seed, scenario=scenario, onset=onset if scenario != "none" else 0, label_delay=label_delay)
    path = _gz_path(path, compress)
    last = add_days(start, days - 1)

    fields = [pa.field(spec.entity_id, pa.string()), pa.field(TIMESTAMP, pa.string())]
    fields += [pa.field(c, pa.float64()) for c in spec.numeric] + [pa.field(c, pa.string()) for c in spec.categorical]
    fields.append(pa.field(spec.label, world.label_type))
    if label_time:
        fields.append(pa.field(LABEL_TIME, pa.string()))
    with _Sink(path, pa.schema(fields), (TIMESTAMP, LABEL_TIME) if label_time else (TIMESTAMP,)) as sink:
        labelled, max_delay = 0, 0
        for i in range(days):
            ds = add_days(start, i)
            table = world.features(i, ds, rows_per_day)
            y, delay = world.draw_labels(table, i)
            row_rng = np.random.default_rng([world.seed, i, _ROW_TIME])
            clock_rng = np.random.default_rng([world.seed, i, _LABEL_CLOCK])
            row_seconds = np.sort(row_rng.integers(0, _DAY_SECONDS, rows_per_day))
            label_seconds = delay.astype(np.int64) * _DAY_SECONDS + clock_rng.integers(0, _DAY_SECONDS, rows_per_day)
            arrived = i + delay.astype(np.int64) <= days - 1 if censor else np.ones(rows_per_day, bool)
            for c in spec.numeric:  # NaN -> missing: an empty field, not the text "nan"
                table = table.set_column(table.column_names.index(c), c, pc.if_else(pc.is_nan(table[c]), pa.scalar(None, pa.float64()), table[c]))
            table = table.add_column(1, TIMESTAMP, _iso(ds, row_seconds))
            table = table.append_column(spec.label, pa.array(y, world.label_type, mask=~arrived))
            if label_time:
                table = table.append_column(LABEL_TIME, pc.if_else(pa.array(arrived), _iso(ds, label_seconds), pa.scalar(None, pa.string())))
            sink.write(table)
            labelled += int(arrived.sum())
            max_delay = max(max_delay, int(delay.max()))
        size = sink.close()
    return {
        "path": path,
        "rows": sink.rows,
        "labelled": labelled,
        "days": days,
        "start": start,
        "end": last,
        "columns": sink.schema.names,
        "id_col": spec.entity_id,
        "timestamp_col": TIMESTAMP,
        "label_col": spec.label,
        "label_time_col": LABEL_TIME if label_time else None,
        "task": str(spec.task),
        "scenario": scenario,
        "onset_ds": add_days(start, onset) if scenario != "none" else None,
        "max_label_delay_days": max_delay,
        "bytes": size,
    }


# -- a table of another shape ---------------------------------------------------------------
ODD_TIMESTAMP = "order_ts"
ODD_ID = "customer_ref"
ODD_LABEL_TIME = "label_ts"
ODD_LABELS = {TaskName.BINARY: "churned", TaskName.REGRESSION: "delivery_minutes"}
ODD_NUMERIC = ("basket_value", "items", "distance_km", "age_days", "discount_pct", "avg_rating", "sessions_30d")
ODD_INTEGER = ("weekday", "hour", "n_children")  # low-cardinality integers
ODD_BOOLEAN = ("is_member", "express")
ODD_CATEGORICAL = ("postcode", "campaign", "channel")  # thousands of values, ~1000 rare ones, five
ODD_COLUMNS = (ODD_TIMESTAMP, ODD_ID, *ODD_NUMERIC, *ODD_INTEGER, *ODD_BOOLEAN, *ODD_CATEGORICAL)

_POSTCODES, _AREAS, _CAMPAIGNS = 5_000, 40, 1_000
_CHANNELS = ("web", "app", "phone", "partner", "marketplace")
_CHANNEL_P = np.array([0.40, 0.35, 0.10, 0.10, 0.05])
_CHANNEL_P_DRIFTED = np.array([0.25, 0.25, 0.05, 0.15, 0.30])  # from drift_from: the marketplace grows
_DISTANCE_DRIFT = 1.6  # from drift_from: deliveries reach further out
_MISSING = {"distance_km": 0.03, "age_days": 0.02, "avg_rating": 0.08, "channel": 0.04}
_CHURN_RATE = 0.25
_DELIVERY_NOISE = 10.0  # minutes
_ODD_LABEL_DELAY = LabelDelay(p_fast=0.9, fast_mean_days=2.5, fast_max_days=7, max_days=21)  # most within a week


class _OddWorld:
    """The fixed parameters of the odd table for a seed: postcodes, their areas, effects."""

    def __init__(self, seed: int):
        rng = np.random.default_rng([seed, _ODD_PARAMS])
        letters = np.array(list("ABCDEFGHJKLMNPRSTUWXYZ"))
        areas = sorted({"".join(rng.choice(letters, 2)) for _ in range(4 * _AREAS)})[:_AREAS]
        n = 2 * _POSTCODES  # candidates; duplicates dropped, the first _POSTCODES kept
        area = rng.integers(0, len(areas), n)
        district, sector, unit = rng.integers(1, 30, n), rng.integers(0, 10, n), rng.choice(letters, (n, 2))
        candidates = [f"{areas[a]}{d} {s}{u0}{u1}" for a, d, s, (u0, u1) in zip(area.tolist(), district.tolist(), sector.tolist(), unit.tolist())]
        _, first = np.unique(candidates, return_index=True)
        keep = np.sort(first)[:_POSTCODES]
        postcodes = [candidates[k] for k in keep]
        self.area_of = area[keep]
        self.postcodes = pa.array(postcodes, pa.string())
        weights = 1.0 / (np.arange(_POSTCODES) + 200.0) ** 0.7  # some busy postcodes, a long tail
        self.postcode_p = rng.permutation(weights / weights.sum())
        self.area_far = rng.gamma(2.0, 0.5, len(areas))  # distance multiplier: rural areas lie further out
        self.area_churn = rng.normal(0.0, 0.4, len(areas))
        self.area_minutes = rng.normal(0.0, 3.0, len(areas))
        self.campaigns = pa.array([f"cmp-{k:04d}" for k in range(_CAMPAIGNS)], pa.string())
        self.campaign_churn = rng.normal(0.0, 0.3, _CAMPAIGNS)
        self.churn_intercept = 0.0
        x = self.draw((seed, _ODD_PARAMS), 50_000, "2000-01-03", drifted=False)  # calibration only
        z = self.churn_logit(x)
        lo, hi = -10.0, 10.0
        for _ in range(60):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if np.mean(1 / (1 + np.exp(-(z + mid)))) < _CHURN_RATE else (lo, mid)
        self.churn_intercept = (lo + hi) / 2

    def draw(self, key: tuple[int, int], rows: int, ds: str, drifted: bool) -> dict[str, np.ndarray]:
        """A day's columns as numpy arrays (NaN or -1 where missing) plus the seconds of its rows."""

        def rng(stream: int) -> np.random.Generator:
            return np.random.default_rng([*key, stream])

        num, ints, flags, cat, miss = rng(_ODD_NUMERIC), rng(_ODD_INTEGER), rng(_ODD_FLAGS), rng(_ODD_CATEGORY), rng(_ODD_MISSING)
        x: dict[str, np.ndarray] = {}
        x["seconds"] = np.sort(rng(_ODD_TIME).integers(0, _DAY_SECONDS, rows))
        postcode = cat.choice(_POSTCODES, rows, p=self.postcode_p)
        area = self.area_of[postcode]
        channel_p = _CHANNEL_P_DRIFTED if drifted else _CHANNEL_P
        x["postcode"], x["area"] = postcode, area
        x["campaign"] = cat.integers(0, _CAMPAIGNS, rows)
        x["channel"] = np.minimum(np.searchsorted(np.cumsum(channel_p), cat.random(rows), side="right"), len(_CHANNELS) - 1)
        x["items"] = 1 + num.poisson(2.5, rows)
        x["basket_value"] = np.round(x["items"] * num.lognormal(2.6, 0.45, rows), 2)
        x["distance_km"] = np.round(num.gamma(2.0, 2.5, rows) * self.area_far[area] * (_DISTANCE_DRIFT if drifted else 1.0), 1)
        x["age_days"] = np.floor(num.exponential(500.0, rows))
        x["discount_pct"] = np.round(np.where(num.random(rows) < 0.6, 0.0, num.uniform(5, 40, rows)), 1)
        x["avg_rating"] = np.round(np.clip(num.normal(3.9, 0.6, rows), 1.0, 5.0), 1)
        x["sessions_30d"] = num.poisson(6.0, rows).astype(float)
        x["weekday"] = np.full(rows, dt.date.fromisoformat(ds).weekday())
        x["hour"] = x["seconds"] // 3600
        x["n_children"] = np.minimum(ints.poisson(0.9, rows), 4)
        x["is_member"] = flags.random(rows) < 0.35
        x["express"] = flags.random(rows) < 0.3
        for col, share in _MISSING.items():
            gap = miss.random(rows) < share
            if col == "channel":
                x[col] = np.where(gap, -1, x[col])
            else:
                x[col] = np.where(gap, np.nan, x[col])
        return x

    def churn_logit(self, x: dict[str, np.ndarray]) -> np.ndarray:
        """Churn: low engagement, poor ratings, late deliveries, bargain hunting; members stay."""
        rating = np.where(np.isnan(x["avg_rating"]), 3.4, x["avg_rating"])  # no rating yet: a new, less attached customer
        age = np.where(np.isnan(x["age_days"]), 500.0, x["age_days"])
        distance = np.where(np.isnan(x["distance_km"]), 5.0, x["distance_km"])
        late = (distance > 9.0) & ~x["express"]
        channel_effect = np.array([0.0, -0.5, 0.35, 0.7, 0.6, 0.0])[x["channel"]]  # -1 (missing) -> the last, 0
        return (
            self.churn_intercept
            - 0.85 * (np.log1p(age) - 5.6)
            - 0.22 * (x["sessions_30d"] - 6.0)
            - 1.1 * (rating - 3.9)
            + 0.045 * x["discount_pct"]
            - 1.2 * x["is_member"]
            - 0.25 * x["n_children"]
            + 1.0 * late
            - 0.35 * np.log(x["basket_value"] / 40.0)
            + channel_effect
            + self.area_churn[x["area"]]
            + self.campaign_churn[x["campaign"]]
        )

    def delivery_mean(self, x: dict[str, np.ndarray]) -> np.ndarray:
        """Delivery minutes: distance, basket size, express, rush hours, weekends, the area."""
        distance = np.where(np.isnan(x["distance_km"]), 5.0, x["distance_km"])
        rush = np.isin(x["hour"], (12, 13, 18, 19, 20))
        weekend = x["weekday"] >= 4  # Friday to Sunday
        channel_effect = np.array([0.0, 0.0, 3.0, 5.0, 4.0, 0.0])[x["channel"]]
        return (
            18.0
            + 3.2 * distance
            + 1.2 * x["items"]
            - 9.0 * x["express"]
            + 6.0 * rush
            + 4.0 * weekend
            + channel_effect
            + self.area_minutes[x["area"]]
        )


def odd_table_csv(
    path: str | os.PathLike,
    *,
    start: str,
    days: int,
    rows_per_day: int = 200,
    seed: int = 0,
    task: TaskName | str = TaskName.BINARY,
    drift_from: int | None = None,
    censor: bool = False,
) -> dict:
    """Write a table shaped unlike the simulator's, `rows_per_day` orders a day from `start`; return a summary.

    Columns, in order: `order_ts` (string 'YYYY-MM-DD hh:mm:ss', rows in time order),
    `customer_ref` (string, unique), seven numeric (`basket_value` float, `items` int,
    `distance_km` float with gaps, `age_days` int with gaps, `discount_pct` float,
    `avg_rating` float with gaps, `sessions_30d` int), three small integers (`weekday` 0-6,
    `hour` 0-23, `n_children` 0-4), two booleans (`is_member`, `express`), three strings
    (`postcode`: 5,000 values, a few thousand seen in a month; `campaign`: 1,000 rare values;
    `channel`: five values with gaps), the label (`churned` int 0/1 for binary, about 25%;
    `delivery_minutes` float for regression), and `label_ts` (when the label arrived: a later
    day, 90% within a week, at most 21 days). From day index `drift_from` on, `distance_km`
    grows by 60% and the channel mix moves toward `marketplace`. `censor` as in `world_csv`.
    """
    _check_range(start, days, rows_per_day)
    task = TaskName(task)
    if drift_from is not None and not 0 <= drift_from < days:
        raise ValueError(f"drift_from must be a day index in 0..{days - 1} (day 0 is {start}), got {drift_from}")
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    path = os.fspath(path)
    world = _OddWorld(int(seed))
    label = ODD_LABELS[task]
    label_type = pa.int64() if task == TaskName.BINARY else pa.float64()
    fields = [pa.field(ODD_TIMESTAMP, pa.string()), pa.field(ODD_ID, pa.string())]
    fields += [pa.field(c, pa.int64() if c in ("items", "age_days", "sessions_30d") else pa.float64()) for c in ODD_NUMERIC]
    fields += [pa.field(c, pa.int64()) for c in ODD_INTEGER] + [pa.field(c, pa.bool_()) for c in ODD_BOOLEAN]
    fields += [pa.field(c, pa.string()) for c in ODD_CATEGORICAL]
    fields += [pa.field(label, label_type), pa.field(ODD_LABEL_TIME, pa.string())]
    schema = pa.schema(fields)
    with _Sink(path, schema, (ODD_TIMESTAMP, ODD_LABEL_TIME)) as sink:
        labelled = 0
        for i in range(days):
            ds = add_days(start, i)
            x = world.draw((int(seed), i), rows_per_day, ds, drifted=drift_from is not None and i >= drift_from)
            label_rng = np.random.default_rng([int(seed), i, _ODD_LABEL])
            if task == TaskName.BINARY:
                y = (label_rng.random(rows_per_day) < 1 / (1 + np.exp(-world.churn_logit(x)))).astype(np.int64)
            else:
                y = np.round(np.maximum(world.delivery_mean(x) + _DELIVERY_NOISE * label_rng.standard_normal(rows_per_day), 5.0), 1)
            delay_rng = np.random.default_rng([int(seed), i, _ODD_DELAY])
            delay = _ODD_LABEL_DELAY.draw(delay_rng, rows_per_day).astype(np.int64)
            label_seconds = delay * _DAY_SECONDS + delay_rng.integers(0, _DAY_SECONDS, rows_per_day)
            arrived = i + delay <= days - 1 if censor else np.ones(rows_per_day, bool)
            # A unique, random-looking reference: (day, row) through a bijection of 32-bit integers.
            serial = (np.uint64(i * rows_per_day + int(seed) * 7_919) + np.arange(rows_per_day, dtype=np.uint64)) % np.uint64(2**32)
            ref = (serial * np.uint64(2_654_435_761)) % np.uint64(2**32)  # odd multiplier: unique while days * rows < 2**32
            cols = {
                ODD_TIMESTAMP: _iso(ds, x["seconds"], sep=" "),
                ODD_ID: pa.array([f"CR{r:08X}" for r in ref.tolist()], pa.string()),
            }
            for c in ODD_NUMERIC:
                v = x[c]
                cols[c] = pa.array(v, pa.float64(), mask=np.isnan(v)).cast(schema.field(c).type)
            for c in (*ODD_INTEGER, *ODD_BOOLEAN):
                cols[c] = pa.array(x[c]).cast(schema.field(c).type)
            cols["postcode"] = world.postcodes.take(pa.array(x["postcode"]))
            cols["campaign"] = world.campaigns.take(pa.array(x["campaign"]))
            cols["channel"] = pa.array(np.array(_CHANNELS, dtype=object)[x["channel"]], pa.string(), mask=x["channel"] < 0)
            cols[label] = pa.array(y, label_type, mask=~arrived)
            cols[ODD_LABEL_TIME] = pc.if_else(pa.array(arrived), _iso(ds, label_seconds, sep=" "), pa.scalar(None, pa.string()))
            sink.write(pa.table(cols))
            labelled += int(arrived.sum())
        size = sink.close()
    return {
        "path": path,
        "rows": sink.rows,
        "labelled": labelled,
        "days": days,
        "start": start,
        "end": add_days(start, days - 1),
        "columns": schema.names,
        "id_col": ODD_ID,
        "timestamp_col": ODD_TIMESTAMP,
        "label_col": label,
        "label_time_col": ODD_LABEL_TIME,
        "task": str(task),
        "drift_from_ds": add_days(start, drift_from) if drift_from is not None else None,
        "bytes": size,
    }
