"""Drift detectors: one small protocol, one typed result, one registry.

A detector is a module with one class that implements `Detector`: it declares its `family`
and `run(night)` returns `DetectorResult`s, one per row of `monitoring/drift/ds=D` it adds.
`monitoring.drift.test_night` runs the enabled detectors in `REGISTRY` order and judges their
results by family, so where a detector's p-value goes is declared, not decided by where its
call sits:

- `Family.FDR`: the per-feature tests. Benjamini-Hochberg runs across every FDR result of the
  night; a result drifts if it survives it and its effect reaches its floor (`min_effect`).
- `Family.OWN_LEVEL`: a test that asks its own question (the means together, the joint
  distribution). Judged at `drift.p_val` alone: significant if p < p_val, drifted if its
  effect also reaches its floor. It counts towards the night's evidence like an FDR result.
- `Family.REPORT_ONLY`: recorded, never the alarm's business. A result with a p-value is
  judged like an own-level one for the record (the model's output drift); one without (PSI)
  carries a `band` instead. Neither counts towards the night's evidence.

Adding a detector is one module and one line in `REGISTRY` (see `psi.py`, and
docs/guide/drift-detectors.md). `drift.detectors` in the settings enables a subset by name.

This package imports only numpy and pyarrow: each detector imports scipy, alibi-detect or
torch inside `run`, so reading the registry (settings checks, the UI) costs nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any, Callable, Protocol

import numpy as np
import pyarrow as pa

if TYPE_CHECKING:
    from nightshift.settings import DriftSettings


class Family(str, Enum):
    """How a detector's results are judged, and whether they can set the alarm (the `family` column)."""

    FDR = "fdr"
    OWN_LEVEL = "own_level"
    REPORT_ONLY = "report_only"


@dataclass(frozen=True)
class Night:
    """What a detector may look at tonight (pure inputs; no lake).

    `numeric` and `categorical` are the features that passed the data-quality check (a feature
    all null, missing, or no longer numeric is reported by the orchestration, not tested).
    `time_index` features are tested like any other but do not count towards the night.
    """

    reference: pa.Table
    sample: pa.Table
    numeric: tuple[str, ...]
    categorical: tuple[str, ...]
    cfg: "DriftSettings"
    seed: int
    time_index: tuple[str, ...] = ()
    ref_out: np.ndarray | None = None  # the model's output on the reference ([n] or class probabilities [n, K])
    day_out: np.ndarray | None = None  # and on the night's sample
    embed: Callable[[pa.Table], np.ndarray] | None = None  # rows -> the model's input space


@dataclass(frozen=True)
class DetectorResult:
    """One row of `monitoring/drift/ds=D` as a detector found it, before the family's verdict.

    The verdict columns (`threshold`, `significant`, `drifted`) are the orchestration's: they
    follow from the detector's family and the night's other results (Benjamini-Hochberg).
    """

    feature: str  # the feature, or a name for a row about several ("(all features)") or the output ("__score__")
    kind: str  # numeric, categorical, unseen, multivariate, score, psi, ...
    test: str  # KS, chi2, MMD, Hotelling T2, PSI, ...
    statistic: float
    p_value: float | None  # None: a report without a test (it never drifts)
    effect_size: float
    effect_metric: str  # ks_distance, total_variation, mmd2, mahalanobis, psi, ...
    min_effect: float | None  # the floor its effect must reach to drift (None: no verdict)
    unseen_rows: int | None = None
    unseen_values: str | None = None
    band: str | None = None  # a report's label for its effect (PSI: stable / moderate / significant)

    def row(self, detector: str, family: Family) -> dict[str, Any]:
        """The result as a drift-table row, verdict not yet given."""
        return {"feature": self.feature, "kind": self.kind, "test": self.test, "statistic": self.statistic,
                "p_value": self.p_value, "threshold": None, "significant": False, "effect_size": self.effect_size,
                "effect_metric": self.effect_metric, "min_effect": self.min_effect, "drifted": False,
                "unseen_rows": self.unseen_rows, "unseen_values": self.unseen_values, "quality": None,
                "detector": detector, "family": family.value, "band": self.band}


class Detector(Protocol):
    """A drift test: its family, and its results on one night (none when it does not apply tonight)."""

    family: Family

    def run(self, night: Night) -> list[DetectorResult]: ...


# -- the registry -----------------------------------------------------------------------------
# Imported after the protocol above, which the detector modules import from here.
from monitoring.detectors import (  # noqa: E402
    class_mix,
    mean,
    mmd,
    output,
    psi,
    tabular,
    unseen,
)

# name -> detector, in the order their rows are written (within each family). One line each.
REGISTRY: dict[str, Detector] = {
    "tabular": tabular.TabularTests(),  # KS per numeric feature, chi-squared per categorical (FDR)
    "unseen": unseen.UnseenCategories(),  # the share of rows in categories the reference never saw (FDR)
    "mean": mean.MeanShift(),  # Hotelling's T² on the numeric means together (own level)
    "mmd": mmd.MMD(),  # maximum mean discrepancy in the model's input space (own level)
    "class_mix": class_mix.ClassMix(),  # multiclass: the mix of predicted classes (report only)
    "output": output.OutputDrift(),  # the model's score, or its confidence (report only)
    "psi": psi.PSI(),  # population stability index with the 0.1 / 0.25 bands (report only)
}


def enabled(names: tuple[str, ...] | list[str] | None) -> list[tuple[str, Detector]]:
    """The detectors `drift.detectors` names (None: every registered one), in registry order.

    A name the registry does not hold is an error that lists the names it does hold.
    """
    if names is None:
        return list(REGISTRY.items())
    unknown = [n for n in names if n not in REGISTRY]
    if unknown:
        raise ValueError(f"drift.detectors names {', '.join(map(repr, unknown))}, which "
                         f"{'is' if len(unknown) == 1 else 'are'} not registered; the registered detectors are: "
                         f"{', '.join(REGISTRY)} (monitoring/detectors REGISTRY). Fix the name in nightshift.toml "
                         f"[drift] detectors, or register the detector")
    wanted = set(names)
    return [(n, d) for n, d in REGISTRY.items() if n in wanted]
