"""The input contract: what a `features/ds=D` partition must hold before anything scores it,
and what a `labels/ds=A` partition must hold before anything reads it (`validate_labels`; the
label readers in `nightshift.tables.labels` apply the same rules to every partition they read).

A violation raises `ContractViolation`, whose message names the partition, the column and
the rule, and says what to do. Nothing is dropped or repaired silently: a bad partition
stops the night before any output is written.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from nightshift.columns import categorical_type_ok, numeric_type_ok
from nightshift.lake import FEATURES, LABELS, Lake, PartitionMissing, stream_batches
from nightshift.tables.labels import check_partition
from nightshift.violation import ContractViolation

if TYPE_CHECKING:
    from nightshift.spec import DatasetSpec


def validate_partition(lake: Lake, spec: "DatasetSpec", ds: str) -> dict:
    """Check one features partition against the contract; returns counts and its fingerprint.

    One row group at a time (`stream_batches`): the scanner's defaults read a 10M-row day in
    3.2 GiB and 6.6-13.7 s, streaming in 470 MiB and 4.2-4.6 s (measured on 2 cores).
    """
    check = ContractCheck.open(lake, spec, ds)
    for batch in stream_batches(check.dataset, PASS_BATCH_ROWS, check.columns):
        check.batch(batch)
    return {**check.finish(), "fingerprint": lake.fingerprint(FEATURES, ds)}


_MULTIPLIERS = np.random.default_rng(20261123).integers(1, 2**63, size=256, dtype=np.uint64) | np.uint64(1)


def id_keys(col: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """One uint64 per id, equal for equal ids: the id itself for integers, a hash for text.

    8 bytes an id whatever its length, computed batch by batch; `SeenIds` keeps 1 to 2 bytes
    of them. Two different texts may share a hash; a shared key is only a suspect, which
    `ContractCheck` settles against the ids themselves.
    """
    if isinstance(col, pa.ChunkedArray):
        parts = [id_keys(c) for c in col.chunks]
        return np.concatenate(parts) if parts else np.empty(0, np.uint64)
    if pa.types.is_integer(col.type):
        return col.cast(pa.int64()).to_numpy(zero_copy_only=False).view(np.uint64)
    if not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)):
        col = col.cast(pa.string())
    col = col.cast(pa.large_string())  # 64-bit offsets, one layout to read
    n = len(col)
    if n == 0:
        return np.empty(0, np.uint64)
    offsets = np.frombuffer(col.buffers()[1], dtype=np.int64)[col.offset:col.offset + n + 1]
    data = np.frombuffer(col.buffers()[2], dtype=np.uint8)[offsets[0]:offsets[-1]] if offsets[-1] > offsets[0] else np.empty(0, np.uint8)
    lengths = np.diff(offsets)
    starts = offsets[:-1] - offsets[0]
    # key = sum over bytes of (byte + 1) * M[position mod 256], mod 2**64, mixed with the length
    with np.errstate(over="ignore"):
        counts = np.bincount(lengths)
        if np.count_nonzero(counts) <= _FEW_LENGTHS and len(counts) <= 256:
            sums = _sums_by_length(data, starts, lengths, counts)
        else:
            pos = np.arange(len(data), dtype=np.int64) - np.repeat(starts, lengths)  # each byte's place in its string
            terms = (data.astype(np.uint64) + np.uint64(1)) * _MULTIPLIERS[pos & 255]
            sums = np.zeros(n, np.uint64)
            nonempty = lengths > 0
            if nonempty.any():
                sums[nonempty] = np.add.reduceat(terms, starts[nonempty])
        return sums ^ (lengths.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15))


_FEW_LENGTHS = 16


def _sums_by_length(data: np.ndarray, starts: np.ndarray, lengths: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """The same sums, one matrix product per distinct length: ids of a few lengths (the usual case) hash ~40x faster.

    The ids of length L are an [n_L, L] matrix of bytes, and their sums are that matrix times
    M[:L] plus sum(M[:L]), exactly, in wrapping uint64 arithmetic.
    """
    sums = np.zeros(len(lengths), np.uint64)
    for length in np.flatnonzero(counts):
        if length == 0:
            continue
        m = _MULTIPLIERS[:length]
        if counts[length] == len(lengths):  # one length for all: the bytes are already the matrix
            return data.reshape(-1, length).astype(np.uint64) @ m + m.sum()
        rows = np.flatnonzero(lengths == length)
        block = data[starts[rows][:, None] + np.arange(length)]
        sums[rows] = block.astype(np.uint64) @ m + m.sum()
    return sums


SLOTS_PER_ROW = 8  # at least 8 and under 16 bitmap slots per expected row: 1 to 2 bytes an id
PASS_BATCH_ROWS = 131_072  # rows per batch when the contract reads a day on its own (validation, the ids again)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)  # Fibonacci hashing: spreads sequential integer ids over the slots


class SeenIds:
    """Which of a day's ids may repeat, in 1 to 2 bytes an id, whatever the ids' length.

    Each id's key (`id_keys`) is hashed to a slot of a bitmap, and sets that slot's bit. An id
    whose bit is already set is a suspect: a true duplicate, or another id that shares the
    slot (a few percent of rows, by the time the bitmap fills). Only the suspects' slots are
    kept. A true duplicate always lands in a suspect slot, so counting the repeats among the
    ids in those slots, read again at the end, is exact. Safe to `add` from several threads.
    """

    def __init__(self, expected_rows: int):
        bits = max(16, int(np.ceil(np.log2(max(expected_rows, 1) * SLOTS_PER_ROW))))
        self._shift = np.uint64(64 - bits)
        self._bitmap = np.zeros(1 << (bits - 3), np.uint8)
        self._suspects: list[np.ndarray] = []
        self._suspect_bitmap: np.ndarray | None = None
        self._lock = threading.Lock()

    def slots(self, keys: np.ndarray) -> np.ndarray:
        with np.errstate(over="ignore"):
            return (keys * _GOLDEN) >> self._shift

    def add(self, keys: np.ndarray) -> None:
        slots = self.slots(keys)
        byte, mask = _bit(slots)
        ordered = np.sort(slots)
        twice = ordered[1:][ordered[1:] == ordered[:-1]]  # slots repeated within this batch
        with self._lock:  # the test and the set of a bit must not interleave with another batch's
            hit = (self._bitmap[byte] & mask) != 0
            np.bitwise_or.at(self._bitmap, byte, mask)
            if hit.any() or len(twice):
                self._suspects.append(np.concatenate([slots[hit], twice]))

    @property
    def any_suspect(self) -> bool:
        return bool(self._suspects)

    def suspect_slots(self) -> np.ndarray:
        """Sorted, distinct: every slot that two ids (or one id twice) landed in."""
        return np.unique(np.concatenate(self._suspects)) if self._suspects else np.empty(0, np.uint64)

    def suspected(self, keys: np.ndarray) -> np.ndarray:
        """Whether each key lands in a suspect slot (a bitmap lookup, as fast as `add`)."""
        if self._suspect_bitmap is None:
            self._suspect_bitmap = np.zeros_like(self._bitmap)
            np.bitwise_or.at(self._suspect_bitmap, *_bit(self.suspect_slots()))
        byte, mask = _bit(self.slots(keys))
        return (self._suspect_bitmap[byte] & mask) != 0


def _bit(slots: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each slot's byte in a bitmap and its bit within that byte."""
    return (slots >> np.uint64(3)).astype(np.intp), np.left_shift(np.uint8(1), (slots & np.uint64(7)).astype(np.uint8))


def _footer_rows(dataset) -> int:
    try:
        return int(dataset.count_rows())  # from the Parquet footers, no data read
    except (OSError, pa.ArrowException):
        return 0


class ContractCheck:
    """The contract, applied batch by batch, so a writer can check the very batches it streams.

    `open` checks the partition's existence and schema; `batch` each record batch (ids never
    null, numbers finite); `finish` what needs the whole day (not empty, ids unique, no column
    entirely missing) and must pass before anything is committed.
    """

    def __init__(self, partition: str, spec: "DatasetSpec", dataset):
        self.partition, self.spec, self.dataset = partition, spec, dataset
        self.rows, self.null_counts = 0, {c: 0 for c in spec.numeric}
        self._seen = SeenIds(_footer_rows(dataset))
        self._lock = threading.Lock()  # `batch` may run on several scoring threads at once

    @classmethod
    def open(cls, lake: Lake, spec: "DatasetSpec", ds: str) -> "ContractCheck":
        partition = f"features/ds={ds}"
        try:
            dataset = lake.dataset(FEATURES, ds)
        except PartitionMissing:
            raise ContractViolation(partition, None, "partition exists", "it has not been landed",
                                    "Land the day's features first (the demo: `nightshift simulate`), then rerun this night.") from None
        _check_schema(partition, dataset.schema, spec)
        return cls(partition, spec, dataset)

    @property
    def columns(self) -> list[str]:
        return [self.spec.entity_id, *self.spec.numeric]

    def batch(self, batch: pa.RecordBatch) -> None:
        """Check one record batch; safe to call from several threads at once."""
        spec, partition = self.spec, self.partition
        id_col = batch.column(spec.entity_id)
        if id_col.null_count:
            raise ContractViolation(partition, spec.entity_id, "entity id is never null",
                                    f"{id_col.null_count} null ids in a batch of {batch.num_rows}",
                                    "Fix the upstream extract; every row needs an id so its prediction can be traced.")
        keys = id_keys(id_col)
        nulls = {}
        for name in spec.numeric:
            col = batch.column(name)
            if pa.types.is_integer(col.type):  # no infinities, no NaN: only nulls can be missing
                nulls[name] = col.null_count
                continue
            if not pa.types.is_floating(col.type):
                col = pc.cast(col, pa.float64())
            infinite = pc.sum(pc.is_inf(col)).as_py() or 0
            if infinite:
                raise ContractViolation(partition, name, "numeric values are finite or missing",
                                        f"{infinite} infinite values",
                                        "Replace infinities upstream with a missing value (NaN/null) or a real number.")
            nulls[name] = col.null_count + (pc.sum(pc.is_nan(col)).as_py() or 0)
        self._seen.add(keys)
        with self._lock:
            self.rows += batch.num_rows
            for name, k in nulls.items():
                self.null_counts[name] += k

    def _duplicate_ids(self) -> int:
        """How many rows repeat an earlier id: exact, from the ids in the slots `SeenIds` suspects."""
        if not self._seen.any_suspect:
            return 0
        ids = [batch.column(0).filter(pa.array(self._seen.suspected(id_keys(batch.column(0)))))
               for batch in stream_batches(self.dataset, PASS_BATCH_ROWS, [self.spec.entity_id])]
        ids = pa.chunked_array(ids, type=ids[0].type) if ids else pa.chunked_array([], pa.string())
        return len(ids) - pc.count_distinct(ids).as_py()

    def finish(self) -> dict:
        spec, partition, rows = self.spec, self.partition, self.rows
        ds = partition.partition("=")[2]
        if rows == 0:
            raise ContractViolation(partition, None, "partition is not empty", "it has 0 rows",
                                    "Check the upstream extract for this day; an empty day is never scored silently.")
        distinct = rows - self._duplicate_ids()
        if distinct != rows:
            raise ContractViolation(partition, spec.entity_id, "entity id is unique within a day",
                                    f"{rows - distinct} duplicate ids among {rows} rows",
                                    "Deduplicate upstream; two predictions for one entity on one day are ambiguous.")
        all_missing = [c for c, n in self.null_counts.items() if n == rows]
        if all_missing:
            raise ContractViolation(partition, all_missing[0], "numeric column is not entirely missing",
                                    f"all {rows} values are missing (also: {all_missing[1:] or 'none'})",
                                    "A whole column missing usually means a broken upstream join; fix it and rerun.")
        return {"ds": ds, "rows": rows, "missing": {c: n for c, n in self.null_counts.items() if n}}


def validate_labels(lake: Lake, spec: "DatasetSpec", ds: str) -> dict:
    """Check one labels partition (the labels that arrived on `ds`); returns its row count and fingerprint."""
    if not lake.exists(LABELS, ds):
        raise ContractViolation(f"labels/ds={ds}", None, "partition exists", "it has not been landed",
                                "Land the day's labels (an empty partition when none arrived), then rerun.")
    return {"ds": ds, "rows": check_partition(lake, spec, ds), "fingerprint": lake.fingerprint(LABELS, ds)}


def _check_schema(partition: str, schema: pa.Schema, spec: "DatasetSpec") -> None:
    names = set(schema.names)
    for col in [spec.entity_id, *spec.features]:
        if col not in names:
            raise ContractViolation(partition, col, "required column present", "the column is missing",
                                    f"The dataset spec (nightshift.toml [dataset]) requires it; present columns: {sorted(names)}.")
    for col in spec.numeric:
        t = schema.field(col).type
        if not numeric_type_ok(t):
            raise ContractViolation(partition, col, "numeric feature is a number or boolean", f"its type is {t}",
                                    "Cast it upstream, or list it under [dataset] categorical if it is a category.")
    for col in spec.categorical:
        t = schema.field(col).type
        if not categorical_type_ok(t):
            raise ContractViolation(partition, col, "categorical feature is a string, integer or boolean", f"its type is {t}",
                                    "Cast it to string upstream.")
    if spec.label in names:
        raise ContractViolation(partition, spec.label, "features carry no label",
                                "the label column is present in the features",
                                "Labels arrive separately in labels/ds=A; remove it from features so nothing can leak.")
