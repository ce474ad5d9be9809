"""Crash debris and recovery: staging and trash outside every table, cleaned by the next commit,
and `recover()` by generation (code tests on a real local lake, no services)."""

from __future__ import annotations

import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import textwrap

import pyarrow as pa
import pytest

from nightshift.lake import PREDICTIONS, Lake

DS = "2026-01-05"


def table(n: int, tag: str) -> pa.Table:
    return pa.table({"id": [f"{tag}{i}" for i in range(n)], "v": [float(i) for i in range(n)]})


def debris(root, table_name: str) -> list[str]:
    """Every file under a table's root that a recursive glob reaches but no committed partition holds."""
    base = root / table_name
    out = []
    for path in base.rglob("*"):
        rel = path.relative_to(base)
        if rel.parts[0].startswith(("_", ".")) or any(p.startswith("_") and p.endswith(".parquet") for p in rel.parts):
            out.append(str(rel))
    return out


def duckdb_rows(root, table_name: str) -> int:
    import duckdb

    glob = f"{root}/{table_name}/**/*.parquet"
    return duckdb.sql(f"select count(*) from read_parquet('{glob}', hive_partitioning=true)").fetchall()[0][0]


def _write_half_then_die(uri: str) -> None:
    lake = Lake(uri)
    with lake.writer(PREDICTIONS, DS, table(1, "x").schema) as w:
        w.write_table(table(50_000, "half"))
        os.kill(os.getpid(), signal.SIGKILL)


def test_a_killed_writer_leaves_nothing_a_table_glob_reaches_and_the_next_commit_cleans_it(tmp_path):
    lake = Lake(str(tmp_path))
    lake.commit(PREDICTIONS, DS, table(3, "old"))
    proc = multiprocessing.get_context("spawn").Process(target=_write_half_then_die, args=(str(tmp_path),))
    proc.start()
    proc.join(60)
    assert proc.exitcode == -signal.SIGKILL
    staged = [p for p in tmp_path.rglob("*.parquet") if p.relative_to(tmp_path).parts[0] != PREDICTIONS]
    assert staged, "the killed writer should have left its staging file somewhere"
    assert debris(tmp_path, PREDICTIONS) == []
    assert duckdb_rows(tmp_path, PREDICTIONS) == 3  # the glob over the table reads only the committed partition
    lake.commit(PREDICTIONS, "2026-01-06", table(2, "next"))  # the next commit of the table, another day
    assert not any(p.exists() for p in staged)
    assert duckdb_rows(tmp_path, PREDICTIONS) == 5


def test_a_running_writer_s_staging_is_not_cleaned(tmp_path):
    """Only staging whose writer is gone is debris: a live writer's files survive another commit."""
    lake = Lake(str(tmp_path))
    with lake.writer(PREDICTIONS, DS, table(1, "x").schema) as w:
        w.write_table(table(10, "live"))
        lake.commit(PREDICTIONS, "2026-01-06", table(2, "other"))  # cleans the table while we write
        w.write_table(table(10, "more"))
    assert lake.read(PREDICTIONS, DS).num_rows == 20


def _crash_copies(tmp_path, lake: Lake, versions: int) -> None:
    """The states repeated crashes leave: stale trash copies (killed after staging -> final),
    then the last committed copy moved to trash with nothing in its place (killed between renames)."""
    final = tmp_path / PREDICTIONS / f"ds={DS}"
    saved = tmp_path / "saved"
    saved.mkdir()
    for v in range(1, versions + 1):
        lake.commit(PREDICTIONS, DS, table(v, f"v{v}-"))
        # Random suffixes decide the listing order; here every stale copy sorts after the newest by name.
        name = f"g{lake.generation(PREDICTIONS, DS):012d}-{'f' * 12 if v < versions else '0' * 12}"
        shutil.copytree(final, saved / name)
    trash = tmp_path / "_trash" / PREDICTIONS / f"ds={DS}"
    trash.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(final)
    for copy in saved.iterdir():
        os.rename(copy, trash / copy.name)
    saved.rmdir()


@pytest.mark.parametrize("copies", [2, 3, 5])
def test_recover_restores_the_newest_copy_by_generation(tmp_path, copies):
    lake = Lake(str(tmp_path))
    _crash_copies(tmp_path, lake, copies)
    assert not lake.exists(PREDICTIONS, DS)
    assert lake.recover(PREDICTIONS, DS)
    assert lake.read(PREDICTIONS, DS).num_rows == copies  # the last committed version, never a stale one
    assert lake.generation(PREDICTIONS, DS) == copies
    assert not (tmp_path / "_trash" / PREDICTIONS / f"ds={DS}").exists()  # the stale copies are gone


def test_next_commit_of_the_table_restores_and_cleans_other_days(tmp_path):
    lake = Lake(str(tmp_path))
    _crash_copies(tmp_path, lake, 3)
    lake.commit(PREDICTIONS, "2026-01-09", table(1, "z"))
    assert lake.read(PREDICTIONS, DS).num_rows == 3  # restored, nothing committed is lost
    assert list((tmp_path / "_trash").rglob("*.parquet")) == []


def test_generation_grows_with_every_commit_and_reruns_stay_byte_identical(tmp_path):
    lake = Lake(str(tmp_path))
    lake.commit(PREDICTIONS, DS, table(4, "a"))
    first = lake.fingerprint(PREDICTIONS, DS)
    lake.commit(PREDICTIONS, DS, table(4, "a"))
    assert lake.generation(PREDICTIONS, DS) == 2
    assert lake.fingerprint(PREDICTIONS, DS) == first


def test_debris_in_the_old_layout_is_cleaned_by_the_next_commit(tmp_path):
    """Lakes written by earlier versions kept `_staging`/`_trash` inside the table."""
    lake = Lake(str(tmp_path))
    lake.commit(PREDICTIONS, DS, table(2, "a"))
    old_staging = tmp_path / PREDICTIONS / "_staging" / f"ds={DS}-abc"
    old_staging.mkdir(parents=True)
    (old_staging / "part-0.parquet").write_bytes(b"PAR1 truncated")
    with pytest.raises(Exception, match="(?i)magic|parquet|invalid"):
        duckdb_rows(tmp_path, PREDICTIONS)
    lake.commit(PREDICTIONS, "2026-01-06", table(1, "b"))
    assert debris(tmp_path, PREDICTIONS) == []
    assert duckdb_rows(tmp_path, PREDICTIONS) == 3


def _hammer(uri: str, tag: str, n: int, rounds: int) -> None:
    lake = Lake(uri)
    for _ in range(rounds):
        lake.commit(PREDICTIONS, DS, table(n, tag))


def test_overlapping_writers_of_one_partition_never_corrupt_it(tmp_path):
    """Two processes commit the same partition over and over: each commit is whole, the last one wins."""
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_hammer, args=(str(tmp_path), tag, n, 25)) for tag, n in (("a", 700), ("b", 300))]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0]
    lake = Lake(str(tmp_path))
    got = lake.read(PREDICTIONS, DS)
    tags = {i[0] for i in got.column("id").to_pylist()}
    assert len(tags) == 1 and got.num_rows == {"a": 700, "b": 300}[tags.pop()]
    assert [p.name for p in (tmp_path / PREDICTIONS / f"ds={DS}").iterdir() if not p.name.startswith("_")] == ["part-0.parquet"]
    assert lake.generation(PREDICTIONS, DS) == 50
    assert debris(tmp_path, PREDICTIONS) == []
    assert list((tmp_path / "_staging").rglob("*.parquet")) == [] and list((tmp_path / "_trash").rglob("*.parquet")) == []


def test_full_disk_is_a_named_error_and_the_old_partition_survives(tmp_path):
    """A real 1 MiB tmpfs fills up mid-write (needs root to mount; skipped otherwise)."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        from nightshift.lake import LakeWriteError

        lake = Lake(str(mnt))
        lake.commit(PREDICTIONS, DS, table(100, "old"))
        before = lake.fingerprint(PREDICTIONS, DS)
        big = pa.table({"id": [os.urandom(16).hex() for _ in range(200_000)]})
        with pytest.raises(LakeWriteError, match=rf"predictions/ds={DS}.*disk is full.*unchanged"):
            lake.commit(PREDICTIONS, DS, big)
        assert lake.fingerprint(PREDICTIONS, DS) == before
        assert list((mnt / "_staging").rglob("*.parquet")) == []
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def test_read_only_lake_is_a_named_error(tmp_path):
    """A read-only filesystem (tmpfs remounted ro; needs root) refuses the write by name."""
    mnt = tmp_path / "ro"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        from nightshift.lake import LakeWriteError

        lake = Lake(str(mnt))
        lake.commit(PREDICTIONS, DS, table(10, "old"))
        subprocess.run(["mount", "-o", "remount,ro", str(mnt)], check=True)
        with pytest.raises(LakeWriteError, match=r"permission denied|read-only"):
            lake.commit(PREDICTIONS, DS, table(5, "new"))
        assert lake.read(PREDICTIONS, DS).num_rows == 10
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def test_old_layout_test_helpers_are_not_needed(tmp_path):
    """Sanity: a commit leaves no `_` folder inside the table root at all."""
    lake = Lake(str(tmp_path))
    lake.commit(PREDICTIONS, DS, table(2, "a"))
    lake.commit(PREDICTIONS, DS, table(3, "b"))
    assert sorted(p.name for p in (tmp_path / PREDICTIONS).iterdir()) == [f"ds={DS}"]
    code = textwrap.dedent(f"""
        import duckdb
        print(duckdb.sql("select count(*) from read_parquet('{tmp_path}/predictions/**/*.parquet')").fetchall()[0][0])
    """)
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "3"
