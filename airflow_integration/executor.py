"""A LocalExecutor whose workers import the heavy libraries once, so tasks do not each pay for them.

Airflow's LocalExecutor keeps `parallelism` long-lived worker processes and forks each task
from one of them (Linux). A task process therefore inherits every module its worker has
already imported. Stock workers have imported only Airflow, so every Nightshift task pays
again for what its step needs: pyarrow (about 1 s), torch and mlflow (about 2.5 s each),
alibi-detect (about 10 s). This executor's workers import them once, when they start, before
forking any task; a night then costs the work, not the imports.

Use it with `AIRFLOW__CORE__EXECUTOR=airflow_integration.executor.PreloadingLocalExecutor` (the
embedded stack does). `NIGHTSHIFT_PRELOAD` lists the modules (comma-separated; empty turns
preloading off). A module that cannot be imported is logged and skipped: a task that needs
it then fails on its own import, with its own error.

The import happens in the worker, never in the scheduler: the scheduler stays small and
starts fast, and nothing is imported in a thread (forking while another thread holds the
import lock would deadlock the child).

**A task's last five seconds.** The worker supervises each task it forks (Airflow's task
SDK supervisor) in a loop that waits on the task's sockets for at most
`[workers] min_heartbeat_interval` (5 s) and then asks whether the task process has exited.
A finishing task closes its sockets and then exits; when the supervisor sees the sockets close
before the exit, it has nothing left to wait on and sleeps the whole interval. Measured on
the embedded stack, 4 tasks in 10 held their worker slot 5 s after their work was done, and a
task that ends *skipped* (its state is sent only once the process is gone) reported its end
5 s late, holding up the next night. These workers cap that one wait, once every socket is
closed, at `EXIT_POLL_S` (`patch_supervisor_exit_wait`).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import time

from airflow.executors.local_executor import LocalExecutor, _run_worker

PRELOAD_ENV = "NIGHTSHIFT_PRELOAD"
DEFAULT_PRELOAD = (
    "numpy", "pyarrow.dataset", "pyarrow.parquet", "pyarrow.compute", "torch", "sklearn.metrics", "scipy.stats",
    "mlflow", "alibi_detect.cd", "nightshift.settings", "nightshift.lake", "nightshift.registry",
    "batch_scoring.contract", "batch_scoring.score", "monitoring.drift", "monitoring.ground_truth",
    "monitoring.policy", "model.bundle", "training.train", "training.evaluate", "training.retrain",
)
log = logging.getLogger("airflow_integration.executor")
EXIT_POLL_S = 0.02  # how often a supervisor polls for its task's exit once the task has closed every socket


def preload_modules() -> list[str]:
    """The modules a worker imports before it forks tasks, from `NIGHTSHIFT_PRELOAD` or the default."""
    raw = os.environ.get(PRELOAD_ENV)
    if raw is None:
        return list(DEFAULT_PRELOAD)
    return [m.strip() for m in raw.split(",") if m.strip()]


def preload(modules: list[str]) -> dict[str, float]:
    """Import each module; seconds per module (a failed import is logged and skipped, never raised)."""
    import importlib

    took = {}
    for name in modules:
        t = time.perf_counter()
        try:
            importlib.import_module(name)
        except Exception as exc:  # noqa: BLE001 - a missing optional library must not stop the worker
            log.warning("preload: cannot import %s (%s); tasks that need it will import it themselves", name, exc)
            continue
        took[name] = time.perf_counter() - t
    return took


def patch_supervisor_exit_wait(poll_s: float = EXIT_POLL_S) -> bool:
    """Make this process's task supervisors notice a task's exit within `poll_s` of its sockets closing.

    Without it, a supervisor that sees the sockets close before the process is gone waits up to
    `[workers] min_heartbeat_interval` on a selector with nothing registered (see the module doc).
    Only that wait changes: while any socket is open the supervisor waits as Airflow wrote it.
    False (and nothing changed) where the supervisor does not have the shape this was written against.
    """
    try:
        from airflow.sdk.execution_time.supervisor import WatchedSubprocess
    except ImportError:
        return False
    original = getattr(WatchedSubprocess, "_service_subprocess", None)
    if original is None or getattr(original, "_nightshift_exit_poll", False):
        return original is not None
    if not {"_open_sockets", "_exit_code"} <= {a.name for a in getattr(WatchedSubprocess, "__attrs_attrs__", ())}:
        log.warning("the task supervisor has no _open_sockets or _exit_code: its exit wait is left as Airflow wrote it")
        return False

    def _service_subprocess(self, max_wait_time, *args, **kwargs):
        if self._exit_code is None and not self._open_sockets:  # every socket closed: the task is exiting
            max_wait_time = min(max_wait_time, poll_s)
        return original(self, max_wait_time, *args, **kwargs)

    _service_subprocess._nightshift_exit_poll = True
    WatchedSubprocess._service_subprocess = _service_subprocess
    return True


def _preloading_worker(**kwargs) -> None:
    patch_supervisor_exit_wait()
    modules = preload_modules()
    t = time.perf_counter()
    took = preload(modules)
    log.info("worker %d preloaded %d modules in %.1f s: %s", os.getpid(), len(took), time.perf_counter() - t,
             ", ".join(f"{m} {s:.1f}s" for m, s in sorted(took.items(), key=lambda kv: -kv[1])[:5]))
    _run_worker(**kwargs)


class PreloadingLocalExecutor(LocalExecutor):
    """LocalExecutor whose workers import Nightshift's heavy libraries once (see the module doc)."""

    def _spawn_worker(self) -> None:
        p = multiprocessing.Process(
            target=_preloading_worker,
            kwargs={
                "logger_name": self.log.name,
                "input": self.activity_queue,
                "output": self.result_queue,
                "unread_messages": self._unread_messages,
                "team_conf": self.conf,
            },
        )
        p.start()
        self.workers[p.pid] = p
