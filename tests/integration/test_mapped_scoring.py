"""Scoring fans out over a day's file groups and commits once; every write path runs the contract.

The nightly DAG maps `score` over the groups `validate` plans (one task per group, each retried
alone) and `commit_scores` commits the parts atomically once all are in. The in-process path
(`score_partition`: the CLI's `score`, a rollback's rescore, `confirm_champion`) does the same
work in one process and must give the same bytes.
"""

from __future__ import annotations

import os

import subprocess
import sys

import numpy as np
import pyarrow as pa
import pytest

from nightshift.dates import add_days
from nightshift.lake import FEATURES, PREDICTIONS, Lake, PartitionMissing

START, DAYS, ROWS = "2026-05-01", 6, 1200


# -- the plan: pure, table-driven ----------------------------------------------------------
MiB = 1 << 20
PLANS = [
    ("one small file", [("a", 10)], 100, 8, [["a"]]),
    ("small files pack together", [("a", 40), ("b", 40), ("c", 40)], 100, 8, [["a", "b"], ["c"]]),
    ("a big file stands alone", [("a", 10), ("b", 500), ("c", 10)], 100, 8, [["a"], ["b"], ["c"]]),
    ("exact fit", [("a", 50), ("b", 50), ("c", 50), ("d", 50)], 100, 8, [["a", "b"], ["c", "d"]]),
    ("the group cap grows the target", [(f"f{i}", 100) for i in range(6)], 100, 3,
     [["f0", "f1"], ["f2", "f3"], ["f4", "f5"]]),
    ("name order is kept", [("p0", 60), ("p1", 60), ("p2", 60), ("p3", 60)], 60, 8, [["p0"], ["p1"], ["p2"], ["p3"]]),
    ("no files, no groups", [], 100, 8, []),
]


@pytest.mark.parametrize("name,files,target,cap,expected", PLANS, ids=[p[0] for p in PLANS])
def test_plan_groups(name, files, target, cap, expected):
    from batch_scoring.score import plan_groups

    groups = plan_groups(files, target, cap)
    assert groups == expected
    assert [f for g in groups for f in g] == [f for f, _ in files]  # every file once, in order


# -- a real model over a real lake ------------------------------------------------------------
@pytest.fixture(scope="module", params=["posix", "delta"])
def world(tmp_path_factory, request):
    """The same world on each lake backend (delta: Delta tables on a local folder)."""
    import os

    from nightshift.settings import load_settings
    from simulator.land import simulate
    from training.retrain import retrain

    home = tmp_path_factory.mktemp("mapped")
    os.environ["NIGHTSHIFT_HOME"] = str(home)
    os.environ["NIGHTSHIFT__PATHS__LAKE_BACKEND"] = request.param
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    try:
        s = load_settings().with_overrides({"training.epochs": 2, "gate.n_boot": 200})
        lake = Lake.of(s)
        assert lake.backend == request.param
        simulate(lake, s.dataset, start=START, days=DAYS, rows_per_day=ROWS, seed=5, progress=False)
        boot = retrain(s, add_days(START, DAYS - 3), trigger="bootstrap")
        assert boot["verdict"] == "PROMOTE", boot
        yield {"settings": s, "lake": lake, "home": home}
    finally:
        os.environ.pop("NIGHTSHIFT_HOME", None)
        os.environ.pop("NIGHTSHIFT__PATHS__LAKE_BACKEND", None)


def _land_as_files(lake: Lake, ds: str, table: pa.Table, n: int) -> None:
    """Re-land a day's features as `n` files (how a day from a partitioned export arrives)."""
    import pyarrow.parquet as pq

    bounds = np.linspace(0, table.num_rows, n + 1).astype(int)
    parts = {}
    for i in range(n):
        part = table.slice(bounds[i], bounds[i + 1] - bounds[i])
        with lake.write_part(FEATURES, ds, "landing", f"part-{i}", table.schema) as w:
            w.write_table(part)
        parts[f"part-{i}"] = part.num_rows
    lake.commit_parts(FEATURES, ds, "landing", parts)
    assert len(lake.files(FEATURES, ds)) == n and lake.read(FEATURES, ds).num_rows == table.num_rows
    if lake.backend == "posix":
        assert pq.ParquetDataset(lake.path(FEATURES, ds)).read().num_rows == table.num_rows


def _debris(lake: Lake, ds: str) -> list[str]:
    """Staged parts left behind: staging folders (posix), or part files no Delta version names (delta)."""
    import glob

    if lake.backend == "posix":
        return glob.glob(f"{lake.table_path(PREDICTIONS)}/_staging/ds={ds}-*")
    named = {f for v in (lake.versions(PREDICTIONS, ds) if lake.exists(PREDICTIONS, ds) else [])
             for f, _ in lake._files(PREDICTIONS, ds, v)}
    return [p for p in glob.glob(f"{lake.path(PREDICTIONS, ds)}/*.parquet") if os.path.basename(p) not in named]


def test_mapped_groups_commit_the_bytes_the_in_process_path_writes(world):
    """Four files -> four groups; a missing group refuses the commit; its retry alone completes it."""
    from batch_scoring import nightly
    from batch_scoring.score import commit_scores, score_group, score_partition
    from nightshift.flow import StepContext

    s = world["settings"].with_overrides({"scoring.group_mb": 0.02})
    lake, ds = world["lake"], add_days(START, DAYS - 1)
    _land_as_files(lake, ds, lake.read(FEATURES, ds), 4)

    one = score_partition(s, ds)  # in-process: the same plan, in one process
    assert one["groups"] == 4 and one["rows"] == ROWS
    in_process = lake.read(PREDICTIONS, ds)
    fingerprint = lake.fingerprint(PREDICTIONS, ds)

    plan = nightly.validate(StepContext(s, ds))  # what the DAG's `validate` hands to the mapped `score`
    assert [g["index"] for g in plan] == [0, 1, 2, 3] and plan[0]["checked"]["rows"] == ROWS
    done = [score_group(s, g, run_id="manual__1") for g in plan if g["index"] != 2]  # group 2 failed
    with pytest.raises(PartitionMissing, match="1 of 4 parts are missing"):
        lake.commit_parts(PREDICTIONS, ds, done[0]["key"], {f"part-{i:05d}": 300 for i in range(4)})
    assert lake.fingerprint(PREDICTIONS, ds) == fingerprint  # nothing changed
    with pytest.raises(RuntimeError, match="do not cover the plan"):
        commit_scores(s, ds, done)
    done.append(score_group(s, plan[2], run_id="manual__1"))  # the retry of group 2, alone
    out = commit_scores(s, ds, done)
    assert out["rows"] == ROWS and out["groups"] == 4
    assert lake.read(PREDICTIONS, ds).equals(in_process)
    assert lake.fingerprint(PREDICTIONS, ds) == fingerprint  # byte for byte
    assert _debris(lake, ds) == []


def test_predictions_dictionary_encode_only_the_columns_that_repeat(world):
    """The ids and scores are nearly all distinct: encoding them as dictionaries costs the writer a hash
    per value for nothing. The lineage and the decision repeat, and stay dictionary-encoded."""
    import pyarrow.parquet as pq

    from batch_scoring.score import score_partition

    s, lake, ds = world["settings"], world["lake"], add_days(START, DAYS - 2)
    score_partition(s, ds)
    for file, _ in lake.files(PREDICTIONS, ds):
        meta = pq.ParquetFile(f"{lake.path(PREDICTIONS, ds)}/{file}").metadata
        for rg in range(meta.num_row_groups):
            dictionary = {meta.schema.names[c]: meta.row_group(rg).column(c).has_dictionary_page for c in range(meta.num_columns)}
            assert dictionary == {name: name not in (s.dataset.entity_id, "score") for name in meta.schema.names}


def test_groups_scored_by_different_models_are_not_mixed(world):
    from batch_scoring import nightly
    from batch_scoring.score import commit_scores, score_group
    from nightshift.flow import StepContext

    s = world["settings"]
    lake, ds = world["lake"], add_days(START, DAYS - 2)
    before = lake.fingerprint(PREDICTIONS, ds) if lake.exists(PREDICTIONS, ds) else None
    plan = nightly.validate(StepContext(s, ds))
    groups = [score_group(s, g, run_id="r") for g in plan]
    forged = [{**groups[0], "key": groups[0]["key"].replace("-v1", "-v2"), "model_version": "2"}]
    with pytest.raises(RuntimeError, match="disagree on the model"):
        commit_scores(s, ds, groups + forged)
    assert (lake.fingerprint(PREDICTIONS, ds) if lake.exists(PREDICTIONS, ds) else None) == before


# -- the contract on every write path -------------------------------------------------------
def _features(lake, ds):
    return lake.read(FEATURES, ds)


BREAKS = [
    ("empty", lambda t, s: t.slice(0, 0), "partition is not empty", None),
    ("duplicate id", lambda t, s: pa.concat_tables([t, t.slice(0, 1)]), "entity id is unique", "id"),
    ("infinite value", lambda t, s: t.set_column(t.schema.get_field_index(s.numeric[0]), s.numeric[0],
                                                 pa.array(np.r_[[np.inf], t[s.numeric[0]].to_numpy()[1:]])),
     "finite or missing", "x"),
    ("all null", lambda t, s: t.set_column(t.schema.get_field_index(s.numeric[1]), s.numeric[1],
                                           pa.nulls(t.num_rows, pa.float64())), "not entirely missing", "y"),
    ("missing column", lambda t, s: t.drop_columns([s.numeric[2]]), "required column present", "z"),
]


@pytest.mark.parametrize("name,brk,rule,col", BREAKS, ids=[b[0] for b in BREAKS])
def test_every_write_path_refuses_bad_input_and_commits_nothing(world, name, brk, rule, col):
    """`score_partition` (CLI score, rescore, confirm_champion) and `rescore` refuse as `nightly` does."""
    from batch_scoring.contract import ContractViolation
    from batch_scoring.score import rescore, score_partition

    s, lake = world["settings"], world["lake"]
    good_day, bad_day = add_days(START, DAYS - 2), add_days(START, DAYS + 5)
    score_partition(s, good_day)
    kept = lake.fingerprint(PREDICTIONS, good_day)
    lake.commit(FEATURES, bad_day, brk(_features(lake, good_day), s.dataset))
    column = {"id": s.dataset.entity_id, "x": s.dataset.numeric[0], "y": s.dataset.numeric[1],
              "z": s.dataset.numeric[2], None: None}[col]
    for attempt in (lambda: score_partition(s, bad_day), lambda: rescore(s, good_day, bad_day)):
        with pytest.raises(ContractViolation) as err:
            attempt()
        msg = str(err.value)
        assert f"features/ds={bad_day}" in msg and rule in msg and (column is None or repr(column) in msg), msg
        assert "schema" not in msg.lower() or name == "missing column"
        assert not lake.exists(PREDICTIONS, bad_day), "a refused day must not get a partition"
        assert _debris(lake, bad_day) == []
    assert lake.fingerprint(PREDICTIONS, good_day) == kept


def test_cli_score_refuses_with_one_line_and_exit_2(world):
    import os

    lake = world["lake"]
    bad_day = add_days(START, DAYS + 9)
    lake.commit(FEATURES, bad_day, _features(lake, add_days(START, DAYS - 2)).slice(0, 0))
    env = {**os.environ, "NIGHTSHIFT_HOME": str(world["home"])}
    out = subprocess.run([sys.executable, "-m", "cli.main", "score", "--ds", bad_day], env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 2, out.stderr
    last = out.stderr.strip().splitlines()[-1]
    assert "partition is not empty" in last and "Traceback" not in out.stderr
    assert not lake.exists(PREDICTIONS, bad_day)


# -- the overlapped pipeline: order, bounded memory, errors from any of its three threads ----------
def test_overlapped_keeps_order_and_bounds_what_waits():
    import threading

    from batch_scoring.score import overlapped

    produced, written, ahead = [], [], []

    def source():
        for i in range(200):
            produced.append(i)
            ahead.append(len(produced) - len(written))
            yield i

    overlapped(source(), lambda x: x * 2, written.append, depth=2)
    assert written == [2 * i for i in range(200)]
    assert max(ahead) <= 2 + 2 + 3  # inbox + outbox + one in each thread's hands
    assert [t.name for t in threading.enumerate() if t.name.startswith("score-")] == []


def test_overlapped_on_several_compute_threads_keeps_order_and_bounds_what_is_in_flight():
    import random
    import threading
    import time

    from batch_scoring.score import overlapped

    produced, written, ahead, running, most = [], [], [], [0], [0]
    lock = threading.Lock()

    def source():
        for i in range(300):
            produced.append(i)
            ahead.append(len(produced) - len(written))
            yield i

    def compute(x):
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(random.random() / 2000)  # noqa: S311 - jitter, not security: results finish out of order
        with lock:
            running[0] -= 1
        return x * 2

    overlapped(source(), compute, written.append, depth=1, workers=3)
    assert written == [2 * i for i in range(300)]
    assert 1 < most[0] <= 3  # batches really were computed at once, never more than the workers
    assert max(ahead) <= 1 + 3 + 3 + 3  # inbox + computing + outbox + one in each thread's hands
    assert [t.name for t in threading.enumerate() if t.name.startswith("score-")] == []


@pytest.mark.parametrize("workers", [1, 3])
@pytest.mark.parametrize("where", ["source", "compute", "sink"])
def test_overlapped_raises_the_first_error_and_stops_every_thread(where, workers):
    import threading

    from batch_scoring.score import overlapped

    def source():
        for i in range(10_000):
            if where == "source" and i == 50:
                raise OSError("disk read failed")
            yield i

    def compute(x):
        if where == "compute" and x == 50:
            raise ValueError("bad batch")
        return x

    written = []

    def sink(x):
        if where == "sink" and x == 50:
            raise OSError("No space left on device")
        written.append(x)

    with pytest.raises((OSError, ValueError), match="disk read|bad batch|No space"):
        overlapped(source(), compute, sink, workers=workers)
    assert len(written) <= 50 and written == list(range(len(written)))
    assert [t.name for t in threading.enumerate() if t.name.startswith("score-")] == []
