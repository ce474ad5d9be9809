"""Crash debris and recovery: staging and trash outside every table, cleaned by the next commit,
and `recover()` by generation (code tests on a real local lake, no services)."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

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
    return duckdb.sql(f"select count(*) from read_parquet('{glob}', hive_partitioning=true)").fetchall()[0][0]  # noqa: S608 - a test's own tmp path


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


def test_staging_from_another_host_is_cleaned_only_once_stale(tmp_path):
    """Another host's pid cannot be checked: its staging is kept until it has been idle a day."""
    lake = Lake(str(tmp_path))
    fresh = tmp_path / "_staging" / PREDICTIONS / f"ds={DS}.otherhost.123.aaaaaaaaaaaa"
    stale = tmp_path / "_staging" / PREDICTIONS / f"ds={DS}.otherhost.456.bbbbbbbbbbbb"
    for d in (fresh, stale):
        d.mkdir(parents=True)
        (d / "part-0.parquet").write_bytes(b"partial")
    day_ago = time.time() - 25 * 3600
    os.utime(stale, (day_ago, day_ago))
    lake.commit(PREDICTIONS, DS, table(1, "a"))
    assert fresh.exists() and not stale.exists()


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


def test_a_reader_racing_commits_of_the_same_day_reads_a_whole_partition(tmp_path):
    """A partition swapped between a reader listing its files and opening them: the read is retried
    on the partition now in place, so it returns one whole commit, never an error or a mixture."""
    lake = Lake(str(tmp_path))
    lake.commit(PREDICTIONS, DS, table(700, "a"))
    ctx = multiprocessing.get_context("spawn")
    writer = ctx.Process(target=_hammer, args=(str(tmp_path), "b", 300, 60))
    writer.start()
    reads = 0
    try:
        while writer.is_alive() or reads < 50:
            got = lake.read(PREDICTIONS, DS)
            tags = {i[0] for i in got.column("id").to_pylist()}
            assert len(tags) == 1 and got.num_rows == {"a": 700, "b": 300}[tags.pop()]
            reads += 1
    finally:
        writer.join(120)
    assert writer.exitcode == 0 and reads >= 50


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
        subprocess.run(["umount", "-l", str(mnt)], check=False)


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
        with pytest.raises(LakeWriteError, match=r"read-only"):
            lake.commit(PREDICTIONS, DS, table(5, "new"))
        assert lake.read(PREDICTIONS, DS).num_rows == 10
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_a_commit_leaves_nothing_inside_the_table_root_but_partitions(tmp_path):
    lake = Lake(str(tmp_path))
    lake.commit(PREDICTIONS, DS, table(2, "a"))
    lake.commit(PREDICTIONS, DS, table(3, "b"))
    assert sorted(p.name for p in (tmp_path / PREDICTIONS).iterdir()) == [f"ds={DS}"]
    assert duckdb_rows(tmp_path, PREDICTIONS) == 3


# -- SIGKILL at random moments: scoring and a monitoring commit ------------------------------------
#
# The parent imports everything once and forks a child per attempt (no re-import), then kills it
# at a random moment, or the child kills itself at a chosen point inside the swap. After every kill:
# a reader sees the previous complete partition or nothing, a recursive glob over the table meets
# no debris, and the next (uninterrupted) run reproduces the uninterrupted content byte for byte.

KILL_SEED = 20260105
DAYS = [f"2026-01-{d:02d}" for d in range(1, 7)]
NIGHT = DAYS[-1]
# (operation, how many kills at a random moment, kill points inside the swap: (fs call, its n-th use))
SWAP_POINTS = [("move", 1), ("move", 2), ("delete_dir", 1)]  # before old -> trash; between the renames; before trash is removed


class _KillAt:
    """A filesystem stand-in for the swap: the process SIGKILLs itself at the n-th call of `method`."""

    def __init__(self, fs, method: str, n: int):
        self._fs, self._method, self._left = fs, method, n

    def __getattr__(self, name):
        attr = getattr(self._fs, name)
        if name != self._method:
            return attr

        def call(*args, **kwargs):
            self._left -= 1
            if self._left == 0:
                os.kill(os.getpid(), signal.SIGKILL)
            return attr(*args, **kwargs)

        return call


# Set before each fork (a forked child inherits them): the child marks when its commit's writer opens,
# and how long the writer stayed open, so random kills can be aimed at the commit itself.
_SPAN = multiprocessing.get_context("fork").Value("d", 0.0)
_KILL_IN: float | None = None  # seconds after the writer opens at which the child SIGKILLs itself


def _killing_lake(uri: str, point):
    class KillingLake(Lake):
        _start: float | None = None

        def _arm(self) -> None:
            if self._start is None:
                self._start = time.monotonic()
                if _KILL_IN is not None:  # a timer in the child itself: sub-millisecond aim, no round trip
                    threading.Timer(_KILL_IN, os.kill, (os.getpid(), signal.SIGKILL)).start()

        @contextlib.contextmanager
        def writer(self, *args, **kwargs):
            self._arm()
            with super().writer(*args, **kwargs) as w:
                yield w
            _SPAN.value = time.monotonic() - self._start  # staging written and swapped in

        # scoring writes its day as staged parts (one per file group), then commits them at once
        @contextlib.contextmanager
        def write_part(self, *args, **kwargs):
            self._arm()
            with super().write_part(*args, **kwargs) as w:
                yield w

        def commit_parts(self, *args, **kwargs):
            ref = super().commit_parts(*args, **kwargs)
            _SPAN.value = time.monotonic() - self._start  # the parts written and swapped in
            return ref

        def _swap(self, table, ds, staging):
            if not point:
                return super()._swap(table, ds, staging)
            real, self.fs = self.fs, _KillAt(self.fs, *point)
            try:
                super()._swap(table, ds, staging)
            finally:
                self.fs = real

    return KillingLake(uri)


@pytest.fixture(scope="module")
def killable(tmp_path_factory):
    """A lake with six simulated days, a (tiny, untrained) champion bundle in the model cache, and
    every day scored once: what the kills interrupt and what reruns must reproduce."""
    import torch  # noqa: F401 - imported before any fork, never run in the parent

    from nightshift.registry import ModelRef
    from nightshift.settings import load_settings
    from simulator.land import simulate

    home = tmp_path_factory.mktemp("kill-home")
    env = {"NIGHTSHIFT_HOME": str(home), "NIGHTSHIFT_CONFIG": str(REPO_TOML)}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    settings = load_settings()
    lake = Lake(settings.lake_uri)
    simulate(lake, settings.dataset, start=DAYS[0], days=len(DAYS), rows_per_day=20_000, seed=3, progress=False)
    ref = ModelRef(settings.model.name, "1", "champion", "crash-test", "")
    proc = multiprocessing.get_context("spawn").Process(target=_save_bundle, args=(str(home), settings.model.name))
    proc.start()
    proc.join(120)
    assert proc.exitcode == 0
    yield settings, lake, ref
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


REPO_TOML = Path(__file__).resolve().parents[2] / "nightshift.toml"


def _save_bundle(home: str, name: str) -> None:
    import pathlib

    from nightshift.lake import FEATURES
    from nightshift.settings import ModelSettings, load_settings
    from model.bundle import save_bundle
    from training.train import init_model

    os.environ.update({"NIGHTSHIFT_HOME": home, "NIGHTSHIFT_CONFIG": str(REPO_TOML)})
    settings = load_settings()
    table = Lake(settings.lake_uri).read(FEATURES, DAYS[0]).slice(0, 2000)
    model, pre = init_model("scratch", table, settings.dataset, ModelSettings(hidden=(16,), embedding_dim=2), None, seed=0)
    save_bundle(pathlib.Path(home) / "cache" / "models" / name / "v1", model, pre, {"task": "binary"},
                reference=table.select(list(settings.dataset.features)).slice(0, 200))


def _score(settings, ref, ds, point) -> None:
    import torch

    torch.set_num_threads(1)
    from batch_scoring.score import score_partition

    score_partition(settings, ds, "champion", lake=_killing_lake(settings.lake_uri, point), ref=ref)


def _measure(settings, ref, ds, point) -> None:
    from monitoring.ground_truth import measure_ground_truth

    measure_ground_truth(settings, ds, lake=_killing_lake(settings.lake_uri, point))


def _fork(target, args, kill_after: float | None) -> int:
    """Run `target` in a forked child; with `kill_after`, it is SIGKILLed that long after its commit's writer opened."""
    global _KILL_IN
    _KILL_IN = kill_after
    try:
        proc = multiprocessing.get_context("fork").Process(target=target, args=args)
        proc.start()
    finally:
        _KILL_IN = None
    proc.join(120)
    return proc.exitcode


def _glob_debris(lake: Lake, table_name: str) -> list[str]:
    """What a recursive glob over the table reaches besides committed partitions' own files."""
    import glob

    base = lake.table_path(table_name)
    found = glob.glob(f"{base}/**/*", recursive=True) + glob.glob(f"{base}/**/.*", recursive=True)
    ok = []
    for path in found:
        rel = os.path.relpath(path, base).split(os.sep)
        if rel[0].startswith("ds=") and (len(rel) == 1 or (len(rel) == 2 and not rel[1].endswith(".tmp"))):
            if len(rel) == 2 and rel[1].startswith("_") and rel[1] != "_generation":
                continue
            ok.append(path)
    return sorted(set(found) - set(ok))


@pytest.mark.parametrize("operation,table_name,random_kills", [("score", PREDICTIONS, 7), ("measure", "monitoring/performance", 7)])
def test_sigkill_at_random_moments_never_shows_half_a_partition(killable, operation, table_name, random_kills):
    """7 random kills + 3 kills inside the swap, for scoring and for a monitoring commit: 20 in all."""
    import random

    settings, lake, ref = killable
    target = _score if operation == "score" else _measure
    if operation == "measure":
        for ds in DAYS:  # ground truth reads the days' predictions
            assert _fork(_score, (settings, ref, ds, None), None) == 0
    start = time.monotonic()
    assert _fork(target, (settings, ref, NIGHT, None), None) == 0  # uninterrupted: the content to reproduce
    span = _SPAN.value  # how long the commit's writer was open: staging written, then the swap
    assert span > 0
    expected = lake.fingerprint(table_name, NIGHT)

    rng = random.Random(f"{KILL_SEED}-{operation}")  # noqa: S311 - reproducible kill moments, not secrets
    moments = [("random", rng.uniform(0.0, span)) for _ in range(random_kills)] + [("swap", p) for p in SWAP_POINTS]
    partial, debris_seen, killed, vanished = 0, [], 0, 0
    phase = {"before the swap": 0, "after the swap": 0}  # where the kills landed, by the partition's generation
    for kind, moment in moments:
        generation = lake.generation(table_name, NIGHT)
        if kind == "random":
            code = _fork(target, (settings, ref, NIGHT, None), moment)
        else:
            code = _fork(target, (settings, ref, NIGHT, moment), None)
        killed += code == -signal.SIGKILL
        assert code in (0, -signal.SIGKILL), f"{operation} at {moment}: exit {code}"
        if lake.exists(table_name, NIGHT):
            try:
                got = lake.fingerprint(table_name, NIGHT)
                rows = lake.read(table_name, NIGHT).num_rows
            except Exception:  # noqa: BLE001 - an unreadable partition is exactly what this counts
                got, rows = None, -1
            partial += got != expected or rows <= 0
            phase["before the swap" if lake.generation(table_name, NIGHT) == generation else "after the swap"] += 1
        else:
            vanished += 1  # killed between the renames: nothing visible until the next commit restores it
        debris_seen += _glob_debris(lake, table_name)
        if lake.partitions(table_name):  # DuckDB reads the whole table with a recursive glob
            assert duckdb_rows(lake.root, table_name) > 0
        # the next uninterrupted run restores or replaces the partition and reproduces the content
        assert _fork(target, (settings, ref, NIGHT, None), None) == 0
        assert lake.fingerprint(table_name, NIGHT) == expected
    print(f"RESULT operation={operation} commit_span_ms={span * 1000:.1f} kills={killed} partial_partitions={partial} visible_debris={len(debris_seen)} "
          f"missing_until_next_commit={vanished} before_swap={phase['before the swap']} "
          f"after_swap={phase['after the swap']} seconds={time.monotonic() - start:.1f}")
    assert killed >= len(SWAP_POINTS)
    assert partial == 0
    assert debris_seen == []
    assert not list((Path(lake.root) / "_staging").rglob("*.parquet"))  # the reruns cleaned what the kills left
    assert not list((Path(lake.root) / "_trash").rglob("*.parquet"))
