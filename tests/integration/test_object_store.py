"""The lake in an S3 bucket (moto's S3 server on 127.0.0.1): the store's guards, crashes, concurrent alias moves."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pyarrow as pa
import pytest

from nightshift.lake import PREDICTIONS, Lake, PartitionMissing

REPO = Path(__file__).resolve().parents[2]
DS = "2026-03-01"
PART_ROWS = 20_000


def test_the_moto_endpoint_honours_conditional_writes(bucket):
    import boto3

    s3, name = boto3.client("s3"), bucket[len("s3://"):]
    s3.put_object(Bucket=name, Key="k", Body=b"1", IfNoneMatch="*")
    with pytest.raises(s3.exceptions.ClientError, match="PreconditionFailed"):
        s3.put_object(Bucket=name, Key="k", Body=b"2", IfNoneMatch="*")


def test_a_store_that_ignores_conditional_writes_is_refused_on_first_use(bucket, monkeypatch):
    """A store that drops If-None-Match would let two commits (or two alias moves) both win: refused, named."""
    import nightshift.lake_delta as delta

    real = delta._s3()

    class IgnoresConditions:
        def put_object(self, **kw):
            kw.pop("IfNoneMatch", None)
            return real.put_object(**kw)

    monkeypatch.setattr(delta, "_s3", IgnoresConditions)
    monkeypatch.setattr(delta, "_checked", set())
    lake = Lake(bucket + "/lake", "delta")
    with pytest.raises(delta.LakeStoreError, match=rf"{bucket}/lake: the store at .* \(bucket {bucket[5:]}\) ignores "
                                                   r"conditional writes \(a PUT with If-None-Match"):
        lake.commit(PREDICTIONS, DS, pa.table({"a": [1]}))
    assert not lake.exists(PREDICTIONS, DS)


def test_a_missing_bucket_or_credentials_fail_in_one_line_and_write_nothing(s3_endpoint, monkeypatch):
    import nightshift.lake_delta as delta

    monkeypatch.setattr(delta, "_checked", set())
    lake = Lake("s3://ns-no-such-bucket/lake", "delta")
    with pytest.raises(delta.LakeStoreError) as err:
        lake.commit(PREDICTIONS, DS, pa.table({"a": [1]}))
    msg = str(err.value)
    assert "\n" not in msg and "s3://ns-no-such-bucket/lake" in msg and "bucket ns-no-such-bucket" in msg
    assert "NoSuchBucket" in msg and s3_endpoint in msg

    monkeypatch.setattr(delta, "_clients", {})
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(var)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    with pytest.raises(delta.LakeStoreError, match=r"cannot reach bucket ns-no-such-bucket .*Unable to locate "
                                                   r"credentials.*AWS_ACCESS_KEY_ID"):
        lake.commit(PREDICTIONS, DS, pa.table({"a": [1]}))


def test_concurrent_alias_moves_never_share_a_seq(bucket):
    """The registry's move lock is a lease (conditional PUT) and each seq is claimed by put-if-absent."""
    from nightshift.tables import aliases

    lake = Lake(bucket + "/lake", "delta")

    def moves(who: int) -> None:
        for k in range(3):
            with lake.exclusive("registry-aliases"):
                seq = aliases.next_seq(lake)
                aliases.append(lake, aliases.AliasEvent(seq, DS, "champion", f"{who}.{k}", None, None, "test", "test"))

    threads = [threading.Thread(target=moves, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    seqs = [e.seq for e in aliases.history(lake)]
    assert sorted(seqs) == list(range(1, 13))

    # Without the lock (a lease taken over, a clock gone wrong) the claim still refuses a second event with a seq.
    taken = aliases.AliasEvent(13, DS, "champion", "x", None, None, "test", "test")
    aliases.append(lake, taken)
    with pytest.raises(aliases.SeqTaken, match=r"seq 13 was claimed by another alias move .* rerun the move"):
        aliases.stage(lake, taken)
    assert aliases.next_seq(lake) == 14


# -- a writer killed at random points while readers watch ---------------------------------------------

WRITER = """
import sys, pyarrow as pa
from nightshift.lake import Lake, PREDICTIONS
lake, ds, rows = Lake(sys.argv[1], "delta"), sys.argv[2], int(sys.argv[3])
n = int(sys.argv[4])  # commits to make (-1: until killed)
gen = 0
while n:
    gen = lake.version(PREDICTIONS, ds) + 2 if lake.exists(PREDICTIONS, ds) else 1
    key = f"gen-{gen}"
    for p in range(3):
        with lake.write_part(PREDICTIONS, ds, key, f"part-{p:05d}", pa.schema([("id", pa.int64()), ("gen", pa.int64())])) as w:
            w.write_table(pa.table({"id": pa.array(range(p * rows, (p + 1) * rows), pa.int64()),
                                    "gen": pa.array([gen] * rows, pa.int64())}))
    lake.commit_parts(PREDICTIONS, ds, key, {f"part-{p:05d}": rows for p in range(3)})
    print(gen, flush=True)
    n -= 1
"""


def run_writer(uri: str, commits: int, rows: int = PART_ROWS) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", WRITER, uri, DS, str(rows), str(commits)], cwd=REPO,
                            stdout=subprocess.PIPE, text=True)


def check_reads(lake: Lake, rows: int, stop: threading.Event, seen: dict) -> None:
    """Read the partition three ways until told to stop; count what was partial or mixed."""
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

    uri = lake._uri(lake.path(PREDICTIONS, DS))
    readers = {
        "lake": lambda: lake.read(PREDICTIONS, DS),
        "deltalake": lambda: DeltaTable(uri).to_pyarrow_table(),
        "pandas": lambda: pa.Table.from_pandas(DeltaTable(uri).to_pandas(), preserve_index=False),
    }
    while not stop.is_set():
        for name, read in readers.items():
            try:
                got = read()
            except (PartitionMissing, TableNotFoundError):  # not committed yet: none of the partition
                seen["none"] += 1
                continue
            except Exception as exc:  # noqa: BLE001 - anything else fails the test, in the main thread
                seen["errors"].append(f"{name}: {type(exc).__name__}: {exc}")
                continue
            gens = set(got.column("gen").to_pylist())
            seen["reads"] += 1
            if got.num_rows != 3 * rows:
                seen["partial"] += 1
            if len(gens) > 1:
                seen["mixed"] += 1
            seen["gens"].update(gens)


def kill_loop(uri: str, kills: int, rows: int, seed: int = 0) -> dict:
    """Run the writer, SIGKILL it at a random point, `kills` times, while readers watch; then commit twice more."""
    lake = Lake(uri, "delta")
    rng = random.Random(seed)  # noqa: S311 - kill times, not secrets
    seen = {"none": 0, "reads": 0, "partial": 0, "mixed": 0, "gens": set(), "after_kill_ok": 0, "errors": []}
    stop = threading.Event()
    reader = threading.Thread(target=check_reads, args=(lake, rows, stop, seen), daemon=True)
    reader.start()
    try:
        for _ in range(kills):
            proc = run_writer(uri, -1, rows)
            time.sleep(rng.uniform(0.3, 3.0))
            proc.send_signal(signal.SIGKILL)
            proc.wait(30)
            ok = run_writer(uri, 1, rows)  # after each kill the next commit succeeds
            ok.communicate(timeout=120)
            seen["after_kill_ok"] += ok.returncode == 0
    finally:
        stop.set()
        reader.join(60)
    # Files a killed writer left beside the log (its parts, written but never committed): evidence that kills
    # landed mid-write, not only before the writer started.
    named = {f for v in lake.versions(PREDICTIONS, DS) for f, _ in lake._files(PREDICTIONS, DS, v)}
    seen["orphan_files"] = sum(1 for i in lake._list(lake.path(PREDICTIONS, DS))
                               if i.path.endswith(".parquet") and i.path.rsplit("/", 1)[-1] not in named)
    # A rerun of the same content reproduces the fingerprint (content, not file names): commit it twice.
    t = lake.read(PREDICTIONS, DS)
    lake.commit(PREDICTIONS, DS, t)
    first = lake.fingerprint(PREDICTIONS, DS)
    lake.commit(PREDICTIONS, DS, t)
    seen["rerun_identical"] = int(lake.fingerprint(PREDICTIONS, DS) == first and lake.read(PREDICTIONS, DS).equals(t))
    return seen


@pytest.mark.timeout(600)
def test_a_writer_killed_at_random_points_never_shows_a_partial_or_mixed_partition(bucket):
    lake_uri = bucket + "/lake"
    seen = kill_loop(lake_uri, kills=8, rows=5_000)
    assert seen["reads"] > 0 and seen["gens"], seen
    assert seen["partial"] == 0 and seen["mixed"] == 0 and not seen["errors"], seen
    assert seen["after_kill_ok"] == 8, seen
    assert seen["rerun_identical"] == 1
    assert Lake(lake_uri, "delta").read(PREDICTIONS, DS).num_rows == 15_000
