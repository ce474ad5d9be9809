"""docker-compose.yaml's topology, natively, on this machine's PostgreSQL and Redis.

CeleryExecutor (Redis broker, Postgres result backend), Postgres metadata DB, scheduler,
dag-processor, triggerer, api-server, a `default` and a `gpu` Celery worker, and an MLflow
tracking server (Postgres backend store, served artifacts) that the tasks use over HTTP.
A drifting world is backfilled through the REST API; the drift starts a retrain, whose
training must run on the gpu worker. See scripts/celery_stack.py.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "scripts"))

import celery_stack  # noqa: E402

pytestmark = pytest.mark.integration
NIGHTS = 5


@pytest.fixture
def topology(tmp_path):
    try:
        celery_stack.check_services()
    except celery_stack.Unreachable as exc:
        pytest.skip(f"the Celery topology needs PostgreSQL and Redis: {exc}")
    topo = celery_stack.Topology(tmp_path / "home")
    topo.up(celery_stack.FAST)  # tears itself down if it fails to come up
    try:
        yield topo
    finally:
        topo.down()
        assert not (topo.home / "airflow" / "pids.json").exists()
        leftover = _databases_named(topo.name)
        assert not leftover, f"databases left behind: {leftover}"


@pytest.mark.timeout(900)
def test_celery_topology_backfills_through_the_rest_api_and_trains_on_the_gpu_worker(topology):
    topo = topology
    try:
        result = celery_stack.run_world(topo, nights=NIGHTS)
    except Exception:
        print(celery_stack.logs_tail(topo))
        raise
    print(f"\nCelery topology: bootstrap {result['bootstrap_s']} s; {NIGHTS}-night backfill {result['backfill_s']} s; "
          f"median queued->running {result['queued_to_running_median_s']} s over {result['queued_to_running_n']} tasks")

    failed = celery_stack.failures(topo)
    assert len(result["nightly"]) == NIGHTS, result
    assert all(s == "success" for s in result["nightly"].values()), (result, failed)
    assert all(s == "success" for s in result["retrain"].values()), (result, failed)
    by_nightly = [r for r in result["retrain"] if r.startswith("nightly__")]
    assert len(by_nightly) == 1, f"the drift should start exactly one retrain: {result['retrain']}"

    # which worker ran what: task instances carry the worker's hostname and queue
    tis = topo.task_instances()
    train = [t for t in tis if t["task_id"] == "train_challenger"]
    score = [t for t in tis if t["dag_id"] == "nightly_scoring" and t["task_id"] == "score"]
    assert len(train) == 2 and len(score) == NIGHTS, (len(train), len(score))
    assert {(t["hostname"], t["queue"]) for t in train} == {("worker-gpu", "gpu")}, train
    assert {(t["hostname"], t["queue"]) for t in score} == {("worker-default", "default")}, score
    ran = {t["hostname"] for t in tis if t["start_date"] and t["hostname"]}
    assert ran <= {"worker-default", "worker-gpu"} | {celery_stack.socket.getfqdn()}, ran

    # the lake holds every night's predictions
    from nightshift.dates import add_days
    from nightshift.lake import PREDICTIONS, Lake

    lake = Lake(topo.lake_uri)
    nights = {add_days(result["first"], i) for i in range(NIGHTS)}
    assert nights <= set(lake.partitions(PREDICTIONS)), lake.partitions(PREDICTIONS)

    # MLflow, over HTTP: both versions registered, a champion, artifacts served by the server
    from mlflow import MlflowClient

    from nightshift.settings import load_settings

    name = load_settings(env={"NIGHTSHIFT_HOME": str(topo.home)}).model.name
    client = MlflowClient(tracking_uri=topo.tracking_uri, registry_uri=topo.tracking_uri)
    versions = client.search_model_versions(f"name = '{name}'")
    assert len(versions) == 2, [(v.version, v.source) for v in versions]
    assert all(v.source.startswith("mlflow-artifacts:") for v in versions), [v.source for v in versions]
    champion = client.get_model_version_by_alias(name, "champion")
    assert champion.version in {v.version for v in versions}
    assert list((topo.home / "mlartifacts").rglob("bundle.json")), "no bundle in the served artifact store"


def _databases_named(prefix: str) -> list[str]:
    import psycopg2

    con = psycopg2.connect(f"{celery_stack.PG}/postgres", connect_timeout=3)
    try:
        with con.cursor() as cur:
            cur.execute("SELECT datname FROM pg_database WHERE datname LIKE %s", (prefix + "%",))
            return [r[0] for r in cur.fetchall()]
    finally:
        con.close()
