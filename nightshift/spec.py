"""The dataset spec: which columns are the entity id, the features and the label.

Every stage reads column names from here, so the same code serves any tabular
binary-classification dataset laid out in the lake contract (see DESIGN.md).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

# Lake-contract columns that every table carries regardless of the dataset.
DS = "ds"  # hive partition key: the logical day of a partition
EVENT_DS = "event_ds"  # in labels/: the ds of the prediction a label resolves


class LabelDelayPolicy(BaseModel):
    """When a prediction day's labels count as matured."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_delay_days: int = Field(30, ge=1, description="after this many days a day is mature whatever its coverage")
    min_coverage: float = Field(0.9, gt=0, le=1, description="share of rows labelled that makes a day mature early")


class DatasetSpec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    entity_id: str
    numeric: tuple[str, ...]
    categorical: tuple[str, ...] = ()
    label: str
    task: Literal["binary"] = "binary"
    segment: str | None = Field(None, description="categorical column whose values get per-segment guardrails")
    label_delay: LabelDelayPolicy = LabelDelayPolicy()

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
        if self.segment is not None and self.segment not in self.categorical:
            raise ValueError(f"segment column {self.segment!r} must be one of the categorical features")
        return self

    @property
    def features(self) -> tuple[str, ...]:
        return (*self.numeric, *self.categorical)
