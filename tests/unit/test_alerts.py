"""Alerts: the per-incident rule (table-driven), and real delivery through the SMTP provider to a
local SMTP server the test starts (aiosmtpd): a drift alarm, a drift that persists, a failed task
in a real `dag.test()` run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from email import message_from_bytes
from pathlib import Path

import pytest

from airflow_integration.alerts import END, START, drift_transition

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("previous, tonight, expected", [
    (None, True, START),    # the first night ever checked drifts
    (False, True, START),   # an alarm after a quiet night
    (True, True, None),     # the same incident goes on: no new alert
    (True, False, END),     # the incident is over
    (False, False, None),   # quiet stays quiet
    (None, False, None),
    (True, None, None),     # tonight not checked: nothing to say yet
])
def test_one_alert_per_incident(previous, tonight, expected):
    assert drift_transition(previous, tonight) == expected


@pytest.fixture
def smtp(monkeypatch):
    """A local SMTP server, and an Airflow connection to it (from the environment)."""
    from aiosmtpd.controller import Controller

    class Inbox:
        def __init__(self):
            self.messages = []

        async def handle_DATA(self, server, session, envelope):
            self.messages.append(message_from_bytes(envelope.content))
            return "250 OK"

    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    conn = {"conn_type": "smtp", "host": "127.0.0.1", "port": port,
            "extra": {"disable_tls": True, "disable_ssl": True, "from_email": "nightshift@example.com", "retry_limit": 0}}
    monkeypatch.setenv("AIRFLOW_CONN_NIGHTSHIFT_TEST_SMTP", json.dumps(conn))
    yield inbox
    controller.stop()


EMAIL = {"alerts.channels": ["email"], "alerts.email_to": ["team@example.com"], "alerts.smtp_conn_id": "nightshift_test_smtp",
         "ui.airflow_url": "http://airflow.example.com"}


def _body(msg) -> str:
    parts = msg.walk() if msg.is_multipart() else [msg]
    return "".join(p.get_payload(decode=True).decode() for p in parts if p.get_content_type() == "text/html")


def _drift_nights(lake, pattern: str, start: str = "2026-04-01") -> list[str]:
    """Drift records for consecutive nights: 'D' drifted (x03 and channel), '.' quiet."""
    from nightshift.dates import add_days
    from nightshift.tables import drift

    days = []
    for i, c in enumerate(pattern):
        ds = add_days(start, i)
        rows = []
        for feature, kind in (("x03", "numeric"), ("x07", "numeric"), ("channel", "categorical")):
            hit = c == "D" and feature != "x07"
            rows.append({"feature": feature, "kind": kind, "test": "KS", "statistic": 0.3 if hit else 0.02,
                         "p_value": 1e-9 if hit else 0.6, "threshold": 0.01, "significant": hit,
                         "effect_size": 0.31 if hit else 0.02, "effect_metric": "ks_distance", "min_effect": 0.1,
                         "drifted": hit, "day_drift": c == "D", "model_version": "1", "reference_rows": 2000,
                         "sample_rows": 2000})
        drift.write(lake, ds, rows)
        days.append(ds)
    return days


def test_a_drift_that_persists_five_nights_is_one_alert_when_it_starts_and_one_when_it_ends(settings, lake, smtp):
    from airflow_integration.alerts import notify, sent

    s = settings.with_overrides(EMAIL)
    days = _drift_nights(lake, "..DDDDD..")
    for ds in days[:7]:  # through the five drifted nights
        notify("drift", s, ds)
    assert len(smtp.messages) == 1, [m["Subject"] for m in smtp.messages]
    msg = smtp.messages[0]
    assert msg["Subject"] == "[Nightshift] drift alarm from 2026-04-03"
    assert msg["To"] == "team@example.com"
    body = _body(msg)
    assert "2 of 3 tests drifted tonight after FDR correction" in body and "x03 ks_distance 0.310 (floor 0.1" in body
    assert "channel" in body and "x07" not in body
    assert "http://airflow.example.com/plugin/model-health#drift" in body

    notify("drift", s, days[2])  # a rerun of the first drifted night sends nothing again
    assert len(smtp.messages) == 1

    for ds in days[7:]:
        notify("drift", s, ds)
    assert [m["Subject"] for m in smtp.messages] == ["[Nightshift] drift alarm from 2026-04-03",
                                                      "[Nightshift] drift alarm over on 2026-04-08"]
    assert "lasted 5 nights, 2026-04-03 to 2026-04-07" in _body(smtp.messages[1])
    assert [a["key"] for a in sent(lake)] == ["drift-end-2026-04-08", "drift-start-2026-04-03"]


def test_the_default_channel_only_logs(settings, lake, caplog):
    from airflow_integration.alerts import notify

    days = _drift_nights(lake, ".D")
    with caplog.at_level("WARNING", logger="airflow_integration.alerts"):
        for ds in days:
            notify("drift", settings, ds)
    assert settings.alerts.channels == ("log",)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("ALERT ")]
    assert len(lines) == 1 and "drift alarm from 2026-04-02" in lines[0]


def test_an_unreachable_channel_fails_loudly_and_is_not_recorded(settings, lake, monkeypatch):
    from airflow_integration.alerts import notify, sent

    conn = {"conn_type": "smtp", "host": "127.0.0.1", "port": 9, "extra": {"disable_tls": True, "disable_ssl": True,
                                                                           "from_email": "n@example.com", "retry_limit": 0,
                                                                           "timeout": 2}}
    monkeypatch.setenv("AIRFLOW_CONN_NIGHTSHIFT_TEST_SMTP", json.dumps(conn))
    days = _drift_nights(lake, "D")
    with pytest.raises(RuntimeError, match=r"could not be delivered on email: .*check \[alerts\]"):
        notify("drift", settings.with_overrides(EMAIL), days[0])
    assert sent(lake) == []  # so the next attempt tries again


@pytest.mark.integration
def test_a_failed_task_delivers_one_email_through_a_real_airflow_run(tmp_path, smtp, home):
    """A DAG whose task fails, run by dag.test(), with the notifier as its failure callback."""
    sys.path.insert(0, str(REPO / "scripts"))
    import airflow_stack as stack

    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "alert_probe.py").write_text(textwrap.dedent("""
        from datetime import datetime, timezone
        from airflow.sdk import dag, task
        from airflow_integration.alerts import NightshiftNotifier

        @dag(schedule=None, start_date=datetime(2026, 1, 1, tzinfo=timezone.utc),
             default_args={"on_failure_callback": NightshiftNotifier("failure"), "retries": 0})
        def alert_probe():
            @task
            def explode():
                raise ValueError("features/ds=2026-04-02, column 'x03' breaks rule 'not null'")
            explode()

        alert_probe()
    """))
    env = stack.airflow_env(home, port=stack.free_port(), extra={
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags), "AIRFLOW_CONN_NIGHTSHIFT_TEST_SMTP": os.environ["AIRFLOW_CONN_NIGHTSHIFT_TEST_SMTP"],
        "NIGHTSHIFT__ALERTS__CHANNELS": '["email"]', "NIGHTSHIFT__ALERTS__EMAIL_TO": '["oncall@example.com"]',
        "NIGHTSHIFT__ALERTS__SMTP_CONN_ID": "nightshift_test_smtp", "NIGHTSHIFT__UI__AIRFLOW_URL": "http://af.example.com"})
    subprocess.run([str(stack.VENV_BIN / "airflow"), "db", "migrate"], env=env, check=True, capture_output=True, timeout=600)
    script = textwrap.dedent(f"""
        from airflow.dag_processing.dagbag import DagBag
        bag = DagBag(dag_folder={str(dags)!r})
        assert not bag.import_errors, bag.import_errors
        run = bag.dags["alert_probe"].test()
        print("RESULT", {{ti.task_id: str(ti.state) for ti in run.get_task_instances()}})
    """)
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert "RESULT {'explode': 'failed'}" in proc.stdout, proc.stdout[-3000:] + proc.stderr[-3000:]
    deadline = time.time() + 10
    while not smtp.messages and time.time() < deadline:
        time.sleep(0.2)
    assert len(smtp.messages) == 1, [m["Subject"] for m in smtp.messages]
    msg = smtp.messages[0]
    assert msg["Subject"].startswith("[Nightshift] task failed: alert_probe.explode")
    assert msg["To"] == "oncall@example.com"
    body = _body(msg)
    assert "ValueError: features/ds=2026-04-02, column &#x27;x03&#x27; breaks rule &#x27;not null&#x27;" in body
    assert "http://af.example.com/dags/alert_probe/runs/" in body


def test_a_webhook_gets_the_verdict_as_json(settings, lake):
    """The webhook channel: one JSON POST with a Slack-style `text`, for a promotion."""
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    from airflow_integration.alerts import notify
    from nightshift.tables.decisions import write_decision

    posts = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self):
            posts.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        write_decision(lake, "2026-04-05", "promotion", "PROMOTE", ["non-inferior within margin 0.0050: gain +0.0120"],
                       {"metric": "auc", "gain": 0.012}, model_version="4")
        s = settings.with_overrides({"alerts.channels": ["webhook"],
                                     "alerts.webhook_url": f"http://127.0.0.1:{server.server_port}/hook"})
        notify("verdict", s, "2026-04-05")
        notify("verdict", s, "2026-04-05")  # the same verdict again (a rerun): not sent twice
    finally:
        server.shutdown()
    assert len(posts) == 1, posts
    assert posts[0]["kind"] == "promotion" and posts[0]["subject"] == "[Nightshift] v4 promoted to champion on 2026-04-05"
    assert posts[0]["text"].startswith("[Nightshift] v4 promoted to champion on 2026-04-05: non-inferior within margin")
    assert posts[0]["link"].endswith("/plugin/model-health#verdicts")


@pytest.mark.parametrize("kind, verdict, reasons, evidence, version, expected", [
    ("retrain", "RETRAIN", ["drift persisted on 3 of the last 5 nights (k=3)"], {}, "2",
     "[Nightshift] retrain decided on 2026-04-05: drift persisted on 3 of the last 5 nights (k=3) (champion v2)"),
    ("retrain", "NO_ACTION", ["no trigger fired"], {}, "2", None),
    ("retrain", "COOLDOWN", ["cooldown: last retrain was 2 days with data ago (cooldown 5)"], {}, "2", None),
    ("retrain", "WAIT", ["waiting for the new regime's labels: 0 labelled rows since the drift onset 2026-04-05",
                         "drift alarm on tonight"], {"evidence": {"pending_since": None}}, "2",
     "[Nightshift] retrain decided on 2026-04-05; it waits for the new regime's labels: waiting for the new regime's "
     "labels: 0 labelled rows since the drift onset 2026-04-05; drift alarm on tonight (champion v2)"),
    ("retrain", "WAIT", ["waiting for the new regime's labels: 900 labelled rows"],  # still waiting: said once, not nightly
     {"evidence": {"pending_since": "2026-04-04"}}, "2", None),
    ("retrain", "NO_ACTION", ["withdrawn: the retrain decided on 2026-04-03 on drift alone (drift_cusum) is not needed"],
     {"evidence": {"pending_since": "2026-04-03"}}, "2",  # the one told of the wait hears it is off
     "[Nightshift] the retrain decided on 2026-04-03 is withdrawn on 2026-04-05: withdrawn: the retrain decided on "
     "2026-04-03 on drift alone (drift_cusum) is not needed"),
    ("promotion", "REJECT", ["a segment lost more than the margin"], {}, "5",
     "[Nightshift] gate verdict REJECT on 2026-04-05 for v5: a segment lost more than the margin"),
    ("promotion", "DEFERRED", ["the holdout cannot resolve the margin"], {}, None,
     "[Nightshift] gate verdict DEFERRED on 2026-04-05: the holdout cannot resolve the margin"),
    ("rollback", "ROLLBACK", ["calibration broke"], {"from_version": "5", "to_version": "4"}, "4",
     "[Nightshift] rollback on 2026-04-05: champion v5 -> v4: reason: calibration broke"),
])
def test_which_decisions_alert_and_what_they_say(settings, lake, kind, verdict, reasons, evidence, version, expected):
    from airflow_integration.alerts import alert_for
    from nightshift.tables.decisions import write_decision

    write_decision(lake, "2026-04-05", kind, verdict, reasons, evidence, model_version=version)
    event = {"retrain": "retrain", "promotion": "verdict", "rollback": "rollback"}[kind]
    alert = alert_for(event, settings, "2026-04-05")
    assert (alert.text.rsplit(" (http", 1)[0] if alert else None) == expected


def test_a_failure_alert_names_the_task_the_day_and_the_error(settings):
    from types import SimpleNamespace

    from airflow_integration.alerts import failure_alert

    ti = SimpleNamespace(dag_id="retrain", task_id="train_challenger", run_id="nightly__2026-04-05", try_number=2)
    alert = failure_alert(settings.with_overrides({"ui.airflow_url": "http://af"}),
                          {"ti": ti, "params": {"ds": "2026-04-05"}, "exception": RuntimeError("no CUDA device\nmore")})
    assert alert.subject == "[Nightshift] task failed: retrain.train_challenger (2026-04-05)"
    assert alert.evidence == "RuntimeError: no CUDA device"
    assert alert.link == "http://af/dags/retrain/runs/nightly__2026-04-05/tasks/train_challenger"
    assert alert.key == "failure-retrain-nightly__2026-04-05-train_challenger-2"  # a retry is a new incident
