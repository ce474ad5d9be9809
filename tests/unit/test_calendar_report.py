"""The data's calendar (which nights are expected) and the report's periods split by cause, table-driven."""

from __future__ import annotations

import pytest

from monitoring.report import _periods
from nightshift.choices import CalendarKind
from nightshift.spec import Calendar


@pytest.mark.parametrize("calendar, ds, expected", [
    (Calendar(), "2026-01-03", True),
    (Calendar(kind=CalendarKind.WEEKDAYS), "2026-01-02", True),  # a Friday
    (Calendar(kind=CalendarKind.WEEKDAYS), "2026-01-03", False),  # a Saturday
    (Calendar(kind=CalendarKind.BLOCKS, blocks=(("2024-01-01", "2024-03-31"), ("2025-01-01", "2025-03-31"))), "2024-03-31", True),
    (Calendar(kind=CalendarKind.BLOCKS, blocks=(("2024-01-01", "2024-03-31"), ("2025-01-01", "2025-03-31"))), "2024-07-01", False),
])
def test_calendar_expects(calendar, ds, expected):
    assert calendar.expects(ds) is expected


def test_blocks_need_blocks_in_order():
    with pytest.raises(ValueError, match="needs blocks"):
        Calendar(kind=CalendarKind.BLOCKS)
    with pytest.raises(ValueError, match="ends before it starts"):
        Calendar(kind=CalendarKind.BLOCKS, blocks=(("2024-02-01", "2024-01-01"),))


def test_a_night_off_the_calendar_is_skipped_with_a_record_and_a_missing_night_on_it_fails(settings, lake):
    from batch_scoring.contract import ContractViolation
    from batch_scoring.flows import NIGHTLY
    from nightshift.flow import run_flow
    from nightshift.tables.decisions import read_decision

    s = settings.with_overrides({"dataset.calendar.kind": "weekdays"})
    assert run_flow(NIGHTLY, s, "2026-01-03", {}) == {"validate": None}  # Saturday: nothing else runs
    record = read_decision(lake, "2026-01-03", "night")
    assert record["verdict"] == "SKIPPED" and "calendar expects" in record["reasons"][0]
    with pytest.raises(ContractViolation, match=r"features/ds=2026-01-05 breaks rule 'partition exists'"):
        run_flow(NIGHTLY, s, "2026-01-05", {})  # Monday, expected, not landed: today's clear error


def night(ds):
    return {"ds": ds}


NIGHTS = [night(f"2026-02-{d:02d}") for d in range(1, 11)]
DRIFT = "drift persisted on 3 of the last 5 nights (k=3)"


def retrain(ds, reasons, days=(), flags=()):
    return {"ds": ds, "reasons": reasons, "evidence": {"evidence": {"drift_days": list(days), "drift_flags": list(flags)}}}


@pytest.mark.parametrize("retrains, promotions, expected", [
    pytest.param([], [], {"all nights": 10}, id="no drift-triggered decision: one period"),
    pytest.param([retrain("2026-02-02", ["champion is 60 days with data old (max 60)"])], [{"ds": "2026-02-02", "model_version": "2"}],
                 {"all nights": 10}, id="an age-based retrain and promotion split nothing"),
    pytest.param([retrain("2026-02-06", [DRIFT], ["2026-02-02", "2026-02-03", "2026-02-04", "2026-02-05", "2026-02-06"],
                          [False, False, True, True, True])],
                 [{"ds": "2026-02-03", "model_version": "2"}, {"ds": "2026-02-07", "model_version": "3"}],
                 {"before drift": 3, "after drift": 4, "after promotion": 3}, id="onset from the decision; the answer is the next promotion"),
    pytest.param([retrain("2026-02-06", [DRIFT], ["2026-02-05", "2026-02-06"], [True, True])], [],
                 {"before drift": 4, "after drift": 6, "after promotion": 0}, id="not answered yet"),
    pytest.param([retrain("2026-02-05", ["drift too strong to be noise: the drift alarm's CUSUM 9.50 reached ..."],
                          ["2026-02-04", "2026-02-05"], [True, True])], [],
                 {"before drift": 3, "after drift": 7, "after promotion": 0}, id="decided on the drift CUSUM"),
])
def test_report_periods_split_by_cause(retrains, promotions, expected):
    from monitoring.policy import DRIFT_REASONS

    periods, cause = _periods(NIGHTS, retrains, promotions, DRIFT_REASONS)
    assert {k: len(v) for k, v in periods.items()} == expected
