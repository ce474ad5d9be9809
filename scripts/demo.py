"""`make demo`: the whole Nightshift loop on embedded defaults, driven through a real Airflow.

1. A simulated world lands 44 days of features and late labels, with a sudden covariate
   drift two thirds of the way through the 30 nights that will be scored.
2. A local Airflow 3 starts (scheduler, dag-processor, triggerer, api-server; LocalExecutor,
   parallelism 3, SQLite), with the lake, MLflow (SQLite) and Airflow all under
   `.nightshift/demo/`.
3. The `retrain` DAG trains the first model on the first 14 days; it becomes champion.
4. A real Airflow backfill runs `nightly_scoring` over the 30 nights. Drift is detected, the
   nightly policy hands off to `retrain`, the challenger is judged and promoted, and the
   nights after the promotion are scored by the new champion.
5. A summary: days scored, drift alarms, retrains, promotions, realized AUC before the drift,
   after it and after the promotion, and a plot.

The servers keep running afterwards so you can look around the web UI; `make stop` ends them.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

import airflow_stack as stack  # noqa: E402

START, HISTORY_DAYS, NIGHTS, ROWS, SEED = "2026-01-01", 14, 30, 4000, 7
SCENARIO = "sudden-covariate"
ONSET = HISTORY_DAYS + (2 * NIGHTS) // 3  # drift starts on the 21st night


def main() -> int:
    from rich.console import Console

    console = Console()
    t0 = time.perf_counter()
    home = Path(os.environ.get("NIGHTSHIFT_DEMO_HOME", REPO / ".nightshift" / "demo"))
    os.environ["NIGHTSHIFT_HOME"] = str(home)
    os.environ.setdefault("NIGHTSHIFT_CONFIG", str(REPO / "nightshift.toml"))

    from nightshift.dates import add_days
    from nightshift.lake import Lake
    from nightshift.settings import load_settings

    settings = load_settings()
    bootstrap_ds = add_days(START, HISTORY_DAYS - 1)
    first_night, last_night = add_days(START, HISTORY_DAYS), add_days(START, HISTORY_DAYS + NIGHTS - 1)

    console.rule("[bold]Nightshift demo")
    if home.exists():
        stack.stop(home)
        console.print(f"Starting afresh: removing the previous demo's home {home}")
        shutil.rmtree(home)
    home.mkdir(parents=True)

    console.print(f"[bold]1. Landing the world[/]: {HISTORY_DAYS + NIGHTS} days x {ROWS} rows from {START}, "
                  f"scenario {SCENARIO} from {add_days(START, ONSET)}")
    from simulator.land import simulate

    simulate(Lake.of(settings), settings.dataset, start=START, days=HISTORY_DAYS + NIGHTS, rows_per_day=ROWS,
             scenario=SCENARIO, onset=ONSET, seed=SEED, progress=True)

    console.print("[bold]2. Starting Airflow[/] (scheduler, dag-processor, triggerer, api-server; parallelism 3)")
    port = stack.start(home)
    stack.wait_for_dags(home, ["nightly_scoring", "retrain"])
    console.print(f"   up at http://127.0.0.1:{port}  ({time.perf_counter() - t0:.0f}s so far)")

    console.print(f"[bold]3. Bootstrap[/]: the retrain DAG trains the first model on data up to {bootstrap_ds}")
    run_id = f"bootstrap__{bootstrap_ds}"
    with stack.quiet_writers(home):  # SQLite: one writer at a time (see airflow_stack.quiet_writers)
        stack.run_cli(home, "pools", "set", "gpu", "1", "GPU slots for training tasks")
        for dag_id in ("retrain", "nightly_scoring"):  # backfill runs only execute on unpaused DAGs
            stack.run_cli(home, "dags", "unpause", dag_id)
        stack.run_cli(home, "dags", "trigger", "retrain", "--run-id", run_id,
                      "--conf", f'{{"ds": "{bootstrap_ds}", "trigger": "bootstrap", "init_from": "scratch"}}')
    if wait_runs(home, "retrain", [run_id], console, "bootstrap retrain") != "success":
        return fail(home, "retrain", run_id, console)

    console.print(f"[bold]4. Backfill[/]: nightly_scoring over {first_night}..{last_night} through the scheduler")
    with stack.quiet_writers(home):
        stack.run_cli(home, "backfill", "create", "--dag-id", "nightly_scoring", "--from-date", first_night,
                      "--to-date", last_night, "--max-active-runs", "3", "--reprocess-behavior", "failed")
    state = wait_backfill(home, NIGHTS, console)
    if state != "success":
        failed = [r for r, s in stack.run_states(home, "nightly_scoring").items() if s == "failed"]
        return fail(home, "nightly_scoring", failed[0] if failed else "", console)

    console.print("[bold]5. What happened[/]")
    from monitoring.report import plot, render, summarize

    summary = summarize(settings, first_night, last_night)
    console.print(render(summary), highlight=False)
    png = plot(summary, home / "report" / "realized_auc.png")
    elapsed = time.perf_counter() - t0
    console.rule()
    console.print(f"Demo finished in {elapsed / 60:.1f} min.  Plot: {png}")
    console.print(f"Web UI: http://127.0.0.1:{port}   user [bold]admin[/], password [bold]{stack.admin_password(home)}[/]")
    console.print(f"MLflow UI: {stack.VENV_BIN}/mlflow ui --backend-store-uri {settings.tracking_uri}")
    console.print(f"Predictions: {settings.lake_uri}/predictions/ds=YYYY-MM-DD/ (pandas, DuckDB or Spark)")
    console.print("Stop the servers with: [bold]make stop[/]")
    return 0


def wait_runs(home: Path, dag_id: str, run_ids: list[str], console, label: str, timeout: float = 900) -> str:
    from rich.status import Status

    deadline = time.time() + timeout
    with Status(f"waiting for {label}", console=console):
        while time.time() < deadline:
            states = stack.run_states(home, dag_id)
            done = [states.get(r) for r in run_ids]
            if all(s in ("success", "failed") for s in done):
                return "failed" if "failed" in done else "success"
            time.sleep(2)
    return "timeout"


def wait_backfill(home: Path, nights: int, console, timeout: float = 1500) -> str:
    """Follow the backfill: nights closed, what runs now (night and task), and each retrain as it starts and ends."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    seen_retrains: set[tuple[str, str]] = set()
    closed: set[str] = set()
    deadline = time.time() + timeout
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console) as bar:
        task = bar.add_task("nights closed", total=nights)
        while time.time() < deadline:
            runs = stack.query(home, "SELECT run_id, state, logical_date FROM dag_run WHERE dag_id='nightly_scoring' "
                                     "AND run_type='backfill'")
            for run_id, state, logical in runs:
                if state == "success" and run_id not in closed:
                    closed.add(run_id)
                    bar.console.print(f"   night {str(logical)[:10]} closed")
            running = stack.query(home, "SELECT r.logical_date, t.task_id FROM task_instance t JOIN dag_run r "
                                        "ON t.dag_id = r.dag_id AND t.run_id = r.run_id WHERE t.dag_id='nightly_scoring' "
                                        "AND t.state IN ('running', 'deferred') ORDER BY r.logical_date")
            now = ", ".join(f"{str(d)[:10]} {t}" for d, t in running[:3]) or "waiting for the scheduler"
            bar.update(task, completed=len(closed), description=f"nights closed  [dim](now: {now})[/]")
            for run_id, state in stack.run_states(home, "retrain").items():
                if run_id.startswith("nightly__") and (run_id, state) not in seen_retrains and state in ("running", "success", "failed"):
                    seen_retrains.add((run_id, state))
                    verb = "started" if state == "running" else f"finished: {state}"
                    bar.console.print(f"   retrain for {run_id.removeprefix('nightly__')} {verb}")
            if any(state == "failed" for _, state, _ in runs):
                return "failed"
            if len(runs) >= nights and len(closed) == len(runs):
                return "success"
            time.sleep(2)
    return "timeout"


def fail(home: Path, dag_id: str, run_id: str, console) -> int:
    rows = stack.query(home, "SELECT task_id, state FROM task_instance WHERE dag_id=? AND run_id=? AND state IN ('failed','upstream_failed')",
                       (dag_id, run_id))
    console.print(f"[red]{dag_id} run {run_id} did not succeed[/]; failed tasks: {rows}")
    console.print(f"Task logs: {home / 'airflow' / 'logs'}  (the web UI shows them per task). Stop with: make stop")
    return 1


if __name__ == "__main__":
    sys.exit(main())
