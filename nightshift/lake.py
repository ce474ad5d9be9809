"""The lake: date-partitioned Parquet tables under one root, committed atomically.

Layout (see DESIGN.md): `<root>/<table>/ds=YYYY-MM-DD/*.parquet`. A partition is written
in full under `<table>/_staging/` and then swapped into place, so readers and crashes never
see half a partition. Names starting with `_` or `.` are invisible to pyarrow datasets,
DuckDB and Spark, so staging and trash never leak into a reader's view.

The swap is two renames (old -> trash, staging -> final). A crash between them leaves no
partition but a complete copy in trash; `recover()` (run before every write of that
partition) puts it back, so nothing already committed is lost. Readers never write.
"""

from __future__ import annotations

import contextlib
import hashlib
import posixpath
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from nightshift.dates import parse_ds
from nightshift.spec import DS

# Every table of the lake contract, by name.
FEATURES = "features"
LABELS = "labels"
PREDICTIONS = "predictions"
SHADOW = "shadow"
DRIFT = "monitoring/drift"
PERFORMANCE = "monitoring/performance"
DECISIONS = "decisions"
TABLES = (FEATURES, LABELS, PREDICTIONS, SHADOW, DRIFT, PERFORMANCE, DECISIONS)

# Row groups are the unit a Parquet reader decodes at once: bounding them bounds the memory of
# every streaming read, whatever the partition's size.
ROW_GROUP_ROWS = 131_072

_STAGING = "_staging"
_TRASH = "_trash"


class PartitionMissing(FileNotFoundError):
    """A partition the caller needs has not been written."""


@dataclass(frozen=True)
class PartitionRef:
    """What a task returns instead of data: where a committed partition is and how big."""

    table: str
    ds: str
    path: str
    rows: int

    def as_dict(self) -> dict:
        return {"table": self.table, "ds": self.ds, "path": self.path, "rows": self.rows}


class Lake:
    def __init__(self, uri: str):
        self.uri = uri
        self.fs, self.root = pafs.FileSystem.from_uri(uri) if "://" in uri else (pafs.LocalFileSystem(), _abs(uri))

    def __repr__(self) -> str:
        return f"Lake({self.uri!r})"

    # -- layout -----------------------------------------------------------------------
    def table_path(self, table: str) -> str:
        if table not in TABLES:
            raise ValueError(f"unknown lake table {table!r}; the lake has {', '.join(TABLES)}")
        return posixpath.join(self.root, table)

    def path(self, table: str, ds: str) -> str:
        parse_ds(ds)
        return posixpath.join(self.table_path(table), f"{DS}={ds}")

    def exists(self, table: str, ds: str) -> bool:
        """Whether partition `ds` of `table` is committed. Reading never writes: only the next
        commit of a partition repairs an interrupted swap (see `recover`)."""
        return self._is_dir(self.path(table, ds))

    def partitions(self, table: str) -> list[str]:
        """The committed days of a table, oldest first."""
        base = self.table_path(table)
        if not self._is_dir(base):
            return []
        days = []
        for info in self.fs.get_file_info(pafs.FileSelector(base)):
            name = posixpath.basename(info.path)
            if info.type == pafs.FileType.Directory and name.startswith(f"{DS}="):
                days.append(name[len(DS) + 1:])
        return sorted(days)

    # -- writing ----------------------------------------------------------------------
    @contextlib.contextmanager
    def writer(self, table: str, ds: str, schema: pa.Schema, part: str = "part-0") -> Iterator[pq.ParquetWriter]:
        """Stream record batches into a new partition; it is committed only if the block succeeds."""
        staging = posixpath.join(self.table_path(table), _STAGING, f"{DS}={ds}-{uuid.uuid4().hex}")
        self.fs.create_dir(staging, recursive=True)
        file = posixpath.join(staging, f"{part}.parquet")
        try:
            with pq.ParquetWriter(file, schema, filesystem=self.fs, compression="zstd") as w:
                yield w
        except BaseException:
            self.fs.delete_dir(staging)
            raise
        self._swap(table, ds, staging)

    def commit(self, table: str, ds: str, data: pa.Table) -> PartitionRef:
        """Replace partition `ds` of `table` with `data`, atomically."""
        with self.writer(table, ds, data.schema) as w:
            w.write_table(data, row_group_size=ROW_GROUP_ROWS)
        return PartitionRef(table, ds, self.path(table, ds), data.num_rows)

    def commit_part(self, table: str, ds: str, part: str, data: pa.Table) -> PartitionRef:
        """Replace one named file inside a partition, atomically, leaving its other files.

        For tables several writers share (decisions: the nightly decision, the retrain
        verdict and a rollback each own one file of the day).
        """
        final_dir = self.path(table, ds)
        self.recover(table, ds)
        self.fs.create_dir(final_dir, recursive=True)
        tmp = posixpath.join(final_dir, f"_{part}-{uuid.uuid4().hex}.parquet")
        pq.write_table(data, tmp, filesystem=self.fs, compression="zstd", row_group_size=ROW_GROUP_ROWS)
        self.fs.move(tmp, posixpath.join(final_dir, f"{part}.parquet"))  # rename: atomic on one filesystem
        return PartitionRef(table, ds, final_dir, data.num_rows)

    # -- a partition written by several workers, committed once -----------------------
    def staged_dir(self, table: str, ds: str, key: str) -> str:
        """Where the parts of one multi-worker write of `table/ds=D` gather before their commit.

        `key` names the write (run, input and model): workers of the same write share it, so a
        retried worker replaces only its own part, and parts of different writes never mix.
        """
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in key)
        return posixpath.join(self.table_path(table), _STAGING, f"{DS}={ds}-parts-{safe}")

    def write_part(self, table: str, ds: str, key: str, part: str, schema: pa.Schema) -> contextlib.AbstractContextManager[pq.ParquetWriter]:
        """Stream one named part of a multi-worker write; the part appears (by rename) only when complete."""
        return self._part_writer(self.staged_dir(table, ds, key), part, schema)

    @contextlib.contextmanager
    def _part_writer(self, directory: str, part: str, schema: pa.Schema) -> Iterator[pq.ParquetWriter]:
        self.fs.create_dir(directory, recursive=True)
        tmp = posixpath.join(directory, f".{part}-{uuid.uuid4().hex}.tmp")
        try:
            with pq.ParquetWriter(tmp, schema, filesystem=self.fs, compression="zstd") as w:
                yield w
        except BaseException:
            self.fs.delete_file(tmp)
            raise
        self.fs.move(tmp, posixpath.join(directory, f"{part}.parquet"))  # a retry replaces it whole

    def commit_parts(self, table: str, ds: str, key: str, parts: dict[str, int]) -> PartitionRef:
        """Commit the parts of a multi-worker write as partition `ds`, atomically, once all are there.

        `parts` maps each expected part name to the rows its worker reported. A missing part or
        a row count that disagrees refuses the commit (nothing changes); parts left by an earlier
        plan of the same write are not carried into the partition.
        """
        staging = self.staged_dir(table, ds, key)
        where = f"{table}/{DS}={ds}"
        present = {posixpath.basename(i.path)[:-len(".parquet")]: i.path
                   for i in (self.fs.get_file_info(pafs.FileSelector(staging)) if self._is_dir(staging) else [])
                   if i.type == pafs.FileType.File and i.path.endswith(".parquet") and not posixpath.basename(i.path).startswith(".")}
        missing = sorted(set(parts) - set(present))
        if missing:
            raise PartitionMissing(f"{where}: cannot commit, {len(missing)} of {len(parts)} parts are missing "
                                   f"({', '.join(missing[:5])}); rerun the workers that wrote them (nothing was changed)")
        for name, rows in parts.items():
            actual = pq.ParquetFile(present[name], filesystem=self.fs).metadata.num_rows
            if actual != rows:
                raise ValueError(f"{where}: part {name} holds {actual} rows but its worker reported {rows}; "
                                 "rerun that worker (nothing was changed)")
        for name in set(present) - set(parts):
            self.fs.delete_file(present[name])
        self._swap(table, ds, staging)
        return PartitionRef(table, ds, self.path(table, ds), sum(parts.values()))

    def discard_parts(self, table: str, ds: str, key: str) -> None:
        """Drop the staged parts of a write that will not be committed."""
        staging = self.staged_dir(table, ds, key)
        if self._is_dir(staging):
            self.fs.delete_dir(staging)

    def _swap(self, table: str, ds: str, staging: str) -> None:
        final = self.path(table, ds)
        self.recover(table, ds)
        trash = None
        if self._is_dir(final):
            trash = posixpath.join(self.table_path(table), _TRASH, f"{DS}={ds}-{uuid.uuid4().hex}")
            self.fs.create_dir(posixpath.dirname(trash), recursive=True)
            self.fs.move(final, trash)
        self.fs.move(staging, final)
        if trash:
            self.fs.delete_dir(trash)

    def recover(self, table: str, ds: str) -> bool:
        """Restore a partition whose swap was interrupted; True if something was restored."""
        final = self.path(table, ds)
        trash_dir = posixpath.join(self.table_path(table), _TRASH)
        if self._is_dir(final) or not self._is_dir(trash_dir):
            return False
        prefix = f"{DS}={ds}-"
        for info in self.fs.get_file_info(pafs.FileSelector(trash_dir)):
            if posixpath.basename(info.path).startswith(prefix):
                self.fs.move(info.path, final)
                return True
        return False

    # -- reading ----------------------------------------------------------------------
    def dataset(self, table: str, ds: str) -> pads.Dataset:
        if not self.exists(table, ds):
            raise PartitionMissing(f"{table}/{DS}={ds} has not been written (looked in {self.path(table, ds)})")
        return pads.dataset(self.path(table, ds), format="parquet", filesystem=self.fs)

    def read(self, table: str, ds: str, columns: list[str] | None = None) -> pa.Table:
        return self.dataset(table, ds).to_table(columns=columns)

    def batches(self, table: str, ds: str, batch_rows: int, columns: list[str] | None = None) -> Iterator[pa.RecordBatch]:
        """Record batches in file order, one row group decoded at a time, so memory does not grow with the partition.

        No pre-buffering and no scan threads: pre-buffering reads whole files ahead, and
        threads decode several row groups at once; both make memory scale with the partition.
        """
        options = pads.ParquetFragmentScanOptions(pre_buffer=False)
        yield from self.dataset(table, ds).to_batches(columns=columns, batch_size=batch_rows, batch_readahead=1,
                                                      fragment_readahead=1, fragment_scan_options=options,
                                                      use_threads=False)

    def files(self, table: str, ds: str) -> list[tuple[str, int]]:
        """The data files of a committed partition, as (path relative to it, bytes), in name order."""
        if not self.exists(table, ds):
            raise PartitionMissing(f"{table}/{DS}={ds} has not been written (looked in {self.path(table, ds)})")
        base = self.path(table, ds)
        out = []
        for info in self.fs.get_file_info(pafs.FileSelector(base, recursive=True)):
            rel = posixpath.relpath(info.path, base)
            if info.type == pafs.FileType.File and not any(p.startswith(("_", ".")) for p in rel.split("/")):
                out.append((rel, info.size))
        return sorted(out)

    def batches_of(self, table: str, ds: str, files: list[str], batch_rows: int,
                   columns: list[str] | None = None) -> Iterator[pa.RecordBatch]:
        """Like `batches`, over some of a partition's files (paths relative to it), in the given order."""
        base = self.path(table, ds)
        options = pads.ParquetFragmentScanOptions(pre_buffer=False)
        dataset = pads.dataset([posixpath.join(base, f) for f in files], format="parquet", filesystem=self.fs)
        yield from dataset.to_batches(columns=columns, batch_size=batch_rows, batch_readahead=1, fragment_readahead=1,
                                      fragment_scan_options=options, use_threads=False)

    def read_days(self, table: str, days: Iterable[str], columns: list[str] | None = None) -> pa.Table | None:
        """Concatenate the given days that exist, with their `ds` as a column; None if none exist."""
        parts = []
        for ds in days:
            if self.exists(table, ds):
                t = self.read(table, ds, columns)
                parts.append(t.append_column(DS, pa.array([ds] * t.num_rows, pa.string())))
        if not parts:
            return None
        return pa.concat_tables(parts, promote_options="permissive")

    def fingerprint(self, table: str, ds: str) -> str:
        """Content hash of a partition's files: same bytes, same fingerprint."""
        if not self.exists(table, ds):
            raise PartitionMissing(f"{table}/{DS}={ds} has not been written")
        h = hashlib.sha256()
        base = self.path(table, ds)
        infos = self.fs.get_file_info(pafs.FileSelector(base, recursive=True))
        for info in sorted((i for i in infos if i.type == pafs.FileType.File), key=lambda i: i.path):
            rel = posixpath.relpath(info.path, base)
            if rel.startswith(("_", ".")):
                continue
            h.update(rel.encode())
            with self.fs.open_input_stream(info.path) as f:
                while chunk := f.read(1 << 20):
                    h.update(chunk)
        return h.hexdigest()[:16]

    def _is_dir(self, path: str) -> bool:
        return self.fs.get_file_info(path).type == pafs.FileType.Directory


def _abs(path: str) -> str:
    import os

    return os.path.abspath(os.path.expanduser(path))
