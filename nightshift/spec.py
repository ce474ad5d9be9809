"""The dataset spec: which columns are the entity id, the features and the label, and the task.

Every stage reads column names from here, so the same code serves any tabular dataset laid
out in the lake contract (see DESIGN.md). This module also holds the one rule for column
types: which Arrow types a numeric or categorical feature may have, and how a categorical
value becomes the string the model sees. The import, the contract, training and scoring
all apply it, so a boolean or a small integer is treated the same at every step.
"""

from __future__ import annotations

import datetime as dt
from pydantic import BaseModel, ConfigDict, Field, model_validator

from nightshift.choices import CalendarKind, TaskName

# Lake-contract columns that every table carries regardless of the dataset.
DS = "ds"  # hive partition key: the logical day of a partition
EVENT_DS = "event_ds"  # in labels/: the ds of the prediction a label resolves


class LabelDelayPolicy(BaseModel):
    """When a prediction day's labels count as matured."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_delay_days: int = Field(30, ge=1, description="after this many days a day is mature whatever its coverage")
    min_coverage: float = Field(0.9, gt=0, le=1, description="share of rows labelled that makes a day mature early")


class Calendar(BaseModel):
    """The days data is expected on. A day off the calendar is skipped with a record; a day
    on it without data is an error (something upstream broke)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: CalendarKind = CalendarKind.DAILY
    blocks: tuple[tuple[str, str], ...] = Field((), description="kind=blocks: inclusive [first, last] day ranges")

    @model_validator(mode="after")
    def _blocks(self) -> "Calendar":
        if self.kind == CalendarKind.BLOCKS and not self.blocks:
            raise ValueError("calendar kind 'blocks' needs blocks = [[first, last], ...]")
        for first, last in self.blocks:
            if dt.date.fromisoformat(first) > dt.date.fromisoformat(last):
                raise ValueError(f"calendar block [{first}, {last}] ends before it starts")
        return self

    def expects(self, ds: str) -> bool:
        """Whether data is expected on logical day `ds`."""
        if self.kind == CalendarKind.DAILY:
            return True
        if self.kind == CalendarKind.WEEKDAYS:
            return dt.date.fromisoformat(ds).weekday() < 5
        return any(first <= ds <= last for first, last in self.blocks)


class DatasetSpec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    entity_id: str = Field(description="the column that identifies a row's entity; labels join on it")
    numeric: tuple[str, ...] = Field(description="numeric feature columns")
    categorical: tuple[str, ...] = Field((), description="categorical feature columns (embedded; unseen values map "
                                         "to an unknown row)")
    label: str = Field(description="the label column (ground truth), in labels/")
    task: TaskName = TaskName.BINARY
    segment: str | None = Field(None, description="categorical column whose values get per-segment guardrails")
    label_delay: LabelDelayPolicy = LabelDelayPolicy()
    calendar: Calendar = Calendar()
    time_index: tuple[str, ...] = Field((), description="features that only index time (a year, a month...), kept on "
                                        "purpose: their drift is reported but does not start a retrain on its own")

    @model_validator(mode="after")
    def _distinct(self) -> "DatasetSpec":
        cols = [self.entity_id, self.label, *self.numeric, *self.categorical]
        dup = sorted({c for c in cols if cols.count(c) > 1})
        if dup:
            raise ValueError(f"dataset spec names these columns twice: {dup}")
        reserved = {DS, EVENT_DS} & set(cols)
        if reserved:
            raise ValueError(f"dataset spec uses reserved lake column names {sorted(reserved)}")
        if not self.numeric and not self.categorical:
            raise ValueError("dataset spec has no features: list some under numeric or categorical")
        if not set(self.time_index) <= set(self.features):
            raise ValueError(f"time_index columns {sorted(set(self.time_index) - set(self.features))} are not features: "
                             "list them under numeric or categorical too, or drop them from time_index")
        if self.segment is not None and self.segment not in self.categorical:
            raise ValueError(f"segment column {self.segment!r} must be one of the categorical features")
        return self

    @property
    def features(self) -> tuple[str, ...]:
        return (*self.numeric, *self.categorical)


# The one rule for column types lives beside the spec, in `nightshift.columns` (no pydantic:
# the training core imports it on a bare GPU image). Re-exported lazily: DAG files parse the
# settings, and must not import pyarrow to do so.
_COLUMN_RULES = ("numeric_type_ok", "categorical_type_ok", "category_strings")


def __getattr__(name: str):
    if name in _COLUMN_RULES:
        from nightshift import columns

        return getattr(columns, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
