"""The retrain policy, table-driven: every trigger in both metric directions, the cooldown, and their interplay."""

from __future__ import annotations

import numpy as np
import pytest

from monitoring.policy import (
    COOLDOWN,
    DEFERRED,
    NO_ACTION,
    RETRAIN,
    WAIT,
    RetrainEvidence,
    deferral_holds,
    labelled_since,
    pending_wait,
    should_retrain,
)
from nightshift.settings import PolicySettings

POLICY = PolicySettings(drift_k=3, drift_n=5, max_model_age_days=60, cooldown_days=5)
OK = dict(has_champion=True, metric="auc", higher_is_better=True, floor=0.7, drift_flags=(False,) * 5, realized=0.82,
          realized_day="2026-01-02", estimated=0.81, model_age_days=10, days_since_last_retrain=None)
# Regression: RMSE, lower is better, with a floor of 12 (minutes, say).
RMSE = dict(OK, metric="rmse", higher_is_better=False, floor=12.0, realized=10.0, estimated=None)

CASES = [
    # name, evidence overrides, verdict, reason fragment
    ("all quiet", {}, NO_ACTION, "no trigger"),
    ("no champion", {"has_champion": False, "realized": None, "estimated": None, "model_age_days": None},
     RETRAIN, "no champion"),
    ("drift 2 of 5 is not enough", {"drift_flags": (True, True, False, False, False)}, NO_ACTION, "no trigger"),
    ("drift 3 of 5 persists", {"drift_flags": (True, False, True, False, True)}, RETRAIN, "3 of the last 5"),
    ("old drift falls out of the window", {"drift_flags": (True, True, True, False, False, False, False, False)},
     NO_ACTION, "no trigger"),
    ("fewer nights than n still count", {"drift_flags": (True, True, True)}, RETRAIN, "3 of the last 3"),
    ("realized AUC below threshold", {"realized": 0.69}, RETRAIN, "realized auc 0.6900"),
    ("realized AUC at threshold is fine", {"realized": 0.70}, NO_ACTION, "no trigger"),
    ("no floor, no metric trigger", {"realized": 0.1, "floor": None}, NO_ACTION, "no trigger"),
    ("estimated AUC below threshold", {"estimated": 0.6}, RETRAIN, "estimated auc 0.6000"),
    ("model too old", {"model_age_days": 60}, RETRAIN, "60 days with data old"),
    ("cooldown holds a trigger", {"realized": 0.5, "days_since_last_retrain": 2}, COOLDOWN, "cooldown"),
    ("cooldown over", {"realized": 0.5, "days_since_last_retrain": 5}, RETRAIN, "realized auc"),
    ("cooldown alone does nothing", {"days_since_last_retrain": 1}, NO_ACTION, "no trigger"),
    ("manual beats cooldown", {"manual": True, "days_since_last_retrain": 0}, RETRAIN, "by hand"),
]


RMSE_CASES = [
    ("rmse quiet", {}, NO_ACTION, "no trigger"),
    ("rmse above its floor", {"realized": 12.5}, RETRAIN, "realized rmse 12.5000 on matured day 2026-01-02 is above the floor 12.0"),
    ("rmse at its floor is fine", {"realized": 12.0}, NO_ACTION, "no trigger"),
    ("rmse below its floor is good", {"realized": 3.0}, NO_ACTION, "no trigger"),
    ("rmse not estimated, drift still counts", {"drift_flags": (True,) * 3}, RETRAIN, "drift persisted"),
]


@pytest.mark.parametrize("name,overrides,verdict,fragment", RMSE_CASES, ids=[c[0] for c in RMSE_CASES])
def test_should_retrain_in_the_metrics_direction(name, overrides, verdict, fragment):
    decision = should_retrain(RetrainEvidence(**{**RMSE, **overrides}), POLICY)
    assert decision.verdict == verdict
    assert any(fragment in r for r in decision.reasons), decision.reasons


@pytest.mark.parametrize("name,overrides,verdict,fragment", CASES, ids=[c[0] for c in CASES])
def test_should_retrain(name, overrides, verdict, fragment):
    decision = should_retrain(RetrainEvidence(**{**OK, **overrides}), POLICY)
    assert decision.verdict == verdict
    assert any(fragment in r for r in decision.reasons), decision.reasons
    assert decision.retrain == (verdict == RETRAIN)


def test_cooldown_keeps_the_held_triggers_as_reasons():
    d = should_retrain(RetrainEvidence(**{**OK, "drift_flags": (True,) * 5, "days_since_last_retrain": 1}), POLICY)
    assert d.verdict == COOLDOWN and any("drift persisted" in r for r in d.reasons)


# -- the drop signals: significance-aware, quiet at any volume ------------------------------------
DROP_POLICY = PolicySettings(drift_k=3, drift_n=5, max_model_age_days=180, cooldown_days=5, drop_z=3.0)
REF = dict(OK, reference=0.80, reference_se=0.01, reference_estimated=0.80, reference_estimated_se=0.01,
           window_realized=0.79, window_realized_se=0.01, window_labelled=1000, window_first="2026-01-01",
           window_last="2026-01-07", window_estimated=0.80, window_estimated_se=0.005, window_rows=1400)
# SE of the drop: sqrt(0.01^2 + 0.01^2) = 0.01414; threshold 0.02 + 3 * 0.01414 = 0.0624.
DROP_CASES = [
    ("small drop within noise", {}, NO_ACTION, "no trigger"),
    ("large drop, small SE", {"window_realized": 0.70, "window_realized_se": 0.003, "reference_se": 0.003},
     RETRAIN, "realized, pooled over prediction days 2026-01-01..2026-01-07"),
    ("the same drop at 200 rows a night stays quiet", {"window_realized": 0.75, "window_realized_se": 0.03,
                                                       "reference_se": 0.03}, NO_ACTION, "no trigger"),
    ("just beyond margin + z SE", {"window_realized": 0.80 - 0.0625}, RETRAIN, "beyond margin 0.02"),
    ("just within margin + z SE", {"window_realized": 0.80 - 0.0623}, NO_ACTION, "no trigger"),
    ("no reference (old bundle): silent", {"reference": None, "window_realized": 0.5}, NO_ACTION, "no trigger"),
    ("no window yet: silent", {"window_realized": None}, NO_ACTION, "no trigger"),
    ("estimated drop", {"window_estimated": 0.72, "window_estimated_se": 0.002, "reference_estimated_se": 0.002},
     RETRAIN, "estimated, pooled over the window ending tonight"),
    ("estimated drop within noise", {"window_estimated": 0.75}, NO_ACTION, "no trigger"),
    ("a floor beyond noise", {"realized": 0.62, "realized_se": 0.02}, RETRAIN, "by the standard error 0.0200"),
    ("a floor within noise at 200 rows", {"realized": 0.65, "realized_se": 0.02}, NO_ACTION, "no trigger"),
    ("age 60 is no longer a trigger", {"model_age_days": 60}, NO_ACTION, "no trigger"),
    ("age 180 is", {"model_age_days": 180}, RETRAIN, "180 days with data old"),
]


@pytest.mark.parametrize("name,overrides,verdict,fragment", DROP_CASES, ids=[c[0] for c in DROP_CASES])
def test_drop_signals(name, overrides, verdict, fragment):
    decision = should_retrain(RetrainEvidence(**{**REF, **overrides}), DROP_POLICY, margin=0.02)
    assert decision.verdict == verdict
    assert any(fragment in r for r in decision.reasons), decision.reasons


RMSE_DROP = [
    # RMSE 10 -> 11 is a 10% relative drop; margin 5%, SE (0.1, 0.1) -> 0.01414 relative, z 3 -> 0.0924
    ("rmse 10% worse fires", {"window_realized": 11.0}, RETRAIN, "worse than the champion's holdout reference 10.0000"),
    ("rmse 8% worse is within noise", {"window_realized": 10.8}, NO_ACTION, "no trigger"),
    ("rmse better never fires", {"window_realized": 8.0}, NO_ACTION, "no trigger"),
]


@pytest.mark.parametrize("name,overrides,verdict,fragment", RMSE_DROP, ids=[c[0] for c in RMSE_DROP])
def test_drop_signals_relative_for_rmse(name, overrides, verdict, fragment):
    ev = {**RMSE, "relative": True, "reference": 10.0, "reference_se": 0.1, "window_realized_se": 0.1,
          "window_labelled": 500, **overrides}
    decision = should_retrain(RetrainEvidence(**ev), DROP_POLICY, margin=0.05)
    assert decision.verdict == verdict
    assert any(fragment in r for r in decision.reasons), decision.reasons


def test_every_signal_is_recorded_fired_or_not():
    decision = should_retrain(RetrainEvidence(**{**REF, "window_realized": 0.70, "window_realized_se": 0.003,
                                                 "reference_se": 0.003}), DROP_POLICY, margin=0.02)
    by = {s.name: s for s in decision.signals}
    assert set(by) == {"no_champion", "drift_persisted", "drift_cusum", "realized_below_floor", "estimated_below_floor",
                       "realized_drop", "realized_change", "alarm_estimated_drop", "estimated_drop", "model_age"}
    assert [n for n, s in by.items() if s.fired] == ["realized_drop"]
    drop = by["realized_drop"]
    assert drop.value == pytest.approx(0.10) and drop.threshold == pytest.approx(0.02 + 3 * np.sqrt(2) * 0.003)
    assert drop.n == 1000 and drop.se == pytest.approx(np.sqrt(2) * 0.003)
    assert by["estimated_drop"].value == pytest.approx(0.0) and not by["estimated_drop"].fired
    assert by["model_age"].value == 10 and by["model_age"].threshold == 180


def test_metric_evidence_reads_the_champions_newest_ready_window():
    from monitoring.policy import metric_evidence
    from model.calibration import Reference

    def row(p, version, matured, ready, realized):
        return {"prediction_ds": p, "model_version": version, "matured": matured, "signal_ready": ready,
                "realized": realized, "realized_se": 0.02, "rolling_realized": realized, "rolling_realized_se": 0.01,
                "rolling_labelled": 900, "rolling_first_ds": "2026-01-01", "estimated": 0.8, "estimated_se": 0.02,
                "rolling_estimated": 0.79, "rolling_estimated_se": 0.01, "rolling_rows": 1400}

    rows = [row("2026-01-05", "1", True, True, 0.81), row("2026-01-06", "2", True, True, 0.7),
            row("2026-01-07", "1", False, True, 0.78), row("2026-01-08", "1", False, False, 0.5),
            row("2026-01-09", "1", False, False, None)]
    ref = Reference("auc", True, 0.82, 0.01, 700, 0.81, 0.01)
    ev = metric_evidence(rows, "1", "2026-01-09", ref)
    assert (ev["realized"], ev["realized_day"]) == (0.81, "2026-01-05")
    assert (ev["window_realized"], ev["window_last"], ev["window_labelled"]) == (0.78, "2026-01-07", 900)
    assert (ev["window_estimated"], ev["window_rows"], ev["reference"], ev["reference_estimated"]) == (0.79, 1400, 0.82, 0.81)
    assert "reference" not in metric_evidence(rows, "1", "2026-01-09")
    # the realized change reads the champion's ready days with their labelled rows, oldest first
    labelled = [{**r, "labelled": 150} for r in rows]
    figures = metric_evidence(labelled, "1", "2026-01-09", ref)["ready_days"]
    assert [(f.day, f.value, f.n) for f in figures] == [("2026-01-05", 0.81, 150), ("2026-01-07", 0.78, 150)]


# -- the realized change: a drop with an unknown onset, against the holdout and the champion's own days ----------
def _days(values, se=0.04, n=150, first=1):
    from monitoring.policy import DayFigure

    return tuple(DayFigure(f"2026-01-{first + i:02d}", v, se, n) for i, v in enumerate(values))


CHANGE = dict(OK, reference=0.80, reference_se=0.02, reference_rows=600, ready_days=_days([0.80] * 10))
# 8 days at 0.80 then 2 at 0.70: before = 600 holdout + 1200 production rows at 0.80, SE sqrt(600^2 0.02^2 +
# 8 (150 x 0.04)^2) / 1800 = 0.01155; after = 300 rows, SE sqrt(2) 6 / 300 = 0.0283; the drop's SE 0.0306,
# threshold max(0.02, 3 x 0.0306) = 0.0917 < 0.10.
CHANGE_CASES = [
    ("quiet", {}, NO_ACTION, "no trigger"),
    ("a drop from the 9th day, against the holdout and 8 earlier days", {"ready_days": _days([0.80] * 8 + [0.70] * 2)},
     RETRAIN, "realized auc since 2026-01-09 (2 days to 2026-01-10, 300 labelled rows) 0.7000 is 0.1000 worse than 0.8000, "
              "the holdout reference 0.8000 (600 rows) and 8 earlier days 2026-01-01..2026-01-08 pooled (1800 rows)"),
    ("the same drop against the 600-row holdout alone is within noise", {"ready_days": _days([0.70] * 2)},
     NO_ACTION, "no trigger"),
    ("the onset is found: 5 quiet days do not dilute it", {"ready_days": _days([0.80] * 8 + [0.72] * 3)},
     RETRAIN, "since 2026-01-09 (3 days"),
    ("a drop within noise", {"ready_days": _days([0.80] * 8 + [0.75] * 2)}, NO_ACTION, "no trigger"),
    ("a better champion never fires", {"ready_days": _days([0.80] * 8 + [0.95] * 2)}, NO_ACTION, "no trigger"),
    ("at volume the margin decides: 0.015 is below it",
     {"reference_se": 0.001, "ready_days": _days([0.80] * 8 + [0.785] * 2, se=0.002, n=20_000)}, NO_ACTION, "no trigger"),
    ("at volume the margin decides: 0.025 is beyond it",
     {"reference_se": 0.001, "ready_days": _days([0.80] * 8 + [0.775] * 2, se=0.002, n=20_000)}, RETRAIN,
     "beyond max(margin 0.02, 3 x SE"),
    ("without the holdout reference, the champion's own days still compare",
     {"reference": None, "reference_se": None, "reference_rows": None, "ready_days": _days([0.80] * 12 + [0.70] * 3)},
     RETRAIN, "than 0.8000, 12 earlier days 2026-01-01..2026-01-12 pooled (1800 rows)"),
    ("a drop older than change_days onsets is still found inside them",
     {"ready_days": _days([0.80] * 8 + [0.70] * 9)}, RETRAIN, "since 2026-01-11 (7 days"),
    ("no ready day yet: silent", {"ready_days": ()}, NO_ACTION, "no trigger"),
    ("the drop lasts past its first day, and the record says so", {"ready_days": _days([0.80] * 8 + [0.70] * 2)},
     RETRAIN, "and 0.1000 worse without its worst day 2026-01-09, beyond 1.645 x SE 0.0416 (a change that lasts)"),
]


@pytest.mark.parametrize("name,days,persist_z,fired", [
    ("a one-day glitch, then back: not a change", [0.80] * 8 + [0.55, 0.80], 1.645, False),
    ("the same without the persistence rule: read as a change", [0.80] * 8 + [0.55, 0.80], None, True),
    ("a drop on its first ready day only: it waits for a second", [0.80] * 8 + [0.60], 1.645, False),
    ("the same without the persistence rule", [0.80] * 8 + [0.60], None, True),
    ("the second day confirms it", [0.80] * 8 + [0.60, 0.70], 1.645, True),
    ("a glitch inside the window is left out, whatever the onset tried", [0.80] * 8 + [0.79, 0.50, 0.80], 1.645, False),
])
def test_a_realized_change_must_last(name, days, persist_z, fired):
    decision = should_retrain(RetrainEvidence(**{**CHANGE, "ready_days": _days(days)}),
                              PolicySettings(persist_z=persist_z), margin=0.02)
    assert {s.name: s for s in decision.signals}["realized_change"].fired == fired


@pytest.mark.parametrize("name,overrides,verdict,fragment", CHANGE_CASES, ids=[c[0] for c in CHANGE_CASES])
def test_realized_change(name, overrides, verdict, fragment):
    decision = should_retrain(RetrainEvidence(**{**CHANGE, **overrides}), PolicySettings(change_days=7, change_z=3.0),
                              margin=0.02)
    assert decision.verdict == verdict
    assert any(fragment in r for r in decision.reasons), decision.reasons


def test_realized_change_records_its_strongest_onset_and_can_be_turned_off():
    ev = RetrainEvidence(**{**CHANGE, "ready_days": _days([0.80] * 8 + [0.70] * 2)})
    by = {s.name: s for s in should_retrain(ev, PolicySettings(), margin=0.02).signals}
    change = by["realized_change"]
    assert change.fired and change.value == pytest.approx(0.10) and change.n == 300
    assert change.se == pytest.approx(np.hypot(np.sqrt(600**2 * 0.02**2 + 8 * 6.0**2) / 1800, np.sqrt(2) * 6 / 300))
    assert change.threshold == pytest.approx(3 * change.se)
    off = {s.name: s for s in should_retrain(ev, PolicySettings(change_days=0), margin=0.02).signals}
    assert not off["realized_change"].fired and off["realized_change"].value is None


def test_realized_change_is_relative_for_rmse():
    # RMSE 10 -> 11 on the last 2 days is 10% worse; margin 5%
    days = _days([10.0] * 8 + [11.0] * 2, se=0.2)
    ev = RetrainEvidence(**{**RMSE, "relative": True, "reference": 10.0, "reference_se": 0.1, "reference_rows": 600,
                            "ready_days": days})
    change = {s.name: s for s in should_retrain(ev, PolicySettings(), margin=0.05).signals}["realized_change"]
    assert change.fired and change.value == pytest.approx(0.10)
    better = RetrainEvidence(**{**RMSE, "relative": True, "reference": 10.0, "reference_se": 0.1, "reference_rows": 600,
                                "ready_days": _days([10.0] * 8 + [9.0] * 2, se=0.2)})
    assert not {s.name: s for s in should_retrain(better, PolicySettings(), margin=0.05).signals}["realized_change"].fired


def _quiet_change_retrains(z: float, reps: int, volume: int = 200, nights: int = 200, seed: int = 0) -> float:
    """Retrain decisions per 200 nights from the realized change alone on a quiet world (cooldown 5).

    Labels arrive with the simulator's delays; a day's realized AUC on its first n labels is the true AUC plus
    a random walk's mean (so a day's figure firms up night by night, as in production); its SE is Hanley-McNeil's.
    The holdout has 3 days' rows, as in the drift lab.
    """
    from monitoring.policy import DayFigure, change_signal
    from nightshift.metrics import hanley_mcneil_se
    from simulator.world import LabelDelay

    rng, auc, prev, hold = np.random.default_rng(seed), 0.80, 0.3, 3 * volume
    se = lambda a, n: float(hanley_mcneil_se(a, n * prev, n * (1 - prev)))  # noqa: E731
    sigma = se(auc, volume) * np.sqrt(volume)  # per-label noise: a day's SE on n labels is sigma / sqrt(n)
    fires = 0
    for _ in range(reps):
        ref = auc + rng.normal() * se(auc, hold)
        days, last = [], -99
        for night in range(nights):
            days.append((np.sort(LabelDelay().draw(rng, volume)), np.cumsum(rng.normal(size=volume)) * sigma))
            figures = []
            for j in range(max(0, night - 30), night + 1):
                delays, walk = days[j]
                n = int(np.searchsorted(delays, night - j, side="right"))
                if n and (n >= volume / 2 or night - j >= 30):
                    v = auc + walk[n - 1] / n
                    figures.append(DayFigure(str(j), v, se(v, n), n))
            ev = RetrainEvidence(True, reference=ref, reference_se=se(ref, hold), reference_rows=hold,
                                 ready_days=tuple(figures))
            if change_signal(ev, 7, z, 0.02).fired and night - last >= 5:
                fires, last = fires + 1, night
    return 200 * fires / (reps * nights)


def test_realized_change_is_quiet_on_a_quiet_world_at_200_rows():
    # The target: at most 1 retrain per 200 quiet nights. The default z = 3 gives about 0.35 in a longer run
    # (100 champions); z = 2 shows the simulation can fail.
    assert _quiet_change_retrains(PolicySettings().change_z, reps=25) <= 1.0
    assert _quiet_change_retrains(2.0, reps=5) > 1.0


# -- the drift alarm corroborated by tonight's estimate ----------------------------------------------------------
ALARM = dict(REF, drift_flags=(False, False, False, False, True), estimated=0.78, estimated_se=0.003,
             reference_estimated=0.80, reference_estimated_se=0.002)
# SE sqrt(0.003^2 + 0.002^2) = 0.0036; threshold max(0.01 (half the drop margin), 2 x 0.0036) = 0.01
ALARM_CASES = [
    # decided on the alarm's first night, so it waits for the alarm to last (drift_confirm_nights)
    ("alarm and an estimated drop beyond the margin", {"estimated": 0.785}, WAIT,
     "drift alarm on tonight, and tonight's estimated auc 0.7850 is 0.0150 worse than the holdout reference's estimate"),
    ("alarm, estimated drop within the margin", {"estimated": 0.792}, NO_ACTION, "no trigger"),
    ("estimated drop without an alarm tonight", {"estimated": 0.70, "drift_flags": (False, False, False, True, False)},
     NO_ACTION, "no trigger"),
    ("alarm, estimated drop within noise at 200 rows", {"estimated": 0.74, "estimated_se": 0.03,
                                                         "reference_estimated_se": 0.028}, NO_ACTION, "no trigger"),
    ("alarm, a large estimated drop at 200 rows", {"estimated": 0.68, "estimated_se": 0.03,
                                                    "reference_estimated_se": 0.028}, WAIT, "2 x SE 0.0410"),
    ("alarm, estimate better", {"estimated": 0.85}, NO_ACTION, "no trigger"),
    ("alarm, no estimate (regression): silent", {"estimated": None}, NO_ACTION, "no trigger"),
]


@pytest.mark.parametrize("name,overrides,verdict,fragment", ALARM_CASES, ids=[c[0] for c in ALARM_CASES])
def test_alarm_with_an_estimated_drop(name, overrides, verdict, fragment):
    decision = should_retrain(RetrainEvidence(**{**ALARM, **overrides}), PolicySettings(alarm_drop_z=2.0), margin=0.02)
    assert decision.verdict == verdict
    assert any(fragment in r for r in decision.reasons), decision.reasons


def test_alarm_with_an_estimated_drop_is_on_by_default_and_can_be_turned_off():
    """On by default (z = 2); with alarm_drop_z None it is recorded with its value, never fired, no threshold."""
    ev = RetrainEvidence(**{**ALARM, "estimated": 0.70})
    assert should_retrain(ev, PolicySettings(), margin=0.02).verdict == WAIT
    decision = should_retrain(ev, PolicySettings(alarm_drop_z=None), margin=0.02)
    by = {s.name: s for s in decision.signals}
    assert not by["alarm_estimated_drop"].fired and by["alarm_estimated_drop"].threshold is None
    assert by["alarm_estimated_drop"].value > 0.05
    assert not any(r.startswith("drift alarm on tonight") for r in decision.reasons)


def test_alarm_drop_margin_is_a_setting():
    ev = RetrainEvidence(**{**ALARM, "estimated": 0.785})
    policy = PolicySettings(alarm_drop_z=2.0, alarm_drop_margin=0.02)
    by = {s.name: s for s in should_retrain(ev, policy, margin=0.02).signals}
    assert not by["alarm_estimated_drop"].fired and by["alarm_estimated_drop"].threshold == pytest.approx(0.02)
    assert by["alarm_estimated_drop"].value == pytest.approx(0.015)


# -- a retrain decided after a drift onset waits for the new regime's labels ---------------------------------------
DRIFTED = dict(OK, drift_flags=(False, False, True, True, True), onset="2026-03-03", onset_labelled=0)
WAIT_POLICY = PolicySettings(drift_k=3, drift_n=5, cooldown_days=5, onset_min_labels=2000, max_wait_days=5)
WAIT_CASES = [
    # name, evidence overrides, verdict, reason fragment
    ("no labels since the onset: wait", {}, WAIT,
     "waiting for the new regime's labels: 0 labelled rows since the drift onset 2026-03-03; the retrain starts at 2,000"),
    ("the trigger is still recorded", {}, WAIT, "drift persisted on 3 of the last 5 nights"),
    ("some labels, fewer than wanted", {"onset_labelled": 1999}, WAIT, "1,999 labelled rows"),
    ("enough labels at once: no wait", {"onset_labelled": 2000}, RETRAIN, "drift persisted"),
    ("enough labels after waiting: says how long", {"onset_labelled": 4000, "pending_since": "2026-03-03",
                                                     "pending_days": 2}, RETRAIN,
     "waited 2 days with data since 2026-03-03 for labels since the drift onset 2026-03-03: 4,000 labelled rows"),
    ("waited max_wait_days: trains on what there is", {"onset_labelled": 700, "pending_since": "2026-03-03",
                                                       "pending_days": 5}, RETRAIN,
     "it trains on the 700 labelled rows since the drift onset"),
    ("one day short of max_wait_days", {"onset_labelled": 700, "pending_since": "2026-03-03", "pending_days": 4},
     WAIT, "in 1 more day with data"),
    ("no onset known (a concept change in the labels): no wait", {"onset": None, "onset_labelled": None}, RETRAIN,
     "drift persisted"),
    ("no champion: no wait", {"has_champion": False}, RETRAIN, "no champion"),
    ("by hand: no wait", {"manual": True}, RETRAIN, "by hand"),
    ("cooldown still holds first", {"days_since_last_retrain": 2}, COOLDOWN, "cooldown"),
    ("no trigger, no wait", {"drift_flags": (False, False, False, False, True)}, NO_ACTION, "no trigger"),
    ("a pending retrain is a trigger of its own", {"drift_flags": (False,) * 5, "pending_since": "2026-03-03",
                                                   "pending_days": 1, "pending_reasons": ("drift persisted on 3 of 5",)},
     WAIT, "the retrain decided on 2026-03-03 is still due"),
    ("a wait decided on drift alone is withdrawn once the alarm episode has ended",
     {"drift_flags": (False, False, True, True, False), "pending_since": "2026-03-03", "pending_days": 2,
      "pending_reasons": ("drift persisted on 3 of 5",), "pending_signals": ("drift_persisted", "drift_cusum")},
     NO_ACTION, "withdrawn: the retrain decided on 2026-03-03 on drift alone (drift_persisted, drift_cusum) is not "
     "needed: the drift alarm episode has ended"),
    ("the alarm still on tonight: the wait goes on",
     {"drift_flags": (False, False, False, False, True), "pending_since": "2026-03-03", "pending_days": 2,
      "pending_reasons": ("drift too strong to be noise",), "pending_signals": ("drift_cusum",)},
     WAIT, "the retrain decided on 2026-03-03 is still due"),
    ("a wait the labels started too is not withdrawn with the alarm",
     {"drift_flags": (False,) * 5, "pending_since": "2026-03-03", "pending_days": 2,
      "pending_reasons": ("realized auc since ...",), "pending_signals": ("drift_persisted", "realized_change")},
     WAIT, "the retrain decided on 2026-03-03 is still due"),
    ("a signal firing tonight keeps the wait, alarm or not",
     {"drift_flags": (True, True, True, True, False), "pending_since": "2026-03-03", "pending_days": 2,
      "pending_signals": ("drift_persisted",), "realized": 0.60, "realized_se": 0.01},
     WAIT, "below the floor"),
    ("a pending retrain starts once labels arrive", {"drift_flags": (False,) * 5, "pending_since": "2026-03-03",
                                                     "pending_days": 2, "onset_labelled": 2500,
                                                     "pending_reasons": ("drift persisted on 3 of 5",)},
     RETRAIN, "drift persisted on 3 of 5"),
]


@pytest.mark.parametrize("name,overrides,verdict,fragment", WAIT_CASES, ids=[c[0] for c in WAIT_CASES])
def test_a_retrain_waits_for_the_new_regimes_labels(name, overrides, verdict, fragment):
    decision = should_retrain(RetrainEvidence(**{**DRIFTED, **overrides}), WAIT_POLICY)
    assert decision.verdict == verdict
    assert any(fragment in r for r in decision.reasons), decision.reasons
    assert decision.retrain == (verdict == RETRAIN)


def test_waiting_can_be_turned_off():
    assert should_retrain(RetrainEvidence(**DRIFTED), WAIT_POLICY.model_copy(update={"onset_min_labels": 0})).retrain


# -- drift CUSUM: the alarm's evidence beyond a retrain interval --------------------------------------------------
# cusum_h(0.5, 200 / 0.1 = 2000 nights) = 5.7496; the alarm's own h (200 nights) is 3.4942
CUSUM_ON = dict(OK, drift_flags=(False, False, False, False, True), drift_cusum=9.5, drift_cusum_k=0.5)
CUSUM_CASES = [
    # name, evidence overrides, policy overrides, fired
    ("one overwhelming night (z clipped at 10)", {}, {}, True),
    ("just past the retrain interval", {"drift_cusum": 5.75}, {}, True),
    ("an alarm, below the retrain interval", {"drift_cusum": 5.74}, {}, False),
    ("past the interval, alarm off tonight (an episode ended)", {"drift_flags": (False, False, False, True, False)}, {},
     False),
    ("no CUSUM recorded (an older drift partition)", {"drift_cusum": None}, {}, False),
    ("a stricter rate raises the interval", {"drift_cusum": 6.0}, {"drift_cusum_retrains_per_200_nights": 0.05}, False),
    ("off", {}, {"drift_cusum_retrains_per_200_nights": None}, False),
]


@pytest.mark.parametrize("name,overrides,policy,fired", CUSUM_CASES, ids=[c[0] for c in CUSUM_CASES])
def test_drift_cusum_decides_a_change_too_large_to_be_noise(name, overrides, policy, fired):
    decision = should_retrain(RetrainEvidence(**{**CUSUM_ON, **overrides}), PolicySettings(**policy), margin=0.02)
    by = {s.name: s for s in decision.signals}
    assert by["drift_cusum"].fired == fired
    assert decision.verdict == (WAIT if fired else NO_ACTION)  # the alarm's first night: it waits for it to last
    if fired:
        assert by["drift_cusum"].threshold == pytest.approx(5.7496)
        assert any(r.startswith("drift too strong to be noise: the drift alarm's CUSUM") and "reached the retrain "
                   "interval 5.75 (k=0.5; noise alone crosses it 0.1 times per 200 quiet nights)" in r
                   for r in decision.reasons), decision.reasons
    if not policy.get("drift_cusum_retrains_per_200_nights", 0.1):
        assert by["drift_cusum"].threshold is None and by["drift_cusum"].value == 9.5


def test_drift_cusum_decides_on_the_onset_night_and_waits_for_labels():
    """The first drifted night, overwhelming: decided at once (drift persisted would need 3 nights), as a WAIT."""
    ev = RetrainEvidence(**{**CUSUM_ON, "onset": "2026-03-05", "onset_labelled": 0})
    decision = should_retrain(ev, PolicySettings(), margin=0.02)
    assert decision.verdict == WAIT and not {s.name: s for s in decision.signals}["drift_persisted"].fired


CONFIRM = dict(CUSUM_ON, onset="2026-03-05", onset_labelled=50_000)  # labels plentiful at once (a big table)
CONFIRM_CASES = [
    # name, evidence overrides, policy overrides, verdict, reason fragment
    ("the alarm's first night: waits for it to last, labels or not", {}, {}, WAIT,
     "waiting for the drift alarm to last: on 1 night in a row; a retrain decided on drift alone starts once it has "
     "lasted 3 (drift_confirm_nights), and is withdrawn if it ends sooner"),
    ("two nights: still waiting", {"drift_flags": (False, False, False, True, True)}, {}, WAIT, "on 2 nights in a row"),
    ("three nights: it starts", {"drift_flags": (False, False, True, True, True), "pending_since": "2026-03-05",
                                 "pending_days": 2, "pending_signals": ("drift_cusum",)}, {}, RETRAIN,
     "waited 2 days with data since 2026-03-05"),
    ("drift persisted tonight is its own confirmation", {"drift_flags": (True, True, False, True, True)}, {}, RETRAIN,
     "drift persisted on 4 of the last 5 nights"),
    ("a labels signal beside it: no confirmation needed", {"realized": 0.60, "realized_se": 0.01}, {}, RETRAIN,
     "below the floor"),
    ("confirmation off", {}, {"drift_confirm_nights": 1}, RETRAIN, "drift too strong to be noise"),
    ("a glitch's episode ended: withdrawn", {"drift_flags": (False, False, True, True, False), "drift_cusum": 0.0,
                                             "pending_since": "2026-03-05", "pending_days": 2,
                                             "pending_signals": ("drift_cusum",)}, {}, NO_ACTION, "withdrawn"),
]


@pytest.mark.parametrize("name,overrides,policy,verdict,fragment", CONFIRM_CASES, ids=[c[0] for c in CONFIRM_CASES])
def test_a_retrain_decided_on_drift_alone_waits_for_the_alarm_to_last(name, overrides, policy, verdict, fragment):
    decision = should_retrain(RetrainEvidence(**{**CONFIRM, **overrides}), PolicySettings(**policy), margin=0.02)
    assert decision.verdict == verdict
    assert any(fragment in r for r in decision.reasons), decision.reasons


def test_the_retrain_interval_is_the_alarms_own_rule_at_a_rarer_rate():
    from monitoring.drift import cusum_h

    assert cusum_h(0.5, 200) == pytest.approx(3.4942)  # the alarm's h at 0.5 false alarms per 100 nights
    assert cusum_h(0.5, 2000) == pytest.approx(5.7496)  # 0.1 false retrains per 200 nights


def test_wait_evidence_reads_the_signals_that_started_the_wait():
    from monitoring.policy import wait_evidence

    records = [{"ds": "2026-03-04", "verdict": "NO_ACTION", "reasons": ["no trigger fired"], "evidence": {}},
               {"ds": "2026-03-05", "verdict": "WAIT", "reasons": ["waiting ...", "drift too strong to be noise"],
                "evidence": {"evidence": {"onset": "2026-03-05"},
                             "signals": [{"name": "drift_persisted", "fired": False},
                                         {"name": "drift_cusum", "fired": True}]}}]
    got = wait_evidence(records, [("2026-03-05", True), ("2026-03-06", False)], ["2026-03-05", "2026-03-06"],
                        "2026-03-07")
    assert got["pending_signals"] == ("drift_cusum",) and got["pending_since"] == "2026-03-05"
    assert got["onset"] == "2026-03-05" and got["pending_reasons"] == ("drift too strong to be noise",)


@pytest.mark.parametrize("verdicts,first", [
    ([], None),
    (["NO_ACTION", "RETRAIN"], None),
    (["NO_ACTION", "WAIT"], 1),
    (["WAIT", "WAIT", "WAIT"], 0),
    (["WAIT", "RETRAIN", "NO_ACTION", "WAIT", "WAIT"], 3),
    (["WAIT", "RETRAIN"], None),
    (["WAIT", "NO_ACTION"], None),
])
def test_pending_wait_is_the_first_of_the_last_run_of_waits(verdicts, first):
    records = [{"ds": f"2026-03-0{i + 1}", "verdict": v, "reasons": []} for i, v in enumerate(verdicts)]
    found = pending_wait(records)
    assert (found["ds"] if found else None) == (f"2026-03-0{first + 1}" if first is not None else None)


def test_labelled_since_counts_every_versions_rows_from_the_onset():
    rows = [{"prediction_ds": "2026-03-01", "labelled": 900, "model_version": "1"},
            {"prediction_ds": "2026-03-02", "labelled": 800, "model_version": "1"},
            {"prediction_ds": "2026-03-03", "labelled": 300, "model_version": "2"},
            {"prediction_ds": "2026-03-04", "labelled": None, "model_version": "2"}]
    assert labelled_since(rows, "2026-03-02") == 1100
    assert labelled_since(rows, "2026-03-05") == 0


@pytest.mark.parametrize("ev, policy, expected", [
    ({"drift_flags": (False, True), "drift_cusum": 9.5, "drift_cusum_k": 0.5},
     {"drift_k": 3, "drift_n": 5, "drift_cusum_retrains_per_200_nights": 0.1},
     "drift on 1 of the last 2 nights (retrain at 3 of 5); drift CUSUM 9.50 (retrain at 5.75)"),
    ({"drift_flags": (True,), "drift_cusum": 4.0, "drift_cusum_k": 0.5},
     {"drift_k": 3, "drift_n": 5, "drift_cusum_retrains_per_200_nights": None},
     "drift on 1 of the last 1 nights (retrain at 3 of 5); drift CUSUM 4.00 (no retrain on it: off)"),
    ({"drift_flags": (True,)}, {"drift_k": 3, "drift_n": 5},  # a record from before the drift CUSUM
     "drift on 1 of the last 1 nights (retrain at 3 of 5)"),
])
def test_the_decision_evidence_in_words_names_the_drift_cusum_and_its_interval(ev, policy, expected):
    """Words from the record as the policy wrote it: its evidence, its policy, and its signals with their thresholds."""
    from dataclasses import asdict

    from airflow_integration.words import retrain_words

    decision = should_retrain(RetrainEvidence(**{**OK, **ev}), PolicySettings(**policy), margin=0.02)
    assert retrain_words(ev, policy, [asdict(x) for x in decision.signals]) == expected


@pytest.mark.parametrize("name,days,persist_z,fired", [
    # The window pooled at 0.70 (beyond 0.0624 below the 0.80 reference) in each case; the days say whether it lasts.
    ("every day low: a drop that lasts", [0.70] * 7, 1.645, True),
    ("one wrecked day in a quiet window: not a change", [0.80] * 6 + [0.20], 1.645, False),
    ("the same without the persistence rule", [0.80] * 6 + [0.20], None, True),
    ("one ready day only: not yet", [0.70], 1.645, False),
])
def test_a_realized_drop_must_last(name, days, persist_z, fired):
    ev = RetrainEvidence(**{**REF, "window_realized": 0.70, "ready_days": _days(days, first=1)})
    by = {s.name: s for s in should_retrain(ev, PolicySettings(persist_z=persist_z), margin=0.02).signals}
    assert by["realized_drop"].fired == fired
    assert by["realized_drop"].value == pytest.approx(0.10)  # the figure is recorded either way
    if fired and persist_z:
        assert "worse without its worst day" in by["realized_drop"].reason


# -- a retrain that cannot be judged is not re-decided on unchanged grounds (table-driven) ---------------------
SIZING = {"margin": 0.005, "min_rows": 500, "confidence": 0.95, "power_check": True, "assumed_correlation": 0.9,
          "holdout_max_days": 14}
JUDGEABLE = {"rows": 175, "days": 14, "max_days": 14, "required_rows": 500, "days_needed": 40, "resolvable_margin": None,
             "settings": SIZING, "words": "the holdout holds 175 rows over 14 labelled days (12.5 a day) and judging "
                                          "needs about 500: set training.holdout_max_days to at least 40 (now 14)"}
GROWING = {**JUDGEABLE, "days": 10}  # the holdout had not reached holdout_max_days: more labels add rows
DEFERRAL = dict(OK, realized=0.5, days_since_last_retrain=9, deferred_on="2026-01-01", deferred=JUDGEABLE,
                holdout_rows_since_deferral=112.5, days_since_deferral=9, judge_settings=SIZING)

DEFERRAL_CASES = [
    ("capped holdout, same volume: held", {}, DEFERRED, "held: the retrain of 2026-01-01 could not be judged"),
    ("held says what would make it judgeable", {}, DEFERRED, "set training.holdout_max_days to at least 40"),
    ("the settings changed: decided again", {"judge_settings": {**SIZING, "holdout_max_days": 40}}, RETRAIN, "realized auc"),
    ("a wider margin: decided again", {"judge_settings": {**SIZING, "margin": 0.04}}, RETRAIN, "realized auc"),
    ("capped, but the daily volume rose enough", {"holdout_rows_since_deferral": 9 * 40.0}, RETRAIN, "realized auc"),
    ("growing holdout, too few labels since: held", {"deferred": GROWING, "holdout_rows_since_deferral": 300.0},
     DEFERRED, "held"),
    ("growing holdout, the labels it lacked arrived", {"deferred": GROWING, "holdout_rows_since_deferral": 325.0},
     RETRAIN, "realized auc"),
    ("by hand always trains", {"manual": True}, RETRAIN, "by hand"),
    ("no trigger: nothing to hold", {"realized": 0.82}, NO_ACTION, "no trigger"),
    ("the cooldown answers first", {"days_since_last_retrain": 2}, COOLDOWN, "cooldown"),
    ("no deferral on record", {"deferred": None, "deferred_on": None}, RETRAIN, "realized auc"),
]


@pytest.mark.parametrize("name,overrides,verdict,fragment", DEFERRAL_CASES, ids=[c[0] for c in DEFERRAL_CASES])
def test_a_deferral_is_not_re_decided_on_unchanged_grounds(name, overrides, verdict, fragment):
    decision = should_retrain(RetrainEvidence(**{**DEFERRAL, **overrides}), POLICY)
    assert decision.verdict == verdict, decision.reasons
    assert fragment in " ".join(decision.reasons)
    assert deferral_holds(RetrainEvidence(**{**DEFERRAL, **overrides})) is None or verdict in (DEFERRED, NO_ACTION, COOLDOWN)


def test_replay_policy_changes_the_policy_only(capsys):
    from cli.main import main

    assert main(["replay-policy", "--start", "2026-01-01", "--end", "2026-01-02", "--set", "gate.margin=0.1"]) == 2
    assert "--set takes policy.KEY=VALUE" in capsys.readouterr().err


ANSWERED = dict(OK, answered_drift="2026-01-05")


@pytest.mark.parametrize("name,overrides,verdict,fragment", [
    ("drift alone on an answered drift is not new evidence", {"drift_flags": (True,) * 5}, NO_ACTION,
     "answered: the champion was promoted on the rows since the drift onset 2026-01-05"),
    ("its realized metric below the floor is", {"drift_flags": (True,) * 5, "realized": 0.5}, RETRAIN, "realized auc"),
    ("a drift on a champion that answered none retrains", {"drift_flags": (True,) * 5, "answered_drift": None}, RETRAIN,
     "drift persisted"),
    ("by hand always trains", {"drift_flags": (True,) * 5, "manual": True}, RETRAIN, "by hand"),
    ("old age is its own trigger", {"model_age_days": 60}, RETRAIN, "60 days with data old"),
], ids=lambda x: x if isinstance(x, str) and " " in x else None)
def test_one_drift_one_answer(name, overrides, verdict, fragment):
    decision = should_retrain(RetrainEvidence(**{**ANSWERED, **overrides}), POLICY)
    assert decision.verdict == verdict, decision.reasons
    assert fragment in " ".join(decision.reasons)
