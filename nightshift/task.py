"""The task: everything that differs between binary classification, regression and multiclass, in one place.

Every layer asks `task_for(spec.task)` instead of branching on the task's name: training for
the loss, the output link and the label check; scoring for its output columns; ground truth
for the metrics and the estimate; the policy and the gate for the primary metric, its
direction and what a "gain" is.

| | binary | regression | multiclass |
|---|---|---|---|
| loss, link | BCE with logits, sigmoid | MSE on the standardised target, affine back | cross-entropy, softmax |
| labels | 0/1 (bool, integer or float), no nulls | finite numbers, no nulls | class values (strings or integers), no nulls |
| primary metric | AUC, higher is better | RMSE, lower is better | macro one-vs-rest AUC, higher is better |
| secondary | log loss, Brier, accuracy at the threshold | MAE, R² | log loss, accuracy, macro F1 |
| scoring columns | `score` (probability), `decision` (0/1) | `prediction` | `class`, `probability`, `p__<class>` per class |
| gate's gain | AUC(challenger) - AUC(champion) | relative RMSE reduction: 1 - RMSE(challenger)/RMSE(champion) | macro AUC difference |
| estimate before labels | expected metrics under the Platt-calibrated scores (CBPE) | not estimated | one-vs-rest CBPE per class on temperature-scaled probabilities, macro-averaged |
| first model's bar | AUC >= 0.65 | R² >= 0 (beats predicting the mean) | macro AUC >= 0.65 |
| gate margin (default) | 0.005 AUC points | 0.02 (2% of RMSE) | 0.005 macro AUC points |
| business value (`[value]`) | a value per TP, FP, FN, TN at the decision threshold | a cost per unit of over- and under-prediction | none: refused at settings time |

Multiclass is the one task with state: its class vocabulary (`MulticlassTask.classes`), fixed
by the first model's training labels (sorted) and grown by warm retrains (new classes appended
in order of appearance). It lives in the model's preprocessor JSON; `bind` gives the task for
one vocabulary, and a predictions table carries it in its `p__<class>` column names.

The regression gain is relative so that one `gate.margin` (e.g. 0.005: half a percent of
RMSE) means the same on any target scale.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from nightshift import metrics as m
from nightshift import value as v
from nightshift.choices import TaskName

if TYPE_CHECKING:
    import pyarrow as pa
    import torch


def _one(out):
    """The single output column of a one-output task's logits ([n, 1] -> [n]; [n] stays)."""
    return out[:, 0] if out.ndim == 2 else out


class LabelError(ValueError):
    """A label column breaks the task's rule; the message names the column, the rule and the count."""


@dataclass(frozen=True)
class Metric:
    name: str
    higher_is_better: bool

    def worse(self, value: float, bound: float) -> bool:
        """Whether `value` is on the bad side of `bound`."""
        return value < bound if self.higher_is_better else value > bound

    @property
    def direction(self) -> str:
        return "higher is better" if self.higher_is_better else "lower is better"

    def floor_words(self) -> str:
        return "below" if self.higher_is_better else "above"


MIN_CLASS_ROWS = 20  # fewer positives or negatives than this and an AUC says little


class Task:
    name: ClassVar[TaskName]
    primary: ClassVar[Metric]
    secondary: ClassVar[tuple[Metric, ...]]
    prediction_column: ClassVar[str]  # the scoring column the metrics read
    estimate_method: ClassVar[str]
    gain_unit: ClassVar[str]
    default_metric_floor: ClassVar[float | None]  # policy: retrain when the metric is worse than this
    default_margin: ClassVar[float]  # gate: non-inferiority margin, in the gain unit
    default_segment_margin: ClassVar[float]
    default_drop_margin: ClassVar[float]  # policy: a drop below the model's own holdout reference, in the gain unit
    first_model_metric: ClassVar[Metric]
    default_first_model_floor: ClassVar[float]

    calibration: ClassVar[str | None] = None  # the calibrator `model.calibration` fits for the estimate (None: none)
    value_keys: ClassVar[tuple[str, ...]] = ()  # the `[value]` settings a cost matrix of this task takes (empty: none)

    def value_model(self, costs: dict[str, float], currency: str = "") -> "v.ValueModel":
        """The business-value model of this task for a cost matrix (`nightshift.value`)."""
        raise ValueError(f"the {self.name.value} task has no cost matrix: business value is defined for binary "
                         "(value.tp, fp, fn, tn) and regression (value.over, value.under)")

    def n_outputs(self, preprocessor) -> int:
        """How many logits the network's head gives per row (one for binary and regression)."""
        return 1

    # -- the class vocabulary (multiclass only; the other tasks have none) -----------------
    def bind(self, classes: "tuple[str, ...] | list[str] | None") -> "Task":
        """The task for a model with this class vocabulary (the same task where it has none)."""
        return self

    def vocabulary(self, y: np.ndarray) -> tuple[str, ...] | None:
        """The class vocabulary a first model fixes from its training labels (None: the task has none)."""
        return None

    def grown(self, classes: tuple[str, ...] | None, y: np.ndarray) -> tuple[str, ...] | None:
        """`classes` with the classes first seen in `y` appended (a warm retrain's vocabulary)."""
        return classes

    def targets(self, y: np.ndarray) -> np.ndarray:
        """Checked labels -> what the loss trains on (float32 here; class indices for multiclass)."""
        return np.asarray(y).astype(np.float32)

    def untrainable(self, y: np.ndarray) -> str | None:
        """Why these labels cannot train the task beyond the row count (None: they can)."""
        return None

    def prediction_columns(self) -> list[str]:
        """The predictions table's columns the metrics read (`pred_of` stacks them)."""
        return [self.prediction_column]

    def pred_of(self, table: "pa.Table") -> np.ndarray:
        """A predictions table's predictions as the metrics take them."""
        return table.column(self.prediction_column).to_numpy()

    def from_schema(self, names: list[str]) -> "Task":
        """The task bound to the vocabulary a predictions table's columns carry (itself where there is none)."""
        return self

    def align(self, pred: np.ndarray, classes: tuple[str, ...] | None) -> np.ndarray:
        """Predictions of a model with vocabulary `classes` laid out in this task's vocabulary."""
        return pred

    def headline(self, pred: np.ndarray) -> np.ndarray:
        """One number per row for summaries and the output drift test (the score; multiclass: the confidence)."""
        return np.asarray(pred, np.float64)

    def label_mean(self, y: np.ndarray) -> float | None:
        return float(np.mean(y)) if len(y) else None

    def unseen(self, y: np.ndarray) -> dict[str, int]:
        """Label values the model's vocabulary lacks, with their counts (multiclass only)."""
        return {}

    def rare_classes(self, y: np.ndarray) -> list[str]:
        """Classes too rare in `y` to count in the primary metric, named (multiclass only)."""
        return []

    def caveats(self, y: np.ndarray) -> list[str]:
        """What a judge on `y` should know that is no reason to refuse judging (rare or unseen classes)."""
        return []

    @property
    def metrics(self) -> tuple[Metric, ...]:
        return (self.primary, *self.secondary)

    @property
    def estimates(self) -> bool:
        """Whether the task has a label-free estimate of its metrics (`estimate_stats` is not None)."""
        return self.estimate_stats(np.array([0.25, 0.75])) is not None

    def metric(self, name: str) -> Metric:
        return next(x for x in self.metrics if x.name == name)

    # -- labels -------------------------------------------------------------------------
    label_rule: ClassVar[str]  # what a valid label is, in words
    label_words: ClassVar[bool]  # whether 'true'/'false' are labels
    label_classes: ClassVar[bool] = False  # whether labels are class names (any text, whole numbers)

    @property
    def label_type(self) -> "pa.DataType":
        """The Arrow type labels are landed as."""
        raise NotImplementedError

    def invalid_labels(self, values: np.ndarray) -> np.ndarray:
        """Which float64 label values break the rule (NaN stands for null)."""
        raise NotImplementedError

    def labels(self, col: "pa.Array | pa.ChunkedArray", where: str) -> np.ndarray:
        """The label column as numpy, checked against the task's rule."""
        raise NotImplementedError

    # -- training -----------------------------------------------------------------------
    def target_stats(self, y: np.ndarray) -> tuple[float, float] | None:
        """What the network's output is standardised with (None: not at all)."""
        return None

    def loss(self, out: "torch.Tensor", y: "torch.Tensor", target: tuple[float, float] | None) -> "torch.Tensor":
        raise NotImplementedError

    def link(self, out: "torch.Tensor", target: tuple[float, float] | None) -> "torch.Tensor":
        """The network's raw output -> the prediction (float64)."""
        raise NotImplementedError

    def prediction(self, out: np.ndarray, target: tuple[float, float] | None) -> np.ndarray:
        """`link` in numpy, for scoring without torch: raw outputs -> float64 predictions."""
        raise NotImplementedError

    # -- scoring ------------------------------------------------------------------------
    def output_fields(self) -> list[tuple[str, "pa.DataType"]]:
        raise NotImplementedError

    def output_arrays(self, pred: np.ndarray, threshold: float) -> list["pa.Array"]:
        raise NotImplementedError

    # -- metrics ------------------------------------------------------------------------
    def evaluate(self, y: np.ndarray, pred: np.ndarray, threshold: float = 0.5) -> dict[str, float | None]:
        """Every metric of the task; None where it is undefined (e.g. one class only)."""
        raise NotImplementedError

    def primary_value(self, y: np.ndarray, pred: np.ndarray) -> float | None:
        """The primary metric alone (numpy only: the training loop calls it on a bare GPU image)."""
        raise NotImplementedError

    def too_few(self, y: np.ndarray, min_rows: int) -> tuple[str, ...]:
        """Why `y` is too little evidence to judge a model on (empty: enough)."""
        return (f"holdout has {len(y)} rows, the gate needs {min_rows}",) if len(y) < min_rows else ()

    def resampled(self, y: np.ndarray, pred: np.ndarray):
        """A function idx[b, n] -> the primary metric on each resample (vectorised)."""
        raise NotImplementedError

    def gain(self, champion: np.ndarray | float, challenger: np.ndarray | float) -> np.ndarray | float:
        """How much better the challenger is, in the gate's unit (positive: better)."""
        raise NotImplementedError

    # -- before labels arrive -------------------------------------------------------------
    def estimate(self, pred: np.ndarray, threshold: float = 0.5, calibrated: np.ndarray | None = None) -> dict[str, float] | None:
        """Metrics expected from the predictions alone (`calibrated`: the calibrator's P(y=1) per row),
        or None when the task has no sound method."""
        return None

    # -- pooled windows -------------------------------------------------------------------
    def stats(self, y: np.ndarray, pred: np.ndarray, threshold: float = 0.5) -> dict[str, Any]:
        """Additive sufficient statistics of every metric: summed over days they give the pooled rows' metrics."""
        raise NotImplementedError

    def estimate_stats(self, pred: np.ndarray, threshold: float = 0.5, calibrated: np.ndarray | None = None) -> dict[str, Any] | None:
        """The same statistics expected from the predictions alone (None: not estimated)."""
        return None

    def from_stats(self, stats: dict[str, Any] | None) -> tuple[dict[str, float | None], float | None, int]:
        """(every metric, the primary metric's standard error, rows) from pooled statistics."""
        raise NotImplementedError

    def standard_error(self, y: np.ndarray, pred: np.ndarray) -> float | None:
        """The primary metric's standard error on these rows (None: undefined)."""
        return self.from_stats(self.stats(y, pred))[1] if len(np.asarray(y)) else None


class BinaryTask(Task):
    name = TaskName.BINARY
    primary = Metric("auc", True)
    secondary = (Metric("log_loss", False), Metric("brier", False), Metric("accuracy", True))
    prediction_column = "score"
    estimate_method = "expected value under calibrated scores"
    gain_unit = "AUC points"
    default_metric_floor = 0.70
    default_margin = 0.005
    default_segment_margin = 0.03
    default_drop_margin = 0.02
    first_model_metric = Metric("auc", True)
    default_first_model_floor = 0.65
    calibration = "platt"
    value_keys = v.BinaryValue.keys
    label_rule = "0/1 (or true/false)"
    label_words = True

    @property
    def label_type(self):
        import pyarrow as pa

        return pa.int64()

    def invalid_labels(self, values):
        return ~((values == 0) | (values == 1))

    def labels(self, col, where):
        import pyarrow as pa
        import pyarrow.compute as pc

        if not (pa.types.is_integer(col.type) or pa.types.is_floating(col.type) or pa.types.is_boolean(col.type)
                or pa.types.is_decimal(col.type)):
            raise LabelError(f"{where}: a binary label must be 0/1 (integer, float or boolean), but its type is {col.type}. "
                             "Cast it upstream, or re-import with --task regression if it is a number to predict.")
        values = pc.fill_null(pc.cast(col, pa.float64()), np.nan).to_numpy(zero_copy_only=False)
        bad = self.invalid_labels(values)
        if bad.any():
            first = [("null" if np.isnan(v) else v) for v in values[bad][:5]]
            raise LabelError(f"{where}: a binary label must be 0 or 1 without nulls; {int(bad.sum())} of {len(values)} "
                             f"values are not (first: {first}). Fix them upstream; a missing label is simply not landed.")
        return values.astype(np.int64)

    def value_model(self, costs, currency=""):
        return v.BinaryValue(**{k: float(costs[k]) for k in self.value_keys}, currency=currency)

    def loss(self, out, y, target):
        import torch.nn.functional as F

        return F.binary_cross_entropy_with_logits(_one(out).float(), y)

    def link(self, out, target):
        import torch

        # Sigmoid in float64: scores near 0 or 1 keep their ranking instead of rounding to 1.0.
        return torch.sigmoid(_one(out).double())

    def prediction(self, out, target):
        # The same sigmoid in float64, without overflow for large |x|.
        x = _one(np.asarray(out, dtype=np.float64))
        e = np.exp(-np.abs(x))
        return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))

    def output_fields(self):
        import pyarrow as pa

        return [("score", pa.float64()), ("decision", pa.int8())]

    def output_arrays(self, pred, threshold):
        import pyarrow as pa

        return [pa.array(pred, pa.float64()), pa.array((pred >= threshold).astype(np.int8))]

    def evaluate(self, y, pred, threshold=0.5):
        from sklearn.metrics import accuracy_score, brier_score_loss, log_loss

        y, pred = m.check_binary(y, pred)
        if len(y) == 0:
            return {x.name: None for x in self.metrics}
        both = 0 < y.sum() < len(y)
        p = np.clip(pred, 1e-15, 1 - 1e-15)
        return {
            "auc": m.auc(y, pred) if both else None,
            "log_loss": float(log_loss(y, p, labels=[0, 1])),
            "brier": float(brier_score_loss(y, pred, pos_label=1)),
            "accuracy": float(accuracy_score(y, (pred >= threshold).astype(np.int64))),
        }

    def primary_value(self, y, pred):
        y, pred = m.check_binary(y, pred)
        return m.auc(y, pred) if 0 < y.sum() < len(y) else None

    def too_few(self, y, min_rows):
        reasons = list(super().too_few(y, min_rows))
        n_pos = int(np.sum(y))
        if n_pos < MIN_CLASS_ROWS or len(y) - n_pos < MIN_CLASS_ROWS:
            reasons.append(f"holdout has {n_pos} positives and {len(y) - n_pos} negatives, the gate needs {MIN_CLASS_ROWS} of each")
        return tuple(reasons)

    def untrainable(self, y):
        positives = int(np.sum(np.asarray(y) == 1))
        if positives in (0, len(y)):
            return f"{positives} positives, {len(y) - positives} negatives"
        return None

    def resampled(self, y, pred):
        y, pred = m.check_binary(y, pred)
        groups, n_groups = m.score_groups(pred)
        return lambda idx: m.resampled_aucs(y, groups, n_groups, idx)

    def gain(self, champion, challenger):
        return challenger - champion

    def estimate(self, pred, threshold=0.5, calibrated=None):
        """CBPE: with c = P(y=1) per row (the calibrated score; the score itself when `calibrated` is None),
        each row is a positive with weight c and a negative with weight 1-c, ranked by its own score;
        the expected value of every metric of the raw predictions follows."""
        p = np.clip(np.asarray(pred, np.float64), 0.0, 1.0)
        if len(p) < 2:
            return None
        c = p if calibrated is None else np.clip(np.asarray(calibrated, np.float64), 0.0, 1.0)
        q = np.clip(p, 1e-15, 1 - 1e-15)
        both = np.concatenate([p, p])
        y = np.concatenate([np.ones(len(p), np.int64), np.zeros(len(p), np.int64)])
        w = np.concatenate([c, 1.0 - c])
        return {
            "auc": float(m.auc(y, both, w)) if 0 < c.sum() < len(c) else None,
            "log_loss": float(-np.mean(c * np.log(q) + (1 - c) * np.log(1 - q))),
            "brier": float(np.mean(c * (1 - p) ** 2 + (1 - c) * p ** 2)),
            "accuracy": float(np.mean(np.where(p >= threshold, c, 1 - c))),
        }

    def stats(self, y, pred, threshold=0.5):
        y, pred = m.check_binary(y, pred)
        q = np.clip(pred, 1e-15, 1 - 1e-15)
        bins = m.score_bins(pred)
        return {"n": float(len(y)), "n_pos": float(y.sum()),
                "pos": np.bincount(bins, weights=y.astype(np.float64), minlength=m.SCORE_BINS),
                "neg": np.bincount(bins, weights=(1 - y).astype(np.float64), minlength=m.SCORE_BINS),
                "log_loss": float(-np.sum(y * np.log(q) + (1 - y) * np.log(1 - q))),
                "brier": float(np.sum((pred - y) ** 2)),
                "correct": float(np.sum((pred >= threshold) == (y == 1)))}

    def estimate_stats(self, pred, threshold=0.5, calibrated=None):
        """`estimate`'s expectations as additive statistics (AUC on the score bins)."""
        p = np.clip(np.asarray(pred, np.float64), 0.0, 1.0)
        c = p if calibrated is None else np.clip(np.asarray(calibrated, np.float64), 0.0, 1.0)
        q = np.clip(p, 1e-15, 1 - 1e-15)
        bins = m.score_bins(p)
        return {"n": float(len(p)), "n_pos": float(c.sum()),
                "pos": np.bincount(bins, weights=c, minlength=m.SCORE_BINS),
                "neg": np.bincount(bins, weights=1.0 - c, minlength=m.SCORE_BINS),
                "log_loss": float(-np.sum(c * np.log(q) + (1 - c) * np.log(1 - q))),
                "brier": float(np.sum(c * (1 - p) ** 2 + (1 - c) * p ** 2)),
                "correct": float(np.sum(np.where(p >= threshold, c, 1 - c)))}

    def from_stats(self, stats):
        if not stats or stats["n"] <= 0:
            return {x.name: None for x in self.metrics}, None, 0
        n, n_pos = stats["n"], stats["n_pos"]
        value = m.auc_from_groups(stats["pos"], stats["neg"])
        auc = float(value) if np.isfinite(value) else None
        metrics = {"auc": auc, "log_loss": stats["log_loss"] / n, "brier": stats["brier"] / n, "accuracy": stats["correct"] / n}
        return metrics, m.hanley_mcneil_se(auc, n_pos, n - n_pos) if auc is not None else None, int(round(n))


class RegressionTask(Task):
    name = TaskName.REGRESSION
    primary = Metric("rmse", False)
    secondary = (Metric("mae", False), Metric("r2", True))
    prediction_column = "prediction"
    estimate_method = "not estimated: no sound label-free estimate of regression error exists for a point model"
    gain_unit = "relative RMSE reduction"
    default_margin = 0.02  # 2% of the champion's RMSE: the relative error of an RMSE is about 1/sqrt(2n)
    default_segment_margin = 0.10
    default_drop_margin = 0.05
    default_metric_floor = None  # RMSE has no scale-free floor: set policy.metric_floor in the target's units
    first_model_metric = Metric("r2", True)
    default_first_model_floor = 0.0
    label_rule = "numbers"
    label_words = False
    value_keys = v.RegressionValue.keys

    def value_model(self, costs, currency=""):
        return v.RegressionValue(**{k: float(costs[k]) for k in self.value_keys}, currency=currency)

    @property
    def label_type(self):
        import pyarrow as pa

        return pa.float64()

    def invalid_labels(self, values):
        return ~np.isfinite(values)

    def labels(self, col, where):
        import pyarrow as pa
        import pyarrow.compute as pc

        if not (pa.types.is_integer(col.type) or pa.types.is_floating(col.type) or pa.types.is_decimal(col.type)):
            raise LabelError(f"{where}: a regression label must be numeric, but its type is {col.type}. "
                             "Cast it upstream (and check for text such as 'n/a' in the source).")
        values = pc.fill_null(pc.cast(col, pa.float64()), np.nan).to_numpy(zero_copy_only=False)
        bad = self.invalid_labels(values)
        if bad.any():
            raise LabelError(f"{where}: a regression label must be a finite number; {int(bad.sum())} of {len(values)} "
                             f"values are null, NaN or infinite (first: {values[bad][:5].tolist()}). "
                             "Fix them upstream; a missing label is simply not landed.")
        return values

    def target_stats(self, y):
        std = float(np.std(y))
        return float(np.mean(y)), (std if std > 1e-12 else 1.0)

    def loss(self, out, y, target):
        import torch.nn.functional as F

        mean, std = target
        return F.mse_loss(_one(out).float(), (y - mean) / std)

    def link(self, out, target):
        mean, std = target
        return _one(out).double() * std + mean

    def prediction(self, out, target):
        mean, std = target
        return _one(np.asarray(out, dtype=np.float64)) * std + mean

    def output_fields(self):
        import pyarrow as pa

        return [("prediction", pa.float64())]

    def output_arrays(self, pred, threshold):
        import pyarrow as pa

        return [pa.array(pred, pa.float64())]

    def evaluate(self, y, pred, threshold=0.5):
        from sklearn.metrics import mean_absolute_error, r2_score

        y, pred = m.check_pair(y, pred)
        if len(y) == 0:
            return {x.name: None for x in self.metrics}
        y = y.astype(np.float64)
        return {
            "rmse": float(np.sqrt(np.mean((y - pred) ** 2))),
            "mae": float(mean_absolute_error(y, pred)),
            "r2": float(r2_score(y, pred)) if len(y) > 1 and np.ptp(y) > 0 else None,
        }

    def primary_value(self, y, pred):
        y, pred = m.check_pair(y, pred)
        return float(np.sqrt(np.mean((y.astype(np.float64) - pred) ** 2))) if len(y) else None

    def stats(self, y, pred, threshold=0.5):
        y, pred = m.check_pair(y, pred)
        y = y.astype(np.float64)
        e2 = (y - pred) ** 2
        return {"n": float(len(y)), "sse": float(e2.sum()), "sae": float(np.sqrt(e2).sum()), "sy": float(y.sum()),
                "syy": float((y * y).sum()), "se4": float((e2 * e2).sum())}

    def from_stats(self, stats):
        if not stats or stats["n"] <= 0:
            return {x.name: None for x in self.metrics}, None, 0
        n = stats["n"]
        mse = stats["sse"] / n
        rmse = float(np.sqrt(mse))
        sst = stats["syy"] - stats["sy"] ** 2 / n
        metrics = {"rmse": rmse, "mae": stats["sae"] / n, "r2": float(1 - stats["sse"] / sst) if n > 1 and sst > 1e-12 else None}
        # Delta method: SE(MSE) = sd(e^2)/sqrt(n), SE(RMSE) = SE(MSE) / (2 RMSE).
        var_e2 = max(stats["se4"] / n - mse * mse, 0.0)
        se = float(np.sqrt(var_e2 / n) / (2 * rmse)) if rmse > 0 and n > 1 else None
        return metrics, se, int(round(n))

    def resampled(self, y, pred):
        y, pred = m.check_pair(y, pred)
        return lambda idx: m.resampled_rmses(y, pred, idx)

    def gain(self, champion, challenger):
        champion, challenger = np.asarray(champion, np.float64), np.asarray(challenger, np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            g = np.where(champion > 0, 1.0 - challenger / np.where(champion > 0, champion, 1.0), 0.0)
        return g if g.ndim else float(g)


PROBABILITY_PREFIX = "p__"  # a multiclass predictions table has one `p__<class>` column per class
MAX_CLASSES = 50  # more distinct label values than this is no class label (the import refuses it)


def class_order(values) -> tuple[str, ...]:
    """A first model's class vocabulary: the distinct values, sorted (as numbers when every one is an integer)."""
    distinct = sorted({str(v) for v in values})
    try:
        return tuple(sorted(distinct, key=lambda v: (int(v), v)))
    except ValueError:
        return tuple(distinct)


def _softmax(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    z = np.exp(x - x.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


class MulticlassTask(Task):
    """One label among a fixed, ordered class vocabulary (`classes`), stored in the model's preprocessor.

    The registry holds the task unbound (no vocabulary); `bind(classes)` gives the task for one
    model, `from_schema` the task a predictions table's `p__<class>` columns describe. Labels are
    class values (checked and returned as strings: the integer 2 is the class "2"); predictions
    are probabilities [n, K] in the vocabulary's order. A label whose class is not in the
    vocabulary is *unseen*: it is counted (`unseen`) and left out of every metric, never an error
    at scoring time. A class with fewer than MIN_CLASS_ROWS rows is left out of the macro AUC and
    named (`rare_classes`, `caveats`).
    """

    name = TaskName.MULTICLASS
    primary = Metric("macro_auc", True)
    secondary = (Metric("log_loss", False), Metric("accuracy", True), Metric("macro_f1", True))
    prediction_column = "probability"  # the predicted class's probability (the confidence)
    estimate_method = ("multiclass CBPE: one-vs-rest CBPE per class on the calibrated probabilities, macro-averaged "
                       "(NannyML's method)")
    gain_unit = "macro AUC points"
    default_metric_floor = 0.70
    default_margin = 0.005
    default_segment_margin = 0.03
    default_drop_margin = 0.02
    first_model_metric = Metric("macro_auc", True)
    default_first_model_floor = 0.65
    calibration = "temperature"
    label_rule = "class values (strings or integers), no nulls"
    label_words = False
    label_classes = True

    def __init__(self, classes: "tuple[str, ...] | list[str]" = ()):
        self.classes = tuple(str(c) for c in classes)
        self._index = {c: i for i, c in enumerate(self.classes)}

    def __repr__(self) -> str:
        return f"MulticlassTask(classes={list(self.classes)})"

    def _need(self) -> int:
        if not self.classes:
            raise ValueError("the multiclass task has no class vocabulary here: bind it to the model's "
                             "(`task.bind(preprocessor.classes)`, `bundle.task`) or to a predictions table's (`from_schema`)")
        return len(self.classes)

    # -- vocabulary -----------------------------------------------------------------------
    def bind(self, classes):
        return self if classes is None else MulticlassTask(classes)

    def n_outputs(self, preprocessor) -> int:
        classes = getattr(preprocessor, "classes", None)
        if not classes or len(classes) < 2:
            raise ValueError(f"a multiclass model needs a vocabulary of at least 2 classes, the preprocessor has {classes}: "
                             "a warm start from a model of another task has none; use init_from='transfer' or 'scratch'")
        return len(classes)

    def vocabulary(self, y):
        return class_order(y)

    def grown(self, classes, y):
        if classes is None:
            return class_order(y)
        seen = set(classes)
        new = [c for c in dict.fromkeys(str(v) for v in y) if c not in seen]  # in order of first appearance
        return (*classes, *new)

    def codes(self, y: np.ndarray) -> np.ndarray:
        """Class values (or class indices, when integer-typed) -> indices into the vocabulary; -1: unseen."""
        y = np.asarray(y)
        if y.dtype.kind in "iu":
            return y.astype(np.int64)
        self._need()
        if len(y) == 0:
            return np.zeros(0, np.int64)
        values, inverse = np.unique(y.astype(str), return_inverse=True)
        lookup = np.array([self._index.get(v, -1) for v in values.tolist()], np.int64)
        return lookup[inverse.reshape(-1)]

    def targets(self, y):
        codes = self.codes(y)
        if (codes < 0).any():
            raise LabelError(f"labels of classes {sorted(self.unseen(y))} are not in the model's vocabulary "
                             f"{list(self.classes)}: grow the vocabulary (a warm start does) before training")
        return codes

    def untrainable(self, y):
        present = sorted(set(np.asarray(y).astype(str).tolist()))
        return None if len(present) >= 2 else f"class {present[0] if present else None!r} alone"

    def unseen(self, y):
        y = np.asarray(y)
        if len(y) == 0 or y.dtype.kind in "iu":
            return {}
        values, counts = np.unique(y.astype(str), return_counts=True)
        return {v: int(c) for v, c in zip(values.tolist(), counts.tolist()) if v not in self._index}

    def _counts(self, y) -> tuple[tuple[str, ...], np.ndarray]:
        """Rows per class: over the vocabulary when bound (unseen labels left out), else over `y`'s classes."""
        if not self.classes:
            names, counts = np.unique(np.asarray(y).astype(str), return_counts=True)
            order = class_order(names.tolist())
            lookup = dict(zip(names.tolist(), counts.tolist()))
            return order, np.array([lookup[c] for c in order], np.int64)
        codes = self.codes(y)
        return self.classes, np.bincount(codes[codes >= 0], minlength=len(self.classes))

    def rare_classes(self, y):
        names, counts = self._counts(y)
        return [c for c, n in zip(names, counts) if n < MIN_CLASS_ROWS]

    def caveats(self, y):
        out = []
        names, counts = self._counts(y)
        rare = [f"{c!r} ({int(n)} rows)" for c, n in zip(names, counts) if n < MIN_CLASS_ROWS]
        if rare:
            out.append(f"classes with fewer than {MIN_CLASS_ROWS} rows are left out of the macro AUC: {', '.join(rare)}")
        unseen = self.unseen(y) if self.classes else {}
        if unseen:
            out.append(f"labels of classes the model has never seen are left out of every metric: "
                       f"{', '.join(f'{c!r} ({n} rows)' for c, n in sorted(unseen.items()))}")
        return out

    # -- labels ---------------------------------------------------------------------------
    @property
    def label_type(self):
        import pyarrow as pa

        return pa.string()

    def invalid_labels(self, values):
        return ~np.isfinite(values) | (values != np.round(values))

    def labels(self, col, where):
        import pyarrow as pa
        import pyarrow.compute as pc

        t = col.type.value_type if pa.types.is_dictionary(col.type) else col.type
        if not (pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_integer(t)):
            raise LabelError(f"{where}: a multiclass label must be a class value (a string or an integer), but its type is "
                             f"{col.type}. Cast it upstream, or re-import with --task regression if it is a number to predict.")
        if pa.types.is_dictionary(col.type):
            col = pc.cast(col, t)
        nulls = col.null_count
        if nulls:
            raise LabelError(f"{where}: a multiclass label must not be null; {nulls} of {len(col)} values are. "
                             "Fix them upstream; a missing label is simply not landed.")
        return np.asarray(pc.cast(col, pa.string()).to_pylist() if len(col) else [], dtype=object)

    # -- training -------------------------------------------------------------------------
    def loss(self, out, y, target):
        import torch.nn.functional as F

        return F.cross_entropy(out.float(), y.long())

    def link(self, out, target):
        import torch

        return torch.softmax(out.double(), dim=1)

    def prediction(self, out, target):
        return _softmax(out)

    # -- scoring --------------------------------------------------------------------------
    def output_fields(self):
        import pyarrow as pa

        self._need()
        return [("class", pa.string()), ("probability", pa.float64()),
                *[(f"{PROBABILITY_PREFIX}{c}", pa.float64()) for c in self.classes]]

    def output_arrays(self, pred, threshold):
        import pyarrow as pa

        pred = np.asarray(pred, np.float64)
        best = pred.argmax(axis=1) if len(pred) else np.zeros(0, np.int64)
        names = pa.array(list(self.classes), pa.string())
        return [names.take(pa.array(best)), pa.array(pred.max(axis=1) if len(pred) else [], pa.float64()),
                *[pa.array(pred[:, k], pa.float64()) for k in range(self._need())]]

    def prediction_columns(self):
        return [f"{PROBABILITY_PREFIX}{c}" for c in self.classes] if self.classes else []

    def pred_of(self, table):
        cols = self.prediction_columns()
        if not cols:
            raise ValueError("the multiclass task has no class vocabulary here: bind it with `from_schema` first")
        if table.num_rows == 0:
            return np.zeros((0, len(cols)))
        return np.column_stack([table.column(c).to_numpy() for c in cols]).astype(np.float64)

    def from_schema(self, names):
        return self.bind([n[len(PROBABILITY_PREFIX):] for n in names if n.startswith(PROBABILITY_PREFIX)])

    def align(self, pred, classes):
        if classes is None or tuple(classes) == self.classes:
            return pred
        pred = np.asarray(pred, np.float64)
        out = np.zeros((len(pred), self._need()))
        for j, c in enumerate(classes):
            if c in self._index:
                out[:, self._index[c]] = pred[:, j]
        return out

    def headline(self, pred):
        pred = np.asarray(pred, np.float64)
        return pred.max(axis=1) if pred.ndim == 2 and len(pred) else np.zeros(len(pred))

    def label_mean(self, y):
        return None

    # -- metrics --------------------------------------------------------------------------
    def _pair(self, y, pred) -> tuple[np.ndarray, np.ndarray]:
        """(class indices, probabilities) of the rows whose class the vocabulary has."""
        k = self._need()
        codes = self.codes(y)
        pred = np.asarray(pred, np.float64)
        if pred.ndim != 2 or pred.shape != (len(codes), k):
            raise ValueError(f"multiclass predictions must be [n, {k}] probabilities for {len(codes)} labels, got {pred.shape}")
        if not np.all(np.isfinite(pred)):
            raise ValueError("predictions must be finite")
        keep = codes >= 0
        return codes[keep], pred[keep]

    def _eligible(self, counts: np.ndarray, n: float) -> np.ndarray:
        return (counts >= MIN_CLASS_ROWS) & (n - counts > 0)

    def evaluate(self, y, pred, threshold=0.5):
        from sklearn.metrics import accuracy_score, f1_score, log_loss

        codes, p = self._pair(y, pred)
        if len(codes) == 0:
            return {x.name: None for x in self.metrics}
        k = p.shape[1]
        q = np.clip(p, 1e-15, 1.0)
        q = q / q.sum(axis=1, keepdims=True)
        guess = p.argmax(axis=1)
        return {"macro_auc": self._macro_auc(codes, p),
                "log_loss": float(log_loss(codes, q, labels=list(range(k)))),
                "accuracy": float(accuracy_score(codes, guess)),
                "macro_f1": float(f1_score(codes, guess, average="macro", zero_division=0))}

    def _macro_auc(self, codes, p) -> float | None:
        counts = np.bincount(codes, minlength=p.shape[1])
        eligible = np.flatnonzero(self._eligible(counts, len(codes)))
        if not len(eligible):
            return None
        return float(np.mean([m.auc((codes == j).astype(np.int64), p[:, j]) for j in eligible]))

    def primary_value(self, y, pred):
        codes, p = self._pair(y, pred)
        return self._macro_auc(codes, p) if len(codes) else None

    def too_few(self, y, min_rows):
        reasons = list(super().too_few(y, min_rows))
        names, counts = self._counts(y)
        if int(np.sum(self._eligible(counts, counts.sum()))) < 2:
            shown = ", ".join(f"{c!r}: {int(n)}" for c, n in zip(names, counts))
            reasons.append(f"holdout rows per class ({shown}): the macro AUC needs {MIN_CLASS_ROWS} rows of at least 2 classes")
        return tuple(reasons)

    def resampled(self, y, pred):
        """Macro AUC per resample over the classes eligible on all of `y`. Resamples index every row of `y`;
        rows of unseen classes sit in a score group of their own that no AUC counts (left out, as in `evaluate`)."""
        k = self._need()
        codes = self.codes(y)
        pred = np.asarray(pred, np.float64)
        if pred.shape != (len(codes), k):
            raise ValueError(f"multiclass predictions must be [n, {k}] probabilities for {len(codes)} labels, got {pred.shape}")
        known = codes >= 0
        counts = np.bincount(codes[known], minlength=k)
        per_class = []
        for j in np.flatnonzero(self._eligible(counts, int(known.sum()))):
            groups, n_groups = m.score_groups(pred[known, j])
            g = np.full(len(codes), n_groups, np.int64)  # unseen rows: group n_groups, dropped below
            g[known] = groups
            per_class.append(((codes == j).astype(np.int64), g, n_groups))

        def on(idx):
            b = idx.shape[0]
            if not per_class:
                return np.full(b, np.nan)
            aucs = []
            for yk, g, ng in per_class:
                key = (np.arange(b, dtype=np.int64)[:, None] * (ng + 1) + g[idx]) * 2 + yk[idx]
                cells = np.bincount(key.ravel(), minlength=b * (ng + 1) * 2).reshape(b, ng + 1, 2)[:, :ng]
                aucs.append(m.auc_from_groups(cells[..., 1], cells[..., 0]))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # a resample without a class's rows: NaN, skipped
                return np.nanmean(np.stack(aucs), axis=0)
        return on

    def gain(self, champion, challenger):
        return challenger - champion

    # -- pooled windows and the estimate --------------------------------------------------
    def _bins(self, p: np.ndarray, weights_pos: np.ndarray, weights_neg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        k = p.shape[1]
        bins = m.score_bins(p)
        pos = np.stack([np.bincount(bins[:, j], weights=weights_pos[:, j], minlength=m.SCORE_BINS) for j in range(k)])
        neg = np.stack([np.bincount(bins[:, j], weights=weights_neg[:, j], minlength=m.SCORE_BINS) for j in range(k)])
        return pos, neg

    def stats(self, y, pred, threshold=0.5):
        codes, p = self._pair(y, pred)
        k = self._need()
        onehot = np.zeros((len(codes), k))
        onehot[np.arange(len(codes)), codes] = 1.0
        return self._stats_from(p, onehot)

    def _stats_from(self, p: np.ndarray, c: np.ndarray) -> dict[str, Any]:
        """The statistics with `c` [n, K] the (expected) class membership: one-hot labels, or calibrated probabilities."""
        k = p.shape[1]
        guess = np.zeros_like(c)
        if len(p):
            guess[np.arange(len(p)), p.argmax(axis=1)] = 1.0
        pos, neg = self._bins(p, c, 1.0 - c)
        q = np.clip(p, 1e-15, 1.0)
        q = q / q.sum(axis=1, keepdims=True) if len(q) else q
        return {"n": float(len(p)), "n_k": c.sum(axis=0) if len(p) else np.zeros(k), "pos": pos, "neg": neg,
                "log_loss": float(-np.sum(c * np.log(q))), "correct": float(np.sum(guess * c)),
                "tp": (guess * c).sum(axis=0), "fp": (guess * (1.0 - c)).sum(axis=0), "fn": ((1.0 - guess) * c).sum(axis=0)}

    def estimate_stats(self, pred, threshold=0.5, calibrated=None):
        """CBPE one-vs-rest per class: each row is a member of class k with weight c_k (its calibrated probability;
        the raw one when `calibrated` is None), ranked by its own raw p_k; expected counts follow."""
        p = np.asarray(pred, np.float64)
        if p.ndim != 2 or len(p) < 2:
            return None
        c = p if calibrated is None else np.asarray(calibrated, np.float64)
        return self._stats_from(p, np.clip(c, 0.0, 1.0))

    def estimate(self, pred, threshold=0.5, calibrated=None):
        stats = self.estimate_stats(pred, threshold, calibrated)
        return self.from_stats(stats)[0] if stats else None

    @property
    def estimates(self) -> bool:
        return True

    def from_stats(self, stats):
        if not stats or stats["n"] <= 0:
            return {x.name: None for x in self.metrics}, None, 0
        n, n_k = stats["n"], np.asarray(stats["n_k"], np.float64)
        aucs = m.auc_from_groups(stats["pos"], stats["neg"])
        eligible = np.flatnonzero(self._eligible(n_k, n) & np.isfinite(aucs))
        macro, se = None, None
        if len(eligible):
            macro = float(np.mean(aucs[eligible]))
            ses = [m.hanley_mcneil_se(float(aucs[j]), n_k[j], n - n_k[j]) for j in eligible]
            # The classes' one-vs-rest AUCs taken as independent: an approximation (they share rows).
            se = float(np.sqrt(sum(s * s for s in ses if s is not None)) / len(eligible)) if all(s is not None for s in ses) else None
        tp, fp, fn = (np.asarray(stats[x], np.float64) for x in ("tp", "fp", "fn"))
        den = 2 * tp + fp + fn
        present = den > 1e-12  # sklearn's default: the classes among the labels or the predictions
        f1 = float(np.mean(2 * tp[present] / den[present])) if present.any() else None
        metrics = {"macro_auc": macro, "log_loss": stats["log_loss"] / n, "accuracy": stats["correct"] / n, "macro_f1": f1}
        return metrics, se, int(round(n))


TASKS: dict[TaskName, Task] = {TaskName.BINARY: BinaryTask(), TaskName.REGRESSION: RegressionTask(),
                               TaskName.MULTICLASS: MulticlassTask()}


def task_for(name: "TaskName | str", classes: "tuple[str, ...] | list[str] | None" = None) -> Task:
    """The task by name; with `classes`, bound to that class vocabulary (multiclass)."""
    try:
        return TASKS[TaskName(name)].bind(classes)
    except ValueError:
        raise ValueError(f"unknown task {name!r}; Nightshift knows {', '.join(t.value for t in TaskName)}") from None


def metric_floor(task: Task, configured: float | None) -> float | None:
    """The policy's floor for the primary metric: the configured one, else the task's default."""
    return task.default_metric_floor if configured is None else configured


def drop_margin(task: Task, configured: float | None) -> float:
    """The policy's drop margin: the configured one, else the task's default."""
    return task.default_drop_margin if configured is None else configured


def describe(task: Task) -> dict[str, Any]:
    """What the task is, for records and logs."""
    return {"task": task.name.value, "metric": task.primary.name, "direction": task.primary.direction,
            "gain_unit": task.gain_unit, "estimate_method": task.estimate_method}
