"""Run a real local Airflow 3 (scheduler, dag-processor, triggerer, api-server) for Nightshift.

Used by `make demo`, `make airflow` and the integration tests. Everything lives under
`$NIGHTSHIFT_HOME/airflow`: the SQLite metadata DB, logs, and the pids of the processes
started in the background, so `python scripts/airflow_stack.py stop` can end them.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
COMPONENTS = ("scheduler", "dag-processor", "triggerer", "api-server")


def free_port(preferred: int = 8080) -> int:
    """A free port for the api-server: `preferred` (8080) first, then 8081-8099. Under pytest-xdist each
    worker tries them in its own random order, so two workers starting stacks at once rarely race for one."""
    ports = [preferred, *range(8081, 8100)]
    if os.environ.get("PYTEST_XDIST_WORKER"):
        random.Random(f"{os.getpid()}-{time.time_ns()}").shuffle(ports)  # noqa: S311 - spreads ports, not a secret
    for port in ports:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
                return port
            except OSError:
                continue
    raise RuntimeError("no free port between 8080 and 8099 for the Airflow api-server")


def airflow_env(home: Path, port: int | None = None, extra: dict[str, str] | None = None,
                replay: bool = True) -> dict[str, str]:
    """The environment every Airflow process and every task of this stack runs with.

    `replay`: the scheduler creates no wall-clock runs (`use_job_schedule=False`); backfills and
    triggered runs still execute. The demo's world lives in its own dates, so "tonight" by the
    wall clock has no data; a real deployment runs with replay=False.
    """
    airflow_home = home / "airflow"
    port = port or int(_read(airflow_home / "port") or 8080)
    db_url = _read(airflow_home / "db_url") or sqlite_url(home)
    env = dict(os.environ)
    env.update({
        "PATH": f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}",  # standalone and the executor spawn `airflow` by name
        "NIGHTSHIFT_HOME": str(home),
        # Tasks import this checkout's packages, whichever checkout the venv was installed from.
        "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p),
        "AIRFLOW_HOME": str(airflow_home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": db_url,
        # LocalExecutor whose workers import torch, pyarrow, mlflow and alibi-detect once, so each task
        # (forked from a worker) does not import them again: see airflow_integration/executor.py
        "AIRFLOW__CORE__EXECUTOR": "airflow_integration.executor.PreloadingLocalExecutor",
        # Three task slots on two cores: a task spends much of its life in Airflow's start-up and API calls,
        # so a third slot keeps the cores busy (a quiet night 7.0-7.6 s instead of 8.3-8.5 s; one more worker, ~1 GB)
        "AIRFLOW__CORE__PARALLELISM": env.get("AIRFLOW__CORE__PARALLELISM", "3"),
        # How long an idle scheduler loop sleeps (Airflow's default 1 s): each step of a night waits on average
        # about half of it before the scheduler sees its upstream done. 0.3 s cut a quiet night by a third;
        # 0.15 s gained nothing more (benchmarks/airflow_night.py, docs/benchmarks.md).
        "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": env.get("AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME", "0.3"),
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}",
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
        "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": str(not replay),
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "30",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
        "PYTHONWARNINGS": "ignore",
        # one thread per task: with several tasks on 2 cores, torch's threads fight and a fit runs 10x slower
        "OMP_NUM_THREADS": env.get("OMP_NUM_THREADS", "1"),
        "NO_COLOR": "1",
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",  # one bar per downloaded file is noise in task logs
        # MLflow's own handler writes its INFO lines to stderr, which a task log shows as ERROR; without it
        # they go through Python logging, at their real level
        "MLFLOW_CONFIGURE_LOGGING": "false",
    })
    env.update(_log_ports(airflow_home, env))
    saved = airflow_home / "extra_env.json"
    env.update(json.loads(saved.read_text()) if saved.exists() else {})
    env.update(extra or {})
    return env


def _log_ports(airflow_home: Path, env: dict) -> dict[str, str]:
    """The scheduler's and the triggerer's log servers, on free ports chosen once per stack (kept in
    `log_ports.json`, so every process of the stack and every later call agree). Airflow's fixed defaults
    (8793, 8794) would make two stacks on one machine (the test suite runs several at once) fight for them."""
    keys = ("AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT", "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT")
    if all(k in env for k in keys):
        return {}
    kept = airflow_home / "log_ports.json"
    if kept.exists():
        return json.loads(kept.read_text())
    ports = {k: env.get(k) or str(_os_port()) for k in keys}
    airflow_home.mkdir(parents=True, exist_ok=True)
    kept.write_text(json.dumps(ports))
    return ports


def _os_port() -> int:
    """A port the OS says is free now (bound to 0)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sqlite_url(home: Path) -> str:
    # a scheduler, a dag-processor, an api-server and CLI calls all write: wait for locks, don't fail
    return f"sqlite:///{home / 'airflow' / 'airflow.db'}?timeout=60"


def run_cli(home: Path, *args: str, check: bool = True, capture: bool = True) -> subprocess.CompletedProcess:
    """Run an `airflow ...` command against this stack."""
    proc = subprocess.run([str(VENV_BIN / "airflow"), *args], env=airflow_env(home), text=True,  # noqa: S603 - the venv's airflow, argv from this script
                          capture_output=capture, timeout=300)
    if check and proc.returncode != 0:
        raise RuntimeError(f"`airflow {' '.join(args)}` failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def start(home: Path, port: int | None = None, extra_env: dict[str, str] | None = None,
          db_url: str | None = None, components: tuple[str, ...] = COMPONENTS) -> int:
    """Migrate the DB and start every component in the background; returns the api-server port.

    `db_url`: the metadata DB (default: SQLite under the home). It is remembered in the home,
    so later CLI calls and queries use the same one. `components`: which processes to start
    (the UI tests need only the api-server).
    """
    airflow_home = home / "airflow"
    (airflow_home / "logs").mkdir(parents=True, exist_ok=True)
    if db_url:
        (airflow_home / "db_url").write_text(db_url)
    (airflow_home / "extra_env.json").write_text(json.dumps(extra_env or {}))
    if _running(home):
        stop(home)
    port = port or free_port()
    (airflow_home / "port").write_text(str(port))
    env = airflow_env(home, port, extra_env)
    subprocess.run([str(VENV_BIN / "airflow"), "db", "migrate"], env=env, check=True, capture_output=True, timeout=600)  # noqa: S603 - the venv's airflow, fixed argv
    _spawn(home, components, env)
    wait_http(port)
    return port


def _spawn(home: Path, names, env: dict[str, str]) -> None:
    airflow_home = home / "airflow"
    pid_file = airflow_home / "pids.json"
    pids = json.loads(pid_file.read_text()) if pid_file.exists() else {}
    for name in names:
        log = open(airflow_home / "logs" / f"{name}.log", "ab")
        proc = subprocess.Popen([str(VENV_BIN / "airflow"), name], env=env, stdout=log, stderr=subprocess.STDOUT,  # noqa: S603 - the venv's airflow, fixed component names
                                start_new_session=True, cwd=str(REPO))
        pids[name] = proc.pid
    pid_file.write_text(json.dumps(pids))


@contextlib.contextmanager
def quiet_writers(home: Path):
    """Stop the scheduler, triggerer and dag-processor while the CLI writes to a SQLite metadata DB.

    SQLite takes one writer at a time, and a transaction that reads and then writes (as
    `airflow backfill create` does) fails at once with "database is locked" when another
    process wrote in between; no busy timeout helps. Only call this while no task runs:
    the LocalExecutor's tasks are the scheduler's children. On Postgres it does nothing.
    """
    if (_read(home / "airflow" / "db_url") or "sqlite").startswith("postgresql"):
        yield
        return
    writers = ("scheduler", "triggerer", "dag-processor")
    pids = json.loads((home / "airflow" / "pids.json").read_text())
    for name in writers:
        _signal_group(pids[name], signal.SIGTERM)
    deadline = time.time() + 30
    while time.time() < deadline and any(_alive(pids[n]) for n in writers):
        time.sleep(0.3)
    for name in writers:
        _signal_group(pids[name], signal.SIGKILL)
    try:
        yield
    finally:
        _spawn(home, writers, airflow_env(home))


def stop(home: Path) -> list[str]:
    """End every component this stack started (and their children)."""
    pid_file = home / "airflow" / "pids.json"
    if not pid_file.exists():
        return []
    pids = json.loads(pid_file.read_text())
    for pid in pids.values():
        _signal_group(pid, signal.SIGTERM)
    deadline = time.time() + 20
    while time.time() < deadline and any(_alive(p) for p in pids.values()):
        time.sleep(0.5)
    for pid in pids.values():
        _signal_group(pid, signal.SIGKILL)
    pid_file.unlink()
    return list(pids)


def wait_http(port: int, timeout: float = 180) -> None:
    import urllib.error
    import urllib.request

    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v2/monitor/health", timeout=2)
            return
        except (urllib.error.URLError, ConnectionError, OSError):
            time.sleep(1)
    raise TimeoutError(f"the Airflow api-server did not answer on port {port} within {timeout:.0f}s")


def wait_for_dags(home: Path, dag_ids: list[str], timeout: float = 240) -> None:
    """Block until the dag-processor has serialized every DAG in `dag_ids`."""
    deadline = time.time() + timeout
    missing = list(dag_ids)
    while time.time() < deadline:
        rows = query(home, "SELECT dag_id FROM serialized_dag")
        missing = [d for d in dag_ids if d not in {r[0] for r in rows}]
        if not missing:
            return
        time.sleep(2)
    errors = query(home, "SELECT filename, stacktrace FROM import_error")
    raise TimeoutError(f"DAGs {missing} were not parsed within {timeout:.0f}s; import errors: {errors}")


def query(home: Path, sql: str, params: tuple = ()) -> list[tuple]:
    """Read the metadata DB directly (SQLite or Postgres, `?` placeholders), without importing Airflow."""
    url = _read(home / "airflow" / "db_url")
    if url and url.startswith("postgresql"):
        import psycopg2

        con = psycopg2.connect(url.replace("postgresql+psycopg2://", "postgresql://"))
        try:
            with con.cursor() as cur:
                cur.execute(sql.replace("?", "%s"), params)
                return cur.fetchall()
        except psycopg2.Error:
            return []
        finally:
            con.close()
    import sqlite3

    db = home / "airflow" / "airflow.db"
    if not db.exists():
        return []
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        return con.execute(sql, params).fetchall()
    except sqlite3.OperationalError:
        return []
    finally:
        con.close()


def run_states(home: Path, dag_id: str) -> dict[str, str]:
    """run_id -> state for every run of a DAG."""
    return dict(query(home, "SELECT run_id, state FROM dag_run WHERE dag_id = ?", (dag_id,)))


def admin_password(home: Path) -> str | None:
    path = home / "airflow" / "simple_auth_manager_passwords.json.generated"
    if path.exists():
        return json.loads(path.read_text()).get("admin")
    return None


def _running(home: Path) -> bool:
    pid_file = home / "airflow" / "pids.json"
    return pid_file.exists() and any(_alive(p) for p in json.loads(pid_file.read_text()).values())


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except OSError:
        return False


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except OSError:
        pass


def _read(path: Path) -> str | None:
    return path.read_text().strip() if path.exists() else None


if __name__ == "__main__":
    home = Path(os.environ.get("NIGHTSHIFT_HOME", REPO / ".nightshift" / "demo"))
    cmd = sys.argv[1] if len(sys.argv) > 1 else "status"
    if cmd == "stop":
        stopped = stop(home)
        print(f"stopped {', '.join(stopped)}" if stopped else f"no Nightshift Airflow was running for {home}")
    elif cmd == "start":
        p = start(home)
        print(f"Airflow is up: http://127.0.0.1:{p} (user admin, password {admin_password(home)})")
    else:
        print("running" if _running(home) else "not running")
