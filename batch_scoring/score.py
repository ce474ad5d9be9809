"""Nightly scoring: stream a features partition through a model into `predictions/ds=D/`.

Record batches flow through one at a time, so memory is bounded by `scoring.batch_rows`
whatever the partition's size. The output columns come from the task (`score` and
`decision` for binary, `prediction` for regression), and every row carries its lineage (see
`nightshift.tables.predictions`). The partition is committed atomically; a rerun replaces it.
"""

from __future__ import annotations

import functools
import subprocess
from typing import TYPE_CHECKING

import nightshift
from nightshift.dates import ds_range
from nightshift.lake import FEATURES, IN_PROCESS, PREDICTIONS, Lake
from nightshift.registry import ModelRef, Registry
from nightshift.settings import REPO_ROOT
from nightshift.tables import predictions
from nightshift.tables.predictions import scored_by  # noqa: F401 - re-exported for callers of scoring
from nightshift.task import task_for

if TYPE_CHECKING:
    from nightshift.settings import Settings


@functools.cache
def code_version() -> str:
    """Package version plus the git commit it runs from, when there is one."""
    try:
        sha = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "--short=12", "HEAD"],  # noqa: S603, S607 - fixed argv, git from PATH
                             capture_output=True, text=True, timeout=5, check=True).stdout.strip()
        return f"{nightshift.__version__}+g{sha}"
    except (OSError, subprocess.SubprocessError):
        return nightshift.__version__


def plan_groups(files: list[tuple[str, int]], group_bytes: int, max_groups: int) -> list[list[str]]:
    """Pack a day's files, in name order, into contiguous groups of about `group_bytes` each.

    A file is never split; a file larger than `group_bytes` is a group of its own. At most
    `max_groups` groups: past that, the target grows so the files fit. Pure: the plan depends
    only on the file list and the two settings, so every worker and every rerun agrees on it.
    """
    if not files:
        return []
    total = sum(size for _, size in files)
    target = max(group_bytes, -(-total // max_groups))
    groups: list[list[str]] = [[]]
    size = 0
    for name, n in files:
        if groups[-1] and size + n > target and len(groups) < max_groups:
            groups.append([])
            size = 0
        groups[-1].append(name)
        size += n
    return groups


def plan(settings: "Settings", ds: str, *, lake: Lake | None = None, fingerprint: str | None = None) -> list[dict]:
    """The scoring plan for `features/ds=D`: one item per file group (what a mapped task scores)."""
    lake = lake or Lake.of(settings)
    fingerprint = fingerprint or lake.fingerprint(FEATURES, ds)
    groups = plan_groups(lake.files(FEATURES, ds), int(settings.scoring.group_mb * 2**20), settings.scoring.max_groups)
    return [{"ds": ds, "index": i, "of": len(groups), "files": files, "fingerprint": fingerprint}
            for i, files in enumerate(groups)]


def part_name(index: int) -> str:
    return f"part-{index:05d}"


def write_key(run_id: str, fingerprint: str, version: str) -> str:
    """What the groups of one write share: the run, the input and the model."""
    return f"{run_id}-{fingerprint}-v{version}"


def _lineage(ref: ModelRef, mode: str, fingerprint: str, alias: str = "champion") -> dict:
    return {"model_name": ref.name, "model_version": ref.version, "model_alias": alias,
            "model_selection": str(mode), "mlflow_run_id": ref.run_id, "input_fingerprint": fingerprint,
            "code_version": code_version()}


def score_group(settings: "Settings", item: dict, model: str | None = None, *, run_id: str, lake: Lake | None = None,
                table: str = PREDICTIONS, ref: ModelRef | None = None, bundle=None, check=None,
                alias: str = "champion") -> dict:
    """Score one file group of a day into its staged part; the day is committed by `commit_scores`.

    `check` (a `ContractCheck`) sees every batch when given: the whole-day rules then run at commit.
    `alias`: the lineage's `model_alias` (`candidate` for a shadow trial's rows in `shadow/`).
    """
    from threadpoolctl import threadpool_limits

    from model.bundle import load_bundle

    lake = lake or Lake.of(settings)
    ds, spec, task = item["ds"], settings.dataset, task_for(settings.dataset.task)
    mode = model or settings.scoring.model
    if ref is None or bundle is None:
        registry = Registry(settings, lake)
        ref = ref or registry.resolve(ds, mode)
        bundle = bundle or load_bundle(registry.local_path(ref.version), allow_code_drift=settings.model.allow_code_drift)
    files = item["files"]
    task = bundle.task  # bound to the model's class vocabulary (multiclass): it names the output columns
    schema = predictions.schema(spec, lake.dataset(FEATURES, ds).schema.field(spec.entity_id).type, task)
    key = write_key(run_id, item["fingerprint"], ref.version)
    total = 0.0
    threshold = bundle.decision_threshold(settings.scoring.threshold)  # "value": the version's own

    def compute(batch):  # on several threads at once: the check locks its own state, the bundle keeps none
        if check is not None:
            check.batch(batch)
        pred = bundle.predict(batch)
        return batch.column(spec.entity_id), task.output_arrays(pred, threshold), float(task.headline(pred).sum())

    def sink(result):  # one batch at a time, in order
        nonlocal total
        ids, arrays, batch_sum = result
        total += batch_sum
        out.write(ids, arrays)

    net = bundle.net  # built once, before the compute threads share it
    threads = compute_threads(settings.scoring.threads)
    with lake.write_part(table, ds, key, part_name(item["index"]), schema, dictionary=predictions.repeating(schema)) as w:
        out = predictions.PredictionWriter(w, schema, _lineage(ref, mode, item["fingerprint"], alias))
        source = lake.batches_of(FEATURES, ds, files, settings.scoring.batch_rows, columns=[spec.entity_id, *spec.features])
        if getattr(net, "own_threads", False):
            # torch (any architecture but tabularnet): one batch at a time on torch's own `threads` threads.
            net.set_threads(threads)
            overlapped(source, compute, sink, workers=1)
        else:
            # One BLAS thread per compute thread: OpenBLAS's own threads would spin against ours and the I/O.
            with threadpool_limits(1, user_api="blas"):
                overlapped(source, compute, sink, workers=threads)
    return {"ds": ds, "index": item["index"], "part": part_name(item["index"]), "rows": out.rows, "sum": total,
            "model_version": ref.version, "model_selection": str(mode), "fingerprint": item["fingerprint"], "key": key}


def overlapped(source, compute, sink, depth: int = 1, workers: int = 1) -> None:
    """`sink(compute(x))` for each x of `source`, in order, with reading and writing on their own threads.

    Parquet decoding and encoding and numpy's arithmetic release the GIL, so the next batch is
    read and the last one written while the model works on this one, and with `workers` > 1
    that many batches are computed at once (`compute` must then be safe to call concurrently;
    `sink` still sees the results one at a time, in the source's order). At most `depth`
    batches wait on each side, so memory stays bounded. An error anywhere stops all of it and
    is raised here.
    """
    import queue
    import threading
    from concurrent.futures import ThreadPoolExecutor

    done = object()
    inbox: queue.Queue = queue.Queue(depth)
    outbox: queue.Queue = queue.Queue(depth + workers - 1)
    stop = threading.Event()
    errors: list[BaseException] = []

    def put(q: queue.Queue, x) -> bool:
        while not stop.is_set():
            try:
                q.put(x, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def acquire(slots: threading.Semaphore) -> bool:
        while not stop.is_set():
            if slots.acquire(timeout=0.1):
                return True
        return False

    def read() -> None:
        try:
            for x in source:
                if not put(inbox, x):
                    return
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
            errors.append(exc)
            stop.set()
        put(inbox, done)

    def write() -> None:
        try:
            while True:
                try:
                    x = outbox.get(timeout=0.1)
                except queue.Empty:
                    if stop.is_set():
                        return
                    continue
                if x is done or stop.is_set():
                    return
                sink(x.result())
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
            errors.append(exc)
            stop.set()

    reader = threading.Thread(target=read, name="score-read", daemon=True)
    writer = threading.Thread(target=write, name="score-write", daemon=True)
    pool = ThreadPoolExecutor(max(1, workers), thread_name_prefix="score-compute")
    slots = threading.Semaphore(max(1, workers))
    reader.start()
    writer.start()
    try:
        while not stop.is_set():
            try:
                x = inbox.get(timeout=0.1)
            except queue.Empty:
                continue
            if x is done:
                put(outbox, done)  # the writer drains what is queued, then stops
                break
            # No more batches in the pool than it computes at once, so the inputs held in memory
            # stay bounded whatever the day's length.
            if not acquire(slots):
                break
            future = pool.submit(compute, x)
            future.add_done_callback(lambda _: slots.release())
            put(outbox, future)  # blocks while `depth` results wait for the writer
    except BaseException as exc:
        errors.append(exc)
        stop.set()
    finally:
        writer.join()
        stop.set()
        pool.shutdown(wait=True, cancel_futures=True)
        reader.join()
    if errors:
        raise errors[0]


def compute_threads(configured: int = 0) -> int:
    """Batches scored at once (`scoring.threads`; 0: one per core this process may use, at most 4).

    numpy's arithmetic releases the GIL, so the threads really run at once.
    """
    import os

    if configured:
        return configured
    return max(1, min(4, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1))


def commit_scores(settings: "Settings", ds: str, groups: list[dict], *, lake: Lake | None = None,
                  table: str = PREDICTIONS) -> dict:
    """Commit a day's scored groups as `predictions/ds=D` (or `shadow/ds=D`), atomically, once every group is in.

    Refuses (changing nothing) when the groups disagree on the model or the input: a promotion
    or a re-landed partition between two groups would otherwise mix them in one day.
    """
    lake = lake or Lake.of(settings)
    groups = sorted(groups, key=lambda g: g["index"])
    keys = {g["key"] for g in groups}
    if len(keys) != 1:
        versions = sorted({g["model_version"] for g in groups})
        raise RuntimeError(f"{table}/ds={ds}: its {len(groups)} scoring groups disagree on the model "
                           f"(versions {versions}) or the input; clear the night's `score` task to rescore it whole")
    expected = groups[0].get("of", len(groups))
    if [g["index"] for g in groups] != list(range(expected)):
        raise RuntimeError(f"{table}/ds={ds}: groups {[g['index'] for g in groups]} do not cover the plan's {expected}; "
                           "clear the night's `score` task to rescore it")
    ref = lake.commit_parts(table, ds, keys.pop(), {g["part"]: g["rows"] for g in groups})
    task = task_for(settings.dataset.task)
    first = groups[0]
    return {"ds": ds, "table": table, "rows": ref.rows, "groups": len(groups), "model_version": first["model_version"],
            "model_selection": first["model_selection"],
            f"mean_{task.prediction_column}": round(sum(g["sum"] for g in groups) / max(ref.rows, 1), 6),
            "input_fingerprint": first["fingerprint"]}


def score_partition(settings: "Settings", ds: str, model: str | None = None, *, lake: Lake | None = None,
                    table: str = PREDICTIONS, ref: ModelRef | None = None, run_id: str | None = None,
                    progress: bool = False) -> dict:
    """Score `features/ds=ds` with the model chosen by `model` (as_of | champion) and commit it.

    Every path that writes predictions comes through here (the CLI's `score`, a rollback's
    rescore, the nightly `confirm_champion`), so every one of them runs the input contract on
    the batches it scores and commits nothing when it fails. The work is the nightly DAG's
    mapped scoring, done in one process: the same plan, the same parts, the same bytes.
    """
    import uuid
    from concurrent.futures import ThreadPoolExecutor

    from batch_scoring.contract import ContractCheck

    lake = lake or Lake.of(settings)
    check = ContractCheck.open(lake, settings.dataset, ds)  # existence and schema, before any model is loaded
    with ThreadPoolExecutor(1, thread_name_prefix="fingerprint") as pool:
        fingerprint = pool.submit(lake.fingerprint, FEATURES, ds)  # hashing overlaps importing torch and loading the model
        from model.bundle import load_bundle

        registry = Registry(settings, lake)
        mode = model or settings.scoring.model
        ref = ref or registry.resolve(ds, mode)
        bundle = load_bundle(registry.local_path(ref.version), allow_code_drift=settings.model.allow_code_drift)
        items = plan(settings, ds, lake=lake, fingerprint=fingerprint.result())
    run_id = run_id or f"{IN_PROCESS}{uuid.uuid4().hex[:12]}"
    try:
        groups = [score_group(settings, item, mode, run_id=run_id, lake=lake, table=table, ref=ref, bundle=bundle,
                              check=check) for item in items]
        check.finish()  # the whole-day rules (not empty, ids unique, ...) before anything is committed
    except BaseException:
        lake.discard_parts(table, ds, write_key(run_id, items[0]["fingerprint"] if items else "", ref.version))
        raise
    return commit_scores(settings, ds, groups, lake=lake, table=table)


def rescore(settings: "Settings", start: str, end: str) -> dict:
    """Rescore nights start..end with today's champion (`model=champion`), e.g. after a rollback.

    Every night's features pass the contract before any night is rescored, so a bad day in
    the range changes nothing at all.
    """
    from batch_scoring.contract import validate_partition

    lake = Lake.of(settings)
    days = [d for d in ds_range(start, end) if lake.exists(FEATURES, d)]
    for d in days:
        validate_partition(lake, settings.dataset, d)
    results = [score_partition(settings, d, "champion", lake=lake) for d in days]
    return {"nights": len(results), "rows": sum(r["rows"] for r in results),
            "model_version": results[0]["model_version"] if results else None}
