"""The preloading LocalExecutor: which modules its workers import, and that a bad one never stops a worker."""

from __future__ import annotations

import sys

import pytest

from airflow_integration.executor import DEFAULT_PRELOAD, PRELOAD_ENV, preload, preload_modules

CASES = [
    ("unset: the default list", None, list(DEFAULT_PRELOAD)),
    ("empty: preloading off", "", []),
    ("a list, spaces ignored", " torch, pyarrow.dataset ,,mlflow ", ["torch", "pyarrow.dataset", "mlflow"]),
]


@pytest.mark.parametrize("name,raw,expected", CASES, ids=[c[0] for c in CASES])
def test_preload_modules_from_the_environment(monkeypatch, name, raw, expected):
    if raw is None:
        monkeypatch.delenv(PRELOAD_ENV, raising=False)
    else:
        monkeypatch.setenv(PRELOAD_ENV, raw)
    assert preload_modules() == expected


def test_a_module_that_cannot_be_imported_is_logged_and_skipped(caplog):
    took = preload(["json", "no_such_module_nightshift", "colorsys"])
    assert set(took) == {"json", "colorsys"} and "colorsys" in sys.modules
    assert "cannot import no_such_module_nightshift" in caplog.text


def test_the_default_list_imports_and_covers_every_heavy_library():
    """Every module named is real (a typo would silently cost a task its imports again)."""
    took = preload(list(DEFAULT_PRELOAD))
    assert set(took) == set(DEFAULT_PRELOAD)
    assert {"torch", "mlflow", "alibi_detect.cd", "pyarrow.dataset", "sklearn.metrics"} <= set(took)


def test_the_embedded_stack_uses_it(tmp_path):
    sys.path.insert(0, "scripts")
    import airflow_stack

    env = airflow_stack.airflow_env(tmp_path, 8080)
    assert env["AIRFLOW__CORE__EXECUTOR"] == "airflow_integration.executor.PreloadingLocalExecutor"


CELERY_CONFIG = "airflow_integration.celery_config.CELERY_CONFIG"


def test_the_celery_workers_load_the_fix(tmp_path):
    """docker-compose.yaml and the native topology both point the Celery workers at it."""
    from pathlib import Path

    import yaml

    sys.path.insert(0, "scripts")
    import celery_stack

    compose = yaml.safe_load((Path(__file__).resolve().parents[2] / "docker-compose.yaml").read_text())
    assert compose["x-airflow-env"]["AIRFLOW__CELERY__CELERY_CONFIG_OPTIONS"] == CELERY_CONFIG
    env = celery_stack.Topology(tmp_path / "home").env()
    assert env["AIRFLOW__CELERY__CELERY_CONFIG_OPTIONS"] == CELERY_CONFIG


SUPERVISE = """
import os, sys, time, uuid
import structlog
from airflow.sdk.execution_time.supervisor import WatchedSubprocess
if sys.argv[1] == "patched":
    from airflow_integration.executor import patch_supervisor_exit_wait
    assert patch_supervisor_exit_wait() and patch_supervisor_exit_wait()  # idempotent
elif sys.argv[1] == "celery":  # as a Celery worker loads its configuration, from [celery] celery_config_options
    from airflow.configuration import conf
    assert conf.getimport("celery", "celery_config_options")["task_default_queue"]

class Quiet(WatchedSubprocess):
    def _handle_request(self, msg, log, req_id):
        pass

def task():
    os.closerange(0, 1024)  # every socket to the supervisor closed ...
    time.sleep(0.5)  # ... a while before the process is gone, as a finishing task does for a moment

p = Quiet.start(target=task, id=uuid.uuid4(), logger=structlog.get_logger())
t = time.monotonic()
while p._exit_code is None or p._open_sockets:  # Airflow's supervisor loop, less its heartbeats
    p._service_subprocess(max_wait_time=5.0)
print(f"{time.monotonic() - t:.3f} {p._exit_code}")
"""


@pytest.mark.parametrize("mode", ["plain", "patched", "celery"])
def test_a_supervisor_notices_its_task_exit_once_the_sockets_close(mode):
    """Airflow's own supervisor, a real forked task: unpatched it sleeps out the interval; patched it does not.

    `celery`: the patch arrives as a Celery worker gets it, by loading the configuration that
    docker-compose.yaml and the native topology name.
    """
    import os
    import subprocess

    env = {**os.environ, "AIRFLOW__CELERY__CELERY_CONFIG_OPTIONS": CELERY_CONFIG}
    out = subprocess.run([sys.executable, "-c", SUPERVISE, mode], capture_output=True, text=True, timeout=60, env=env,
                         cwd=str(__import__("pathlib").Path(__file__).resolve().parents[2]))
    assert out.returncode == 0, out.stderr[-2000:]
    seconds, code = out.stdout.splitlines()[-1].split()  # the last line: Airflow may log above it
    assert code == "0"
    if mode == "plain":  # the race this works around, as Airflow 3.3 has it (if this fails, Airflow fixed it)
        assert float(seconds) >= 4.5
    else:
        assert 0.5 <= float(seconds) < 2.0
