"""docker-compose.yaml's topology, natively: Airflow on the CeleryExecutor with this machine's Redis and Postgres.

- scheduler, dag-processor, triggerer and api-server (started by `airflow_stack.start`);
- two Celery workers: queue `default`, and queue `gpu` with concurrency 1. Each reports its own
  hostname (`worker-default`, `worker-gpu`) through `[core] hostname_callable`, so task
  instances show which worker ran them;
- an MLflow tracking server on a Postgres backend store with a served artifact store, which
  the tasks use over HTTP;
- the Airflow metadata DB and the Celery result backend on Postgres, the broker on Redis.

Each topology has its own databases (`<name>_airflow`, `<name>_mlflow`) and its own Redis key
prefix, so it shares the servers with other stacks; `down()` stops every process it started
and drops and deletes all of them. `executor="local"` runs the same thing on the
LocalExecutor instead of the workers, for comparison.

Everything is driven through Airflow's public REST API (`Api`): a JWT from `/auth/token`,
then `/api/v2/...`. Used by tests/integration/test_topology.py and benchmarks/topology.py.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import airflow_stack as stack  # noqa: E402

REPO = stack.REPO
VENV_BIN = stack.VENV_BIN
PG = os.environ.get("NIGHTSHIFT_TOPOLOGY_PG", "postgresql://postgres@127.0.0.1:5432")
REDIS = os.environ.get("NIGHTSHIFT_TOPOLOGY_REDIS", "redis://127.0.0.1:6379/0")
# worker name -> (queue, concurrency): the compose file's airflow-worker and airflow-worker-gpu
WORKERS = {"worker-default": ("default", 2), "worker-gpu": ("gpu", 1)}
# A short world: a drift retrain waits for 1,000 labelled rows since the onset, not the default 15,000.
FAST = {"NIGHTSHIFT__TRAINING__EPOCHS": "4", "NIGHTSHIFT__GATE__N_BOOT": "300", "NIGHTSHIFT__POLICY__ONSET_MIN_LABELS": "1000"}


class Unreachable(RuntimeError):
    """Postgres or Redis does not answer: the topology cannot run here."""


def worker_hostname() -> str:
    """`[core] hostname_callable` for this stack: the worker's name from NIGHTSHIFT_WORKER_NAME, else the FQDN.

    Both workers run on one machine, so the default (the FQDN) would not tell them apart.
    """
    return os.environ.get("NIGHTSHIFT_WORKER_NAME") or socket.getfqdn()


def check_services(pg: str = PG, redis_url: str = REDIS) -> None:
    import psycopg2
    import redis

    try:
        psycopg2.connect(f"{pg}/postgres", connect_timeout=3).close()
    except Exception as exc:  # noqa: BLE001 - any failure means "not here"
        raise Unreachable(f"PostgreSQL at {pg} is unreachable: {exc}".strip()) from None
    try:
        redis.Redis.from_url(redis_url, socket_connect_timeout=3).ping()
    except Exception as exc:  # noqa: BLE001
        raise Unreachable(f"Redis at {redis_url} is unreachable: {exc}") from None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Topology:
    home: Path
    executor: str = "celery"  # or "local": the same stack on the LocalExecutor, without workers
    name: str = field(default_factory=lambda: f"nightshift_topo_{os.getpid()}_{secrets.token_hex(3)}")
    pg: str = PG
    redis_url: str = REDIS
    port: int = 0
    mlflow_port: int = 0
    password: str = field(default_factory=lambda: secrets.token_urlsafe(12))
    _api: "Api | None" = None

    # SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3, which is not installed: name the driver
    @property
    def airflow_db(self) -> str:
        return f"{self.pg.replace('postgresql://', 'postgresql+psycopg2://')}/{self.name}_airflow"

    @property
    def mlflow_db(self) -> str:
        return f"{self.pg.replace('postgresql://', 'postgresql+psycopg2://')}/{self.name}_mlflow"

    @property
    def tracking_uri(self) -> str:
        return f"http://127.0.0.1:{self.mlflow_port}"

    @property
    def lake_uri(self) -> str:
        return (self.home / "lake").resolve().as_uri()  # a URI, as in a deployment (s3://..., gs://...)

    def env(self) -> dict[str, str]:
        """What every Airflow process and task of this topology runs with, beyond airflow_stack's env."""
        from cryptography.fernet import Fernet

        airflow_home = self.home / "airflow"
        env = {
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor" if self.executor == "celery" else "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": "3",
            "AIRFLOW__CELERY__BROKER_URL": self.redis_url,
            "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + self.airflow_db,
            # Airflow's Celery config plus the task supervisor's exit fix (see airflow_integration/celery_config.py)
            "AIRFLOW__CELERY__CELERY_CONFIG_OPTIONS": os.environ.get("AIRFLOW__CELERY__CELERY_CONFIG_OPTIONS",
                                                                     "airflow_integration.celery_config.CELERY_CONFIG"),
            # the Redis server is shared: a key prefix keeps this topology's queues its own
            "AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__GLOBAL_KEYPREFIX": f"{self.name}:",
            "AIRFLOW__CORE__FERNET_KEY": Fernet.generate_key().decode(),
            # one secret for every component, or the workers' tasks fail the api-server's signature check
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
            "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(32),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(airflow_home / "passwords.json"),
            "AIRFLOW__CORE__HOSTNAME_CALLABLE": "celery_stack.worker_hostname",
            "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), str(REPO / "scripts"), os.environ.get("PYTHONPATH", "")) if p),
            # log servers on free ports: several stacks may share this machine
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
            "MLFLOW_TRACKING_URI": self.tracking_uri,
            "NIGHTSHIFT__PATHS__MLFLOW_ARTIFACT_ROOT": "mlflow-artifacts:///nightshift",  # through the server
            "NIGHTSHIFT_LAKE": self.lake_uri,
            # MLflow's telemetry thread sets and unsets a variable in os.environ while requests iterates
            # os.environ for proxies: over HTTP, a training task then dies with KeyError('_MLFLOW_TELEMETRY_SESSION_ID')
            "MLFLOW_DISABLE_TELEMETRY": "true",
        }
        return env

    # -- lifecycle ---------------------------------------------------------------------------
    def up(self, extra_env: dict[str, str] | None = None) -> "Topology":
        """Create the databases, start Airflow, MLflow and the workers; on any failure, tear down."""
        check_services(self.pg, self.redis_url)
        airflow_home = self.home / "airflow"
        (airflow_home / "logs").mkdir(parents=True, exist_ok=True)
        self._create_databases()
        try:
            self.mlflow_port = free_port()
            env = {**self.env(), **(extra_env or {})}
            (airflow_home / "passwords.json").write_text(json.dumps({"admin": self.password}))
            self.port = stack.start(self.home, extra_env=env, db_url=self.airflow_db)
            full_env = stack.airflow_env(self.home)
            self._spawn("mlflow", [str(VENV_BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(self.mlflow_port),
                                   "--workers", "1", "--serve-artifacts", "--artifacts-destination", str(self.home / "mlartifacts"),
                                   "--default-artifact-root", "mlflow-artifacts:/",
                                   "--allowed-hosts", f"127.0.0.1:{self.mlflow_port},localhost:{self.mlflow_port}"],
                        {**full_env, "MLFLOW_BACKEND_STORE_URI": self.mlflow_db})
            if self.executor == "celery":
                for worker, (queue, concurrency) in WORKERS.items():
                    self._spawn(worker, [str(VENV_BIN / "airflow"), "celery", "worker", "--queues", queue,
                                         "--concurrency", str(concurrency), "--celery-hostname", f"{worker}@%h"],
                                {**full_env, "NIGHTSHIFT_WORKER_NAME": worker,
                                 "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port())})
            self._wait_http(f"{self.tracking_uri}/health", "MLflow", 120)
            if self.executor == "celery":
                for worker in WORKERS:
                    self._wait_log(worker, " ready.", 180)
        except BaseException:
            self.down()
            raise
        return self

    def down(self) -> None:
        """Stop every process this topology started, drop its databases, delete its Redis keys."""
        try:
            stack.stop(self.home)
        finally:
            self._drop_databases()
            self._delete_redis_keys()

    def __enter__(self) -> "Topology":
        return self

    def __exit__(self, *exc) -> None:
        self.down()

    # -- REST --------------------------------------------------------------------------------
    def api(self) -> "Api":
        if self._api is None:
            self._api = Api(f"http://127.0.0.1:{self.port}", "admin", self.password)
        return self._api

    # -- metadata ----------------------------------------------------------------------------
    def task_instances(self) -> list[dict]:
        cols = ["dag_id", "run_id", "task_id", "state", "hostname", "queue", "scheduled_dttm", "queued_dttm", "start_date",
                "end_date"]
        rows = stack.query(self.home, f"SELECT {', '.join(cols)} FROM task_instance")  # noqa: S608 - fixed column names, no outside input
        return [dict(zip(cols, r)) for r in rows]

    def queued_to_running(self) -> list[float]:
        """Seconds from queued to running for every task instance that went through an executor."""
        return self._gaps("queued_dttm", "start_date")

    def _gaps(self, since: str, until: str) -> list[float]:
        return [(t[until] - t[since]).total_seconds() for t in self.task_instances()
                if t[since] and t[until] and t[until] >= t[since]]

    # -- internals ---------------------------------------------------------------------------
    def _spawn(self, name: str, argv: list[str], env: dict[str, str]) -> None:
        airflow_home = self.home / "airflow"
        log = open(airflow_home / "logs" / f"{name}.log", "ab")
        proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=str(REPO))  # noqa: S603 - argv built by this script from fixed parts
        pid_file = airflow_home / "pids.json"  # shared with airflow_stack, so stack.stop() ends these too
        pids = json.loads(pid_file.read_text()) if pid_file.exists() else {}
        pids[name] = proc.pid
        pid_file.write_text(json.dumps(pids))

    def _wait_log(self, name: str, needle: str, timeout: float) -> None:
        path = self.home / "airflow" / "logs" / f"{name}.log"
        deadline = time.time() + timeout
        while time.time() < deadline:
            if path.exists() and needle in path.read_text(errors="replace"):
                return
            time.sleep(1)
        raise TimeoutError(f"{name} did not log {needle!r} within {timeout:.0f}s:\n{path.read_text()[-3000:] if path.exists() else ''}")

    @staticmethod
    def _wait_http(url: str, what: str, timeout: float) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                urllib.request.urlopen(url, timeout=2)  # noqa: S310 - http URL of the stack this script started
                return
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(1)
        raise TimeoutError(f"{what} did not answer at {url} within {timeout:.0f}s")

    def _admin(self):
        import psycopg2

        con = psycopg2.connect(f"{self.pg}/postgres", connect_timeout=5)
        con.autocommit = True
        return con

    def _create_databases(self) -> None:
        con = self._admin()
        try:
            with con.cursor() as cur:
                for suffix in ("airflow", "mlflow"):
                    cur.execute(f'CREATE DATABASE "{self.name}_{suffix}"')
        finally:
            con.close()

    def _drop_databases(self) -> None:
        try:
            con = self._admin()
        except Exception:  # noqa: BLE001 - nothing to drop on a server that is gone
            return
        try:
            with con.cursor() as cur:
                for suffix in ("airflow", "mlflow"):
                    db = f"{self.name}_{suffix}"
                    cur.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (db,))
                    cur.execute(f'DROP DATABASE IF EXISTS "{db}"')
        finally:
            con.close()

    def _delete_redis_keys(self) -> None:
        import redis

        try:
            r = redis.Redis.from_url(self.redis_url, socket_connect_timeout=3)
            keys = list(r.scan_iter(match=f"{self.name}:*", count=500))
            if keys:
                r.delete(*keys)
        except Exception:  # noqa: BLE001, S110 - cleanup of a stack that may already be gone
            pass


class Api:
    """Airflow 3's public REST API, authenticated with a JWT from the simple auth manager's /auth/token."""

    def __init__(self, base: str, username: str, password: str):
        self.base = base.rstrip("/")
        _, body = self._request("POST", "/auth/token", {"username": username, "password": password}, token=None)
        self.token = body["access_token"]

    def __call__(self, method: str, path: str, body: dict | None = None, ok=(200, 201, 204)) -> dict:
        status, data = self._request(method, path, body, self.token)
        if status not in ok:
            raise RuntimeError(f"{method} {path} -> {status}: {data}")
        return data

    def _request(self, method: str, path: str, body: dict | None, token: str | None) -> tuple[int, dict]:
        req = urllib.request.Request(self.base + path, method=method,  # noqa: S310 - the local API's http base URL
                                     data=None if body is None else json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json", "Accept": "application/json",
                                              **({"Authorization": f"Bearer {token}"} if token else {})})
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:  # noqa: S310 - the request built above, http only
                raw = resp.read()
                return resp.status, json.loads(raw) if raw else {}
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            try:
                return exc.code, json.loads(raw)
            except ValueError:
                return exc.code, {"detail": raw.decode(errors="replace")}

    def set_pool(self, name: str, slots: int, description: str = "") -> None:
        status, _ = self._request("POST", "/api/v2/pools", {"name": name, "slots": slots, "description": description},
                                  self.token)
        if status == 409:  # exists: set its slots
            self("PATCH", f"/api/v2/pools/{name}", {"name": name, "slots": slots})
        elif status not in (200, 201):
            raise RuntimeError(f"creating pool {name} failed: {status}")

    def unpause(self, dag_id: str) -> None:
        self("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": False})

    def trigger(self, dag_id: str, run_id: str, conf: dict) -> dict:
        # logical_date None: the run has no logical date of its own (the retrain's day is its `ds` conf)
        return self("POST", f"/api/v2/dags/{dag_id}/dagRuns", {"dag_run_id": run_id, "logical_date": None, "conf": conf})

    def backfill(self, dag_id: str, from_date: str, to_date: str, max_active_runs: int = 3,
                 reprocess_behavior: str = "failed") -> dict:
        # dates are the logical dates of the first and last runs; `reprocess_behavior` is required in
        # practice for DAGs with depends_on_past tasks, and backfills run only on unpaused DAGs
        return self("POST", "/api/v2/backfills", {
            "dag_id": dag_id, "from_date": f"{from_date}T00:00:00Z", "to_date": f"{to_date}T00:00:00Z",
            "max_active_runs": max_active_runs, "reprocess_behavior": reprocess_behavior, "run_backwards": False})

    def runs(self, dag_id: str) -> dict[str, str]:
        """run_id -> state for every run of a DAG."""
        data = self("GET", f"/api/v2/dags/{dag_id}/dagRuns?limit=100")
        return {r["dag_run_id"]: r["state"] for r in data["dag_runs"]}

    def wait_runs(self, dag_id: str, done, timeout: float, poll: float = 3) -> dict[str, str]:
        deadline = time.time() + timeout
        runs: dict[str, str] = {}
        while time.time() < deadline:
            runs = self.runs(dag_id)
            if done(runs):
                return runs
            time.sleep(poll)
        raise TimeoutError(f"{dag_id} runs not done within {timeout:.0f}s: {runs}")


def simulate(home: Path, lake_uri: str, start: str, days: int, onset: int, scenario: str, rows: int = 1500) -> None:
    """Land a simulated world through the `nightshift` command (python -m cli.main if it is not installed)."""
    exe = VENV_BIN / "nightshift"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "cli.main"]
    env = {**os.environ, "NIGHTSHIFT_HOME": str(home), "NIGHTSHIFT_LAKE": lake_uri}
    subprocess.run([*cmd, "-q", "simulate", "--start", start, "--days", str(days), "--rows-per-day", str(rows),  # noqa: S603 - the nightshift CLI, fixed argv
                    "--scenario", scenario, "--onset", str(onset), "--seed", "3"],
                   env=env, check=True, capture_output=True, timeout=180, cwd=str(REPO))


def run_world(topo: Topology, start: str = "2026-03-01", history: int = 12, nights: int = 5, onset_night: int = 1,
              timeout: float = 420) -> dict:
    """Simulate a world with a sudden covariate drift, bootstrap a champion through `retrain`, then
    backfill `nightly_scoring` over `nights` nights through the REST API; the drift makes the
    nightly policy start `retrain`. Returns what happened and how long it took."""
    from nightshift.dates import add_days

    first, last = add_days(start, history), add_days(start, history + nights - 1)
    simulate(topo.home, topo.lake_uri, start, history + nights, history + onset_night, "sudden-covariate")
    stack.wait_for_dags(topo.home, ["nightly_scoring", "retrain"])
    api = topo.api()
    api.set_pool("gpu", 1, "GPU slots for training tasks")
    for dag_id in ("retrain", "nightly_scoring"):
        api.unpause(dag_id)

    t0 = time.perf_counter()
    api.trigger("retrain", "bootstrap", {"ds": add_days(first, -1), "trigger": "bootstrap", "init_from": "scratch"})
    api.wait_runs("retrain", lambda r: r.get("bootstrap") in ("success", "failed"), timeout)
    bootstrap_s = time.perf_counter() - t0

    t1 = time.perf_counter()
    backfill = api.backfill("nightly_scoring", first, last)
    nightly = api.wait_runs("nightly_scoring",
                            lambda r: len(r) >= nights and all(s in ("success", "failed") for s in r.values()), timeout)
    retrains = api.wait_runs("retrain", lambda r: all(s in ("success", "failed") for s in r.values()), 60)
    backfill_s = time.perf_counter() - t1

    waits = topo.queued_to_running()
    median = lambda xs: round(statistics.median(xs), 3) if xs else None  # noqa: E731
    return {
        "executor": topo.executor, "first": first, "last": last, "backfill_id": backfill.get("id"),
        "nightly": nightly, "retrain": retrains, "bootstrap_s": round(bootstrap_s, 1),
        "backfill_s": round(backfill_s, 1), "queued_to_running_median_s": median(waits),
        "queued_to_running_n": len(waits),
        # where the rest of the time goes: the scheduler's part, and the tasks themselves
        "scheduled_to_queued_median_s": median(topo._gaps("scheduled_dttm", "queued_dttm")),
        "task_duration_median_s": median(topo._gaps("start_date", "end_date")),
    }


def failures(topo: Topology) -> list[dict]:
    return [t for t in topo.task_instances() if t["state"] in ("failed", "upstream_failed", "up_for_retry")]


def logs_tail(topo: Topology, chars: int = 2500) -> str:
    """The end of every component's log, for a failure message."""
    out = []
    for path in sorted((topo.home / "airflow" / "logs").glob("*.log")):
        out.append(f"--- {path.name}\n{path.read_text(errors='replace')[-chars:]}")
    return "\n".join(out)


if __name__ == "__main__":
    import tempfile

    home = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="nightshift-topology-"))
    topo = Topology(home)
    topo.up(FAST)
    try:
        result = run_world(topo)
        print(json.dumps(result, indent=2, default=str))
    finally:
        topo.down()
    print(f"done at {datetime.now():%H:%M:%S}; home {home}")
