"""Import any table (CSV, gzipped CSV or Parquet; a local path or any fsspec URI) into the lake.

`import_table()` lands `features/ds=D` (entity id + feature columns) and `labels/ds=A` (entity
id, `event_ds`, label; A is the day the label arrived) in the shape `simulator/land.py` gives,
and writes the dataset spec into the settings file every entry point reads.

How it works, and why memory stays bounded whatever the file's size:
1. A sample (the first `SAMPLE_ROWS` rows) fixes each column's type and role and the task.
2. One streaming pass (CSV blocks or Parquet row groups) parses timestamps and labels, checks
   every value and spills rows per day into temporary Parquet files under
   `<home>/_work/import-<uuid>/` (at most `MAX_OPEN_WRITERS` open at once; a day may have
   several part files).
3. Only when the whole file has been read and no fatal problem was found is each day
   committed atomically with `Lake.writer`, streaming from the spill. Then the spill is
   deleted. On any error nothing is committed and the spill is removed. (Deduplication reads
   one day's ids at a time, so that step's memory grows with the largest day's ids, a few
   tens of bytes a row, never with the file.)

Role inference (the rule, printed with every import; `--numeric`/`--categorical` override it,
`--ignore` drops a column). It uses THE type rule of `nightshift.spec`:
- booleans -> categorical;
- strings and dictionaries -> categorical, except a string column that looks like an
  identifier or free text (in the sample: more than 50% distinct and more than 100 distinct
  values) -> ignored, with a note (keep it with `--categorical`); and a string column whose
  sampled values are at least 95% numbers stops the import, naming the ones that are not: a
  numeric column with typos, which would otherwise be left out unseen (`--categorical` keeps
  it as text);
- integers with at most 12 distinct values in the sample -> categorical;
- other integers, floats and decimals -> numeric;
- anything else (dates, lists, ...) -> ignored, with a note;
- an integer column that only indexes time -> ignored, with a note (keep it with `--keep-col`):
  in the sample, constant within each day and non-decreasing from day to day with at least two
  values (a year, a days-since-launch counter), or named like a period (year, month, quarter,
  week, fiscal_year, ...) and constant within each day. As a feature it is a new, unseen value
  every period: a drift alarm and a retrain each time, and nothing the model can learn from. A
  kept one is recorded in the spec's `time_index`: its drift is reported, but never starts a
  retrain on its own.

Task inference (`--task` overrides): binary if the label's non-null values are all 0/1 or
booleans (bool, 0/1 ints, 0.0/1.0 floats, strings "0"/"1"/"true"/"false"; landed as int64 0/1);
multiclass if they are text with 3 to `MAX_CLASSES` distinct values, or integers with 3 to
`MAX_INT_CATEGORIES` distinct values that repeat (at most half as many as the sampled labels;
landed as strings: the integer 2 is the class "2"); else
regression if they are all numbers (landed as float64). Text with more distinct values than
`MAX_CLASSES`, or nearly all distinct, is refused with the count: no class label looks like that.

Policies:
- The day of a row is the UTC date of its timestamp (a timestamp without a zone is UTC).
- A label arrives `--label-delay-days` after its row's day (default 1), or on the UTC date of
  `--label-time-col`. Every day from the first landed day to the last gets a labels
  partition, empty when nothing arrived, so readers can tell "no labels arrived" from "not
  landed". Labels that arrive after the last feature day are landed too (the file holds them).
  A labels partition that already exists keeps its rows for event days this import does not
  land, so appending a later file does not lose the earlier file's late labels.
- A missing label is not an error: the row lands as a feature row without a label.
- Duplicate ids within a day: the last occurrence in file order wins (counted and reported).
- Without `--id-col`, the id is derived from the row's content: a 128-bit hash (32 hex
  characters) of its timestamp and feature values (strings through blake2b, numbers by their
  bit pattern, combined with a splitmix64 mix, all vectorised). The same row gives the same
  id in every import; rows identical in timestamp and features share an id (the last wins).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
import shutil
import statistics
import tomllib
import uuid
from collections import OrderedDict, defaultdict
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from nightshift.choices import CalendarKind, TaskName
from nightshift.task import MAX_CLASSES, task_for
from nightshift.lake import FEATURES, LABELS, ROW_GROUP_ROWS, Lake
from nightshift.settings import REPO_ROOT, PathSettings, default_home
from nightshift.spec import (
    DS,
    EVENT_DS,
    Calendar,
    DatasetSpec,
    LabelDelayPolicy,
    categorical_type_ok,
    category_strings,
    numeric_type_ok,
)

if TYPE_CHECKING:
    from rich.console import Console

SAMPLE_ROWS = 100_000
MAX_INT_CATEGORIES = 12  # an integer with at most this many distinct sampled values is a category
ID_LIKE_DISTINCT = 100  # a string column with more distinct values than this ...
ID_LIKE_SHARE = 0.5  # ... and more than this share distinct looks like an id or free text
DEFAULT_LABEL_DELAY_DAYS = 1
MAX_OPEN_WRITERS = 32
MAX_ROW_GROUPS_PER_SPILL_FILE = 256  # bounds a spill writer's footer metadata
CSV_BLOCK_BYTES = 4 << 20
PARQUET_BATCH_ROWS = 65_536
EXAMPLES = 5
MOSTLY_NUMBERS = 0.95  # a text column whose sampled values are at least this share numbers is a numeric column with typos
DERIVED_ID = "row_id"
COMMIT_THREADS = min(2, os.cpu_count() or 1)

INFERENCE_RULE = (
    "booleans -> categorical; strings -> categorical unless id-like or free text "
    f"(> {ID_LIKE_SHARE:.0%} and > {ID_LIKE_DISTINCT} distinct in the sample) -> ignored; "
    f"integers with <= {MAX_INT_CATEGORIES} distinct in the sample -> categorical; "
    "other integers/floats/decimals -> numeric; anything else -> ignored"
)

_ROW = "_nightshift_row"  # file row number (1-based) carried through the spill
_DAY_US = 86_400_000_000
_EPOCH = dt.date(1970, 1, 1)
_NUMBER = r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$"
_ZONED = r"\d:\d\d(:\d\d(\.\d*)?)?\s*([zZ]|[+-]\d\d(:?\d\d)?)$"  # a time with a zone offset
_ISO_DAY = r"^\d{4}-\d{2}-\d{2}"
_COMPRESSION = {".gz": "gzip", ".gzip": "gzip", ".bz2": "bz2", ".zst": "zstd", ".zstd": "zstd", ".lz4": "lz4"}


class Role(StrEnum):
    ID = "id"
    TIMESTAMP = "timestamp"
    LABEL = "label"
    LABEL_TIME = "label time"
    NUMERIC = "numeric"
    CATEGORICAL = "categorical"
    IGNORED = "ignored"


class ImportFailed(ValueError):
    """The import stopped before committing anything; the message says what to do."""


@dataclass(frozen=True)
class ImportOptions:
    source: str
    timestamp_col: str
    label_col: str
    id_col: str | None = None
    task: TaskName | None = None
    label_delay_days: int | None = None
    label_time_col: str | None = None
    numeric: tuple[str, ...] = ()
    categorical: tuple[str, ...] = ()
    ignore: tuple[str, ...] = ()
    keep_cols: tuple[str, ...] = ()  # time indexes to keep as features anyway
    force: bool = False
    timestamp_format: str | None = None
    skip_bad_timestamps: bool = False
    config: str | None = None
    sample_rows: int = SAMPLE_ROWS
    block_bytes: int = CSV_BLOCK_BYTES
    progress: bool = True


@dataclass
class ColumnInfo:
    name: str
    type: str  # the Arrow type it is read as
    role: Role
    distinct: int | None  # in the sample
    nulls: int  # in the sample
    note: str = ""


@dataclass
class Issue:
    """One kind of bad value: how many, and the first few with their row numbers (1 = first data row)."""

    kind: str
    column: str
    rule: str
    fix: str
    fatal: bool
    count: int = 0
    examples: list[tuple[int, Any]] = field(default_factory=list)

    def describe(self) -> str:
        shown = ", ".join(f"row {r}: {v!r}" for r, v in self.examples)
        return (f"column {self.column!r} breaks rule '{self.rule}': {self.count:,} "
                f"value{'s' if self.count != 1 else ''} (first: {shown}). {self.fix}")


@dataclass
class ImportReport:
    source: str
    source_format: str
    source_bytes: int | None
    lake: str
    spec_path: str
    spec: DatasetSpec
    columns: list[ColumnInfo]
    task: TaskName
    task_inferred: bool
    id_policy: str
    arrival_policy: str
    rows_read: int
    rows_landed: int
    rows_labelled: int
    rows_per_day: dict[str, int]
    label_days: tuple[str, str]
    labels_landed: int
    issues: list[Issue]
    notes: list[str]
    seconds: float = 0.0

    @property
    def days(self) -> list[str]:
        return sorted(self.rows_per_day)

    @property
    def label_coverage(self) -> float:
        return self.rows_labelled / self.rows_landed if self.rows_landed else 0.0


# -- pure decisions (table-tested) -----------------------------------------------------------
def infer_role(dtype: pa.DataType, distinct: int, sampled: int) -> tuple[Role, str]:
    """The role a column gets from its Arrow type and its distinct count in the sample, and a note when ignored."""
    if pa.types.is_dictionary(dtype):
        dtype = dtype.value_type
    if pa.types.is_boolean(dtype):
        return Role.CATEGORICAL, ""
    if pa.types.is_string(dtype) or pa.types.is_large_string(dtype):
        if distinct > ID_LIKE_DISTINCT and distinct > ID_LIKE_SHARE * sampled:
            return Role.IGNORED, (f"looks like an identifier or free text ({distinct:,} distinct in {sampled:,} sampled rows); "
                                  "keep it with --categorical")
        return (Role.CATEGORICAL, "") if categorical_type_ok(dtype) else (Role.IGNORED, f"type {dtype} is not supported")
    if pa.types.is_integer(dtype) and distinct <= MAX_INT_CATEGORIES:
        return Role.CATEGORICAL, ""
    if numeric_type_ok(dtype):
        return Role.NUMERIC, ""
    if pa.types.is_null(dtype):
        return Role.IGNORED, "empty in the sample; name it with --numeric or --categorical to keep it"
    return Role.IGNORED, f"type {dtype} is neither numeric nor categorical"


PERIOD_NAME = re.compile(r"(?:^|_)(year|yr|month|quarter|qtr|week|wk|fiscal_year|fiscal_quarter|fiscal_month|fiscal_week|fy|"
                         r"yearmonth|year_month|yyyymm|period)(?:$|_)", re.IGNORECASE)


def infer_time_index(name: str, days: np.ndarray, values: np.ndarray) -> str | None:
    """Why an integer column only indexes time, from its sampled values and their rows' days; None if it does not.

    `days`: each row's day (any integer day number, NaN where the timestamp is missing);
    `values`: the column as floats (NaN where missing). Rows missing either are left out.
    """
    days, values = np.asarray(days, np.float64), np.asarray(values, np.float64)
    ok = ~np.isnan(days) & ~np.isnan(values)
    if ok.sum() < 2:
        return None
    order = np.argsort(days[ok], kind="stable")
    d, v = days[ok][order], values[ok][order]
    starts = np.r_[True, d[1:] != d[:-1]]
    first = v[starts]  # each day's first value
    if not np.array_equal(v, first[np.cumsum(starts) - 1]):
        return None  # varies within a day: it describes rows, not time
    n_days, n_values = int(starts.sum()), len(np.unique(first))
    if n_values >= 2 and np.all(np.diff(first) >= 0):
        return f"constant within each day and rising with the day ({n_values} values over the sample's {n_days} days)"
    if PERIOD_NAME.search(name):
        return f"named like a period and constant within each of the sample's {n_days} days"
    return None


GATE_HOLDOUT_SHARE = 0.5  # the gate's holdout: a hash half of the labelled rows (training.window.HOLDOUT_SHARE)


def holdout_days_needed(labelled_per_day: float, min_rows: int) -> int | None:
    """Labelled days the gate's holdout must span to hold `min_rows` at this volume (None: no labels at all)."""
    per_day = labelled_per_day * GATE_HOLDOUT_SHARE
    return int(np.ceil(min_rows / per_day)) if per_day > 0 else None


def infer_task(labels: pa.Array | pa.ChunkedArray) -> TaskName:
    """binary if every non-null label is 0/1 or a boolean; multiclass if they are a few classes (text, or small
    integers); regression if every one is a number; else ImportFailed."""
    kinds = _classify_labels(pa.concat_arrays(labels.chunks) if isinstance(labels, pa.ChunkedArray) else labels)
    valid = ~kinds.missing
    if not valid.any():
        raise ImportFailed("cannot infer the task: the label has no values in the sample. "
                           "Pass --task binary|regression|multiclass.")
    text = kinds.text & valid
    values = kinds.values[valid]
    if text.any():
        shown = ", ".join(repr(v) for v in pc.filter(labels, pa.array(text)).to_pylist()[:EXAMPLES])
        if (kinds.number | kinds.boolword)[valid].any():
            raise ImportFailed(f"cannot infer the task: the label has mixed types (numbers and text such as {shown}). "
                               "Clean the label column: 0/1 for a binary task, numbers for regression, class names "
                               "for multiclass (or pass --task multiclass to take every value as a class name).")
        distinct = len(set(_class_strings(labels, kinds).filter(pa.array(valid)).to_pylist()))
        if distinct >= 3:
            _check_class_count(distinct, int(valid.sum()))
            return TaskName.MULTICLASS
        raise ImportFailed(f"cannot infer the task: label values such as {shown} are neither 0/1 nor numbers, and "
                           f"{distinct} distinct values are no multiclass label (it needs 3 or more). "
                           "Recode them as 0/1 (binary), or pass --task multiclass.")
    if (kinds.boolword[valid] | np.isin(values, (0.0, 1.0))).all():
        return TaskName.BINARY
    if kinds.boolword[valid].any():
        raise ImportFailed("cannot infer the task: the label mixes true/false with numbers other than 0/1. "
                           "Recode it as 0/1 (binary) or numbers (regression).")
    distinct = np.unique(values)
    if np.all(distinct == np.round(distinct)) and 3 <= len(distinct) <= MAX_INT_CATEGORIES and len(distinct) <= len(values) / 2:
        return TaskName.MULTICLASS  # a few repeated integer codes: classes (pass --task regression for a count to predict)
    return TaskName.REGRESSION


class TooManyClasses(ImportFailed):
    """A text label with too many distinct values to be a class label."""


def _check_class_count(distinct: int, rows: int) -> None:
    """Refuse a text label with too many distinct values to be classes, naming the count and the fix."""
    if distinct > MAX_CLASSES or (distinct > ID_LIKE_DISTINCT // 10 and distinct > 0.9 * rows):
        raise TooManyClasses(f"the label has {distinct:,} distinct values in {rows:,} labelled rows: too many to be "
                           f"classes (a multiclass label has at most {MAX_CLASSES}, and repeats). If it is a number to "
                           "predict, pass --task regression; otherwise recode it into fewer classes upstream.")


def _class_strings(col: pa.Array | pa.ChunkedArray, kinds: "_LabelKinds") -> pa.Array:
    """Label values as class names: text trimmed (case kept), integers as their digits ("2.0" -> "2"),
    booleans as true/false; null where missing or not a whole number."""
    col = _plain(col)
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    whole = np.isfinite(kinds.values) & (kinds.values == np.round(kinds.values))
    digits = np.where(whole, kinds.values, 0).astype(np.int64).astype(str).astype(object)
    if pa.types.is_boolean(col.type):
        out = np.where(kinds.values == 1, "true", "false").astype(object)
    elif pa.types.is_string(col.type):
        raw = np.asarray(pc.utf8_trim_whitespace(col).to_pylist(), dtype=object)
        out = np.where(kinds.number, digits, np.where(kinds.boolword, np.char.lower(raw.astype(str)).astype(object), raw))
    else:
        out = digits
    bad = kinds.missing | (kinds.number & ~whole)
    return pa.array(out.tolist(), pa.string(), mask=bad)


def infer_calendar(days: list[str]) -> Calendar:
    """daily if the days are contiguous; weekdays if every gap is a weekend and no weekend day has data; else blocks."""
    if not days:
        return Calendar()
    dates = sorted({dt.date.fromisoformat(d) for d in days})
    gaps = [(a, b) for a, b in zip(dates, dates[1:]) if (b - a).days > 1]
    if not gaps:
        return Calendar(kind=CalendarKind.DAILY)
    no_weekend_data = all(d.weekday() < 5 for d in dates)
    gaps_are_weekends = all(all((a + dt.timedelta(days=k)).weekday() >= 5 for k in range(1, (b - a).days)) for a, b in gaps)
    if no_weekend_data and gaps_are_weekends:
        return Calendar(kind=CalendarKind.WEEKDAYS)
    blocks, first = [], dates[0]
    for a, b in gaps:
        blocks.append((first.isoformat(), a.isoformat()))
        first = b
    blocks.append((first.isoformat(), dates[-1].isoformat()))
    return Calendar(kind=CalendarKind.BLOCKS, blocks=tuple(blocks))


def spec_differences(old: DatasetSpec, new: DatasetSpec) -> list[str]:
    """What differs between two specs in the fields an import decides (not calendar or label delay)."""
    out = []
    for name in ("entity_id", "label", "task", "numeric", "categorical", "time_index"):
        a, b = getattr(old, name), getattr(new, name)
        if a != b:
            out.append(f"{name}: {_show(a)} -> {_show(b)}")
    return out


# -- the import ------------------------------------------------------------------------------
def import_table(options: ImportOptions, *, env: dict[str, str] | None = None,
                 console: "Console | None" = None) -> ImportReport:
    """Land `options.source` in the lake and write its dataset spec; see the module docstring."""
    import time

    started = time.perf_counter()
    env = dict(os.environ if env is None else env)
    say: Callable[[str], None] = console.print if console is not None else (lambda _msg: None)
    _check_options(options)
    spec_path, existing = _settings_target(options.config, env)
    paths = existing.get("paths", {}) if isinstance(existing.get("paths"), dict) else {}
    home = Path(env.get("NIGHTSHIFT_HOME") or paths.get("home") or PathSettings().home)
    lake = Lake(env.get("NIGHTSHIFT_LAKE") or paths.get("lake") or str(home / "lake"),
                env.get("NIGHTSHIFT__PATHS__LAKE_BACKEND") or paths.get("lake_backend") or "posix")

    source = _Source(options.source)
    plan = _plan(source, options, say)
    _release()
    notes = list(plan.notes)

    old_spec = _existing_spec(existing)
    if old_spec is not None and not options.force:
        diff = spec_differences(old_spec, plan.spec_draft(LabelDelayPolicy(), Calendar()))
        if diff:
            raise ImportFailed(f"{spec_path} already holds a different dataset spec ({'; '.join(diff)}). "
                               "Import into another NIGHTSHIFT_HOME, or pass --force to replace the spec "
                               "(partitions already in the lake are kept).")

    work = home / "_work" / f"import-{uuid.uuid4().hex}"
    work.mkdir(parents=True, exist_ok=False)
    try:
        scan = _scan(source, plan, options, work, say)
        _release()
        fatal = [i for i in scan.issues.values() if i.fatal and i.count]
        if fatal:
            raise ImportFailed("nothing was imported:\n  " + "\n  ".join(i.describe() for i in fatal))
        if not scan.rows_per_day:
            raise ImportFailed(f"nothing to import: {scan.rows_read:,} rows read, none with a usable timestamp")
        days = sorted(scan.rows_per_day)
        all_days = sorted(set(days) | set(lake.partitions(FEATURES)))
        calendar = infer_calendar(all_days)
        max_delay = max(1, scan.max_delay_days)
        policy = LabelDelayPolicy(max_delay_days=max_delay)
        if old_spec is not None and not options.force:
            policy = LabelDelayPolicy(max_delay_days=max(max_delay, old_spec.label_delay.max_delay_days),
                                      min_coverage=old_spec.label_delay.min_coverage)
        try:
            spec = plan.spec_draft(policy, calendar)
            if old_spec is not None and not options.force and old_spec.segment is not None:
                spec = spec.model_copy(update={"segment": old_spec.segment})
        except ValueError as exc:
            raise ImportFailed(f"the inferred dataset spec is not valid: {exc}") from None
        last_label_day = max([days[-1], *scan.label_files_days()])
        label_days = _ds_range(days[0], last_label_day)

        # Everything below only writes: all checks have passed.
        dropped, landed = _dedupe(scan, plan, days)
        _commit_features(lake, scan, plan, days, dropped)
        labels_landed = _commit_labels(lake, scan, plan, label_days, set(days), dropped)
        _write_spec(spec_path, existing, spec, options.source)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        _remove_if_empty(home / "_work")

    notes += _holdout_note(existing, spec_path, (scan.labels_total - scan.labels_dropped) / len(days), say)
    arrival = (f"labels arrive on the UTC date of {options.label_time_col!r}" if options.label_time_col else
               f"labels arrive {scan.delay_days} day{'s' if scan.delay_days != 1 else ''} after their row's day"
               + (" (the default: pass --label-delay-days or --label-time-col to change it)"
                  if options.label_delay_days is None else ""))
    id_policy = (f"ids from column {options.id_col!r} ({plan.id_type})" if options.id_col else
                 f"derived: {plan.entity_id!r} = 128-bit hash of the timestamp and feature values (stable across imports)")
    return ImportReport(
        source=options.source, source_format=source.format, source_bytes=source.size, lake=lake.uri,
        spec_path=str(spec_path), spec=spec, columns=plan.columns, task=plan.task, task_inferred=plan.task_inferred,
        id_policy=id_policy, arrival_policy=arrival, rows_read=scan.rows_read, rows_landed=sum(landed.values()),
        rows_labelled=scan.labels_total - scan.labels_dropped, rows_per_day=landed,
        label_days=(label_days[0], label_days[-1]), labels_landed=labels_landed,
        issues=[i for i in scan.issues.values() if i.count], notes=notes,
        seconds=time.perf_counter() - started,
    )


def _holdout_note(existing: dict, spec_path: Path, labelled_per_day: float, say: Callable[[str], None]) -> list[str]:
    """Where the table's volume cannot fill the gate's holdout within training.holdout_max_days: the setting it takes."""
    from nightshift.settings import GateSettings, TrainingSettings

    training, gate = existing.get("training") or {}, existing.get("gate") or {}
    max_days = int(training.get("holdout_max_days", TrainingSettings().holdout_max_days))
    min_rows = int(gate.get("min_rows", GateSettings().min_rows))
    need = holdout_days_needed(labelled_per_day, min_rows)
    if need is None or need <= max_days:
        return []
    note = (f"at {labelled_per_day:.1f} labelled rows a day the gate's holdout (half of them) needs {need} days to hold "
            f"gate.min_rows={min_rows}, but training.holdout_max_days is {max_days}: no retrain could be judged. Add "
            f"holdout_max_days = {need} under [training] in {spec_path} (or lower gate.min_rows)")
    say(f"  [yellow]note[/]: {note}")
    return [note]


def _check_options(o: ImportOptions) -> None:
    if o.label_delay_days is not None and o.label_time_col is not None:
        raise ImportFailed("pass either --label-delay-days or --label-time-col, not both")
    if o.label_delay_days is not None and o.label_delay_days < 0:
        raise ImportFailed(f"--label-delay-days must be >= 0, got {o.label_delay_days}")
    both = set(o.numeric) & set(o.categorical)
    if both:
        raise ImportFailed(f"columns named both --numeric and --categorical: {sorted(both)}")
    special = {o.timestamp_col, o.label_col, o.id_col, o.label_time_col} - {None}
    for flag, cols in (("--numeric", o.numeric), ("--categorical", o.categorical)):
        clash = special & set(cols)
        if clash:
            raise ImportFailed(f"{flag} names {sorted(clash)}, which is the timestamp, label, id or label-time column")
    if o.sample_rows < 1:
        raise ImportFailed("sample_rows must be >= 1")


# -- settings file ---------------------------------------------------------------------------
def _settings_target(config: str | None, env: dict[str, str]) -> tuple[Path, dict]:
    """The settings file to write, with `config_path` semantics but never the repo's own file."""
    if config:
        path = Path(config)
    elif env.get("NIGHTSHIFT_CONFIG"):
        path = Path(env["NIGHTSHIFT_CONFIG"])
        if path.resolve() == (REPO_ROOT / "nightshift.toml").resolve():
            raise ImportFailed(f"NIGHTSHIFT_CONFIG points at the repository's {path} (the demo's settings); "
                               "unset it to write $NIGHTSHIFT_HOME/nightshift.toml, or pass --config")
    else:
        path = default_home(env) / "nightshift.toml"
    existing: dict = {}
    if path.exists():
        try:
            existing = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise ImportFailed(f"{path} is not valid TOML ({exc}); fix or remove it") from None
    return path, existing


def _existing_spec(existing: dict) -> DatasetSpec | None:
    if "dataset" not in existing:
        return None
    try:
        return DatasetSpec.model_validate(existing["dataset"])
    except ValueError:
        return DatasetSpec.model_construct(entity_id="?", numeric=(), categorical=(), label="?", task="?")


_MARK = "# The dataset, written by `nightshift import`"
_HEADER = re.compile(r"^\s*\[\[?\s*([A-Za-z0-9_.\- ]+?)\s*\]\]?\s*(#.*)?$")


def _write_spec(path: Path, existing: dict, spec: DatasetSpec, source: str) -> None:
    """Replace the [dataset] section (and its subtables) of `path`, keeping every other line."""
    lines = path.read_text().splitlines() if path.exists() else []
    kept, in_dataset = [], False
    for line in lines:
        m = _HEADER.match(line)
        if m:
            name = m.group(1).replace(" ", "")
            in_dataset = name == "dataset" or name.startswith("dataset.")
        if not in_dataset and not line.startswith(_MARK):
            kept.append(line)
    while kept and not kept[-1].strip():
        kept.pop()
    text = "\n".join(kept) + ("\n\n" if kept else "") + _dataset_toml(spec, source)
    try:
        parsed = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ImportFailed(f"could not replace [dataset] in {path} ({exc}); write [dataset] as a table "
                           "(not dotted keys) or remove it, and retry") from None
    if {k: v for k, v in parsed.items() if k != "dataset"} != {k: v for k, v in existing.items() if k != "dataset"}:
        raise ImportFailed(f"could not replace [dataset] in {path} without touching its other sections; "
                           "move [dataset] and its subtables to the end of the file and retry")
    DatasetSpec.model_validate(parsed["dataset"])
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _dataset_toml(spec: DatasetSpec, source: str) -> str:
    out = [f"{_MARK} from {source}. Rerun it with --force to replace.",
           "[dataset]",
           f"entity_id = {_toml(spec.entity_id)}",
           f"numeric = {_toml(list(spec.numeric))}",
           f"categorical = {_toml(list(spec.categorical))}",
           f"label = {_toml(spec.label)}",
           f"task = {_toml(spec.task.value)}"]
    if spec.segment is not None:
        out.append(f"segment = {_toml(spec.segment)}")
    if spec.time_index:
        out.append(f"time_index = {_toml(list(spec.time_index))}")
    out += ["", "[dataset.label_delay]",
            f"max_delay_days = {spec.label_delay.max_delay_days}",
            f"min_coverage = {spec.label_delay.min_coverage!r}",
            "", "[dataset.calendar]",
            f"kind = {_toml(spec.calendar.kind.value)}"]
    if spec.calendar.blocks:
        out.append(f"blocks = {_toml([list(b) for b in spec.calendar.blocks])}")
    return "\n".join(out) + "\n"


def _toml(value: Any) -> str:
    # JSON strings and arrays of strings are valid TOML basic strings and arrays.
    return json.dumps(value, ensure_ascii=False)


# -- the source ------------------------------------------------------------------------------
class _Source:
    """A CSV (optionally compressed) or Parquet file at a local path or fsspec URI, opened afresh for each pass."""

    def __init__(self, uri: str):
        import fsspec

        self.uri = uri
        try:
            self._of = fsspec.open(uri, "rb")
            fs, path = self._of.fs, self._of.path
            if not fs.exists(path):
                raise FileNotFoundError(uri)
            self.size: int | None = fs.size(path)
        except FileNotFoundError:
            raise ImportFailed(f"source {uri} does not exist") from None
        name = uri.lower().rstrip("/")
        suffix = next((s for s in _COMPRESSION if name.endswith(s)), None)
        with self._of.open() as f:
            head = f.read(4)
        self.compression = "gzip" if head[:2] == b"\x1f\x8b" else (_COMPRESSION[suffix] if suffix else None)
        if suffix:
            name = name[: -len(suffix)]
        if head == b"PAR1" or name.endswith((".parquet", ".pq", ".parq")):
            self.format = "parquet"
        else:
            self.format = "csv"
        self.delimiter = "\t" if name.endswith(".tsv") else ","
        self.names: list[str] = []  # the CSV header, once the sample has read it
        self.sample_rows = SAMPLE_ROWS
        if self.format == "csv":
            self.delimiter = self._sniff_delimiter()

    def open(self, throttle: "_Throttle | None" = None) -> tuple[Any, Any]:
        """(raw file, for progress in raw bytes; the stream to parse)."""
        raw = self._of.open()
        stream = pa.PythonFile(raw, mode="r")
        if self.compression:
            stream = pa.CompressedInputStream(stream, self.compression)
        if throttle is not None:
            throttle.f = stream
            stream = pa.PythonFile(throttle, mode="r")
        return raw, stream

    def _sniff_delimiter(self) -> str:
        raw, stream = self.open()
        try:
            head = stream.read(1 << 16).decode("utf-8", errors="replace").splitlines()
        finally:
            stream.close()
            raw.close()
        first = head[0] if head else ""
        counts = {d: first.count(d) for d in (",", ";", "\t", "|")}
        best = max(counts, key=counts.get)
        return best if counts[best] else self.delimiter

    # One parsing thread: measured on a 2-core machine, it is faster than pyarrow's threaded parser
    # (6.4 s vs 9.7 s for 360 MiB) and its memory is lower; the rest of the pass is single-threaded anyway.
    def csv_reader(self, block_bytes: int, column_types: dict | None = None, include: list[str] | None = None,
                   throttle: "_Throttle | None" = None):
        raw, stream = self.open(throttle)
        convert = pacsv.ConvertOptions(column_types=column_types or {}, include_columns=include or [],
                                       strings_can_be_null=True, true_values=["true", "True", "TRUE"],
                                       false_values=["false", "False", "FALSE"])
        try:
            reader = pacsv.open_csv(stream, read_options=pacsv.ReadOptions(block_size=block_bytes, use_threads=False),
                                    parse_options=pacsv.ParseOptions(delimiter=self.delimiter), convert_options=convert)
        except pa.ArrowInvalid as exc:
            raw.close()
            if "conversion error" in str(exc):  # the first block already holds a value the sampled type refuses
                raise ImportFailed(_csv_error(exc, column_types or {}, self.sample_rows, self.names)) from None
            raise ImportFailed(f"cannot read {self.uri} as CSV: {exc}") from None
        return raw, reader

    def parquet_file(self) -> tuple[Any, pq.ParquetFile]:
        raw = self._of.open()
        try:
            return raw, pq.ParquetFile(raw, pre_buffer=False)
        except pa.ArrowInvalid as exc:
            raw.close()
            raise ImportFailed(f"cannot read {self.uri} as Parquet: {exc}") from None


def _batches(source: _Source, options: ImportOptions, column_types: dict | None, include: list[str],
             progress: Callable[[int], None] | None = None):
    """Record batches of the source with their columns in `include` order; reports raw bytes (CSV) or rows (Parquet)."""
    if source.format == "csv":
        throttle = _Throttle()
        raw, reader = source.csv_reader(options.block_bytes, column_types, include, throttle)
        try:
            while True:
                try:
                    throttle.want()
                    batch = reader.read_next_batch()
                except StopIteration:
                    return
                except pa.ArrowInvalid as exc:
                    raise ImportFailed(_csv_error(exc, column_types or {}, options.sample_rows, source.names)) from None
                finally:
                    throttle.got()
                if progress:
                    progress(raw.tell())
                yield batch
        finally:
            throttle.close()
            del reader
            raw.close()
    else:
        raw, pf = source.parquet_file()
        try:
            for batch in pf.iter_batches(batch_size=PARQUET_BATCH_ROWS, columns=include, use_threads=True):
                if progress:
                    progress(batch.num_rows)
                yield batch
        finally:
            raw.close()


class _Throttle:
    """A file wrapper that keeps pyarrow's CSV reader at most `ahead` blocks ahead of the consumer.

    pyarrow's streaming CSV reader reads ahead without bound (measured: 112 MiB read before the
    first 4 MiB batch came out), so memory would grow with the file. Reads wait while the reader
    is `ahead` reads ahead of the batches consumed; if the consumer itself waits a while (the
    reader needs more input for one batch, e.g. a very long row), one more read is let through.
    """

    def __init__(self, ahead: int = 4):
        import threading

        self.f: Any = None
        self.ahead = ahead
        self.reads = 0
        self.in_read = 0
        self.consumed = 0
        self.waiting_since: float | None = None
        self.closed = False
        self.cond = threading.Condition()

    def read(self, size: int = -1) -> bytes:
        import time

        with self.cond:
            while self.reads - self.consumed >= self.ahead and not self.closed:
                if self.waiting_since is not None and time.monotonic() - self.waiting_since > 0.2:
                    self.waiting_since = time.monotonic()
                    break
                self.cond.wait(0.05)
            if self.closed:
                return b""
            self.reads += 1
            self.in_read += 1
        try:
            return self.f.read(size)
        finally:
            with self.cond:
                self.in_read -= 1
                self.cond.notify_all()

    def want(self) -> None:
        import time

        with self.cond:
            self.waiting_since = time.monotonic()
            self.cond.notify_all()

    def got(self) -> None:
        with self.cond:
            self.waiting_since = None
            self.consumed += 1
            self.cond.notify_all()

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def tell(self) -> int:
        return self.f.tell()

    def close(self) -> None:
        """Stop the reader's read-ahead: later reads see end of file; waits for a read in progress."""
        with self.cond:
            self.closed = True
            self.cond.notify_all()
            self.cond.wait_for(lambda: self.in_read == 0, timeout=5)


def _csv_error(exc: Exception, column_types: dict, sample_rows: int, names: list[str] | None = None) -> str:
    """A value the CSV reader could not convert: the column by name, the line, the value, the type and what to do."""
    msg = str(exc).splitlines()[0]
    m = re.search(r"CSV column #(\d+)", msg)
    if not m:
        return f"cannot parse the CSV: {msg}"
    k = int(m.group(1))
    name = names[k] if names and k < len(names) else None
    line = re.search(r"Row #(\d+)", msg)
    value = re.search(r"invalid value (.*)$", msg)
    if name is None or value is None:
        return (f"a value does not fit the type inferred from the first {sample_rows:,} rows: {msg}. "
                "Fix the value, or name the column with --numeric/--categorical/--ignore; "
                f"types in use: { {k: str(v) for k, v in column_types.items()} }")
    where = f" on line {int(line.group(1)):,} of the file" if line else ""
    typ = column_types.get(name)
    return (f"column {name!r} holds {value.group(1)}{where}, but its type was inferred as {typ} from the first "
            f"{sample_rows:,} rows (a value does not fit the type inferred from the sample). {_not_a_number_fix(name, 'the value')}")


def _not_a_number_fix(name: str, what: str) -> str:
    """What to do about values of a numeric column that are not numbers (one wording for the sample and the file)."""
    return (f"Fix {what} upstream (leave a missing value empty or write NA), keep the column as text with "
            f"--categorical {name}, or drop it with --ignore {name}.")


# -- the plan: types, roles and task from the sample -----------------------------------------
@dataclass
class _Plan:
    options: ImportOptions
    columns: list[ColumnInfo]
    read_types: dict[str, pa.DataType]  # CSV: the type each read column is parsed as
    include: list[str]  # the columns read, in file order
    numeric: list[str]
    categorical: list[str]
    task: TaskName
    task_inferred: bool
    entity_id: str
    id_type: pa.DataType
    notes: list[str]
    time_index: list[str] = field(default_factory=list)  # kept features that only index time

    def spec_draft(self, label_delay: LabelDelayPolicy, calendar: Calendar) -> DatasetSpec:
        return DatasetSpec(entity_id=self.entity_id, numeric=tuple(self.numeric), categorical=tuple(self.categorical),
                           label=self.options.label_col, task=self.task, label_delay=label_delay, calendar=calendar,
                           time_index=tuple(self.time_index))

    @property
    def features(self) -> list[str]:
        return [c for c in self.include if c in set(self.numeric) | set(self.categorical)]

    @property
    def label_type(self) -> pa.DataType:
        return task_for(self.task).label_type


def _plan(source: _Source, o: ImportOptions, say: Callable[[str], None]) -> _Plan:
    sample = _sample(source, o)
    present = sample.schema.names
    required = [c for c in (o.timestamp_col, o.label_col, o.id_col, o.label_time_col, *o.numeric, *o.categorical) if c]
    missing = [c for c in required if c not in present]
    if missing:
        raise ImportFailed(f"missing required column{'s' if len(missing) > 1 else ''} {missing} in {o.source}; "
                           f"present columns: {present}. Check the flags' column names (they are case-sensitive).")
    unknown_ignored = [c for c in o.ignore if c not in present]
    if unknown_ignored:
        raise ImportFailed(f"--ignore names columns that are not in the source: {unknown_ignored}; present columns: {present}")
    unknown_kept = [c for c in o.keep_cols if c not in present]
    if unknown_kept:
        raise ImportFailed(f"--keep-col names columns that are not in the source: {unknown_kept}; present columns: {present}")
    sample_days = _sample_days(sample, o)

    rows = sample.num_rows
    columns, read_types, numeric, categorical, notes, time_index = [], {}, [], [], [], []
    special = {o.timestamp_col: Role.TIMESTAMP, o.label_col: Role.LABEL}
    if o.id_col:
        special[o.id_col] = Role.ID
    if o.label_time_col:
        special[o.label_time_col] = Role.LABEL_TIME
    for name in present:
        col = sample.column(name)
        dtype = _value_type(col.type) if source.format == "parquet" else _sniff_type(col)
        distinct = pc.count_distinct(col).as_py()
        nulls = col.null_count
        note = ""
        if name in special:
            role = special[name]
        elif name in o.ignore:
            role, note = Role.IGNORED, "--ignore"
        elif name in (DS, EVENT_DS):
            role, note = Role.IGNORED, f"{name!r} is a reserved lake column name; rename it to keep it"
        elif name not in o.categorical and (typos := _typos_in_numbers(col, dtype)):
            k, n, examples = typos
            shown = ", ".join(f"row {r:,}: {v!r}" for r, v in examples)
            raise ImportFailed(
                f"column {name!r} breaks rule 'numeric values are numbers or missing': {k:,} of its {n:,} sampled values "
                f"{'is not a number' if k == 1 else 'are not numbers'} (first: {shown}), the rest are. "
                + _not_a_number_fix(name, "them"))
        elif name in o.numeric:
            if not numeric_type_ok(dtype):
                raise ImportFailed(f"--numeric {name}: its type is {dtype}, which is not numeric "
                                   "(integer, float, decimal or boolean); list it under --categorical instead")
            role, note = Role.NUMERIC, "--numeric"
        elif name in o.categorical:
            if not categorical_type_ok(dtype):
                raise ImportFailed(f"--categorical {name}: its type is {dtype}; a categorical column must be a "
                                   "string, integer or boolean (cast it upstream)")
            role, note = Role.CATEGORICAL, "--categorical"
        else:
            role, note = infer_role(dtype, distinct, rows)
            if role == Role.IGNORED and not o.id_col and "identifier" in note:
                note += f"; if it is the entity id, pass --id-col {name}"
            if role == Role.NUMERIC and pa.types.is_integer(dtype) and rows > ID_LIKE_DISTINCT and distinct == rows:
                note = "every sampled value is distinct: if it is an id pass --id-col, or drop it with --ignore"
                notes.append(f"column {name!r} is a numeric feature whose {rows:,} sampled values are all distinct: if it "
                             f"is the entity id, pass --id-col {name}, or drop it with --ignore {name} (as a feature, an "
                             "id learns the order the rows were numbered in)")
        if role in (Role.NUMERIC, Role.CATEGORICAL) and pa.types.is_integer(dtype) and (
                why := infer_time_index(name, sample_days, _floats(col))):
            if name in o.keep_cols or name in o.numeric or name in o.categorical:
                time_index.append(name)
                notes.append(f"column {name!r} only indexes time ({why}): kept as a {role.value} feature as asked; its "
                             "drift is reported but does not start a retrain on its own (dataset.time_index)")
            else:
                role, note = Role.IGNORED, (f"only indexes time ({why}); as a feature every new period is an unseen value "
                                            f"and a drift alarm. Keep it with --keep-col {name}")
        if role == Role.NUMERIC:
            numeric.append(name)
        elif role == Role.CATEGORICAL:
            categorical.append(name)
        if role == Role.IGNORED:
            notes.append(f"column {name!r} ignored: {note}")
        elif source.format == "csv":
            # Timestamps and labels are parsed here, not by the CSV reader, so a bad value is counted, not fatal.
            read_types[name] = pa.string() if role in (Role.TIMESTAMP, Role.LABEL, Role.LABEL_TIME) else dtype
        columns.append(ColumnInfo(name, str(read_types.get(name, dtype)), role, distinct, nulls, note.split(" (")[0].split(";")[0]))

    if o.id_col:
        if source.format == "parquet":
            id_type = _value_type(sample.column(o.id_col).type)
        else:  # in a CSV an id is text unless every sampled value is an integer ('2026-06-01-0000123' is no timestamp)
            id_type = pa.int64() if pa.types.is_integer(read_types[o.id_col]) else pa.string()
        if pa.types.is_integer(id_type):
            id_type = pa.int64()
        elif pa.types.is_string(id_type) or pa.types.is_large_string(id_type):
            id_type = pa.string()
        else:
            raise ImportFailed(f"id column {o.id_col!r} has type {id_type}; an id must be a string or an integer")
        if source.format == "csv":
            read_types[o.id_col] = id_type
        entity_id = o.id_col
    else:
        id_type = pa.string()
        entity_id = DERIVED_ID
        while entity_id in present:
            entity_id = "_" + entity_id

    if o.task is not None:
        task, inferred = TaskName(o.task), False
    else:
        task, inferred = _infer_task_to_scan(sample.column(o.label_col)), True
    include = [c.name for c in columns if c.role != Role.IGNORED]

    say(f"[bold]Inferred[/] from the first {rows:,} rows (rule: {INFERENCE_RULE}):")
    say(f"  numeric ({len(numeric)}): {', '.join(numeric) or '-'}")
    say(f"  categorical ({len(categorical)}): {', '.join(categorical) or '-'}")
    for n in notes:
        say(f"  [yellow]note[/]: {n}")
    say(f"  task: {task.value}" + (" (inferred from the label's values; pass --task to change)" if inferred else ""))
    if o.label_time_col is None and o.label_delay_days is None:
        say(f"  [yellow]label arrival[/]: no --label-delay-days or --label-time-col given, so labels arrive "
            f"{DEFAULT_LABEL_DELAY_DAYS} day after their row's day (the default)")
    if not o.id_col:
        say(f"  ids: none given, so each row's id {entity_id!r} is derived from its timestamp and feature values")
    if not numeric and not categorical:
        raise ImportFailed("no feature columns: every column is the timestamp, label, id or ignored. "
                           "Name features with --numeric/--categorical.")
    return _Plan(o, columns, read_types, include, numeric, categorical, task, inferred, entity_id, id_type, notes, time_index)


def _sample_days(sample: pa.Table, o: ImportOptions) -> np.ndarray:
    """Each sampled row's day number (NaN where its timestamp is missing or does not parse)."""
    us = _epoch_us(sample.column(o.timestamp_col), o.timestamp_format)
    return np.floor(pc.cast(us, pa.float64()).to_numpy(zero_copy_only=False) / _DAY_US)


def _floats(col: pa.ChunkedArray) -> np.ndarray:
    """A sampled column as floats, NaN where missing or not a number (CSV samples are text)."""
    a = _plain(col)
    if pa.types.is_string(a.type) or pa.types.is_large_string(a.type):
        a = _cast_or_null(pc.utf8_trim_whitespace(a), pa.float64())
    return pc.cast(a, pa.float64()).to_numpy(zero_copy_only=False)


def _infer_task_to_scan(labels: pa.ChunkedArray) -> TaskName:
    """infer_task, but on bad values pick the task the numbers suggest, so the full pass reports every bad
    value with its row number and count (the sample is only the file's start)."""
    try:
        return infer_task(labels)
    except TooManyClasses:
        raise
    except ImportFailed:
        kinds = _classify_labels(labels)
        if kinds.missing.all():
            raise
        numbers = kinds.values[kinds.number & ~kinds.missing]
        return TaskName.REGRESSION if numbers.size and not np.isin(numbers, (0.0, 1.0)).all() else TaskName.BINARY


def _sample(source: _Source, o: ImportOptions) -> pa.Table:
    """The first `sample_rows` rows; CSV columns all as strings, so the types are decided here, on the whole sample."""
    batches, rows = [], 0
    if source.format == "csv":
        throttle = _Throttle()
        raw, reader = source.csv_reader(o.block_bytes, throttle=throttle)
        names = reader.schema.names
        source.names, source.sample_rows = list(names), o.sample_rows
        throttle.close()
        del reader
        raw.close()
        gen = _batches(source, o, {n: pa.string() for n in names}, names)
    else:
        gen = _batches(source, o, None, None)
    for batch in gen:
        batches.append(batch)
        rows += batch.num_rows
        if rows >= o.sample_rows:
            break
    gen.close()
    if not batches or rows == 0:
        raise ImportFailed(f"{o.source} has no data rows")
    return pa.Table.from_batches(batches).slice(0, o.sample_rows)


def _sniff_type(col: pa.ChunkedArray) -> pa.DataType:
    """The narrowest type every non-null sampled string converts to: int64, float64, bool, timestamp or string."""
    values = pc.drop_null(col)
    if len(values) == 0:
        return pa.null()
    for t in (pa.int64(), pa.float64()):
        try:
            pc.cast(values, t)
            return t
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            pass
    if pc.all(pc.is_in(pc.utf8_lower(values), pa.array(["true", "false"]))).as_py():
        return pa.bool_()
    if pc.all(pc.match_substring_regex(values, _ISO_DAY)).as_py():
        return pa.timestamp("us")
    return pa.string()


def _typos_in_numbers(col: pa.ChunkedArray, dtype: pa.DataType) -> tuple[int, int, list[tuple[int, str]]] | None:
    """For a text column whose sampled values are mostly numbers (`MOSTLY_NUMBERS`): (values that are not, non-null
    values, the first few as (row, value)); None for any other column."""
    if not (pa.types.is_string(dtype) or pa.types.is_large_string(dtype)):
        return None
    values = pc.cast(col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col, pa.string())
    present = ~_np_mask(values.is_null())
    n = int(present.sum())
    if n == 0:
        return None
    # One vectorised pass finds what plainly reads as a number; only the rest (at most 5% of the values, or
    # we stop here) is cast value by value, so a text column costs one regex, not a cast per value.
    plain = _np_mask(pc.fill_null(pc.match_substring_regex(values, _NUMBER), False))
    unsure = np.flatnonzero(present & ~plain)
    if len(unsure) == 0 or len(unsure) > (1 - MOSTLY_NUMBERS) * n:
        return None
    not_numbers = unsure[_np_mask(_cast_or_null(values.take(pa.array(unsure)), pa.float64()).is_null())]
    if len(not_numbers) == 0:
        return None
    return len(not_numbers), n, [(int(i) + 1, values[int(i)].as_py()) for i in not_numbers[:EXAMPLES]]


def _value_type(t: pa.DataType) -> pa.DataType:
    if pa.types.is_dictionary(t):
        t = t.value_type
    return pa.string() if pa.types.is_large_string(t) else t


# -- the streaming pass ----------------------------------------------------------------------
@dataclass
class _Scan:
    rows_read: int = 0
    rows_per_day: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    issues: dict[str, Issue] = field(default_factory=dict)
    feature_files: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    label_files: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    labels_total: int = 0
    labels_dropped: int = 0
    max_delay_days: int = 0
    delay_days: int = DEFAULT_LABEL_DELAY_DAYS
    label_kinds: dict[str, int] = field(default_factory=lambda: defaultdict(int))  # number/boolword/text -> count
    label_examples: dict[str, list[tuple[int, Any]]] = field(default_factory=lambda: defaultdict(list))
    label_problem: bool = False  # a label value that cannot land (judged at the end, on the whole file)
    classes: set[str] = field(default_factory=set)  # multiclass: the label's distinct classes (up to MAX_CLASSES + 1)

    def label_files_days(self) -> list[str]:
        return sorted(self.label_files)


class _Spill:
    """Per-day Parquet part files under the work dir, at most `MAX_OPEN_WRITERS` open at once."""

    def __init__(self, root: Path):
        self.root = root
        self.open: OrderedDict[tuple[str, str], list] = OrderedDict()  # key -> [writer, row groups]
        self.files: dict[tuple[str, str], list[str]] = defaultdict(list)

    def write(self, kind: str, day: str, batch: pa.RecordBatch) -> None:
        key = (kind, day)
        entry = self.open.pop(key, None)
        if entry is not None and entry[1] >= MAX_ROW_GROUPS_PER_SPILL_FILE:
            entry[0].close()
            entry = None
        if entry is None:
            while len(self.open) >= MAX_OPEN_WRITERS:
                self.open.popitem(last=False)[1][0].close()
            path = str(self.root / f"{kind}-{day}-{len(self.files[key])}.parquet")
            # Spill files are read once, in full: no dictionaries or statistics (3x faster to write).
            entry = [pq.ParquetWriter(path, batch.schema, compression="lz4", use_dictionary=False,
                                      write_statistics=False), 0]
            self.files[key].append(path)
        self.open[key] = entry
        entry[0].write_batch(batch)
        entry[1] += 1

    def close(self) -> None:
        while self.open:
            self.open.popitem()[1][0].close()


def _scan(source: _Source, plan: _Plan, o: ImportOptions, work: Path, say: Callable[[str], None]) -> _Scan:
    scan = _Scan(delay_days=o.label_delay_days if o.label_delay_days is not None else DEFAULT_LABEL_DELAY_DAYS)
    spill = _Spill(work)
    feature_schema = pa.schema([(plan.entity_id, plan.id_type)]
                               + [(c, plan.read_types.get(c) or _value_type(t)) for c, t in _source_types(source, plan)]
                               + [(_ROW, pa.int64())])
    label_schema = pa.schema([(plan.entity_id, plan.id_type), (EVENT_DS, pa.string()), (o.label_col, plan.label_type),
                              (_ROW, pa.int64())])
    read_types = plan.read_types if source.format == "csv" else None
    with _progress(source, o) as advance:
        for batch in _batches(source, o, read_types, plan.include, advance):
            _scan_batch(batch, scan, plan, o, spill, feature_schema, label_schema)
    spill.close()
    for (kind, day), files in spill.files.items():
        (scan.feature_files if kind == "features" else scan.label_files)[day].extend(files)
    _finish_label_checks(scan, plan, o)
    return scan


def _source_types(source: _Source, plan: _Plan) -> list[tuple[str, pa.DataType]]:
    if source.format == "csv":
        return [(c, plan.read_types[c]) for c in plan.features]
    raw, pf = source.parquet_file()
    try:
        schema = pf.schema_arrow
    finally:
        raw.close()
    return [(c, schema.field(c).type) for c in plan.features]


def _scan_batch(batch: pa.RecordBatch, scan: _Scan, plan: _Plan, o: ImportOptions, spill: _Spill,
                feature_schema: pa.Schema, label_schema: pa.Schema) -> None:
    n = batch.num_rows
    first_row = scan.rows_read + 1
    scan.rows_read += n
    rows = np.arange(first_row, first_row + n, dtype=np.int64)

    ts_col = batch.column(o.timestamp_col)
    us = _epoch_us(ts_col, o.timestamp_format)
    bad_ts = _np_mask(us.is_null())
    keep = ~bad_ts
    _note(scan, "bad_timestamp", o.timestamp_col, "every row has a parseable timestamp",
          ("Pass --timestamp-format (strptime codes, e.g. '%d/%m/%Y %H:%M') or drop those rows with "
           "--skip-bad-timestamps (they are then counted in the report)."),
          not o.skip_bad_timestamps, bad_ts, rows, ts_col)

    if o.id_col:
        ids = _plain(batch.column(o.id_col))
        if ids.type != plan.id_type:
            ids = pc.cast(ids, plan.id_type)
        _note(scan, "null_id", o.id_col, "the id column is never null",
              "Fill the ids upstream, or leave out --id-col to derive ids from each row's content.",
              True, _np_mask(ids.is_null()), rows, ids)

    features = {c: _plain(batch.column(c)) for c in plan.features}
    for c in plan.numeric:
        if pa.types.is_floating(features[c].type):
            inf = _np_mask(pc.is_inf(features[c]))
            _note(scan, f"infinite:{c}", c, "numeric values are finite or missing",
                  "Replace infinities upstream with an empty value (missing) or a real number.", True, inf, rows, features[c])
    if not o.id_col:
        ids = _derived_ids(us, features, plan)

    label_col = batch.column(o.label_col)
    kinds = _classify_labels(label_col)
    labelled = ~kinds.missing
    _note(scan, "missing_label", o.label_col, "missing labels land as feature rows without a label",
          "Nothing to do: they are counted here.", False, kinds.missing & keep, rows, label_col)
    for kind in ("number", "boolword", "text"):
        mask = getattr(kinds, kind) & labelled
        count = int(mask.sum())
        if count:
            scan.label_kinds[kind] += count
            have = scan.label_examples[kind]
            if len(have) < EXAMPLES:
                idx = np.flatnonzero(mask)[: EXAMPLES - len(have)]
                have.extend(zip(rows[idx].tolist(), label_col.take(pa.array(idx)).to_pylist()))
    task = task_for(plan.task)
    classes = None
    if task.label_words:  # binary: numbers must be 0/1, and true/false count as labels
        not01 = kinds.number & labelled & task.invalid_labels(kinds.values)
        _note(scan, "label_not_binary", o.label_col, f"a {task.name.value} label is {task.label_rule}",
              "Recode the label as 0/1, or pass --task regression if it is a number to predict.",
              True, not01, rows, label_col)
        usable = labelled & ~kinds.text & ~not01
    elif task.label_classes:  # multiclass: any text, whole numbers or true/false is a class name
        not_whole = kinds.number & labelled & task.invalid_labels(kinds.values)
        _note(scan, "label_not_class", o.label_col, f"a {task.name.value} label is {task.label_rule}",
              "Recode the label as class names or whole numbers, or pass --task regression if it is a number to predict.",
              True, not_whole, rows, label_col)
        usable = labelled & ~not_whole
        classes = _class_strings(label_col, kinds)
        if len(scan.classes) <= MAX_CLASSES:
            scan.classes.update(pc.unique(classes.drop_null()).to_pylist()[:MAX_CLASSES + 1])
    else:
        usable = labelled & kinds.number
    if (labelled & ~usable).any():
        scan.label_problem = True

    day = np.floor_divide(us.fill_null(0).to_numpy(zero_copy_only=False), _DAY_US).astype(np.int64)
    if o.label_time_col:
        lt_col = batch.column(o.label_time_col)
        lus = _epoch_us(lt_col, o.timestamp_format)
        bad_lt = _np_mask(lus.is_null()) & ~_np_mask(lt_col.is_null())
        _note(scan, "bad_label_time", o.label_time_col, "every label time parses as a timestamp",
              "Pass --timestamp-format (it applies to both time columns) or fix the values.", True,
              bad_lt & usable, rows, lt_col)
        no_lt = _np_mask(lt_col.is_null()) & usable & keep
        _note(scan, "label_time_missing", o.label_time_col, "a label without an arrival time has not arrived",
              "Nothing to do: these labels are not landed and counted here.", False, no_lt, rows, lt_col)
        arrival = np.floor_divide(lus.fill_null(0).to_numpy(zero_copy_only=False), _DAY_US).astype(np.int64)
        arrived = usable & keep & ~_np_mask(lus.is_null())
        early = arrived & (arrival < day)
        _note(scan, "label_before_row", o.label_time_col, "a label arrives on or after its row's day",
              "Check the two time columns (a label cannot arrive before the row it labels).", True, early, rows, lt_col)
        if arrived.any():
            scan.max_delay_days = max(scan.max_delay_days, int((arrival - day)[arrived].max()))
    else:
        arrival = day + scan.delay_days
        arrived = usable & keep
        scan.max_delay_days = scan.delay_days

    if scan.label_problem or any(i.fatal and i.count for i in scan.issues.values()):
        return  # nothing will be committed: keep counting, stop spilling

    # Features, grouped by day, in file order within each day.
    cols = [ids, *features.values(), pa.array(rows)]
    fb = pa.RecordBatch.from_arrays([_cast(a, f.type) for a, f in zip(cols, feature_schema)], schema=feature_schema)
    for d, part in _by_day(fb, day, keep):
        spill.write("features", d, part)
        scan.rows_per_day[d] += part.num_rows

    if arrived.any():
        event_ds = _day_strings(day)
        values = np.where(arrived, kinds.values, 0.0)
        label = classes if classes is not None else pa.array(values).cast(plan.label_type)
        lb = pa.RecordBatch.from_arrays([ids, event_ds, label, pa.array(rows)], schema=label_schema)
        for d, part in _by_day(lb, arrival, arrived):
            spill.write("labels", d, part)
            scan.labels_total += part.num_rows


def _finish_label_checks(scan: _Scan, plan: _Plan, o: ImportOptions) -> None:
    """Mixed types and non-numeric labels are judged on the whole file, with the first examples of each kind."""
    task = task_for(plan.task)
    if task.label_classes:  # every kind is a class name; only the number of classes can be wrong
        if len(scan.classes) > MAX_CLASSES:
            issue = Issue("label_too_many_classes", o.label_col, f"a multiclass label has at most {MAX_CLASSES} classes",
                          "Pass --task regression if it is a number to predict; otherwise recode it into fewer classes "
                          "upstream.", True)
            issue.count = len(scan.classes)
            issue.examples = [(0, c) for c in sorted(scan.classes)[:EXAMPLES]]
            scan.issues[issue.kind] = issue
            scan.label_problem = True
        return
    bad_kinds, good_kinds = (["text"], ["number", "boolword"]) if task.label_words else (["text", "boolword"], ["number"])
    bad = sum(scan.label_kinds[k] for k in bad_kinds)
    if not bad:
        return
    examples = sorted(e for k in bad_kinds for e in scan.label_examples[k])[:EXAMPLES]
    good = sorted(e for k in good_kinds for e in scan.label_examples[k])[:3]
    if any(scan.label_kinds[k] for k in good_kinds):
        issue = Issue("label_mixed_types", o.label_col, "a label has one type",
                      f"Clean the label column: {task.label_rule} only; the other values "
                      f"are like {', '.join(f'row {r}: {v!r}' for r, v in good)}.", True)
    elif task.label_words:
        issue = scan.issues["label_not_binary"]
    else:
        issue = Issue("label_not_numeric", o.label_col, "a regression label is a number",
                      "Recode the label as numbers, or pass --task binary if it is 0/1/true/false.", True)
    issue.count += bad
    issue.examples = sorted(issue.examples + examples)[:EXAMPLES]
    scan.issues[issue.kind] = issue


def _note(scan: _Scan, kind: str, column: str, rule: str, fix: str, fatal: bool, mask: np.ndarray,
          rows: np.ndarray, values: pa.Array | pa.ChunkedArray) -> None:
    issue = scan.issues.get(kind)
    if issue is None:
        issue = scan.issues[kind] = Issue(kind, column, rule, fix, fatal)
    count = int(mask.sum())
    if not count:
        return
    issue.count += count
    if len(issue.examples) < EXAMPLES:
        idx = np.flatnonzero(mask)[: EXAMPLES - len(issue.examples)]
        issue.examples.extend(zip(rows[idx].tolist(), values.take(pa.array(idx)).to_pylist()))


def _by_day(batch: pa.RecordBatch, day: np.ndarray, keep: np.ndarray):
    """(ds, rows of that day) in file order within each day."""
    idx = np.flatnonzero(keep)
    if idx.size == 0:
        return
    d = day[idx]
    if idx.size != len(day) or (d.size > 1 and (np.diff(d) < 0).any()):
        order = np.argsort(d, kind="stable")
        idx, d = idx[order], d[order]
        batch = batch.take(pa.array(idx))
    uniq, starts = np.unique(d, return_index=True)
    ends = [*starts[1:], d.size]
    for u, s, e in zip(uniq.tolist(), starts.tolist(), ends):
        yield _ds(u), batch.slice(s, e - s)


def _ds(day: int) -> str:
    return (_EPOCH + dt.timedelta(days=day)).isoformat()


def _day_strings(day: np.ndarray) -> pa.Array:
    uniq, inverse = np.unique(day, return_inverse=True)
    return pa.array([_ds(u) for u in uniq.tolist()], pa.string()).take(pa.array(inverse.astype(np.int64)))


def _progress(source: _Source, o: ImportOptions):
    import contextlib

    @contextlib.contextmanager
    def bar():
        if not o.progress:
            yield None
            return
        from rich.progress import (BarColumn, DownloadColumn, MofNCompleteColumn, Progress, TextColumn,
                                   TimeRemainingColumn, TransferSpeedColumn)

        if source.format == "csv":
            total = source.size
            cols = [TextColumn("reading"), BarColumn(), DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn()]
        else:
            raw, pf = source.parquet_file()
            total = pf.metadata.num_rows
            raw.close()
            cols = [TextColumn("reading rows"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn()]
        with Progress(*cols, transient=True) as p:
            task = p.add_task("read", total=total)
            if source.format == "csv":
                yield lambda pos: p.update(task, completed=pos)
            else:
                yield lambda n: p.advance(task, n)

    return bar()


# -- values -----------------------------------------------------------------------------------
def _plain(col: pa.Array | pa.ChunkedArray) -> pa.Array:
    """A plain (non-dictionary, non-large) array."""
    if isinstance(col, pa.ChunkedArray):
        col = pa.concat_arrays(col.chunks) if col.num_chunks != 1 else col.chunk(0)
    if pa.types.is_dictionary(col.type) or pa.types.is_large_string(col.type):
        col = pc.cast(col, _value_type(col.type))
    return col


def _cast(a: pa.Array, t: pa.DataType) -> pa.Array:
    return a if a.type == t else pc.cast(a, t)


def _np_mask(a: pa.Array | pa.ChunkedArray) -> np.ndarray:
    return np.asarray(a.to_numpy(zero_copy_only=False), dtype=bool)


def _epoch_us(col: pa.Array | pa.ChunkedArray, fmt: str | None) -> pa.Array:
    """Microseconds since the epoch, UTC (a zone-less time is UTC); null where missing or unparseable."""
    col = _plain(col)
    t = col.type
    if pa.types.is_timestamp(t):
        return pc.cast(pc.cast(col, pa.timestamp("us", t.tz)), pa.int64())
    if pa.types.is_date(t):
        return pc.multiply(pc.cast(pc.cast(col, pa.date32()), pa.int64()), _DAY_US)
    if not pa.types.is_string(t):
        return pa.nulls(len(col), pa.int64())
    col = pc.utf8_trim_whitespace(col)
    if fmt:
        parsed = pc.strptime(col, format=fmt, unit="us", error_is_null=True)
        return pc.cast(parsed, pa.int64())
    for fast in (pa.timestamp("us"), pa.timestamp("us", "UTC")):  # the common case: one clean format, no regex needed
        try:
            return pc.cast(pc.cast(col, fast), pa.int64())
        except pa.ArrowInvalid:
            pass
    zoned = pc.fill_null(pc.match_substring_regex(col, _ZONED), False)
    looks = pc.fill_null(pc.match_substring_regex(col, _ISO_DAY), False)
    n_zoned = pc.sum(zoned).as_py() or 0
    out = None
    for want_zone, t_ in ((False, pa.timestamp("us")), (True, pa.timestamp("us", "UTC"))):
        count = n_zoned if want_zone else len(col) - n_zoned
        if not count:
            continue
        mask = pc.and_(looks, zoned) if want_zone else pc.and_(looks, pc.invert(zoned))
        part = pc.cast(_cast_or_null(pc.if_else(mask, col, pa.scalar(None, pa.string())), t_), pa.int64())
        out = part if out is None else pc.if_else(mask, part, out)
    return out if out is not None else pa.nulls(len(col), pa.int64())


def _cast_or_null(a: pa.Array, t: pa.DataType) -> pa.Array:
    """Cast, with null where a value does not convert: halves the failing range until the bad values are isolated."""
    try:
        return pc.cast(a, t)
    except pa.ArrowInvalid:
        if len(a) <= 1:
            return pa.nulls(len(a), t)
        h = len(a) // 2
        return pa.concat_arrays([_cast_or_null(a.slice(0, h), t), _cast_or_null(a.slice(h), t)])


@dataclass
class _LabelKinds:
    values: np.ndarray  # float64, NaN where not a number/boolean
    missing: np.ndarray
    number: np.ndarray
    boolword: np.ndarray
    text: np.ndarray


def _classify_labels(col: pa.Array | pa.ChunkedArray) -> _LabelKinds:
    col = _plain(col)
    n = len(col)
    t = col.type
    none = np.zeros(n, dtype=bool)
    if pa.types.is_boolean(t):
        values = pc.cast(col, pa.float64()).to_numpy(zero_copy_only=False)
        missing = _np_mask(col.is_null())
        return _LabelKinds(values, missing, none, ~missing, none)
    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t):
        values = pc.cast(col, pa.float64()).to_numpy(zero_copy_only=False).astype(np.float64)
        missing = np.isnan(values)
        return _LabelKinds(values, missing, ~missing, none, none)
    if pa.types.is_null(t):
        return _LabelKinds(np.full(n, np.nan), ~none, none, none, none)
    if not pa.types.is_string(t):
        raise ImportFailed(f"label column has type {t}; a label must be a boolean, a number or a string of one")
    s = pc.utf8_lower(pc.utf8_trim_whitespace(col))
    missing = _np_mask(pc.fill_null(pc.equal(s, ""), True))
    try:
        values = pc.cast(s, pa.float64()).to_numpy(zero_copy_only=False).astype(np.float64)
        return _LabelKinds(values, missing, ~missing, none, none)
    except pa.ArrowInvalid:
        pass
    boolword = _np_mask(pc.fill_null(pc.is_in(s, pa.array(["true", "false"])), False))
    number = _np_mask(pc.fill_null(pc.match_substring_regex(s, _NUMBER), False)) & ~missing
    values = pc.cast(pc.if_else(pa.array(number), s, pa.scalar(None, pa.string())), pa.float64())
    values = values.to_numpy(zero_copy_only=False).astype(np.float64)
    values[boolword] = _np_mask(pc.fill_null(pc.equal(s, "true"), False))[boolword]
    text = ~missing & ~boolword & ~number
    values[text] = np.nan
    return _LabelKinds(values, missing, number, boolword, text)


# -- derived ids (vectorised) -----------------------------------------------------------------
_M1, _M2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)
_NULL_TAG = np.uint64(0x9E3779B97F4A7C15)
_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: a bijective, well-spread 64-bit mix."""
    x = (x ^ (x >> np.uint64(30))) * _M1
    x = (x ^ (x >> np.uint64(27))) * _M2
    return x ^ (x >> np.uint64(31))


def _bits(col: pa.Array, categorical: bool) -> np.ndarray:
    """64 bits per value: blake2b of its category string, or its number's bit pattern; nulls tagged."""
    null = _np_mask(col.is_null()) if col.null_count else None
    if categorical:
        enc = pc.dictionary_encode(category_strings(col))
        dictionary = enc.dictionary.to_pylist()
        digests = np.array([int.from_bytes(hashlib.blake2b(v.encode(), digest_size=8).digest(), "little")
                            for v in dictionary] or [0], dtype=np.uint64)
        out = digests[enc.indices.fill_null(0).to_numpy(zero_copy_only=False)]
    elif pa.types.is_floating(col.type) or pa.types.is_decimal(col.type):
        f = pc.cast(col, pa.float64()).fill_null(0.0).to_numpy(zero_copy_only=False).astype(np.float64)
        f = np.where(f == 0.0, 0.0, f)  # -0.0 == 0.0
        f = np.where(np.isnan(f), np.nan, f)
        out = f.view(np.uint64)
    else:
        out = pc.cast(col, pa.int64()).fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64).view(np.uint64)
    if null is not None:
        out = np.where(null, _NULL_TAG, out)
    return out


def _derived_ids(us: pa.Array, features: dict[str, pa.Array], plan: _Plan) -> pa.Array:
    n = len(us)
    lanes = [np.full(n, np.uint64(0x243F6A8885A308D3)), np.full(n, np.uint64(0x13198A2E03707344))]
    cats = set(plan.categorical)
    parts = [("", us, False)] + [(c, a, c in cats) for c, a in features.items()]
    with np.errstate(over="ignore"):
        for i, (_name, arr, categorical) in enumerate(parts):
            v = _bits(arr, categorical)
            for k, lane in enumerate(lanes):
                lanes[k] = _mix(lane ^ _mix(v + np.uint64((2 * i + k + 1) * 0x9E3779B97F4A7C15 % 2**64)))
    raw = np.stack(lanes, axis=1).astype(">u8").view(np.uint8).reshape(n, 16)
    hexed = np.empty((n, 32), dtype=np.uint8)
    hexed[:, 0::2] = _HEX[raw >> 4]
    hexed[:, 1::2] = _HEX[raw & 15]
    offsets = np.arange(0, 32 * (n + 1), 32, dtype=np.int32)
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(hexed.tobytes()))


# -- commit -----------------------------------------------------------------------------------
def _dedupe(scan: _Scan, plan: _Plan, days: list[str]) -> tuple[np.ndarray, dict[str, int]]:
    """Rows superseded by a later row with the same id on the same day (last in file order wins), and rows per day."""
    dropped, landed = [], {}
    issue = scan.issues.setdefault("duplicate_id", Issue(
        "duplicate_id", plan.entity_id, "ids are unique within a day: the last occurrence in file order wins",
        "Nothing to do if that is right; else deduplicate upstream.", False))
    for ds in days:
        t = pa.Table.from_batches([b for f in scan.feature_files[ds] for b in pq.ParquetFile(f, pre_buffer=False).iter_batches(
            batch_size=PARQUET_BATCH_ROWS, columns=[plan.entity_id, _ROW], use_threads=False)])
        n = t.num_rows
        if pc.count_distinct(t.column(0)).as_py() == n:
            landed[ds] = n
            continue
        g = t.group_by(plan.entity_id, use_threads=False).aggregate([(_ROW, "max"), (_ROW, "count")])
        keep_rows = g.column(f"{_ROW}_max").combine_chunks()
        superseded = pc.filter(t.column(_ROW), pc.invert(pc.is_in(t.column(_ROW), value_set=keep_rows)))
        dropped.append(superseded.to_numpy())
        landed[ds] = n - len(superseded)
        issue.count += len(superseded)
        if len(issue.examples) < EXAMPLES:
            dup = g.filter(pc.greater(g.column(f"{_ROW}_count"), 1)).slice(0, EXAMPLES - len(issue.examples))
            for key, last, count in zip(dup.column(0).to_pylist(), dup.column(f"{_ROW}_max").to_pylist(),
                                        dup.column(f"{_ROW}_count").to_pylist()):
                issue.examples.append((last, f"{key} ({count}x on {ds}; row {last} kept)"))
        del t, g
        _release()
    return (np.sort(np.concatenate(dropped)) if dropped else np.empty(0, np.int64)), landed


def _stream_spill(files: list[str], dropped: np.ndarray, columns: list[str]):
    """The spilled batches of one day, minus superseded rows and the row-number column."""
    value_set = pa.array(dropped) if dropped.size else None
    for f in files:
        pf = pq.ParquetFile(f, pre_buffer=False)
        for batch in pf.iter_batches(batch_size=PARQUET_BATCH_ROWS, use_threads=False):
            if value_set is not None:
                batch = batch.filter(pc.invert(pc.is_in(batch.column(_ROW), value_set=value_set)))
            yield batch.select(columns)


def _write_batches(w: pq.ParquetWriter, batches) -> int:
    """Write in row groups of about ROW_GROUP_ROWS rows, holding at most that many at once."""
    buf, rows, total = [], 0, 0
    for b in batches:
        if b.num_rows:
            buf.append(b)
            rows += b.num_rows
        if rows >= ROW_GROUP_ROWS:
            w.write_table(pa.Table.from_batches(buf), row_group_size=ROW_GROUP_ROWS)
            total += rows
            buf, rows = [], 0
    if buf:
        w.write_table(pa.Table.from_batches(buf), row_group_size=ROW_GROUP_ROWS)
        total += rows
    return total


def _commit_features(lake: Lake, scan: _Scan, plan: _Plan, days: list[str], dropped: np.ndarray) -> None:
    """One partition per day, COMMIT_THREADS days at a time (Parquet encoding releases the GIL)."""
    from concurrent.futures import ThreadPoolExecutor

    columns = [plan.entity_id, *plan.features]

    def commit(ds: str) -> None:
        files = scan.feature_files[ds]
        schema = pq.read_schema(files[0])
        schema = pa.schema([schema.field(c) for c in columns])
        with lake.writer(FEATURES, ds, schema) as w:
            _write_batches(w, _stream_spill(files, dropped, columns))
        _release()

    with ThreadPoolExecutor(max_workers=COMMIT_THREADS) as pool:
        for _ in pool.map(commit, days):  # re-raises the first failure
            pass


def _commit_labels(lake: Lake, scan: _Scan, plan: _Plan, label_days: list[str], event_days: set[str],
                   dropped: np.ndarray) -> int:
    """One labels partition per day; rows already there for event days this import does not land are kept."""
    o = plan.options
    schema = pa.schema([(plan.entity_id, plan.id_type), (EVENT_DS, pa.string()), (o.label_col, plan.label_type)])
    columns = schema.names
    landed = 0
    if dropped.size:
        value_set = pa.array(dropped)
        for ds in label_days:
            for f in scan.label_files.get(ds, []):
                scan.labels_dropped += pc.sum(pc.is_in(pq.read_table(f, columns=[_ROW]).column(0),
                                                       value_set=value_set)).as_py() or 0
    for ds in label_days:
        def batches(ds=ds):
            if lake.exists(LABELS, ds):
                old = lake.dataset(LABELS, ds)
                if old.schema.remove_metadata().equals(schema):
                    for b in lake.batches(LABELS, ds, PARQUET_BATCH_ROWS):
                        if b.num_rows:
                            yield b.filter(pc.invert(pc.is_in(b.column(EVENT_DS), value_set=pa.array(sorted(event_days)))))
            yield from _stream_spill(scan.label_files.get(ds, []), dropped, columns)

        with lake.writer(LABELS, ds, schema) as w:
            landed += _write_batches(w, batches())
    return landed


def _release() -> None:
    """Hand freed Arrow memory back to the OS between phases, so one phase's high-water mark is not the next's floor."""
    pa.default_memory_pool().release_unused()


def _ds_range(first: str, last: str) -> list[str]:
    a, b = dt.date.fromisoformat(first), dt.date.fromisoformat(last)
    return [(a + dt.timedelta(days=i)).isoformat() for i in range((b - a).days + 1)]


def _remove_if_empty(path: Path) -> None:
    try:
        path.rmdir()
    except OSError:
        pass


def _show(v: Any) -> str:
    if isinstance(v, tuple):
        return "[" + ", ".join(v) + "]"
    return repr(getattr(v, "value", v))


# -- the report -------------------------------------------------------------------------------
_SPARK = "▁▂▃▄▅▆▇█"


def render_report(report: ImportReport, console: "Console") -> None:
    """Print the import's report as rich tables."""
    from rich.table import Table

    days = report.days
    counts = [report.rows_per_day[d] for d in days]
    summary = Table(title=f"nightshift import: {report.source}", show_header=False, title_justify="left")
    summary.add_column(style="bold")
    summary.add_column()
    size = f", {report.source_bytes / 2**20:,.1f} MiB" if report.source_bytes else ""
    summary.add_row("source", f"{report.source} ({report.source_format}{size})")
    summary.add_row("rows read", f"{report.rows_read:,}")
    summary.add_row("rows landed", f"{report.rows_landed:,} in features/ (lake {report.lake})")
    summary.add_row("days", f"{days[0]} .. {days[-1]} ({len(days)} day{'s' if len(days) != 1 else ''} with data)")
    summary.add_row("rows per day", f"min {min(counts):,} / median {statistics.median(counts):,.0f} / max {max(counts):,}")
    summary.add_row("label coverage", f"{report.label_coverage:.1%} of landed rows have a label ({report.rows_labelled:,})")
    summary.add_row("labels", f"{report.labels_landed:,} rows in labels/ds={report.label_days[0]} .. {report.label_days[1]} "
                              "(every day has a partition, empty when nothing arrived)")
    summary.add_row("task", f"{report.task.value} ({'inferred' if report.task_inferred else '--task'})")
    summary.add_row("ids", report.id_policy)
    summary.add_row("label arrival", report.arrival_policy)
    cal = report.spec.calendar
    summary.add_row("calendar", cal.kind.value + (": " + ", ".join(f"{a}..{b}" for a, b in cal.blocks) if cal.blocks else ""))
    summary.add_row("label maturity", f"max_delay_days = {report.spec.label_delay.max_delay_days}, "
                                      f"min_coverage = {report.spec.label_delay.min_coverage}")
    summary.add_row("spec written to", f"{report.spec_path} [dataset]")
    summary.add_row("time", f"{report.seconds:,.1f} s ({report.rows_read / max(report.seconds, 1e-9):,.0f} rows/s)")
    console.print(summary)

    if len(days) <= 14:
        per_day = Table(title="rows per day", title_justify="left")
        per_day.add_column("ds")
        per_day.add_column("rows", justify="right")
        for d, c in zip(days, counts):
            per_day.add_row(d, f"{c:,}")
        console.print(per_day)
    else:
        top = max(counts)
        spark = "".join(_SPARK[min(len(_SPARK) - 1, int(c / top * len(_SPARK)))] if top else _SPARK[0] for c in counts)
        console.print(f"rows per day {days[0]} .. {days[-1]}: {spark}")

    schema = Table(title="schema", title_justify="left", caption=f"rule: {INFERENCE_RULE}", caption_justify="left")
    for name in ("column", "Arrow type", "role", "distinct (sample)", "nulls (sample)", "note"):
        schema.add_column(name, justify="right" if "sample" in name else "left")
    for c in report.columns:
        style = "dim" if c.role == Role.IGNORED else None
        schema.add_row(c.name, c.type, c.role.value, f"{c.distinct:,}" if c.distinct is not None else "-",
                       f"{c.nulls:,}", c.note, style=style)
    if report.spec.entity_id not in {c.name for c in report.columns}:
        schema.add_row(report.spec.entity_id, "string", "id (derived)", "-", "0", "hash of timestamp + features")
    console.print(schema)

    bad = Table(title="bad values", title_justify="left")
    for name in ("kind", "column", "count", "policy", "first examples (row: value)"):
        bad.add_column(name, justify="right" if name == "count" else "left")
    for i in report.issues:
        bad.add_row(i.kind, i.column, f"{i.count:,}", "error" if i.fatal else i.rule,
                    ", ".join(f"{r}: {v!r}" for r, v in i.examples[:3]))
    if not report.issues:
        bad.add_row("none", "", "0", "", "")
    console.print(bad)
    for n in report.notes:
        console.print(f"[yellow]note[/]: {n}")
