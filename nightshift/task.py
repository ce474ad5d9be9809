"""The task: everything that differs between binary classification and regression, in one place.

Every layer asks `task_for(spec.task)` instead of branching on the task's name: training for
the loss, the output link and the label check; scoring for its output columns; ground truth
for the metrics and the estimate; the policy and the gate for the primary metric, its
direction and what a "gain" is. Adding `multiclass` means adding one class here.

| | binary | regression |
|---|---|---|
| loss, link | BCE with logits, sigmoid | MSE on the standardised target, affine back |
| labels | 0/1 (bool, integer or float), no nulls | finite numbers, no nulls |
| primary metric | AUC, higher is better | RMSE, lower is better |
| secondary | log loss, Brier, accuracy at the threshold | MAE, R² |
| scoring columns | `score` (probability), `decision` (0/1) | `prediction` |
| gate's gain | AUC(challenger) - AUC(champion) | relative RMSE reduction: 1 - RMSE(challenger)/RMSE(champion) |
| estimate before labels | expected metrics under the Platt-calibrated scores (CBPE) | not estimated |
| first model's bar | AUC >= 0.65 | R² >= 0 (beats predicting the mean) |
| gate margin (default) | 0.005 AUC points | 0.02 (2% of RMSE) |

The regression gain is relative so that one `gate.margin` (e.g. 0.005: half a percent of
RMSE) means the same on any target scale.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from nightshift import metrics as m
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

    def n_outputs(self, preprocessor) -> int:
        """How many logits the network's head gives per row (one for binary and regression)."""
        return 1

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


TASKS: dict[TaskName, Task] = {TaskName.BINARY: BinaryTask(), TaskName.REGRESSION: RegressionTask()}


def task_for(name: "TaskName | str") -> Task:
    try:
        return TASKS[TaskName(name)]
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
