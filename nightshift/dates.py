"""Logical dates (`ds`, YYYY-MM-DD strings): the only clock Nightshift reads."""

from __future__ import annotations

import datetime as dt
import re

_DS = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def parse_ds(ds: str) -> dt.date:
    """Parse a logical date, with an error that says what shape is expected."""
    if not isinstance(ds, str) or not _DS.match(ds):
        raise ValueError(f"logical date {ds!r} is not of the form YYYY-MM-DD")
    return dt.date.fromisoformat(ds)


def to_ds(day: dt.date) -> str:
    return day.isoformat()


def add_days(ds: str, n: int) -> str:
    return to_ds(parse_ds(ds) + dt.timedelta(days=n))


def days_between(start: str, end: str) -> int:
    """Whole days from start to end (end - start)."""
    return (parse_ds(end) - parse_ds(start)).days


def ds_range(start: str, end: str) -> list[str]:
    """Every day from start to end, both included."""
    n = days_between(start, end)
    if n < 0:
        raise ValueError(f"date range is empty: start {start} is after end {end}")
    return [add_days(start, i) for i in range(n + 1)]
