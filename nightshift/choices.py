"""One enum per choice. Settings, DAG Params and argparse all take their values from here.

Import-light on purpose: DAG files read these at parse time.
"""

from __future__ import annotations

from enum import StrEnum


class TaskName(StrEnum):
    """What the model predicts (see `nightshift.task`)."""

    BINARY = "binary"
    REGRESSION = "regression"
    MULTICLASS = "multiclass"


class Architecture(StrEnum):
    """The built-in networks (`model.architectures` maps each to its module); a user's is 'package.module:build'."""

    TABULARNET = "tabularnet"
    FT_TRANSFORMER = "ft_transformer"


class InitFrom(StrEnum):
    """Where a retrain's weights start."""

    SCRATCH = "scratch"
    WARM = "warm"
    TRANSFER = "transfer"


class WindowKind(StrEnum):
    """Which prediction days a retrain trains on."""

    SLIDING = "sliding"
    EXPANDING = "expanding"
    FIXED = "fixed"
    # The sliding window's days, weighted: importance weights from a domain classifier that
    # tells the window from its newest nights apart, so history is sampled to look like now.
    REPRESENTATIVE = "representative"
    # The sliding window's days, with the days since the drift onset (from the decision
    # record) weighted up by training.recent_weight.
    RECENT = "recent"


class ModelSelection(StrEnum):
    """Which model scores a night: the champion in force on that day, or today's."""

    AS_OF = "as_of"
    CHAMPION = "champion"


class Trigger(StrEnum):
    """Who asked for a retrain."""

    MANUAL = "manual"
    NIGHTLY = "nightly"
    BOOTSTRAP = "bootstrap"


class CalendarKind(StrEnum):
    """Which days the data is expected on."""

    DAILY = "daily"
    WEEKDAYS = "weekdays"
    BLOCKS = "blocks"


def values(enum: type[StrEnum]) -> list[str]:
    """The allowed values, in declaration order (for Param enums and argparse choices)."""
    return [e.value for e in enum]
