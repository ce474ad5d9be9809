"""The lake as Delta tables (delta-rs): the backend for object stores, and for any disk.

Object stores have no atomic rename of a folder and no lock, so the POSIX backend's swap cannot
be done there. Here every partition `<root>/<table>/ds=D/` is its own Delta table: its data
files are written beside the log first (invisible: a reader sees only the files the log
names), then ONE commit, a put-if-absent of the next `_delta_log/NNN.json`, adds them and
removes the previous copy's files. A crash before the commit leaves files no reader sees; two
writers of the same night race for the same log entry, so exactly one wins whole and the other
gets `LakeConflict` (retryable); writers of different nights touch different tables. Each
commit is a version: `read(..., version=k)` is the partition as commit k wrote it.

One table per night (not one table per lake table, partitioned by `ds`) because each night of a
table may have its own schema (decisions' kinds, drift's features), because nights then never
conflict, and because a version then means one night's commit.

The lake's other files (alias history, alert ledger, retrain work files) are single objects,
written with one PUT each; the alias history's `seq` is claimed by a conditional PUT
(If-None-Match), which this backend checks the store honours before its first write.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import posixpath
import threading
import time
import uuid
from collections.abc import Iterator

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from nightshift.lake import (DS, IN_PROCESS, ROW_GROUP_ROWS, Lake, PartitionMissing, PartitionRef, _Guarded, _host,
                             _named)
from nightshift.settings import lake_scheme

log = logging.getLogger("nightshift.lake")

_LOG = "_delta_log"
LEASE_S = 120  # a lake-wide lock on an object store whose holder stopped renewing it is taken over after this long
_checked: set[tuple[str, str]] = set()  # (endpoint, bucket) whose conditional writes were checked in this process
_check_lock = threading.Lock()


class LakeConflict(RuntimeError):
    """Another writer committed the same partition at the same moment; this commit changed nothing. Retryable."""


class LakeStoreError(RuntimeError):
    """The lake's store cannot be used: no conditional writes, missing or wrong credentials, no bucket."""


class DeltaLake(Lake):
    backend = "delta"

    def __init__(self, uri: str, backend: str = "delta"):
        super().__init__(uri, "delta")
        self.scheme = lake_scheme(uri)
        self.local = isinstance(self.fs, pafs.LocalFileSystem)

    def __repr__(self) -> str:
        return f"Lake({self.uri!r}, 'delta')"

    # -- where things are -------------------------------------------------------------
    def _uri(self, path: str) -> str:
        """The URI delta-rs wants for a path of `self.fs`."""
        return path if self.local else f"{self.scheme}://{path}"

    def _table(self, table: str, ds: str, version: int | None = None):
        from deltalake import DeltaTable

        return DeltaTable(self._uri(self.path(table, ds)), version=version)

    def exists(self, table: str, ds: str) -> bool:
        """Whether partition `ds` of `table` has a committed version (files without a log entry do not count)."""
        first = posixpath.join(self.path(table, ds), _LOG, f"{0:020d}.json")
        return self.fs.get_file_info(first).type == pafs.FileType.File

    def partitions(self, table: str) -> list[str]:
        return [d for d in super().partitions(table) if self.exists(table, d)]

    def generation(self, table: str, ds: str) -> int:
        """The partition's Delta version plus one (1 for its first commit, as on the POSIX backend)."""
        return self.version(table, ds) + 1

    def version(self, table: str, ds: str) -> int:
        if not self.exists(table, ds):
            raise PartitionMissing(f"{table}/{DS}={ds} has not been written")
        return self._table(table, ds).version()

    def recover(self, table: str, ds: str) -> bool:
        return False  # a commit is one log entry: there is never an interrupted swap to finish

    def _tidy(self, table: str) -> None:
        pass  # files a crash left beside a log are unreferenced: `vacuum` removes them

    # -- writing ----------------------------------------------------------------------
    def _new_file(self, table: str, ds: str, part: str, key: str = "") -> str:
        # Unique per attempt: a file an earlier version names is never overwritten (time travel stays true).
        token = f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}"
        return posixpath.join(self.path(table, ds), f"{key + '.' if key else ''}{part}.{token}.parquet")

    @contextlib.contextmanager
    def writer(self, table: str, ds: str, schema: pa.Schema, part: str = "part-0") -> Iterator[pq.ParquetWriter]:
        what = f"{table}/{DS}={ds}"
        self.check_store()
        path = self._new_file(table, ds, part)
        base = self._read_version(table, ds)  # a commit of this night by another writer meanwhile makes this one lose
        try:
            with _named(what, self.uri):
                self.fs.create_dir(posixpath.dirname(path), recursive=True)
                pw = pq.ParquetWriter(path, schema, filesystem=self.fs, compression="zstd")
            with _Guarded(pw, what, self.uri) as w:
                yield w
            with _named(what, self.uri):
                self._commit_files(table, ds, [path], schema, replace=True, base=base)
        except BaseException:
            with contextlib.suppress(OSError):
                self.fs.delete_file(path)
            raise

    def commit_part(self, table: str, ds: str, part: str, data: pa.Table) -> PartitionRef:
        """Replace one named part of a partition (its other parts stay), in one commit."""
        self.check_store()
        path = self._new_file(table, ds, part)
        with _named(f"{table}/{DS}={ds}/{part}", self.uri):
            self.fs.create_dir(posixpath.dirname(path), recursive=True)
            pq.write_table(data, path, filesystem=self.fs, compression="zstd", row_group_size=ROW_GROUP_ROWS)
            try:
                self._commit_files(table, ds, [path], data.schema, replace=False, part=part)
            except BaseException:
                with contextlib.suppress(OSError):
                    self.fs.delete_file(path)
                raise
        return PartitionRef(table, ds, self.path(table, ds), data.num_rows)

    def _read_version(self, table: str, ds: str) -> int | None:
        return self._table(table, ds).version() if self.exists(table, ds) else None

    def _commit_files(self, table: str, ds: str, paths: list[str], schema: pa.Schema, replace: bool,
                      part: str | None = None, base: int | None | str = "latest") -> None:
        """One Delta commit that adds `paths` and removes the partition's previous files (`replace`) or only
        the previous files of `part`.

        `replace` commits on top of version `base` (the partition as the writer found it when it started) and
        only there: if another writer committed the night since, this one fails whole with `LakeConflict`
        (put-if-absent of the log entry; never retried over the winner). A `part` commit is retried by
        delta-rs over commits of other parts (they touch other files)."""
        from deltalake import CommitProperties
        from deltalake.exceptions import CommitFailedError, DeltaError
        from deltalake.transaction import AddAction, RemoveAction, create_table_with_add_actions

        root = self.path(table, ds)
        now = int(time.time() * 1000)
        adds = []
        for p in paths:
            meta = pq.ParquetFile(p, filesystem=self.fs).metadata
            size = self.fs.get_file_info(p).size
            adds.append(AddAction(posixpath.relpath(p, root), size, {}, now, True,
                                  json.dumps({"numRecords": meta.num_rows})))
        what = f"{table}/{DS}={ds}"
        once = CommitProperties(max_commit_retries=0)  # a lost race is reported, never retried over the winner
        if base == "latest":
            base = self._read_version(table, ds)
        try:
            if base is None:
                create_table_with_add_actions(self._uri(root), _delta_schema(schema), adds, mode="error",
                                              commit_properties=once)
                return
            dt = self._table(table, ds, version=base)
            if replace:
                dt.create_write_transaction(adds, "overwrite", schema, commit_properties=once)
                return
            removes = [RemoveAction(f, True, now, s) for f, s in _active(dt) if _part_of(f) == part]
            dt.create_write_transaction([*adds, *removes], "append", schema)
        except (CommitFailedError, DeltaError) as exc:
            text = str(exc)
            if isinstance(exc, CommitFailedError) or "already exists" in text or "Version" in text and "exists" in text:
                raise LakeConflict(f"{what}: another writer committed this partition while this one was writing, and won; "
                                   f"this commit changed nothing. Rerun to replace "
                                   f"the winner's copy ({exc})") from exc
            raise

    # -- a partition written by several workers, committed once -----------------------
    def staged_dir(self, table: str, ds: str, key: str) -> str:
        """The parts of a multi-worker write are written beside the partition's log (invisible until committed)."""
        return self.path(table, ds)

    def _key(self, key: str) -> str:
        safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in key)
        return f"_inprocess-{_host()}-{os.getpid()}" if key.startswith(IN_PROCESS) else safe

    @contextlib.contextmanager
    def write_part(self, table: str, ds: str, key: str, part: str, schema: pa.Schema,
                   dictionary: list[str] | None = None) -> Iterator[pq.ParquetWriter]:
        what = f"{table}/{DS}={ds} ({part})"
        self.check_store()
        path = self._new_file(table, ds, part, key=f"w-{self._key(key)}")
        # On a disk the part is written under a dot name and renamed, so a part file is never torn;
        # on an object store one upload is visible whole or not at all.
        tmp = posixpath.join(posixpath.dirname(path), "." + posixpath.basename(path)) if self.local else path
        try:
            with _named(what, self.uri):
                self.fs.create_dir(posixpath.dirname(path), recursive=True)
                pw = pq.ParquetWriter(tmp, schema, filesystem=self.fs, compression="zstd",
                                      use_dictionary=True if dictionary is None else dictionary)
            with _Guarded(pw, what, self.uri) as w:
                yield w
            if tmp != path:
                self.fs.move(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                self.fs.delete_file(tmp)
            raise

    def _staged(self, table: str, ds: str, key: str) -> dict[str, str]:
        """The newest complete file of each part of write `key`."""
        prefix = f"w-{self._key(key)}."
        newest: dict[str, str] = {}
        for info in self._list(self.path(table, ds)):
            name = posixpath.basename(info.path)
            if info.type == pafs.FileType.File and name.startswith(prefix) and name.endswith(".parquet"):
                part = name[len(prefix):].rsplit(".", 2)[0]
                if part not in newest or name > posixpath.basename(newest[part]):
                    newest[part] = info.path
        return newest

    def commit_parts(self, table: str, ds: str, key: str, parts: dict[str, int]) -> PartitionRef:
        """Commit the parts of a multi-worker write as partition `ds` in one Delta commit, once all are there."""
        where = f"{table}/{DS}={ds}"
        present = self._staged(table, ds, key)
        missing = sorted(set(parts) - set(present))
        if missing:
            raise PartitionMissing(f"{where}: cannot commit, {len(missing)} of {len(parts)} parts are missing "
                                   f"({', '.join(missing[:5])}); rerun the workers that wrote them (nothing was changed)")
        schema = None
        for name, rows in parts.items():
            meta = pq.ParquetFile(present[name], filesystem=self.fs).metadata
            if meta.num_rows != rows:
                raise ValueError(f"{where}: part {name} holds {meta.num_rows} rows but its worker reported {rows}; "
                                 "rerun that worker (nothing was changed)")
            schema = schema or meta.schema.to_arrow_schema()
        with _named(where, self.uri):
            self._commit_files(table, ds, [present[n] for n in sorted(parts)], schema, replace=True)
        return PartitionRef(table, ds, self.path(table, ds), sum(parts.values()))

    def discard_parts(self, table: str, ds: str, key: str) -> None:
        """Drop the staged parts of a write that will not be committed (never a file a version names)."""
        named = {f for f, _ in _active(self._table(table, ds))} if self.exists(table, ds) else set()
        base = self.path(table, ds)
        for path in self._staged(table, ds, key).values():
            if posixpath.relpath(path, base) not in named:
                self.fs.delete_file(path)

    # -- reading ----------------------------------------------------------------------
    def _files(self, table: str, ds: str, version: int | None = None) -> list[tuple[str, int]]:
        """(path relative to the partition, bytes) of the files version `version` (default: the newest) names,
        in part order."""
        if not self.exists(table, ds):
            raise PartitionMissing(f"{table}/{DS}={ds} has not been written (looked in {self.path(table, ds)})")
        return sorted(_active(self._table(table, ds, version)), key=lambda f: (_part_of(f[0]), f[0]))

    def dataset(self, table: str, ds: str, version: int | None = None) -> pads.Dataset:
        base = self.path(table, ds)
        dt = self._table(table, ds, version) if self.exists(table, ds) else None
        if dt is None:
            raise PartitionMissing(f"{table}/{DS}={ds} has not been written (looked in {base})")
        files = sorted(_active(dt), key=lambda f: (_part_of(f[0]), f[0]))
        return pads.dataset([posixpath.join(base, f) for f, _ in files], format="parquet", filesystem=self.fs,
                            schema=dt.schema().to_arrow() if not files else None)

    def read(self, table: str, ds: str, columns: list[str] | None = None, version: int | None = None) -> pa.Table:
        """The whole partition as its newest commit (or commit `version`) wrote it. Files are never rewritten, so a
        read of one version is never torn by a concurrent commit."""
        return self.dataset(table, ds, version).to_table(columns=columns)

    def batches(self, table: str, ds: str, batch_rows: int, columns: list[str] | None = None) -> Iterator[pa.RecordBatch]:
        from nightshift.lake import stream_batches

        yield from stream_batches(self.dataset(table, ds), batch_rows, columns)

    def files(self, table: str, ds: str) -> list[tuple[str, int]]:
        return self._files(table, ds)

    def fingerprint(self, table: str, ds: str, version: int | None = None) -> str:
        """Content hash of the partition: each file's part name, size and bytes, in part order (file names differ
        between commits; their content does not)."""
        import hashlib

        base = self.path(table, ds)
        files = [(_part_of(f), posixpath.join(base, f), size) for f, size in self._files(table, ds, version)]
        return self._digest_files(files) or hashlib.sha256().hexdigest()[:16]

    def history_dataset(self, table: str, schema: pa.Schema) -> pads.Dataset | None:
        files = [p for paths in self.committed_files(table).values() for p in paths]
        if not files:
            return None
        partitioning = pads.partitioning(pa.schema([pa.field(DS, pa.string())]), flavor="hive")
        return pads.dataset(files, format="parquet", filesystem=self.fs, partitioning=partitioning,
                            partition_base_dir=self.table_path(table),
                            schema=pa.schema([*schema, pa.field(DS, pa.string())]))

    def partition_stamps(self, table: str) -> dict[str, int | None]:
        """day -> the modification time of its log folder (a commit adds an entry there; data files written
        before the commit do not count); None on object stores, which keep no folder times."""
        days = self.partitions(table)
        if not self.local:
            return dict.fromkeys(days)
        infos = self.fs.get_file_info([posixpath.join(self.path(table, d), _LOG) for d in days])
        return {d: i.mtime_ns for d, i in zip(days, infos, strict=True)}

    def committed_files(self, table: str) -> dict[str, list[str]]:
        return {ds: [posixpath.join(self.path(table, ds), f) for f, _ in self._files(table, ds)]
                for ds in self.partitions(table)}

    # -- time travel and vacuum -------------------------------------------------------
    def versions(self, table: str, ds: str) -> list[int]:
        """The commits of a partition, oldest first."""
        return list(range(self.version(table, ds) + 1))

    def vacuum(self, table: str, ds: str, keep_versions: list[int] | None = None, retention_hours: int = 24) -> list[str]:
        """Delete files no kept version names: files crashed or beaten writers left, and (only when
        `keep_versions` is given) files of versions not in it. By default every version is kept, so an
        "as known on D" backfill can still read whatever commit it cites. Only files older than
        `retention_hours` go, so the parts of a mapped write still in flight stay. Returns what was deleted."""
        dt = self._table(table, ds)
        keep = self.versions(table, ds) if keep_versions is None else sorted(keep_versions)
        removed = dt.vacuum(retention_hours=retention_hours, dry_run=False, enforce_retention_duration=False,
                            full=True, keep_versions=keep)
        return [r for r in removed if posixpath.basename(r)]  # an object store's folder marker is no data file

    # -- small records and locks ------------------------------------------------------
    def write_record(self, path: str, data: bytes) -> None:
        if self.local:
            return super().write_record(path, data)
        self.check_store()
        with self.fs.open_output_stream(path) as f:  # one PUT: the object appears whole or not at all
            f.write(data)

    def claim(self, path: str, data: bytes) -> bool:
        if self.local:
            return super().claim(path, data)
        self.check_store()
        return _put_if_absent(self.scheme, path, data, self.uri)

    @contextlib.contextmanager
    def exclusive(self, name: str) -> Iterator[None]:
        """The lake-wide lock `name`: flock on a disk; on an object store, a lease object created by a conditional
        PUT, deleted when the block ends, and taken over when its holder has not finished within `LEASE_S`."""
        if self.local:
            with super().exclusive(name):
                yield
            return
        path = posixpath.join(self.root, "_locks", f"{name}.lease")
        me = json.dumps({"host": _host(), "pid": os.getpid(), "at": time.time(), "id": uuid.uuid4().hex}).encode()
        while not self.claim(path, me):
            info = self.fs.get_file_info(path)
            if info.mtime_ns is not None and time.time() - info.mtime_ns / 1e9 > LEASE_S:
                log.warning("taking over the lake lock %s: its holder has held it for over %d s", path, LEASE_S)
                with contextlib.suppress(OSError):
                    self.fs.delete_file(path)
                continue
            time.sleep(0.05)
        try:
            yield
        finally:
            with contextlib.suppress(OSError):
                self.fs.delete_file(path)

    # -- the store --------------------------------------------------------------------
    def check_store(self) -> None:
        """On first use of an object store (per process): it exists, the credentials work, and it honours
        conditional writes; else `LakeStoreError`, before anything is written."""
        if self.local:
            return
        bucket = self.root.split("/", 1)[0]
        with _check_lock:
            if (_endpoint(), bucket) in _checked:
                return
            probe = posixpath.join(self.root, "_locks", f"_probe-{uuid.uuid4().hex}")
            if not _put_if_absent(self.scheme, probe, b"1", self.uri):
                raise LakeStoreError(f"the lake {self.uri}: a fresh probe object already existed in bucket {bucket}")
            try:
                guarded = not _put_if_absent(self.scheme, probe, b"2", self.uri)
            finally:
                with contextlib.suppress(OSError):
                    self.fs.delete_file(probe)
            if not guarded:
                raise LakeStoreError(
                    f"the lake {self.uri}: the store at {_endpoint()} (bucket {bucket}) ignores conditional writes "
                    "(a PUT with If-None-Match: * overwrote an existing object), so two commits of one partition "
                    "could both win and alias moves could share a seq. Use a store that honours If-None-Match "
                    "(AWS S3, MinIO, GCS) or keep the lake on a local disk")
            _checked.add((_endpoint(), bucket))


def _endpoint() -> str:
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or "the default AWS endpoint"


def _put_if_absent(scheme: str, path: str, data: bytes, uri: str) -> bool:
    """PUT `data` at `path` (bucket/key) only if no object is there: True if written, False if one was."""
    if scheme != "s3":
        raise LakeStoreError(f"the lake {uri}: conditional writes are implemented for s3:// only; "
                             "use an s3:// (or S3-compatible) bucket or a local disk for the delta backend")
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

    bucket, key = path.split("/", 1)
    try:
        _s3().put_object(Bucket=bucket, Key=key, Body=data, IfNoneMatch="*")
        return True
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        if code in ("PreconditionFailed", "412", "ConditionalRequestConflict"):
            return False
        raise LakeStoreError(f"the lake {uri}: writing to bucket {bucket} at {_endpoint()} failed: {code} "
                             f"({exc.response.get('Error', {}).get('Message', exc)}); nothing was written. "
                             "Check the bucket and the credentials (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY)") from None
    except (NoCredentialsError, BotoCoreError) as exc:
        raise LakeStoreError(f"the lake {uri}: cannot reach bucket {bucket} at {_endpoint()}: {exc}; nothing was "
                             "written. Set AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (and AWS_ENDPOINT_URL for a "
                             "store other than AWS)") from None
    finally:
        del boto3


_client_lock = threading.Lock()
_clients: dict[tuple, object] = {}


def _s3():
    import boto3

    key = (os.getpid(), _endpoint(), os.environ.get("AWS_ACCESS_KEY_ID"))
    with _client_lock:
        if key not in _clients:
            _clients[key] = boto3.session.Session().client("s3")  # not the default session: it caches credentials
        return _clients[key]


def _active(dt) -> list[tuple[str, int]]:
    """(path, size) of each file the loaded version of a Delta table names."""
    adds = dt.get_add_actions(flatten=True)
    paths = adds.column("path").to_pylist()
    sizes = adds.column("size_bytes").to_pylist()
    return list(zip(paths, sizes, strict=True))


def _part_of(name: str) -> str:
    """The part a data file holds: `[w-KEY.]PART.TOKEN.parquet` -> PART."""
    stem = posixpath.basename(name)
    if stem.startswith("w-"):
        stem = stem.split(".", 1)[1]
    return stem.rsplit(".", 2)[0]


def _delta_schema(schema: pa.Schema):
    from deltalake import Schema

    return Schema.from_arrow(schema)
