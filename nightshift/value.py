"""Business value: a cost matrix turns a model's predictions into money (numpy only).

Everything else in Nightshift speaks AUC or RMSE; a data team decides in money. The `[value]`
settings give the price of each outcome, and these functions turn predictions into value per
row, realized (labels known) or expected (binary, before labels, from the calibrated scores).

| | binary | regression |
|---|---|---|
| settings | `tp`, `fp`, `fn`, `tn`: the value of each outcome of the decision | `over`, `under`: the cost of one unit of over- / under-prediction |
| a row's value | the entry of its (decision, label) cell | `-(over * max(p - y, 0) + under * max(y - p, 0))` |
| expected before labels | `c * value(decided, 1) + (1 - c) * value(decided, 0)`, c = calibrated P(y=1) | not estimated (as RMSE is not) |
| threshold | the decision threshold matters: `best_threshold` picks the one that maximises value | none |

Values are signed: positive is money earned, negative a cost. A row's value is what that one
prediction earned; a night's value is their sum (`total`), and the mean per row is what the
gate compares, so holdouts of different sizes compare. Multiclass has no cost matrix (settings
refuse one: `nightshift.task.Task.value_keys` is empty there).

The task decides which model applies (`Task.value_model`); nothing here branches on a task name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

FALLBACK_THRESHOLD = 0.5  # scoring.threshold = "value" and the version records none (made before it was set)


@dataclass(frozen=True)
class BinaryValue:
    """The value of each cell of the binary confusion matrix, at the decision the model made."""

    tp: float
    fp: float
    fn: float
    tn: float
    currency: str = ""

    keys: ClassVar[tuple[str, ...]] = ("tp", "fp", "fn", "tn")
    estimates: ClassVar[bool] = True  # an expected value from calibrated scores exists before labels
    decides: ClassVar[bool] = True  # a row's value depends on the decision threshold

    def realized(self, y: np.ndarray, pred: np.ndarray, decision: np.ndarray | None) -> np.ndarray:
        """Each labelled row's value: its (decision, label) cell."""
        y = np.asarray(y) == 1
        d = _decision(pred, decision)
        return np.where(d, np.where(y, self.tp, self.fp), np.where(y, self.fn, self.tn)).astype(np.float64)

    def expected(self, pred: np.ndarray, decision: np.ndarray | None,
                 calibrated: np.ndarray | None) -> np.ndarray | None:
        """Each row's expected value before its label: c the calibrated P(y=1) (the score where None)."""
        c = np.clip(np.asarray(pred if calibrated is None else calibrated, np.float64), 0.0, 1.0)
        d = _decision(pred, decision)
        return np.where(d, c * self.tp + (1 - c) * self.fp, c * self.fn + (1 - c) * self.tn)

    def best_threshold(self, y: np.ndarray, score: np.ndarray) -> tuple[float, float]:
        """The threshold that maximises the value of `score >= threshold` on these labelled rows, and its value
        per row. Exact over every cut between distinct scores (one sort and a cumulative sum); the threshold
        is the midpoint between the lowest score decided positive and the next one down, so a new row a hair
        away from a holdout score is decided as its neighbours were. Ties in value go to the higher threshold
        (fewer positives decided)."""
        y = np.asarray(y) == 1
        s = np.asarray(score, np.float64)
        if len(s) == 0:
            raise ValueError("best_threshold needs labelled rows")
        # Every row starts decided negative; deciding it positive adds (tp - fn) for a positive, (fp - tn) otherwise.
        gain = np.where(y, self.tp - self.fn, self.fp - self.tn)
        base = float(np.sum(np.where(y, self.fn, self.tn)))
        distinct, inverse = np.unique(-s, return_inverse=True)  # descending scores
        per_group = np.bincount(inverse.reshape(-1), weights=gain, minlength=len(distinct))
        totals = np.concatenate([[0.0], np.cumsum(per_group)])  # k groups decided positive, k = 0..G
        k = int(np.argmax(totals))  # the first maximum: the highest threshold among equals
        scores = -distinct  # descending
        if k == 0:  # nothing positive: just above the highest score
            upper = scores[0]
            t = (upper + 1.0) / 2 if upper < 1.0 else float(np.nextafter(upper, np.inf))
        else:
            lower = scores[k] if k < len(scores) else 0.0
            t = (scores[k - 1] + lower) / 2
        return float(t), (base + float(totals[k])) / len(s)

    def matrix(self) -> dict[str, float]:
        return {k: float(getattr(self, k)) for k in self.keys}

    def words(self) -> str:
        unit = f" {self.currency}" if self.currency else ""
        return f"TP {self.tp:g}, FP {self.fp:g}, FN {self.fn:g}, TN {self.tn:g}{unit} per row"


@dataclass(frozen=True)
class RegressionValue:
    """A cost per unit of error, asymmetric when over- and under-prediction cost differently."""

    over: float
    under: float
    currency: str = ""

    keys: ClassVar[tuple[str, ...]] = ("over", "under")
    estimates: ClassVar[bool] = False  # no sound label-free estimate of a point model's error
    decides: ClassVar[bool] = False

    def realized(self, y: np.ndarray, pred: np.ndarray, decision: np.ndarray | None = None) -> np.ndarray:
        e = np.asarray(pred, np.float64) - np.asarray(y, np.float64)
        return -(self.over * np.maximum(e, 0.0) + self.under * np.maximum(-e, 0.0))

    def expected(self, pred: np.ndarray, decision: np.ndarray | None, calibrated: np.ndarray | None) -> None:
        return None

    def best_threshold(self, y: np.ndarray, score: np.ndarray) -> tuple[float, float]:
        raise ValueError("a regression model has no decision threshold to pick")

    def matrix(self) -> dict[str, float]:
        return {k: float(getattr(self, k)) for k in self.keys}

    def words(self) -> str:
        unit = f" {self.currency}" if self.currency else ""
        return f"over-prediction costs {self.over:g}{unit}, under-prediction {self.under:g}{unit} per unit of error"


ValueModel = BinaryValue | RegressionValue


def _decision(pred: np.ndarray, decision: np.ndarray | None) -> np.ndarray:
    if decision is None:
        raise ValueError("a binary value needs each row's decision (score >= threshold)")
    return np.asarray(decision).astype(bool)


def decide(score: np.ndarray, threshold: float) -> np.ndarray:
    """The binary decision scoring makes: score >= threshold."""
    return np.asarray(score, np.float64) >= threshold


def row_values(model: ValueModel, y: np.ndarray, pred: np.ndarray, threshold: float | None) -> np.ndarray:
    """Each labelled row's realized value for a model that decides at `threshold` (unused without a decision)."""
    decision = decide(pred, threshold) if model.decides else None
    return model.realized(y, pred, decision)


def crossfit_values(model: BinaryValue, y: np.ndarray, score: np.ndarray, seed: int = 0,
                    folds: int = 2) -> tuple[np.ndarray, list[float]]:
    """Each row's value at a threshold picked (`best_threshold`) on the other folds' rows, and those thresholds.

    Why: a threshold picked on the rows that then judge it looks better there than it will do on
    new rows (the argmax of a noisy curve is optimistic: about +0.13 a row on 5,000 rows in
    benchmarks/value.py, where the true gain of a better model was +0.07). The gate values a
    challenger whose threshold was picked on its own holdout this way, so that its interval
    covers what the threshold earns on rows it has not seen; slightly conservative, since a
    threshold picked on all the rows is a little better than one picked on half of them.
    """
    y, score = np.asarray(y), np.asarray(score, np.float64)
    fold = np.random.default_rng(seed).permutation(len(y)) % folds
    out, thresholds = np.empty(len(y)), []
    for k in range(folds):
        rest = fold != k
        t, _ = model.best_threshold(y[rest], score[rest])
        thresholds.append(t)
        mine = ~rest
        out[mine] = model.realized(y[mine], score[mine], decide(score[mine], t))
    return out, thresholds


def decision_threshold(setting: "float | str", recorded: float | None) -> float:
    """The threshold a version decides with: the number in `scoring.threshold`, or with "value" the one
    picked on its holdout and recorded on it (`FALLBACK_THRESHOLD` for a version that records none)."""
    if setting == "value":
        return FALLBACK_THRESHOLD if recorded is None else float(recorded)
    return float(setting)


def summary(values: np.ndarray | None) -> tuple[float | None, float | None]:
    """(mean per row, total) of per-row values; (None, None) without rows."""
    if values is None or len(values) == 0:
        return None, None
    return float(np.mean(values)), float(np.sum(values))


def resampled_mean_gain(v_champion: np.ndarray, v_challenger: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """The challenger's value gain per row on each resample (row of `idx`): paired, as the metric's."""
    diff = np.asarray(v_challenger, np.float64) - np.asarray(v_champion, np.float64)
    return diff[idx].mean(axis=1)


def episode_cost(days: list[dict[str, Any]], reference: float | None) -> dict[str, Any]:
    """The value a stretch of prediction days lost against a reference value per row (pure).

    Each day counts `rows * (reference - value per row)`, its value per row realized on the labels
    known (the estimate before any label, where the model estimates). A day with neither is left
    out and counted in `unknown_days`. Positive: value lost; negative: the days did better.
    """
    lost, known, unknown, rows = 0.0, 0, 0, 0
    for d in days:
        v = d.get("realized_value") if d.get("realized_value") is not None else d.get("estimated_value")
        if v is None or reference is None:
            unknown += 1
            continue
        lost += float(d.get("rows") or 0) * (reference - float(v))
        known += 1
        rows += int(d.get("rows") or 0)
    return {"lost": lost if known and reference is not None else None, "days": known, "unknown_days": unknown,
            "rows": rows, "reference": reference}
