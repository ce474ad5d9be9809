"""The lake: layout, atomic commit, reruns, crash recovery (code tests, no services)."""

from __future__ import annotations

import os
import posixpath

import pyarrow as pa
import pyarrow.fs as pafs
import pytest

from nightshift.lake import FEATURES, PREDICTIONS, Lake, PartitionMissing


def table(n: int, offset: int = 0) -> pa.Table:
    return pa.table({"id": [f"e{i + offset}" for i in range(n)], "v": [float(i) for i in range(n)]})


BACKENDS = ["posix", "delta", "s3"]  # s3: the delta backend in a bucket of a local moto S3 server


@pytest.fixture(params=BACKENDS)
def any_lake(request, lake_on):
    """The same lake tests on every backend."""
    return lake_on(request.param)


def test_layout_is_hive_partitioned(tmp_path):
    lake = Lake(str(tmp_path))
    ref = lake.commit(PREDICTIONS, "2026-01-02", table(3))
    assert ref.path == f"{tmp_path}/predictions/ds=2026-01-02"
    assert [f for f in os.listdir(ref.path) if not f.startswith("_")] == ["part-0.parquet"]
    assert lake.partitions(PREDICTIONS) == ["2026-01-02"]


def test_unknown_table_and_bad_date_are_named(any_lake):
    lake = any_lake
    with pytest.raises(ValueError, match="unknown lake table 'nope'"):
        lake.path("nope", "2026-01-01")
    with pytest.raises(ValueError, match="YYYY-MM-DD"):
        lake.path(FEATURES, "2026/01/01")


def test_rerun_replaces_the_partition(any_lake):
    lake = any_lake
    lake.commit(FEATURES, "2026-01-01", table(5))
    lake.commit(FEATURES, "2026-01-01", table(2, offset=100))
    got = lake.read(FEATURES, "2026-01-01")
    assert got.column("id").to_pylist() == ["e100", "e101"]


def test_failed_write_leaves_committed_partition_untouched(any_lake):
    lake = any_lake
    lake.commit(FEATURES, "2026-01-01", table(5))
    before = lake.fingerprint(FEATURES, "2026-01-01")
    with pytest.raises(RuntimeError, match="boom"):
        with lake.writer(FEATURES, "2026-01-01", table(1).schema) as w:
            w.write_table(table(1, offset=50))
            raise RuntimeError("boom")
    assert lake.fingerprint(FEATURES, "2026-01-01") == before
    assert lake.read(FEATURES, "2026-01-01").num_rows == 5
    if lake.backend == "posix":
        assert os.listdir(os.path.join(lake.root, "_staging", "features")) == []  # nothing half-written left behind
    else:
        assert lake.version(FEATURES, "2026-01-01") == 0  # no commit was made
        assert len(lake.fs.get_file_info(pafs.FileSelector(lake.path(FEATURES, "2026-01-01")))) == 2  # log + one file


def test_failed_first_write_leaves_no_partition(any_lake):
    lake = any_lake
    with pytest.raises(RuntimeError):
        with lake.writer(FEATURES, "2026-01-03", table(1).schema) as w:
            w.write_table(table(1))
            raise RuntimeError("crash mid-write")
    assert not lake.exists(FEATURES, "2026-01-03")
    assert lake.partitions(FEATURES) == []


def test_crash_between_swap_renames_is_recovered(tmp_path):
    """Old partition moved to trash, new one never moved in: recovery restores the old one."""
    lake = Lake(str(tmp_path))
    lake.commit(FEATURES, "2026-01-01", table(4))
    trash = tmp_path / "_trash" / "features" / "ds=2026-01-01"
    trash.mkdir(parents=True)
    os.rename(tmp_path / "features" / "ds=2026-01-01", trash / "g000000000001-deadbeef")
    assert not lake.exists(FEATURES, "2026-01-01")  # a reader sees nothing, never half a partition...
    assert (trash / "g000000000001-deadbeef").is_dir()  # ...and reading writes nothing
    lake.commit_part(FEATURES, "2026-01-01", "extra", table(1))  # the next write of the partition recovers it first
    assert (tmp_path / "features" / "ds=2026-01-01" / "part-0.parquet").is_file()
    assert not (trash / "g000000000001-deadbeef").exists()


def test_reading_has_no_side_effects(tmp_path):
    lake = Lake(str(tmp_path))
    lake.commit(FEATURES, "2026-01-01", table(4))
    trash = tmp_path / "_trash" / "features" / "ds=2026-01-01"
    trash.mkdir(parents=True)
    os.rename(tmp_path / "features" / "ds=2026-01-01", trash / "g000000000001-deadbeef")
    listing = sorted(str(p) for p in tmp_path.rglob("*"))
    assert lake.partitions(FEATURES) == [] and not lake.exists(FEATURES, "2026-01-01")
    with pytest.raises(PartitionMissing):
        lake.read(FEATURES, "2026-01-01")
    assert sorted(str(p) for p in tmp_path.rglob("*")) == listing
    assert lake.recover(FEATURES, "2026-01-01") and lake.fingerprint(FEATURES, "2026-01-01")


def test_readers_never_see_staging(tmp_path):
    import pyarrow.dataset as ds

    lake = Lake(str(tmp_path))
    lake.commit(FEATURES, "2026-01-01", table(3))
    (tmp_path / "_staging" / "features" / "ds=2026-01-02.host.1.x").mkdir(parents=True)
    whole = ds.dataset(str(tmp_path / "features"), format="parquet", partitioning="hive")
    assert whole.to_table().num_rows == 3
    assert lake.partitions(FEATURES) == ["2026-01-01"]


def test_fingerprint_tracks_content(any_lake):
    lake = any_lake
    lake.commit(FEATURES, "2026-01-01", table(3))
    a = lake.fingerprint(FEATURES, "2026-01-01")
    lake.commit(FEATURES, "2026-01-01", table(3))
    assert lake.fingerprint(FEATURES, "2026-01-01") == a  # same content, same bytes
    lake.commit(FEATURES, "2026-01-01", table(4))
    assert lake.fingerprint(FEATURES, "2026-01-01") != a


def test_fingerprint_of_a_file_of_many_blocks_sees_every_byte(tmp_path, monkeypatch):
    """Blocks are hashed on several threads: a change in any block, or one moved between files, changes it."""
    import glob

    import nightshift.lake as lake_module

    monkeypatch.setattr(lake_module, "FINGERPRINT_BLOCK", 64)  # many blocks per file, a last one that is short
    lake = Lake(str(tmp_path))
    lake.commit(FEATURES, "2026-01-01", table(50))
    (file,) = glob.glob(f"{lake.path(FEATURES, '2026-01-01')}/*.parquet")
    data = bytearray(open(file, "rb").read())
    a = lake.fingerprint(FEATURES, "2026-01-01")
    assert lake.fingerprint(FEATURES, "2026-01-01") == a and len(data) > 10 * 64
    seen = {a}
    for at in (0, 63, 64, len(data) // 2, len(data) - 1):  # first byte, block edges, middle, last byte
        changed = bytearray(data)
        changed[at] ^= 0xFF
        open(file, "wb").write(changed)
        seen.add(lake.fingerprint(FEATURES, "2026-01-01"))
    open(file, "wb").write(data)
    assert len(seen) == 6 and lake.fingerprint(FEATURES, "2026-01-01") == a


def test_missing_partition_error_names_it(any_lake):
    with pytest.raises(PartitionMissing, match=r"features/ds=2026-01-09"):
        any_lake.read(FEATURES, "2026-01-09")


def test_commit_part_keeps_sibling_files(any_lake):
    lake = any_lake
    lake.commit_part("decisions", "2026-01-01", "retrain", pa.table({"kind": ["retrain"]}))
    lake.commit_part("decisions", "2026-01-01", "promotion", pa.table({"kind": ["promotion"]}))
    lake.commit_part("decisions", "2026-01-01", "retrain", pa.table({"kind": ["retrain"]}))
    assert sorted(lake.read("decisions", "2026-01-01").column("kind").to_pylist()) == ["promotion", "retrain"]


def test_batches_stream_in_bounded_chunks(any_lake):
    lake = any_lake
    lake.commit(FEATURES, "2026-01-01", table(1000))
    sizes = [b.num_rows for b in lake.batches(FEATURES, "2026-01-01", 128)]
    assert max(sizes) <= 128 and sum(sizes) == 1000


# -- the Delta backend (on a local folder and in a moto bucket) ---------------------------------------

@pytest.fixture(params=["delta", "s3"])
def delta_lake(request, lake_on):
    return lake_on(request.param)


def test_parts_of_several_workers_land_in_one_commit(delta_lake):
    """Mapped scoring: each worker streams its part; the commit adds all of them in ONE Delta version."""
    lake, ds = delta_lake, "2026-01-01"
    lake.commit(PREDICTIONS, ds, table(2))
    for i in range(3):
        with lake.write_part(PREDICTIONS, ds, "run-1", f"part-{i:05d}", table(1).schema) as w:
            w.write_table(table(4, offset=10 * i))
    assert lake.read(PREDICTIONS, ds).num_rows == 2  # staged parts are invisible until the commit
    ref = lake.commit_parts(PREDICTIONS, ds, "run-1", {f"part-{i:05d}": 4 for i in range(3)})
    assert ref.rows == 12 and lake.version(PREDICTIONS, ds) == 1  # one commit for three parts
    assert [f.split(".")[1] for f, _ in lake.files(PREDICTIONS, ds)] == ["part-00000", "part-00001", "part-00002"]
    with pytest.raises(PartitionMissing, match="1 of 4 parts are missing"):
        lake.commit_parts(PREDICTIONS, ds, "run-1", {f"part-{i:05d}": 4 for i in range(4)})
    assert lake.version(PREDICTIONS, ds) == 1


def test_a_rerun_gives_the_same_fingerprint_with_other_file_names(delta_lake):
    lake, ds = delta_lake, "2026-01-01"
    for run in ("a", "b"):
        for i in range(2):
            with lake.write_part(PREDICTIONS, ds, f"run-{run}", f"part-{i:05d}", table(1).schema) as w:
                w.write_table(table(5, offset=i * 5))
        lake.commit_parts(PREDICTIONS, ds, f"run-{run}", {"part-00000": 5, "part-00001": 5})
    assert lake.fingerprint(PREDICTIONS, ds, version=0) == lake.fingerprint(PREDICTIONS, ds, version=1)
    assert {f for f, _ in lake._files(PREDICTIONS, ds, 0)}.isdisjoint(f for f, _ in lake._files(PREDICTIONS, ds, 1))


def test_time_travel_survives_vacuum(delta_lake):
    """The partition as of commit k is what commit k wrote, also after a vacuum (which keeps every version)."""
    lake, ds = delta_lake, "2026-01-01"
    written = [table(k + 1, offset=100 * k) for k in range(4)]
    for t in written:
        lake.commit(PREDICTIONS, ds, t)
    with pytest.raises(RuntimeError):  # a beaten or crashed writer leaves a file no version names
        with lake.writer(PREDICTIONS, ds, table(1).schema) as w:
            w.write_table(table(1))
            raise RuntimeError("crash")
    stray = lake._new_file(PREDICTIONS, ds, "part-0")
    pa.parquet.write_table(table(7), stray, filesystem=lake.fs)
    assert lake.vacuum(PREDICTIONS, ds) == []  # younger than the retention: maybe a write in flight
    removed = lake.vacuum(PREDICTIONS, ds, retention_hours=0)
    assert [posixpath.basename(r) for r in removed] == [posixpath.basename(stray)]
    for k, t in enumerate(written):
        assert lake.read(PREDICTIONS, ds, version=k).equals(t)
    lake.vacuum(PREDICTIONS, ds, keep_versions=[1, 3], retention_hours=0)  # only what a backfill cites
    assert lake.read(PREDICTIONS, ds, version=1).equals(written[1]) and lake.read(PREDICTIONS, ds).equals(written[3])


def test_two_writers_of_one_night_one_wins_whole_the_other_gets_a_retryable_error(delta_lake):
    from nightshift.lake_delta import LakeConflict

    lake, ds = delta_lake, "2026-01-01"
    for existing in (False, True):  # the night's first commit, and a rerun
        day = ds if not existing else "2026-01-02"
        if existing:
            lake.commit(PREDICTIONS, day, table(1))
        with pytest.raises(LakeConflict, match=rf"predictions/ds={day}: another writer committed .* Rerun"):
            with lake.writer(PREDICTIONS, day, table(1).schema) as w:
                w.write_table(table(3, offset=500))
                lake.commit(PREDICTIONS, day, table(2, offset=900))  # the other writer commits meanwhile
        assert lake.read(PREDICTIONS, day).equals(table(2, offset=900))  # the winner, whole
        lake.commit(PREDICTIONS, day, table(3, offset=500))  # the loser's retry succeeds
        assert lake.read(PREDICTIONS, day).equals(table(3, offset=500))


def test_writers_of_different_nights_lose_no_commit(delta_lake):
    from concurrent.futures import ThreadPoolExecutor

    lake = delta_lake
    days = [f"2026-01-{d:02d}" for d in range(1, 7)]
    with ThreadPoolExecutor(6) as pool:
        list(pool.map(lambda d: [lake.commit(PREDICTIONS, d, table(3, offset=k)) for k in range(3)], days))
    assert lake.partitions(PREDICTIONS) == days
    assert all(lake.version(PREDICTIONS, d) == 2 and lake.read(PREDICTIONS, d).equals(table(3, offset=2)) for d in days)


def test_the_posix_backend_never_imports_deltalake(tmp_path):
    import subprocess
    import sys

    code = (f"from nightshift.lake import Lake, FEATURES; import pyarrow as pa, sys; l = Lake({str(tmp_path)!r}); "
            "l.commit(FEATURES, '2026-01-01', pa.table({'a': [1]})); l.read(FEATURES, '2026-01-01'); "
            "assert 'deltalake' not in sys.modules and 'boto3' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
