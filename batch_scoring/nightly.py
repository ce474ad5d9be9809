"""One night, step by step: the step functions of the nightly flow (`batch_scoring.flows.NIGHTLY`).

The nightly DAG calls one of these per task; `run_nights` runs the same flow in-process.

Scoring may run ahead of the decisions (in a backfill, several nights score in parallel),
so it is speculative: it uses the champion in force as far as it is known. The ordered part
of the night begins with `confirm_champion`, which runs only once every earlier night is
settled (its decision taken, any retrain it started finished). If a promotion decided on
an earlier logical day landed after this night was scored, the night is rescored by the
model that was really in force, and its drift check redone. A backfill therefore commits
exactly what nightly runs in real time would have committed.
"""

from __future__ import annotations

import logging
from typing import Any

from typing import TYPE_CHECKING

from nightshift.dates import ds_range

if TYPE_CHECKING:  # the lake, its tables and the runner import pyarrow: each step imports what it uses
    from nightshift.flow import StepContext

log = logging.getLogger("nightshift.nightly")

SKIPPED = "SKIPPED"


def validate(ctx: StepContext) -> list[dict] | None:
    """The input contract on `features/ds=D`, then the night's scoring plan: one item per file group.

    A gate: None (and a record) for a day the calendar does not expect skips the rest of the
    night. A day the calendar expects but that has no features fails here with the contract's
    error. Each item carries the contract's counts for the day (`checked`).
    """
    from batch_scoring.contract import validate_partition
    from nightshift.lake import FEATURES
    from nightshift.tables.decisions import write_decision

    s, ds, lake = ctx.settings, ctx.ds, ctx.lake
    calendar = s.dataset.calendar
    if not calendar.expects(ds) and not lake.exists(FEATURES, ds):
        reason = f"{ds} is not a day the dataset's calendar expects data (calendar: {calendar.kind.value})"
        write_decision(lake, ds, "night", SKIPPED, [reason], {"calendar": calendar.model_dump(mode="json")})
        log.info("night %s skipped: %s", ds, reason)
        return None
    from batch_scoring.score import plan

    checked = validate_partition(lake, s.dataset, ds)
    log.info("features/ds=%s passed the contract: %d rows, missing values %s", ds, checked["rows"], checked["missing"] or "none")
    return [{**item, "checked": checked} for item in plan(s, ds, lake=lake, fingerprint=checked["fingerprint"])]


def score(ctx: StepContext) -> dict:
    """One file group of the night (a mapped step: one per item of `validate`'s plan)."""
    from batch_scoring.score import score_group

    return score_group(ctx.settings, ctx.item, ctx.params.get("model"), run_id=ctx.run_id, lake=ctx.lake)


def commit_scores(ctx: StepContext) -> dict:
    """The night's groups, committed as one partition once every group has finished."""
    from batch_scoring.score import commit_scores as commit

    return commit(ctx.settings, ctx.ds, ctx.results["score"], lake=ctx.lake)


def detect_drift(ctx: StepContext) -> dict:
    """The night's tests (nights may run in parallel); its alarm is settled in order by `confirm_champion`."""
    from monitoring.drift import detect_drift as detect

    return detect(ctx.settings, ctx.ds, lake=ctx.lake, settle=False)


def confirm_champion(ctx: StepContext) -> dict:
    """Make sure night `ds` was scored (and drift-checked) by the model in force; redo it if not.
    Then settle the night's drift alarm from the previous night's state (this step runs in date order)."""
    from monitoring.drift import detect_drift as detect
    from monitoring.drift import settle_alarm
    from batch_scoring.score import score_partition
    from nightshift.lake import PREDICTIONS
    from nightshift.tables import drift as drift_table
    from nightshift.tables.predictions import scored_by

    settings, ds, lake = ctx.settings, ctx.ds, ctx.lake
    mode = ctx.params.get("model") or settings.scoring.model
    expected = ctx.registry.resolve(ds, mode)
    actual = scored_by(lake, ds)
    rescored = actual != expected.version
    if rescored:
        log.info("night %s was scored by v%s but v%s was in force: rescoring", ds, actual, expected.version)
        score_partition(settings, ds, mode, lake=lake, ref=expected)
    if rescored or drift_table.tested_against(lake, ds) != expected.version:
        detect(settings, ds, lake=lake, settle=False)
    drift = settle_alarm(settings, ds, lake=lake) or [{}]
    rows = lake.read(PREDICTIONS, ds, columns=[]).num_rows  # from the Parquet footers: no data read
    return {"ds": ds, "model_version": expected.version, "rescored": rescored, "was": actual, "rows": rows,
            "drift_alarm": bool(drift[0].get("day_drift")), "episode_start": drift[0].get("episode_start")}


def flag_drift(ctx: StepContext) -> dict:
    """Night `ds`'s drift verdict, in words: `alarm` is False on a quiet night (the DAG's task then
    shows as skipped, so alarms stand out in the grid)."""
    from nightshift.tables import drift as drift_table

    lake, ds = ctx.lake, ctx.ds
    rows = drift_table.read(lake, ds)
    tests = [r for r in rows if r.get("p_value") is not None]  # a report (PSI) is not a test
    hit = sorted((r for r in tests if r["drifted"]), key=lambda r: -(r["effect_size"] or 0))
    words = [drift_table.words(r) for r in hit]
    first = rows[0] if rows else {}
    alarm = bool(first.get("day_drift"))
    state = (f"CUSUM {first.get('cusum') or 0:.2f} (alarm at h={first.get('cusum_h') or 0:.2f}, k={first.get('cusum_k')}, "
             f"target {first.get('alarm_target_per_100_nights')} false alarms per 100 nights); night p={first.get('night_p')}")
    if alarm:
        log.info("drift alarm on %s (episode since %s), %s. %d of %d tests drifted tonight: %s", ds,
                 first.get("episode_start"), state, len(hit), len(tests), ", ".join(words) or "none")
    else:
        log.info("no drift alarm on %s: %s. %d of %d tests drifted tonight%s", ds, state, len(hit), len(tests),
                 f": {', '.join(words)}" if words else "")
    return {"ds": ds, "alarm": alarm, "drifted": [r["feature"] for r in hit], "episode_start": first.get("episode_start")}


def measure_ground_truth(ctx: StepContext) -> dict:
    """The labels that have arrived by `ds`: realized performance per scored night, and the estimate
    for nights still unlabelled, into `monitoring/performance/ds=D`."""
    from monitoring.ground_truth import measure_ground_truth as measure

    return measure(ctx.settings, ctx.ds, lake=ctx.lake)


def decide_retrain(ctx: StepContext) -> dict:
    """The retrain policy on the night's drift and performance records: its decision, recorded in
    `monitoring/decisions`, with the reasons and the hand-off's conf when it asks for a retrain."""
    from monitoring.policy import decide_retrain as decide

    return decide(ctx.settings, ctx.ds, lake=ctx.lake)


def wants_retrain(ctx: StepContext, decision: dict) -> bool:
    """decide_retrain's branch: hand off to the retrain flow when the decision says so (and the caller allows it)."""
    return bool(decision["retrain"]) and ctx.params.get("retrain", True)


def retrain_conf(ctx: StepContext) -> dict:
    """The retrain's run conf: the decision's day, trigger and reasons, passed on, never re-derived."""
    return ctx.results["decide_retrain"]["retrain_conf"]


def settle_trial(ctx: StepContext) -> dict:
    """An open shadow trial's night: ended, judged (and promoted or rejected), or carried on, with a record."""
    from training.shadow import settle_trial as settle

    return settle(ctx.settings, ctx.ds, lake=ctx.lake)


def trial_night(ctx: StepContext) -> dict | None:
    """The gate before score_shadow: tonight's candidate when tonight is one of an open trial's N nights, else None."""
    return ctx.results["settle_trial"].get("score")


def score_shadow(ctx: StepContext) -> dict:
    """One file group of the night scored by the trial's candidate into `shadow/ds=D` (a mapped step, like `score`)."""
    from batch_scoring.score import score_group
    from nightshift.lake import SHADOW
    from nightshift.registry import CANDIDATE, ModelRef

    tonight = ctx.results["trial_night"]
    ref = ModelRef(tonight["name"], tonight["version"], CANDIDATE, tonight["run_id"], tonight["source"])
    return score_group(ctx.settings, ctx.item, CANDIDATE, run_id=ctx.run_id, table=SHADOW, ref=ref, alias=CANDIDATE,
                       lake=ctx.lake)


def commit_shadow(ctx: StepContext) -> dict:
    """The candidate's groups of the night, committed as `shadow/ds=D` once all are in."""
    from batch_scoring.score import commit_scores as commit
    from nightshift.lake import SHADOW

    return commit(ctx.settings, ctx.ds, ctx.results["score_shadow"], table=SHADOW, lake=ctx.lake)


def run_nights(settings, start: str, end: str, *, model: str | None = None, retrain: bool = True,
               progress: bool = True) -> list[dict]:
    """Nights start..end in date order, in one process: the nightly flow, as the DAG runs it."""
    from batch_scoring.flows import NIGHTLY

    days = ds_range(start, end)
    params: dict[str, Any] = {"model": model, "retrain": retrain}
    if not progress:
        return [_night(NIGHTLY, settings, d, params, False) for d in days]
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    results = []
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()) as bar:
        task = bar.add_task("nights", total=len(days))
        for d in days:
            bar.update(task, description=f"night {d}")
            r = _night(NIGHTLY, settings, d, params, True)
            results.append(r)
            bar.console.print(night_line(r))
            bar.advance(task)
    return results


def _night(flow, settings, ds: str, params: dict, progress: bool) -> dict:
    from nightshift.flow import run_flow

    results = run_flow(flow, settings, ds, params, progress=progress)
    out = {"ds": ds, "skipped": results.get("validate") is None, **results}
    if "trigger_retrain" in results:
        from training.retrain import outcome

        out["retrain"] = outcome(results["trigger_retrain"]["results"])
    if "decide_retrain" in results:
        out["decision"] = results["decide_retrain"]
    out["trials"] = (results.get("settle_trial") or {}).get("trials", [])
    return out


def night_line(r: dict) -> str:
    """A one-line account of a night, for logs and the CLI."""
    if r.get("skipped"):
        return f"{r['ds']}: skipped (not a day the calendar expects)"
    drift, confirmed = r["detect_drift"], r["confirm_champion"]
    alarm = ("ALARM" + (f" since {confirmed['episode_start']}" if confirmed.get("episode_start") != r["ds"] else "")
             if confirmed.get("drift_alarm") else "no")
    parts = [f"{r['ds']}: scored {r['commit_scores']['rows']} rows with v{confirmed['model_version']}",
             f"drift={alarm}" + (f" (tonight: {','.join(drift['drifted_features'][:4])})" if drift["night_drift"] else ""),
             f"decision={r['decision']['verdict']}"]
    for t in r.get("trials") or []:
        gain = (t.get("running") or {}).get("gain")
        parts.append(f"trial v{t['candidate']}={t['state']}" + (f" ({t['action']}, {t['nights']} nights"
                                                                 + (f", gain so far {gain:+.4f}" if gain is not None else "")
                                                                 + ")" if t["state"] == "open" else ""))
    if r.get("retrain"):
        rt = r["retrain"]
        parts.append(f"retrain -> {('v' + rt['version'] + ' ') if rt['version'] else ''}{rt['verdict']}")
    return "  ".join(parts)
