"""Alerts that reach people: drift alarms, retrain decisions, gate verdicts, promotions and
rollbacks, shadow trials opening and concluding, and failed tasks; one message per incident, on the channels settings choose.

Every alert is built from what the lake recorded (the decision records and the drift table),
so the message says exactly what the page shows. Each carries its evidence in one line and a
link to the Model health page (or to the failed task's log).

**Per incident, not per night.** A drift alarm is an incident with a start (the first
alarmed night after a quiet one) and an end (the first quiet night after it): ten drifted
nights in a row are one alert when they start and one when they end. Transitions are read
from the drift table in date order (the notifier runs on the ordered `confirm_champion`, when
the previous night is settled), and each alert sent is recorded in the per-incident ledger
(`<lake>/alerts/`), so a rerun of a night never sends it twice.

**Channels** (`[alerts] channels`): `log` (the default: a log line, nothing is sent unasked),
`email` (through the Airflow SMTP provider's hook and the `smtp_conn_id` connection) and
`webhook` (a JSON POST, with a Slack-style `text`).

`NightshiftNotifier` is the Airflow face: a `BaseNotifier` for task callbacks.
"""

from __future__ import annotations

import json
import logging
import posixpath
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from airflow.sdk.bases.notifier import BaseNotifier

if TYPE_CHECKING:
    from nightshift.lake import Lake
    from nightshift.settings import Settings

log = logging.getLogger("airflow_integration.alerts")

DRIFT, RETRAIN, VERDICT, PROMOTION, ROLLBACK, FAILURE = "drift", "retrain", "verdict", "promotion", "rollback", "failure"
TRIAL = "trial"
EVENTS = (DRIFT, RETRAIN, VERDICT, ROLLBACK, FAILURE, TRIAL)  # what a notifier is attached for (VERDICT covers promotions)
START, END = "start", "end"
PAGE_ROUTE = "/plugin/model-health"


@dataclass(frozen=True)
class Alert:
    """One message: what happened, its evidence in one line, and where to look."""

    kind: str
    key: str  # the incident's identity in the ledger: the same key is never sent twice
    ds: str
    subject: str
    evidence: str
    link: str

    @property
    def text(self) -> str:
        return f"{self.subject}: {self.evidence} ({self.link})"


# -- decisions (pure, table-tested) ------------------------------------------------------

def drift_transition(previous: bool | None, tonight: bool | None) -> str | None:
    """START when an alarm follows a quiet (or unchecked) night, END when a quiet night follows an
    alarm, else None: one alert per incident, however long it lasts."""
    if tonight is None:
        return None
    if tonight and not previous:
        return START
    if not tonight and previous:
        return END
    return None


# -- alerts built from the lake ------------------------------------------------------------

def page_link(settings: "Settings", anchor: str = "") -> str:
    return f"{settings.airflow_url}{PAGE_ROUTE}" + (f"#{anchor}" if anchor else "")


def drift_alert(settings: "Settings", lake: "Lake", ds: str) -> Alert | None:
    """Night `ds`'s drift transition as an alert (None: no incident starts or ends tonight)."""
    from nightshift.tables import drift

    tonight = drift.day_alarm(lake, ds)
    # the latest earlier night whose alarm is known (a skipped night has none)
    checked = [d for d in lake.partitions("monitoring/drift") if d < ds and drift.day_alarm(lake, d) is not None]
    previous = drift.day_alarm(lake, checked[-1]) if checked else None
    change = drift_transition(previous, tonight)
    if change is None:
        return None
    rows = drift.read(lake, ds)
    first = rows[0]
    if change == START:
        tests = [r for r in rows if r.get("p_value") is not None]  # a report (PSI) is not a test
        hit = sorted((r for r in tests if r["drifted"]), key=lambda r: -(r["effect_size"] or 0))
        words = ", ".join(drift.words(r) for r in hit[:6])
        more = f" and {len(hit) - 6} more" if len(hit) > 6 else ""
        return Alert(DRIFT, f"drift-{START}-{ds}", ds, f"[Nightshift] drift alarm from {ds}",
                     f"{_cusum_words(first)}{len(hit)} of {len(tests)} tests drifted tonight after FDR correction: "
                     f"{words or 'none'}{more}",
                     page_link(settings, "drift"))
    start = _incident_start(lake, checked)
    changed = first.get("reference_id") != drift.read(lake, checked[-1])[0].get("reference_id")
    why = (f"the reference changed to {first['reference_id']} (a new champion)" if changed else
           f"{first['quiet_nights']} nights in a row with no drifted test" if first.get("quiet_nights") else
           "no test drifted tonight")
    return Alert(DRIFT, f"drift-{END}-{ds}", ds, f"[Nightshift] drift alarm over on {ds}",
                 f"{why}; the alarm lasted {len([d for d in checked if d >= start])} nights, "
                 f"{start} to {checked[-1]}", page_link(settings, "drift"))


def _cusum_words(first: dict) -> str:
    if first.get("cusum") is None or first.get("cusum_h") is None:
        return ""
    return (f"CUSUM {first['cusum']:.2f} reached h={first['cusum_h']:.2f} (target "
            f"{first['alarm_target_per_100_nights']:g} false alarms per 100 nights); ")


def _incident_start(lake: "Lake", checked: list[str]) -> str:
    from nightshift.tables import drift

    start = checked[-1]
    for d in reversed(checked):
        if not drift.day_alarm(lake, d):
            break
        start = d
    return start


def retrain_alert(settings: "Settings", lake: "Lake", ds: str) -> Alert | None:
    """The nightly policy decided to retrain, to retrain once labels arrive, or withdrew a waiting retrain (None for
    no action or a cooldown)."""
    from nightshift.tables.decisions import read_decision

    d = read_decision(lake, ds, "retrain")
    if d is None:
        return None
    pending = d["evidence"].get("evidence", {}).get("pending_since")
    if d["verdict"] == "NO_ACTION" and pending:  # a waiting retrain withdrawn: the one told of it hears so
        return Alert(RETRAIN, f"retrain-withdrawn-{ds}", ds, f"[Nightshift] the retrain decided on {pending} is withdrawn "
                     f"on {ds}", "; ".join(d["reasons"]), page_link(settings, "retrains"))
    if d["verdict"] not in ("RETRAIN", "WAIT"):
        return None
    waiting = d["verdict"] == "WAIT"
    if waiting and pending:
        return None  # a wait is told once, on the night the retrain was decided; its start is the RETRAIN alert
    subject = f"[Nightshift] retrain decided on {ds}" + ("; it waits for the new regime's labels" if waiting else "")
    return Alert(RETRAIN, f"retrain-{ds}", ds, subject,
                 "; ".join(d["reasons"]) + (f" (champion v{d['model_version']})" if d["model_version"] else ""),
                 page_link(settings, "retrains"))


def verdict_alert(settings: "Settings", lake: "Lake", ds: str) -> Alert | None:
    """A retrain's gate verdict: a promotion, a rejection, too little evidence, or a deferral."""
    from nightshift.tables.decisions import read_decision

    d = read_decision(lake, ds, "promotion")
    if d is None:
        return None
    version = d["model_version"]
    if d["verdict"] == "PROMOTE":
        subject = f"[Nightshift] v{version} promoted to champion on {ds}"
    else:
        subject = f"[Nightshift] gate verdict {d['verdict']} on {ds}" + (f" for v{version}" if version else "")
    kind = PROMOTION if d["verdict"] == "PROMOTE" else VERDICT
    return Alert(kind, f"verdict-{ds}-{version or 'none'}-{d['verdict']}", ds, subject, "; ".join(d["reasons"]),
                 page_link(settings, "verdicts"))


def trial_alerts(settings: "Settings", lake: "Lake", ds: str) -> list[Alert]:
    """Shadow trials that opened on `ds` (a retrain put its challenger on trial) or concluded on it (promoted,
    rejected, or ended), one alert each; a trial's nights in between say nothing."""
    from nightshift.tables import trials

    out = []
    for t in trials.on_day(lake, ds):
        v, tid = t["candidate"], t["trial"]
        if t["state"] == trials.OPEN:
            if t.get("decided_by") != "retrain" or t["opened_ds"] != ds:
                continue
            off = t.get("offline") or {}
            out.append(Alert(TRIAL, f"trial-opened-{tid}", ds,
                             f"[Nightshift] v{v} on shadow trial from {ds}: {t['nights_planned']} nights beside champion "
                             f"v{t['champion']}",
                             f"offline gate: {off.get('metric')} gain {_signed(off.get('gain'))} (CI "
                             f"{_signed(off.get('ci_low'))}..{_signed(off.get('ci_high'))}); it is promoted only if the "
                             "gate says so again on those nights' matured labels", page_link(settings, "trial")))
            continue
        c = t.get("conclusion") or {}
        gain = (f" (gain {_signed(c.get('gain'))}, CI {_signed(c.get('ci_low'))}..{_signed(c.get('ci_high'))} on "
                f"{c.get('n')} rows of {len(t.get('nights') or [])} nights)" if c.get("gain") is not None else "")
        subject = (f"[Nightshift] v{v} promoted to champion on {ds} after its shadow trial" if t["state"] == trials.PROMOTED
                   else f"[Nightshift] shadow trial of v{v} {t['state']} on {ds}; champion v{t['champion']} stays")
        out.append(Alert(PROMOTION if t["state"] == trials.PROMOTED else TRIAL, f"trial-{t['state'].replace(':', '-')}-{tid}",
                         ds, subject, "; ".join(t.get("reasons") or []) + gain, page_link(settings, "trial")))
    return out


def _signed(x: float | None) -> str:
    return "?" if x is None else f"{x:+.4f}"


def rollback_alert(settings: "Settings", lake: "Lake", ds: str) -> Alert | None:
    from nightshift.tables.decisions import read_decision

    d = read_decision(lake, ds, "rollback")
    if d is None:
        return None
    ev = d["evidence"]
    return Alert(ROLLBACK, f"rollback-{ds}-{ev.get('to_version')}", ds,
                 f"[Nightshift] rollback on {ds}: champion v{ev.get('from_version')} -> v{ev.get('to_version')}",
                 "reason: " + "; ".join(d["reasons"]), page_link(settings, "champions"))


def failure_alert(settings: "Settings", context: dict[str, Any]) -> Alert:
    """A failed task: which, for which day, and the error's first line, with a link to its log."""
    ti = context.get("ti") or context.get("task_instance")
    dag_id = getattr(ti, "dag_id", None) or getattr(context.get("dag"), "dag_id", "?")
    task_id = getattr(ti, "task_id", "?")
    run_id = getattr(ti, "run_id", None) or getattr(context.get("dag_run"), "run_id", "?")
    try_number = getattr(ti, "try_number", 1)
    error = context.get("exception")
    first = (str(error).strip().splitlines() or [""])[0][:300] if error else "no exception recorded"
    kind = type(error).__name__ if error else "failure"
    ds = (context.get("params") or {}).get("ds") or context.get("ds") or "-"
    link = f"{settings.airflow_url}/dags/{dag_id}/runs/{run_id}/tasks/{task_id}"
    return Alert(FAILURE, f"failure-{dag_id}-{run_id}-{task_id}-{try_number}", str(ds),
                 f"[Nightshift] task failed: {dag_id}.{task_id} ({ds})", f"{kind}: {first}", link)


# -- the per-incident ledger -----------------------------------------------------------------

def _ledger_dir(lake: "Lake") -> str:
    return posixpath.join(lake.root, "alerts")


def already_sent(lake: "Lake", key: str) -> bool:
    return lake.fs.get_file_info(posixpath.join(_ledger_dir(lake), f"{key}.json")).type.name == "File"


def record_sent(lake: "Lake", alert: Alert, channels: tuple[str, ...]) -> None:
    """Written whole or not at all (staged and renamed on a disk, one PUT on an object store): never half a record."""
    lake.write_record(posixpath.join(_ledger_dir(lake), f"{alert.key}.json"),
                      json.dumps({**asdict(alert), "channels": list(channels)}, sort_keys=True).encode())


def sent(lake: "Lake") -> list[dict[str, Any]]:
    """Every alert recorded as sent, oldest key first."""
    import pyarrow.fs as pafs

    base = _ledger_dir(lake)
    if lake.fs.get_file_info(base).type != pafs.FileType.Directory:
        return []
    out = []
    for info in sorted(lake.fs.get_file_info(pafs.FileSelector(base)), key=lambda i: i.path):
        if info.path.endswith(".json") and not posixpath.basename(info.path).startswith("_"):
            with lake.fs.open_input_stream(info.path) as f:
                out.append(json.loads(f.read()))
    return out


# -- channels --------------------------------------------------------------------------------

def deliver(settings: "Settings", alert: Alert) -> None:
    """Send one alert on every configured channel; a channel that fails raises after the others ran."""
    cfg, errors = settings.alerts, []
    for channel in cfg.channels:
        try:
            if channel == "log":
                log.warning("ALERT %s", alert.text)
            elif channel == "email":
                _email(settings, alert)
            elif channel == "webhook":
                _webhook(settings, alert)
        except Exception as exc:  # noqa: BLE001 - reported together below
            errors.append(f"{channel}: {type(exc).__name__}: {exc}")
    if errors:
        raise RuntimeError(f"alert {alert.key!r} could not be delivered on " + "; ".join(errors)
                           + " (check [alerts] in nightshift.toml and the channel's connection)")


def _email(settings: "Settings", alert: Alert) -> None:
    from html import escape

    from airflow.providers.smtp.hooks.smtp import SmtpHook

    cfg = settings.alerts
    if not cfg.email_to:
        raise ValueError("alerts.channels has 'email' but alerts.email_to names no recipient")
    body = (f"<p><b>{escape(alert.subject)}</b></p><p>{escape(alert.evidence)}</p>"
            f'<p><a href="{escape(alert.link)}">{escape(alert.link)}</a></p>')
    with SmtpHook(smtp_conn_id=cfg.smtp_conn_id) as hook:
        hook.send_email_smtp(to=list(cfg.email_to), subject=alert.subject, html_content=body, from_email=cfg.email_from)


def _webhook(settings: "Settings", alert: Alert) -> None:
    import urllib.request

    cfg = settings.alerts
    if not cfg.webhook_url:
        raise ValueError("alerts.channels has 'webhook' but alerts.webhook_url is empty")
    if not cfg.webhook_url.startswith(("http://", "https://")):
        raise ValueError(f"alerts.webhook_url must be an http(s) URL, got {cfg.webhook_url!r}")
    payload = json.dumps({"text": alert.text, **asdict(alert)}).encode()
    req = urllib.request.Request(cfg.webhook_url, data=payload, method="POST",  # noqa: S310 - http(s) only, checked above
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=cfg.webhook_timeout_s) as r:  # noqa: S310 - http(s) only, checked above
        if r.status >= 300:
            raise RuntimeError(f"webhook answered {r.status}")


# -- one entry point for every event ------------------------------------------------------------

def alert_for(event: str, settings: "Settings", ds: str, context: dict[str, Any] | None = None) -> Alert | list[Alert] | None:
    """The event's alert for day `ds` (a list for `trial`: two trials may change on one day)."""
    from nightshift.lake import Lake

    lake = Lake.of(settings)
    if event == TRIAL:
        return trial_alerts(settings, lake, ds)
    if event == DRIFT:
        return drift_alert(settings, lake, ds)
    if event == RETRAIN:
        return retrain_alert(settings, lake, ds)
    if event == VERDICT:
        return verdict_alert(settings, lake, ds)
    if event == ROLLBACK:
        return rollback_alert(settings, lake, ds)
    if event == FAILURE:
        return failure_alert(settings, context or {})
    raise ValueError(f"unknown alert event {event!r}; events are {EVENTS}")


def notify(event: str, settings: "Settings", ds: str, context: dict[str, Any] | None = None) -> Alert | None:
    """Build the event's alert(s) for day `ds`, and deliver each unless its incident was already sent;
    returns the last one delivered."""
    from nightshift.lake import Lake

    found = alert_for(event, settings, ds, context)
    lake, delivered = Lake.of(settings), None
    for alert in found if isinstance(found, list) else [found] if found is not None else []:
        if already_sent(lake, alert.key):
            log.info("alert %s was already sent; not again", alert.key)
            continue
        deliver(settings, alert)
        record_sent(lake, alert, settings.alerts.channels)
        delivered = alert
    return delivered


class NightshiftNotifier(BaseNotifier):
    """An Airflow task callback for one alert event (`drift`, `retrain`, `verdict`, `rollback`, `failure`, `trial`).

    The day is the run's `ds` Param when it has one (retrain, rollback), else its logical date.
    """

    def __init__(self, event: str):
        if event not in EVENTS:
            raise ValueError(f"unknown alert event {event!r}; events are {EVENTS}")
        super().__init__()
        self.event = event

    def notify(self, context) -> None:
        from nightshift.settings import run_settings

        params = dict(context.get("params") or {})
        ds = params.get("ds") or context.get("ds")
        try:
            settings = run_settings(params)
        except Exception:  # the failure being reported may be bad settings: alert on the file's own
            if self.event != FAILURE:
                raise
            from nightshift.settings import load_settings

            settings = load_settings()
        alert = notify(self.event, settings, ds, dict(context))
        if alert is not None:
            self.log.info("alert sent (%s): %s", ", ".join(settings.alerts.channels), alert.subject)
