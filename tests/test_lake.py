"""The lake: layout, atomic commit, reruns, crash recovery (code tests, no services)."""

from __future__ import annotations

import os

import pyarrow as pa
import pytest

from nightshift.lake import FEATURES, PREDICTIONS, Lake, PartitionMissing


def table(n: int, offset: int = 0) -> pa.Table:
    return pa.table({"id": [f"e{i + offset}" for i in range(n)], "v": [float(i) for i in range(n)]})


def test_layout_is_hive_partitioned(tmp_path):
    lake = Lake(str(tmp_path))
    ref = lake.commit(PREDICTIONS, "2026-01-02", table(3))
    assert ref.path == f"{tmp_path}/predictions/ds=2026-01-02"
    assert [f for f in os.listdir(ref.path) if not f.startswith("_")] == ["part-0.parquet"]
    assert lake.partitions(PREDICTIONS) == ["2026-01-02"]


def test_unknown_table_and_bad_date_are_named(tmp_path):
    lake = Lake(str(tmp_path))
    with pytest.raises(ValueError, match="unknown lake table 'nope'"):
        lake.path("nope", "2026-01-01")
    with pytest.raises(ValueError, match="YYYY-MM-DD"):
        lake.path(FEATURES, "2026/01/01")


def test_rerun_replaces_the_partition(tmp_path):
    lake = Lake(str(tmp_path))
    lake.commit(FEATURES, "2026-01-01", table(5))
    lake.commit(FEATURES, "2026-01-01", table(2, offset=100))
    got = lake.read(FEATURES, "2026-01-01")
    assert got.column("id").to_pylist() == ["e100", "e101"]


def test_failed_write_leaves_committed_partition_untouched(tmp_path):
    lake = Lake(str(tmp_path))
    lake.commit(FEATURES, "2026-01-01", table(5))
    before = lake.fingerprint(FEATURES, "2026-01-01")
    with pytest.raises(RuntimeError, match="boom"):
        with lake.writer(FEATURES, "2026-01-01", table(1).schema) as w:
            w.write_table(table(1, offset=50))
            raise RuntimeError("boom")
    assert lake.fingerprint(FEATURES, "2026-01-01") == before
    assert os.listdir(tmp_path / "_staging" / "features") == []  # nothing half-written left behind


def test_failed_first_write_leaves_no_partition(tmp_path):
    lake = Lake(str(tmp_path))
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


def test_fingerprint_tracks_content(tmp_path):
    lake = Lake(str(tmp_path))
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


def test_missing_partition_error_names_it(tmp_path):
    with pytest.raises(PartitionMissing, match=r"features/ds=2026-01-09"):
        Lake(str(tmp_path)).read(FEATURES, "2026-01-09")


def test_commit_part_keeps_sibling_files(tmp_path):
    lake = Lake(str(tmp_path))
    lake.commit_part("decisions", "2026-01-01", "retrain", pa.table({"kind": ["retrain"]}))
    lake.commit_part("decisions", "2026-01-01", "promotion", pa.table({"kind": ["promotion"]}))
    lake.commit_part("decisions", "2026-01-01", "retrain", pa.table({"kind": ["retrain"]}))
    assert sorted(lake.read("decisions", "2026-01-01").column("kind").to_pylist()) == ["promotion", "retrain"]


def test_batches_stream_in_bounded_chunks(tmp_path):
    lake = Lake(str(tmp_path))
    lake.commit(FEATURES, "2026-01-01", table(1000))
    sizes = [b.num_rows for b in lake.batches(FEATURES, "2026-01-01", 128)]
    assert max(sizes) <= 128 and sum(sizes) == 1000
