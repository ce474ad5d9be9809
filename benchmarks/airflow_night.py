"""What a night costs through Airflow, against the same nights in-process, and where the difference goes.

One run, on the same simulated world (a quiet world, no retrain, so every night is the same
work), for each executor named in `--executors`:
- `inprocess`: `nightshift nightly --start --end` (the flow's steps in one process), timed
  per night from its own loop;
- `local`: Airflow's stock LocalExecutor (every task imports what its step needs);
- `preload`: `airflow_integration.executor.PreloadingLocalExecutor` (workers import the heavy
  libraries once; tasks are forked from them). The embedded stack's default.

Airflow runs are a real scheduler backfill (the embedded stack's parallelism, 3 unless `AIRFLOW__CORE__PARALLELISM` says otherwise; SQLite, `--max-active-runs 3`).
Per night = (first task starts -> last night closes) / nights: the first nights, which start
together and share the executor's slots, are in it, so few nights read higher than the steady
state a long backfill sees (the default, 30 nights of 4,000 rows, is the demo's). The warm-up
before the first task (the scheduler picking up the backfill; with `preload`, its workers
importing) is shown apart. The breakdown comes from the task instances: per task, median run
time, and median queued -> running wait. `--keep DIR` keeps each run's home (task and
scheduler logs, the metadata DB); `BENCH_TIMELINE=file.json` writes every task instance's
queued, start and end times.

    .venv/bin/python benchmarks/airflow_night.py [--nights 30] [--rows 4000] [--executors inprocess local preload]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))
START, HISTORY = "2026-02-01", 14
EXECUTORS = {"local": "LocalExecutor", "preload": "airflow_integration.executor.PreloadingLocalExecutor"}


def world(home: Path, nights: int, rows: int) -> None:
    """Land a quiet world and bootstrap the champion (in a child, so this process stays light)."""
    code = (
        "from nightshift.settings import load_settings; from nightshift.lake import Lake; from nightshift.dates import add_days\n"
        "from simulator.land import simulate; from training.retrain import retrain\n"
        "s = load_settings(); lake = Lake.of(s)\n"
        f"simulate(lake, s.dataset, start={START!r}, days={HISTORY + nights}, rows_per_day={rows}, seed=11, progress=False)\n"
        f"r = retrain(s, add_days({START!r}, {HISTORY - 1}), trigger='bootstrap'); assert r['verdict'] == 'PROMOTE', r\n"
    )
    subprocess.run([sys.executable, "-c", code], env=_env(home), check=True, cwd=REPO, capture_output=True)  # noqa: S603 - this benchmark's own code


def _env(home: Path) -> dict:
    env = {**os.environ, "NIGHTSHIFT_HOME": str(home), "NIGHTSHIFT_CONFIG": str(REPO / "nightshift.toml"),
           "PYTHONPATH": str(REPO)}
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


def inprocess(home: Path, first: str, last: str, nights: int) -> dict:
    code = (
        "import json, time; from nightshift.settings import load_settings; from batch_scoring.nightly import run_nights\n"
        "from airflow_integration.executor import DEFAULT_PRELOAD, preload; preload(list(DEFAULT_PRELOAD))  # imports once, as a worker\n"
        "s = load_settings(); t = time.perf_counter()\n"
        f"r = run_nights(s, {first!r}, {last!r}, retrain=False, progress=False)\n"
        "print(json.dumps({'seconds': time.perf_counter() - t, 'nights': len(r)}))"
    )
    t = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code], env=_env(home), check=True, cwd=REPO, capture_output=True, text=True)  # noqa: S603 - fixed code
    whole = time.perf_counter() - t
    r = json.loads(out.stdout.strip().splitlines()[-1])
    return {"executor": "inprocess", "s_per_night": r["seconds"] / nights, "process_s": whole, "tasks": {}}


def through_airflow(home: Path, executor: str, first: str, last: str, nights: int) -> dict:
    import airflow_stack as stack

    stack.start(home, extra_env={"AIRFLOW__CORE__EXECUTOR": EXECUTORS[executor]})
    try:
        stack.wait_for_dags(home, ["nightly_scoring"])
        with stack.quiet_writers(home):
            stack.run_cli(home, "dags", "unpause", "nightly_scoring")
        with stack.quiet_writers(home):
            t = time.perf_counter()
            stack.run_cli(home, "backfill", "create", "--dag-id", "nightly_scoring", "--from-date", first, "--to-date", last,
                          "--max-active-runs", "3", "--reprocess-behavior", "failed")
        deadline = time.time() + 1800
        while time.time() < deadline:
            runs = stack.run_states(home, "nightly_scoring")
            if len(runs) >= nights and all(s in ("success", "failed") for s in runs.values()):
                break
            time.sleep(1)
        wall = time.perf_counter() - t
        failed = [r for r, s in runs.items() if s != "success"]
        if failed:
            raise RuntimeError(f"{executor}: nightly runs did not succeed: {failed}")
        rows = stack.query(home, "SELECT task_id, queued_dttm, start_date, end_date FROM task_instance "
                                 "WHERE dag_id='nightly_scoring' AND state='success'")
        if os.environ.get("BENCH_TIMELINE"):
            Path(os.environ["BENCH_TIMELINE"]).write_text(json.dumps(stack.query(
                home, "SELECT run_id, task_id, state, queued_dttm, start_date, end_date FROM task_instance "
                      "WHERE dag_id='nightly_scoring' ORDER BY start_date"), default=str))
        span = stack.query(home, "SELECT min(t.start_date), max(r.end_date) FROM task_instance t JOIN dag_run r "
                                 "ON t.dag_id = r.dag_id AND t.run_id = r.run_id WHERE t.dag_id='nightly_scoring'")[0]
    finally:
        stack.stop(home)
    tasks: dict[str, dict[str, list[float]]] = {}
    from datetime import datetime

    def ts(x):
        return x if isinstance(x, datetime) else datetime.fromisoformat(str(x).replace("Z", "+00:00"))

    for task_id, queued, started, ended in rows:
        t = tasks.setdefault(task_id, {"run": [], "wait": []})
        t["run"].append((ts(ended) - ts(started)).total_seconds())
        if queued:
            t["wait"].append((ts(started) - ts(queued)).total_seconds())
    steady = (ts(span[1]) - ts(span[0])).total_seconds()  # first task start -> last night closed
    return {"executor": executor, "s_per_night": steady / nights, "process_s": wall, "warmup_s": wall - steady,
            "tasks": {k: {"run": statistics.median(v["run"]), "wait": statistics.median(v["wait"]) if v["wait"] else 0.0,
                          "n": len(v["run"])} for k, v in tasks.items()}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nights", type=int, default=30, help="quiet nights (default: the demo's 30)")
    p.add_argument("--rows", type=int, default=4000)
    p.add_argument("--executors", nargs="+", default=["inprocess", "local", "preload"],
                   choices=["inprocess", *EXECUTORS])
    p.add_argument("--keep", metavar="DIR", help="keep each run's home (lake, Airflow logs, metadata DB) under DIR")
    args = p.parse_args()
    from nightshift.dates import add_days

    first, last = add_days(START, HISTORY), add_days(START, HISTORY + args.nights - 1)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.executors:
            home = Path(args.keep or tmp) / name
            home.mkdir(parents=True)
            print(f"{name}: landing {HISTORY + args.nights} days x {args.rows} rows and bootstrapping ...", flush=True)
            world(home, args.nights, args.rows)
            print(f"{name}: {args.nights} nights ...", flush=True)
            r = inprocess(home, first, last, args.nights) if name == "inprocess" else through_airflow(home, name, first, last, args.nights)
            print(f"{name}: {r['s_per_night']:.2f} s per night", flush=True)
            results.append(r)
    by = {r["executor"]: r for r in results}
    print(f"\n{'executor':<10} {'s/night':>8} {'warm-up s':>10}")
    for r in results:
        print(f"{r['executor']:<10} {r['s_per_night']:>8.2f} {r.get('warmup_s', 0):>10.1f}")
    for r in results:
        if r["tasks"]:
            print(f"\n{r['executor']}: per task, median seconds (run = start -> end; wait = queued -> running)")
            print(f"  {'task':<22} {'run':>6} {'wait':>6} {'n':>4}")
            for task_id, t in sorted(r["tasks"].items(), key=lambda kv: -kv[1]["run"]):
                print(f"  {task_id:<22} {t['run']:>6.2f} {t['wait']:>6.2f} {t['n']:>4}")
            print(f"  {'sum per night':<22} {sum(t['run'] * t['n'] for t in r['tasks'].values()) / args.nights:>6.2f} "
                  f"{sum(t['wait'] * t['n'] for t in r['tasks'].values()) / args.nights:>6.2f}")
    facts = {"nights": args.nights, "rows": args.rows}
    if "inprocess" in by:
        facts["inprocess_s_per_night"] = by["inprocess"]["s_per_night"]
    best = by.get("preload") or by.get("local")
    if best:
        facts["airflow_s_per_night"] = best["s_per_night"]
        facts["executor"] = best["executor"]
    if "local" in by and "preload" in by:
        facts["stock_local_s_per_night"] = by["local"]["s_per_night"]
    if "inprocess" in by and best:
        facts["airflow_overhead_ratio"] = best["s_per_night"] / by["inprocess"]["s_per_night"]
    print("\nRESULT " + " ".join(f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}" for k, v in facts.items()))


if __name__ == "__main__":
    main()
