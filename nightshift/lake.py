"""The lake: date-partitioned Parquet tables under one root, committed atomically.

Layout (see DESIGN.md): `<root>/<table>/ds=YYYY-MM-DD/*.parquet`. A partition is written
in full under `<root>/_staging/<table>/` and then swapped into place, so readers and crashes
never see half a partition. Staging and trash live beside the tables, never inside one, so
no glob over a table (`predictions/**/*.parquet` in DuckDB) can reach a truncated file.

Every committed partition records its generation in `_generation` (a name pyarrow, DuckDB
and Spark skip): one more than any earlier copy of that partition. The swap is two renames
(old -> trash, named by its generation; staging -> final). A crash between them leaves no
partition but a complete copy in trash; `recover()` (run before every write of that
partition) puts back the newest copy by generation, never by listing order, so nothing
already committed is lost. The next commit of a table also removes what crashed writers of
that table left: staging whose writer is gone, and trash that a committed partition
supersedes. On a local filesystem a lock file serialises the swaps of one partition, so
overlapping writers each commit a complete partition and the last one wins. Readers never
write.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import posixpath
import socket
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from nightshift.dates import parse_ds
from nightshift.spec import DS

FINGERPRINT_BLOCK = 64 << 20  # bytes a fingerprint thread hashes at a time

log = logging.getLogger("nightshift.lake")

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

# Beside the tables under the lake root: `<root>/_staging/<table>/`, `<root>/_trash/<table>/ds=D/`.
_STAGING = "_staging"
_TRASH = "_trash"
_LOCKS = "_locks"
IN_PROCESS = "inprocess-"  # a multi-part write whose parts one process writes (see `staged_dir`)
GENERATION = "_generation"
# Staging of a writer on another host (whose pid cannot be checked) counts as abandoned after this long.
STALE_STAGING_S = 24 * 3600


class PartitionMissing(FileNotFoundError):
    """A partition the caller needs has not been written."""


class LakeWriteError(OSError):
    """The lake refused a write (disk full, permission denied, read-only); the committed partition is untouched."""

    def __init__(self, what: str, where: str, cause: OSError):
        code = _errno(cause)
        if code in (errno.ENOSPC, errno.EDQUOT):
            reason, fix = "the disk is full", "free space there (or point NIGHTSHIFT_LAKE elsewhere) and rerun"
        elif code == errno.EROFS:
            reason, fix = ("the filesystem is read-only",
                           "remount it read-write (or point NIGHTSHIFT_LAKE elsewhere) and rerun")
        elif code in (errno.EACCES, errno.EPERM):
            reason, fix = ("permission denied (the lake is read-only to this user)",
                           "give this user write access to the lake (or point NIGHTSHIFT_LAKE elsewhere) and rerun")
        else:
            reason, fix = f"the filesystem failed ({cause})", "check the lake's storage and rerun"
        super().__init__(code, f"could not write {what} in the lake {where}: {reason}. "
                               f"The committed partition is unchanged; {fix}")
        self.what, self.where, self.reason = what, where, reason

    def __str__(self) -> str:
        return self.strerror


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
    """The lake's one interface. `Lake(uri)` is the POSIX backend; `Lake(uri, "delta")` (or
    `Lake.of(settings)` with `paths.lake_backend = "delta"`) is `nightshift.lake_delta.DeltaLake`."""

    backend = "posix"

    def __new__(cls, uri: str = "", backend: str = "posix"):  # defaults: unpickling calls it without arguments
        if cls is Lake and backend == "delta":
            from nightshift.lake_delta import DeltaLake  # deltalake is imported on the delta path only

            return super().__new__(DeltaLake)
        if backend not in ("posix", "delta"):
            raise ValueError(f"unknown lake backend {backend!r}: paths.lake_backend is 'posix' or 'delta'")
        return super().__new__(cls)

    @classmethod
    def of(cls, settings) -> "Lake":
        """The lake the settings name, on the backend they name."""
        return cls(settings.lake_uri, settings.paths.lake_backend)

    def __init__(self, uri: str, backend: str = "posix"):
        from nightshift.settings import lake_refusal

        if refusal := lake_refusal(uri, self.backend):
            raise ValueError(refusal)
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
        """Stream record batches into a new partition; it is committed only if the block succeeds.

        A full disk or a denied write raises `LakeWriteError` (naming the partition, the lake
        and what to do); the staging copy is removed and the committed partition is untouched.
        """
        what = f"{table}/{DS}={ds}"
        staging = self._staging(table, ds)
        try:
            with _named(what, self.uri):
                self.fs.create_dir(staging, recursive=True)
                pw = pq.ParquetWriter(posixpath.join(staging, f"{part}.parquet"), schema, filesystem=self.fs,
                                      compression="zstd")
            with _Guarded(pw, what, self.uri) as w:
                yield w
            with _named(what, self.uri):
                self._swap(table, ds, staging)
        except BaseException:
            with contextlib.suppress(OSError):
                self.fs.delete_dir(staging)
            raise
        self._tidy(table)

    def commit(self, table: str, ds: str, data: pa.Table) -> PartitionRef:
        """Replace partition `ds` of `table` with `data`, atomically."""
        with self.writer(table, ds, data.schema) as w:
            w.write_table(data, row_group_size=ROW_GROUP_ROWS)
        return PartitionRef(table, ds, self.path(table, ds), data.num_rows)

    def commit_part(self, table: str, ds: str, part: str, data: pa.Table) -> PartitionRef:
        """Replace one named file inside a partition, atomically, leaving its other files.

        For tables several writers share (decisions: the nightly decision, the retrain
        verdict and a rollback each own one file of the day). The file is written in staging,
        outside the table, and renamed in, so a crash leaves nothing inside the table.
        """
        final_dir = self.path(table, ds)
        staging = self._staging(table, ds)
        try:
            with _named(f"{table}/{DS}={ds}/{part}.parquet", self.uri):
                self.fs.create_dir(staging, recursive=True)
                tmp = posixpath.join(staging, f"{part}.parquet")
                pq.write_table(data, tmp, filesystem=self.fs, compression="zstd", row_group_size=ROW_GROUP_ROWS)
                with self._lock(table, ds):
                    self._recover(table, ds)
                    self.fs.create_dir(final_dir, recursive=True)
                    self.fs.move(tmp, posixpath.join(final_dir, f"{part}.parquet"))  # rename: atomic on one filesystem
        finally:
            with contextlib.suppress(OSError):
                self.fs.delete_dir(staging)
        self._tidy(table)
        return PartitionRef(table, ds, final_dir, data.num_rows)

    # -- a partition written by several workers, committed once -----------------------
    def staged_dir(self, table: str, ds: str, key: str) -> str:
        """Where the parts of one multi-worker write of `table/ds=D` gather before their commit.

        `key` names the write (run, input and model): workers of the same write share it, so a
        retried worker replaces only its own part, and parts of different writes never mix.
        Like all staging it lives beside the tables, never inside one. The workers of a mapped
        write come and go between the parts and the commit, so housekeeping removes their
        staging only once it is stale (`STALE_STAGING_S` idle), never because the process that
        wrote a part has ended. A key starting with `IN_PROCESS` says one process writes every
        part: its staging is removed once that process is gone.
        """
        safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in key)  # no dots: see below
        if key.startswith(IN_PROCESS):  # one process writes every part: named by its owner, like a writer's staging,
            # so the next commit removes it as soon as that process is gone
            return posixpath.join(self._side(_STAGING, table), f"{DS}={ds}.{_host()}.{os.getpid()}.parts-{safe}")
        return posixpath.join(self._side(_STAGING, table), f"{DS}={ds}-parts-{safe}")

    def write_part(self, table: str, ds: str, key: str, part: str, schema: pa.Schema,
                   dictionary: list[str] | None = None) -> contextlib.AbstractContextManager[pq.ParquetWriter]:
        """Stream one named part of a multi-worker write; the part appears (by rename) only when complete.

        `dictionary`: the only columns to dictionary-encode (default: every column). Naming the
        columns whose values repeat spares the writer hashing every value of those that never do.
        """
        return self._part_writer(self.staged_dir(table, ds, key), part, schema, f"{table}/{DS}={ds} ({part})", dictionary)

    @contextlib.contextmanager
    def _part_writer(self, directory: str, part: str, schema: pa.Schema, what: str,
                     dictionary: list[str] | None = None) -> Iterator[pq.ParquetWriter]:
        tmp = posixpath.join(directory, f".{part}-{uuid.uuid4().hex}.tmp")
        try:
            with _named(what, self.uri):
                self.fs.create_dir(directory, recursive=True)
                pw = pq.ParquetWriter(tmp, schema, filesystem=self.fs, compression="zstd",
                                      use_dictionary=True if dictionary is None else dictionary)
            with _Guarded(pw, what, self.uri) as w:
                yield w
            with _named(what, self.uri):
                self.fs.move(tmp, posixpath.join(directory, f"{part}.parquet"))  # a retry replaces it whole
        except BaseException:
            with contextlib.suppress(OSError):
                self.fs.delete_file(tmp)
            raise

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
        with _named(where, self.uri):
            self._swap(table, ds, staging)
        self._tidy(table)
        return PartitionRef(table, ds, self.path(table, ds), sum(parts.values()))

    def discard_parts(self, table: str, ds: str, key: str) -> None:
        """Drop the staged parts of a write that will not be committed."""
        staging = self.staged_dir(table, ds, key)
        if self._is_dir(staging):
            self.fs.delete_dir(staging)

    def _swap(self, table: str, ds: str, staging: str) -> None:
        final = self.path(table, ds)
        with self._lock(table, ds):
            self._recover(table, ds)
            generation = max(self._known_generations(table, ds), default=0) + 1
            with self.fs.open_output_stream(posixpath.join(staging, GENERATION)) as f:
                f.write(json.dumps({"generation": generation}).encode())
            trash = None
            if self._is_dir(final):
                trash = posixpath.join(self._side(_TRASH, table), f"{DS}={ds}",
                                       f"g{self._generation(final):012d}-{uuid.uuid4().hex[:12]}")
                self.fs.create_dir(posixpath.dirname(trash), recursive=True)
                self.fs.move(final, trash)
            else:
                self.fs.create_dir(posixpath.dirname(final), recursive=True)
            self.fs.move(staging, final)
            if trash:
                self.fs.delete_dir(trash)

    def recover(self, table: str, ds: str) -> bool:
        """Restore a partition whose swap was interrupted; True if something was restored.

        Of the complete copies in trash it restores the newest by generation; once the
        partition is in place, the remaining trash copies are stale and are removed.
        """
        with self._lock(table, ds):
            return self._recover(table, ds)

    def _recover(self, table: str, ds: str) -> bool:
        final = self.path(table, ds)
        copies = self._trash_copies(table, ds)
        restored = False
        if copies and not self._is_dir(final):
            _, newest = max(copies)
            self.fs.create_dir(posixpath.dirname(final), recursive=True)
            self.fs.move(newest, final)
            copies = [c for c in copies if c[1] != newest]
            restored = True
        for _, path in copies:
            with contextlib.suppress(FileNotFoundError):
                self.fs.delete_dir(path)
        day = posixpath.join(self._side(_TRASH, table), f"{DS}={ds}")
        if self._is_dir(day) and not self._list(day):
            with contextlib.suppress(OSError):
                self.fs.delete_dir(day)
        return restored

    def clean(self, table: str) -> dict[str, int]:
        """Remove what crashed writers of `table` left: staging whose writer is gone, and trash
        that a committed partition supersedes (a missing partition is restored from trash first).

        Also clears the `_staging`/`_trash` folders that older versions kept inside the table.
        Run by every commit of the table; partitions another writer is swapping are skipped.
        """
        removed = {"staging": 0, "trash": 0, "restored": 0}
        legacy_staging = posixpath.join(self.table_path(table), _STAGING)
        for info in self._list(self._side(_STAGING, table)) + self._list(legacy_staging):
            if info.path.startswith(legacy_staging) or _abandoned(posixpath.basename(info.path), info.mtime_ns):
                with contextlib.suppress(FileNotFoundError):
                    self._delete(info)
                removed["staging"] += 1
        days = set()
        for info in self._list(self._side(_TRASH, table)) + self._list(posixpath.join(self.table_path(table), _TRASH)):
            name = posixpath.basename(info.path)
            if name.startswith(f"{DS}="):
                days.add(name[len(DS) + 1:len(DS) + 11])
        for ds in sorted(days):
            try:
                parse_ds(ds)
            except ValueError:
                continue
            with self._lock(table, ds, wait=False) as held:
                if held:
                    copies = len(self._trash_copies(table, ds))
                    restored = self._recover(table, ds)
                    removed["restored"] += restored
                    removed["trash"] += copies - restored
        for legacy in (legacy_staging, posixpath.join(self.table_path(table), _TRASH)):
            if self._is_dir(legacy) and not self._list(legacy):
                with contextlib.suppress(OSError):
                    self.fs.delete_dir(legacy)
        return removed

    def _tidy(self, table: str) -> None:
        # The commit has succeeded; cleaning is housekeeping and never turns it into a failure.
        try:
            self.clean(table)
        except OSError as exc:
            log.warning("could not clean crash debris of %s (the commit itself succeeded): %s", table, exc)

    def generation(self, table: str, ds: str) -> int:
        """How many commits the partition has seen (0: committed before generations were recorded)."""
        if not self.exists(table, ds):
            raise PartitionMissing(f"{table}/{DS}={ds} has not been written")
        return self._generation(self.path(table, ds))

    def _known_generations(self, table: str, ds: str) -> list[int]:
        gens = [key[0] for key, _ in self._trash_copies(table, ds)]
        if self._is_dir(self.path(table, ds)):
            gens.append(self._generation(self.path(table, ds)))
        return gens

    def _generation(self, partition: str) -> int:
        try:
            with self.fs.open_input_stream(posixpath.join(partition, GENERATION)) as f:
                return int(json.loads(f.read())["generation"])
        except (FileNotFoundError, ValueError, KeyError, TypeError):
            return 0

    def _trash_copies(self, table: str, ds: str) -> list[tuple[tuple[int, int, str], str]]:
        """(order, path) of every copy of `ds` in trash, each complete (it was a committed partition).
        Ordered by generation; copies from before generations, by modification time."""
        copies = []
        for info in self._list(posixpath.join(self._side(_TRASH, table), f"{DS}={ds}")):
            name = posixpath.basename(info.path)
            gen = int(name[1:13]) if name[:1] == "g" and name[1:13].isdigit() else self._generation(info.path)
            copies.append(((gen, info.mtime_ns or 0, name), info.path))
        for info in self._list(posixpath.join(self.table_path(table), _TRASH)):  # the layout before generations
            if posixpath.basename(info.path).startswith(f"{DS}={ds}-"):
                copies.append(((self._generation(info.path), info.mtime_ns or 0, info.path), info.path))
        return copies

    def _side(self, kind: str, table: str) -> str:
        """Where staging or trash of `table` lives: beside the tables, never inside one."""
        return posixpath.join(self.root, kind, table)

    def _staging(self, table: str, ds: str) -> str:
        # The owner (host, pid) in the name lets the next commit tell a crashed writer from a running one.
        return posixpath.join(self._side(_STAGING, table), f"{DS}={ds}.{_host()}.{os.getpid()}.{uuid.uuid4().hex[:12]}")

    @contextlib.contextmanager
    def exclusive(self, name: str) -> Iterator[None]:
        """Hold the lake-wide lock `name` (e.g. the registry's alias moves) until the block ends."""
        with self._held(posixpath.join(self.root, _LOCKS, f"{name}.lock"), wait=True):
            yield

    def _lock(self, table: str, ds: str, wait: bool = True) -> contextlib.AbstractContextManager[bool]:
        """Serialise the swaps of one partition."""
        return self._held(posixpath.join(self.root, _LOCKS, table, f"{DS}={ds}.lock"), wait)

    @contextlib.contextmanager
    def _held(self, path: str, wait: bool) -> Iterator[bool]:
        """An exclusive lock file. Local filesystems only (flock, released when the holder dies);
        on object stores there is no rename either, and the last writer wins."""
        if not isinstance(self.fs, pafs.LocalFileSystem):
            yield True
            return
        import fcntl

        os.makedirs(posixpath.dirname(path), exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except BlockingIOError:
                held = False
            else:
                held = True
            yield held
        finally:
            os.close(fd)  # releases the lock; so does the death of the process

    def _list(self, path: str) -> list[pafs.FileInfo]:
        try:
            return self.fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
        except (FileNotFoundError, NotADirectoryError):
            return []

    def _delete(self, info: pafs.FileInfo) -> None:
        if info.type == pafs.FileType.Directory:
            self.fs.delete_dir(info.path)
        else:
            self.fs.delete_file(info.path)

    # -- reading ----------------------------------------------------------------------
    def dataset(self, table: str, ds: str) -> pads.Dataset:
        if not self.exists(table, ds):
            raise PartitionMissing(f"{table}/{DS}={ds} has not been written (looked in {self.path(table, ds)})")
        return pads.dataset(self.path(table, ds), format="parquet", filesystem=self.fs)

    def read(self, table: str, ds: str, columns: list[str] | None = None) -> pa.Table:
        """The whole partition, as one commit wrote it.

        Another writer of the same day may swap the partition while this reads it: between
        listing its files and opening them (the listed files vanish), or between the swap's two
        renames (for a moment there is no partition, only its copy in trash). The read is then
        retried on the partition in place, so a reader gets the old or the new, whole, and an
        error only when the partition is really missing or unreadable.
        """
        return self._settled(table, ds, lambda: self.dataset(table, ds).to_table(columns=columns),
                             lambda got: bool(got.num_columns) or columns == [])

    def _settled(self, table: str, ds: str, read, whole=lambda _: True):
        """`read()`, retried while another writer is swapping partition `ds` under it (see `read`)."""
        attempts = 8
        for attempt in range(attempts):
            last = attempt == attempts - 1
            try:
                got = read()
                if whole(got) or last:
                    return got
                # no file listed: the folder was caught between the swap's renames
            except FileNotFoundError:
                if last or not (self.exists(table, ds) or self._trash_copies(table, ds)):
                    raise
            time.sleep(0.02 * (attempt + 1))
        raise AssertionError("unreachable")  # noqa: S101 - the loop returns or raises

    def batches(self, table: str, ds: str, batch_rows: int, columns: list[str] | None = None) -> Iterator[pa.RecordBatch]:
        """Record batches in file order, one row group decoded at a time, so memory does not grow with the partition.

        No pre-buffering and no scan threads: pre-buffering reads whole files ahead, and
        threads decode several row groups at once; both make memory scale with the partition.
        Opening the partition and its first batch is retried like `read` while another writer
        swaps it; once batches flow, the files they come from are open.
        """
        def start() -> tuple[pa.RecordBatch | None, Iterator[pa.RecordBatch]]:
            it = stream_batches(self.dataset(table, ds), batch_rows, columns)
            return next(it, None), it

        first, rest = self._settled(table, ds, start)
        if first is not None:
            yield first
            yield from rest

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
        yield from stream_batches(pads.dataset([posixpath.join(base, f) for f in files], format="parquet", filesystem=self.fs),
                           batch_rows, columns)

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
        """Content hash of a partition's files: same bytes, same fingerprint (retried like `read`)."""
        fp = self._settled(table, ds, lambda: self._fingerprint(table, ds), lambda fp: fp is not None)
        return fp if fp is not None else hashlib.sha256().hexdigest()[:16]  # a partition with no data file

    def _size(self, path: str) -> int:
        with self.fs.open_input_file(path) as f:
            return f.size()

    def _fingerprint(self, table: str, ds: str) -> str | None:
        """sha256 over each data file's name, size and content (see `_digest_files`)."""
        if not self.exists(table, ds):
            raise PartitionMissing(f"{table}/{DS}={ds} has not been written")
        base = self.path(table, ds)
        infos = self.fs.get_file_info(pafs.FileSelector(base, recursive=True))
        files = [(posixpath.relpath(i.path, base), i.path, i.size if i.size is not None else self._size(i.path)) for i in sorted(
            (i for i in infos if i.type == pafs.FileType.File), key=lambda i: i.path)]
        return self._digest_files([f for f in files if not f[0].startswith(("_", "."))])

    def _digest_files(self, files: list[tuple[str, str, int]]) -> str | None:
        """sha256 over each (name, path, size)'s name, size and the sha256 of each of its `FINGERPRINT_BLOCK` blocks.

        The blocks are hashed on several threads (reading and hashing release the GIL), so a
        2 GB day takes about a second on two cores instead of two or three.
        """
        from concurrent.futures import ThreadPoolExecutor

        if not files:
            return None
        blocks = [(path, start, min(FINGERPRINT_BLOCK, size - start)) for _, path, size in files for start in _block_starts(size)]

        def digest(block: tuple[str, int, int]) -> bytes:
            path, start, length = block
            h = hashlib.sha256()
            with self.fs.open_input_file(path) as f:
                f.seek(start)
                while length > 0 and (chunk := f.read(min(length, 8 << 20))):
                    h.update(chunk)
                    length -= len(chunk)
            return h.digest()

        workers = max(1, min(4, len(blocks), os.cpu_count() or 1))
        with ThreadPoolExecutor(workers, thread_name_prefix="fingerprint") as pool:
            digests = iter(list(pool.map(digest, blocks)))
        h = hashlib.sha256()
        for rel, _, size in files:
            h.update(rel.encode())
            h.update(int(size).to_bytes(8, "little"))
            for _ in _block_starts(size):
                h.update(next(digests))
        return h.hexdigest()[:16]

    # -- whole-table reads and small records (overridden by the Delta backend) ---------
    def history_dataset(self, table: str, schema: pa.Schema) -> pads.Dataset | None:
        """Every committed partition of `table` as one hive-partitioned dataset (`ds` a column); None if none."""
        base = self.table_path(table)
        if not self._is_dir(base):
            return None
        partitioning = pads.partitioning(pa.schema([pa.field(DS, pa.string())]), flavor="hive")
        return pads.dataset(base, format="parquet", filesystem=self.fs, partitioning=partitioning,
                            schema=pa.schema([*schema, pa.field(DS, pa.string())]))

    def partition_stamps(self, table: str) -> dict[str, int | None]:
        """day -> a stamp that changes with every commit of that partition (None where the store keeps none):
        here the partition folder's modification time (a swap replaces it, a part is renamed into it)."""
        base = self.table_path(table)
        if not self._is_dir(base):
            return {}
        return {posixpath.basename(i.path)[len(DS) + 1:]: i.mtime_ns for i in self.fs.get_file_info(pafs.FileSelector(base))
                if posixpath.basename(i.path).startswith(f"{DS}=")}

    def committed_files(self, table: str) -> dict[str, list[str]]:
        """Every committed partition's data files (full paths), by day: one listing of the table."""
        base = self.table_path(table)
        files: dict[str, list[str]] = {}
        if not self._is_dir(base):
            return files
        for info in self.fs.get_file_info(pafs.FileSelector(base, recursive=True)):
            rel = posixpath.relpath(info.path, base).split("/")
            if info.type == pafs.FileType.File and len(rel) == 2 and rel[0].startswith(f"{DS}=") \
                    and not rel[1].startswith(("_", ".")) and rel[1].endswith(".parquet"):
                files.setdefault(rel[0][len(DS) + 1:], []).append(info.path)
        return files

    def write_record(self, path: str, data: bytes) -> None:
        """Write one small record file under the lake root whole or not at all (here: staged and renamed in)."""
        tmp = posixpath.join(posixpath.dirname(path), f"_{posixpath.basename(path)}-{uuid.uuid4().hex[:8]}.tmp")
        self.fs.create_dir(posixpath.dirname(path), recursive=True)
        with self.fs.open_output_stream(tmp) as f:
            f.write(data)
        self.fs.move(tmp, path)

    def claim(self, path: str, data: bytes) -> bool:
        """Create `path` only if nothing is there (put-if-absent); False if it already exists."""
        os.makedirs(posixpath.dirname(path), exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        return True

    def _is_dir(self, path: str) -> bool:
        return self.fs.get_file_info(path).type == pafs.FileType.Directory


def _abs(path: str) -> str:
    return os.path.abspath(os.path.expanduser(path))


def stream_batches(dataset: pads.Dataset, batch_rows: int, columns: list[str] | None) -> Iterator[pa.RecordBatch]:
    """Record batches in file order, one row group decoded at a time (see `Lake.batches`).

    Every pass over a day's rows goes through here: the scanner's defaults (pre-buffering,
    16 batches of read-ahead, scan threads) hold more of a long day in memory the longer it is.
    """
    options = pads.ParquetFragmentScanOptions(pre_buffer=False)
    return iter(dataset.to_batches(columns=columns, batch_size=batch_rows, batch_readahead=1, fragment_readahead=1,
                                   fragment_scan_options=options, use_threads=False))


def _block_starts(size: int) -> range:
    """Where a file's fingerprint blocks start (an empty file is one empty block)."""
    return range(0, max(size, 1), FINGERPRINT_BLOCK)


def _host() -> str:
    return "".join(c if c.isalnum() or c == "-" else "_" for c in socket.gethostname())[:40] or "host"


def _abandoned(name: str, mtime_ns: int | None) -> bool:
    """Whether a staging folder's writer is gone: on this host, its pid is dead; from another host
    (whose pids cannot be checked), it has been idle for STALE_STAGING_S."""
    parts = name.split(".")
    if len(parts) == 4 and parts[1] == _host() and parts[2].isdigit():
        try:
            os.kill(int(parts[2]), 0)  # signal 0: only asks whether the process exists
        except ProcessLookupError:
            return True
        except PermissionError:  # it exists, as another user
            return False
        return False
    return mtime_ns is not None and time.time() - mtime_ns / 1e9 > STALE_STAGING_S


def _errno(exc: BaseException) -> int | None:
    """The errno of an OSError, also when pyarrow only put it in the message."""
    if getattr(exc, "errno", None):
        return exc.errno
    text = str(exc)
    for code, words in ((errno.ENOSPC, "No space left"), (errno.EDQUOT, "Disk quota exceeded"),
                        (errno.EACCES, "Permission denied"), (errno.EPERM, "Operation not permitted"),
                        (errno.EROFS, "Read-only file system")):
        if words in text:
            return code
    return None


_REFUSALS = (errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS)


@contextlib.contextmanager
def _named(what: str, where: str) -> Iterator[None]:
    """Turn a full disk or a denied write into a `LakeWriteError` that names the partition."""
    try:
        yield
    except LakeWriteError:
        raise
    except OSError as exc:
        if _errno(exc) in _REFUSALS:
            raise LakeWriteError(what, where, exc) from exc
        raise


class _Guarded:
    """A ParquetWriter whose writes and close report a full disk or a denied write by name
    (errors from the caller's own code between writes pass through unchanged)."""

    def __init__(self, writer: pq.ParquetWriter, what: str, where: str):
        self._w, self._what, self._where = writer, what, where

    def write_batch(self, *args, **kwargs):
        with _named(self._what, self._where):
            return self._w.write_batch(*args, **kwargs)

    def write_table(self, *args, **kwargs):
        with _named(self._what, self._where):
            return self._w.write_table(*args, **kwargs)

    def write(self, *args, **kwargs):
        with _named(self._what, self._where):
            return self._w.write(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._w, name)

    def __enter__(self) -> "_Guarded":
        return self

    def __exit__(self, *exc) -> None:
        with _named(self._what, self._where):
            self._w.close()
