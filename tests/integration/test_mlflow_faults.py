"""MLflow faults: a real `mlflow server` behind a fault-injecting proxy the tests control.

"Not found" is an answer, "unreachable" is a named error that says MLflow and its URI and
comes within `paths.mlflow_timeout_s`; an alias move and its history entry happen both or
neither; a promotion racing a rollback leaves one champion and a history that agrees.
"""

from __future__ import annotations

import http.client
import http.server
import multiprocessing
import os
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

TIMEOUT_S = 6  # the configured total; a failure must come within it (plus process overhead)
SLACK_S = 3
REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """A real MLflow tracking server (sqlite store), stopped when the module ends."""
    root = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    log = open(root / "server.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{root}/db.sqlite",
                             "--default-artifact-root", str(root / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
                             "--workers", "1"], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"{url}/health", timeout=2)  # noqa: S310 - the local server's http health URL
            break
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited: {(root / 'server.log').read_text()[-2000:]}")
            time.sleep(0.5)
    else:
        proc.kill()
        raise RuntimeError("mlflow server did not start in 180 s")
    yield url
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


class FaultProxy:
    """An HTTP proxy in front of MLflow. `mode`: pass | refuse (close without answering) |
    hang (never answer) | 500; `only` limits faults to paths containing it; `times` to that many requests."""

    def __init__(self, upstream: str):
        self.upstream = upstream.split("//")[1]
        self.mode, self.only, self.times, self.release = "pass", None, None, threading.Event()
        self.requests: list[str] = []
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _any(self):
                proxy.requests.append(f"{self.command} {self.path}")
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                if proxy.faulty(self.path):
                    if proxy.mode == "refuse":
                        self.close_connection = True
                        self.connection.shutdown(socket.SHUT_RDWR)
                        return
                    if proxy.mode == "hang":
                        proxy.release.wait(60)
                        self.close_connection = True
                        return
                    if proxy.mode == "500":
                        self.send_response(500)
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                conn = http.client.HTTPConnection(proxy.upstream, timeout=30)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                conn.close()

            do_GET = do_POST = do_PATCH = do_DELETE = do_PUT = _any

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def faulty(self, path: str) -> bool:
        if self.mode == "pass" or (self.only and self.only not in path):
            return False
        if self.times is not None:
            if self.times <= 0:
                return False
            self.times -= 1
        return True

    def set(self, mode: str = "pass", only: str | None = None, times: int | None = None) -> None:
        self.mode, self.only, self.times = mode, only, times

    def close(self):
        self.release.set()
        self.server.shutdown()


@pytest.fixture
def proxy(mlflow_server):
    p = FaultProxy(mlflow_server)
    yield p
    p.close()


def settings_for(home, monkeypatch, uri: str, name: str):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("NIGHTSHIFT__PATHS__MLFLOW_TIMEOUT_S", str(TIMEOUT_S))
    monkeypatch.setenv("NIGHTSHIFT__MODEL__NAME", name)
    from nightshift.settings import load_settings

    return load_settings()


def versions(uri: str, name: str, n: int) -> None:
    """Register `n` versions of `name` straight through MLflow (no training needed to move aliases)."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    client.create_registered_model(name)
    for _ in range(n):
        run = client.create_run("0")
        client.create_model_version(name, source=f"{run.info.artifact_uri}/model", run_id=run.info.run_id)


def test_unreachable_mlflow_is_named_not_no_champion_and_fails_within_the_timeout(home, monkeypatch, capsys):
    port = free_port()  # nothing listens here
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("NIGHTSHIFT__PATHS__MLFLOW_TIMEOUT_S", str(TIMEOUT_S))
    from cli.main import main

    assert main(["-q", "simulate", "--start", "2026-01-01", "--days", "1", "--rows-per-day", "200"]) == 0
    capsys.readouterr()
    start = time.monotonic()
    rc = main(["-q", "score", "--ds", "2026-01-01", "--model", "champion"])
    elapsed = time.monotonic() - start
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 4, err
    assert len(err) == 1 and err[0].startswith("nightshift score: MLflow: MLflow at http://127.0.0.1:")
    assert f":{port}" in err[0] and "unreachable" in err[0] and "no champion" not in err[0]
    assert elapsed < TIMEOUT_S + SLACK_S
    # As a command: stderr is that one line (no retry warnings, no traceback), exit 4.
    out = subprocess.run([sys.executable, "-m", "cli.main", "-q", "score", "--ds", "2026-01-01", "--model", "champion"],
                         capture_output=True, text=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert out.returncode == 4 and out.stderr.count("\n") == 1 and "Traceback" not in out.stderr, out.stderr
    gave_up = float(re.search(r"gave up after (\d+)s", out.stderr).group(1))
    assert gave_up <= TIMEOUT_S


def test_a_hanging_server_fails_within_the_timeout(home, monkeypatch, proxy):
    from nightshift.registry import CHAMPION, Registry, RegistryUnavailable

    settings = settings_for(home, monkeypatch, proxy.url, "hang-model")
    proxy.set("hang")
    start = time.monotonic()
    with pytest.raises(RegistryUnavailable, match=rf"MLflow at {proxy.url} is unreachable"):
        Registry(settings).current(CHAMPION)
    assert time.monotonic() - start < TIMEOUT_S + SLACK_S


def test_not_found_is_an_answer_and_a_fault_is_not(home, monkeypatch, proxy):
    from nightshift.registry import CHAMPION, NoChampion, Registry, RegistryUnavailable

    settings = settings_for(home, monkeypatch, proxy.url, "answer-model")
    registry = Registry(settings)
    assert registry.current(CHAMPION) is None  # no such model yet: an answer
    with pytest.raises(NoChampion, match="run a retrain first"):
        registry.resolve("2026-01-05", "champion")
    versions(proxy.url, "answer-model", 1)
    assert registry.current(CHAMPION) is None  # the model exists, the alias does not: an answer
    proxy.set("500")
    with pytest.raises(RegistryUnavailable, match="MLflow at"):
        registry.resolve("2026-01-05", "champion")


def test_a_failed_alias_move_leaves_no_history_entry(home, monkeypatch, proxy):
    from nightshift.registry import CHAMPION, Registry, RegistryUnavailable

    settings = settings_for(home, monkeypatch, proxy.url, "move-model")
    versions(proxy.url, "move-model", 2)
    registry = Registry(settings)
    registry.promote("1", ds="2026-01-01", reason="first")
    proxy.set("500", only="/alias")  # reads pass; only the move itself fails
    with pytest.raises(RegistryUnavailable):
        registry.move_alias(CHAMPION, "2", ds="2026-01-02", reason="x", decided_by="test")
    proxy.set("pass")
    assert registry.current(CHAMPION).version == "1"
    assert [(e.alias, e.version) for e in registry.history()] == [(CHAMPION, "1")]
    folder = Path(settings.lake_uri) / "registry" / "aliases"
    assert not [p for p in folder.iterdir() if p.name.startswith("_") and p.name != "_seq"]  # no staged entry left
    assert sorted(p.name for p in (folder / "_seq").iterdir()) == ["000001"]  # the failed move's seq claim released


def test_a_failed_history_write_puts_the_alias_back(home, monkeypatch, proxy):
    from nightshift.registry import CHAMPION, Registry
    from nightshift.tables import aliases

    settings = settings_for(home, monkeypatch, proxy.url, "ledger-model")
    versions(proxy.url, "ledger-model", 2)
    registry = Registry(settings)
    registry.promote("1", ds="2026-01-01", reason="first")

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(aliases, "publish", full_disk)
    with pytest.raises(OSError, match="No space left"):
        registry.move_alias(CHAMPION, "2", ds="2026-01-02", reason="x", decided_by="test")
    monkeypatch.undo()
    assert registry.current(CHAMPION).version == "1"  # MLflow put back: neither happened
    assert [(e.alias, e.version) for e in registry.history()] == [(CHAMPION, "1")]


def test_a_move_interrupted_after_mlflow_is_published_by_the_next_move(home, monkeypatch, proxy):
    """A crash between MLflow's move and the history's rename leaves a staged entry: the next move finishes it."""
    from nightshift.registry import CHAMPION, CHALLENGER, Registry
    from nightshift.tables import aliases
    from nightshift.tables.aliases import AliasEvent

    settings = settings_for(home, monkeypatch, proxy.url, "crash-model")
    versions(proxy.url, "crash-model", 3)
    registry = Registry(settings)
    registry.promote("1", ds="2026-01-01", reason="first")
    aliases.stage(registry.lake, AliasEvent(2, "2026-01-02", CHAMPION, "2", "1", None, "crashed", "test"))
    registry.client.set_registered_model_alias("crash-model", CHAMPION, "2")  # MLflow moved, then the crash
    # a second move staged after it (seq 3: a seq is claimed once) whose MLflow move never happened
    aliases.stage(registry.lake, AliasEvent(3, "2026-01-02", CHALLENGER, "3", None, None, "never made", "test"))
    registry.move_alias(CHALLENGER, "3", ds="2026-01-03", reason="next", decided_by="test")
    got = [(e.seq, e.alias, e.version) for e in registry.history()]
    assert got == [(1, CHAMPION, "1"), (2, CHAMPION, "2"), (3, CHALLENGER, "3")]
    assert registry.version_as_of("2026-01-03").version == "2"


def test_a_fault_during_promotion_never_skips_previous_champion(home, monkeypatch, proxy):
    """Reading the champion fails: the promotion stops with a named error instead of moving
    `champion` without `previous_champion` (which would block a later rollback)."""
    from nightshift.registry import CHAMPION, PREVIOUS_CHAMPION, Registry, RegistryUnavailable

    settings = settings_for(home, monkeypatch, proxy.url, "promo-model")
    versions(proxy.url, "promo-model", 2)
    registry = Registry(settings)
    registry.promote("1", ds="2026-01-01", reason="first")
    proxy.set("500", only="alias=champion")
    with pytest.raises(RegistryUnavailable):
        registry.promote("2", ds="2026-01-02", reason="better")
    proxy.set("pass")
    assert registry.current(CHAMPION).version == "1" and registry.current(PREVIOUS_CHAMPION) is None
    registry.promote("2", ds="2026-01-02", reason="better")
    assert registry.current(PREVIOUS_CHAMPION).version == "1"
    proxy.set("500", only="alias=champion", times=1)  # a passing fault: retried within the budget
    registry.promote("1", ds="2026-01-03", reason="back")
    assert registry.current(CHAMPION).version == "1" and registry.current(PREVIOUS_CHAMPION).version == "2"


def _promote(home: str, uri: str, name: str, version: str, ds: str, go) -> None:
    os.environ.update({"NIGHTSHIFT_HOME": home, "MLFLOW_TRACKING_URI": uri, "NIGHTSHIFT__MODEL__NAME": name})
    from nightshift.registry import Registry
    from nightshift.settings import load_settings

    registry = Registry(load_settings())
    go.wait(30)
    registry.promote(version, ds=ds, reason="racing promotion")


def _roll_back(home: str, uri: str, name: str, ds: str, go) -> None:
    os.environ.update({"NIGHTSHIFT_HOME": home, "MLFLOW_TRACKING_URI": uri, "NIGHTSHIFT__MODEL__NAME": name})
    from nightshift.settings import load_settings
    from training import promotion

    settings = load_settings()
    monkey = promotion._record  # the decision record needs a real run; the race is about aliases
    promotion._record = lambda *a, **k: None
    go.wait(30)
    try:
        promotion.roll_back(settings, ds, reason="racing rollback")
    finally:
        promotion._record = monkey


@pytest.mark.parametrize("round_", range(3))
def test_a_promotion_racing_a_rollback_ends_with_one_champion_and_a_history_that_agrees(home, monkeypatch, mlflow_server,
                                                                                        round_):
    from nightshift.registry import CHAMPION, PREVIOUS_CHAMPION, Registry

    name = f"race-model-{round_}"
    settings = settings_for(home, monkeypatch, mlflow_server, name)
    versions(mlflow_server, name, 3)
    registry = Registry(settings)
    registry.promote("1", ds="2026-01-01", reason="first")
    registry.promote("2", ds="2026-01-02", reason="second")
    ctx = multiprocessing.get_context("spawn")
    go = ctx.Event()
    procs = [ctx.Process(target=_promote, args=(str(home), mlflow_server, name, "3", "2026-01-03", go)),
             ctx.Process(target=_roll_back, args=(str(home), mlflow_server, name, "2026-01-03", go))]
    for p in procs:
        p.start()
    time.sleep(4)  # both imported and waiting
    go.set()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0]
    history = registry.history()
    assert [e.seq for e in history] == list(range(1, len(history) + 1))  # one ledger, no duplicate numbers
    last = {}
    for e in history:
        last[e.alias] = e.version
    assert registry.current(CHAMPION).version == last[CHAMPION]  # the ledger agrees with MLflow
    assert registry.current(PREVIOUS_CHAMPION).version == last[PREVIOUS_CHAMPION]
    # promotion then rollback: v3 then back to v2; rollback then promotion: v1 then v3
    assert (registry.current(CHAMPION).version, registry.current(PREVIOUS_CHAMPION).version) in (("2", "3"), ("3", "1"))


def test_a_promotion_whose_tags_fail_is_still_recorded(home, monkeypatch, proxy):
    """The aliases moved and the history agrees; MLflow then fails to take the verdict's tags: the
    decision record is written all the same, and the command fails naming MLflow."""
    from nightshift.registry import CHAMPION, Registry, RegistryError
    from nightshift.tables.decisions import read_decision
    from training.promotion import promote_challenger

    settings = settings_for(home, monkeypatch, proxy.url, "tagged-model")
    versions(proxy.url, "tagged-model", 1)
    proxy.set("500", only="set-tag")
    evaluation = {"version": "1", "verdict": "PROMOTE", "reasons": ["first model"], "evidence": {"n": 1}}
    with pytest.raises(RegistryError, match=r"made and recorded in decisions/ds=2026-01-02, but MLflow did not take"):
        promote_challenger(settings, "2026-01-02", evaluation)
    proxy.set("pass")
    assert Registry(settings).current(CHAMPION).version == "1"
    assert [(e.alias, e.version) for e in Registry(settings).history()] == [(CHAMPION, "1")]
    record = read_decision(Registry(settings).lake, "2026-01-02", "promotion")
    assert record["verdict"] == "PROMOTE" and record["model_version"] == "1"
