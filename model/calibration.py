"""A model's calibrator and its holdout reference: `calibration.json` in the bundle, numpy only.

The retrain fits a **Platt** calibrator, P(y=1) = sigmoid(a * logit(score) + b), on the
champion-to-be's predictions over the gate's holdout (time-based, newest labelled days,
never trained on). Platt rather than isotonic: the holdout can be a few hundred rows, where
isotonic regression's many steps overfit, and its flat steps tie scores, which changes the
ranking and so the estimated AUC; Platt is two numbers, strictly monotone for a > 0 (AUC
unchanged) and stable at any size. Platt's target smoothing (positives count as
(N+ + 1)/(N+ + 2), negatives as 1/(N- + 2)) keeps a small or separable holdout from pushing
`a` to infinity.

For **multiclass** the calibrator is **temperature scaling** (Guo et al. 2017): one number T,
P = softmax(log p / T), fitted by the same rule on the same holdout (cross-entropy, a
golden-section search over log T). One parameter for the same reasons as Platt: stable on a
few hundred rows, and it never changes a row's ranking of the classes (argmax, per-class
one-vs-rest order), so the estimated macro AUC moves only through the expected class counts.

The same file holds the model's **reference**: its primary metric realized on that holdout,
with its standard error and size, and the metrics estimated there from the calibrated
scores. The policy compares production against it ("below the champion's own reference by a
margin"), so that signal needs no absolute floor. Scoring-side code reads the file with
`read_model_card` (plain JSON, no torch, nothing unpickled).

With a `[value]` cost matrix the card also holds the holdout's business value at the decision
threshold (`value`), and with `scoring.threshold = "value"` the threshold picked there to
maximise it (`threshold`): the version's own, which scoring then decides with. A bundle without the file (made
before it existed) loads as before; its estimate then says "uncalibrated" and the
reference-based signals stay silent.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

CALIBRATION = "calibration.json"
FORMAT = "model.calibration/1"
_EPS = 1e-12
MIN_CALIBRATION_ROWS = 50  # and at least MIN_CLASS of each class: fewer and the calibrator is left out
MIN_CLASS = 5


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, np.float64), _EPS, 1 - _EPS)
    return np.log(p) - np.log1p(-p)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # overflow-free


@dataclass(frozen=True)
class Calibrator:
    """Platt scaling on the logit of the score: pure numpy to apply."""

    a: float
    b: float
    rows: int
    positives: int
    method: str = "platt"

    def apply(self, score: np.ndarray) -> np.ndarray:
        """Calibrated P(y=1) per row (float64)."""
        return _sigmoid(self.a * _logit(score) + self.b)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def words(self) -> str:
        return f"Platt-calibrated (a={self.a:.4g}, b={self.b:.4g}, fitted on {self.rows} holdout rows)"

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Calibrator":
        if d.get("method", "platt") != "platt":
            raise ValueError(f"unknown calibrator method {d.get('method')!r}; this version knows 'platt'")
        a, b = float(d["a"]), float(d["b"])
        if not (math.isfinite(a) and math.isfinite(b)):
            raise ValueError(f"calibrator parameters must be finite, got a={a}, b={b}")
        return cls(a=a, b=b, rows=int(d.get("rows", 0)), positives=int(d.get("positives", 0)))


@dataclass(frozen=True)
class TemperatureCalibrator:
    """Temperature scaling of multiclass probabilities: softmax(log p / t); pure numpy to apply."""

    t: float
    rows: int
    classes: int
    method: str = "temperature"

    def apply(self, prob: np.ndarray) -> np.ndarray:
        """Calibrated class probabilities [n, K] (float64)."""
        z = np.log(np.clip(np.asarray(prob, np.float64), _EPS, 1.0)) / self.t
        if z.ndim != 2:
            raise ValueError(f"temperature scaling takes probabilities [n, K], got shape {z.shape}")
        z = np.exp(z - z.max(axis=1, keepdims=True)) if len(z) else z
        return z / z.sum(axis=1, keepdims=True) if len(z) else z

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def words(self) -> str:
        return f"temperature-scaled (T={self.t:.4g}, fitted on {self.rows} holdout rows)"

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TemperatureCalibrator":
        t = float(d["t"])
        if not (math.isfinite(t) and t > 0):
            raise ValueError(f"a temperature must be finite and positive, got t={t}")
        return cls(t=t, rows=int(d.get("rows", 0)), classes=int(d.get("classes", 0)))


def fit_temperature(codes: np.ndarray, prob: np.ndarray, *, lo: float = 0.05, hi: float = 20.0,
                    iters: int = 80) -> TemperatureCalibrator:
    """The temperature that minimises the cross-entropy of softmax(log p / T) on class indices `codes`:
    a golden-section search over log T in [lo, hi] (the loss is unimodal in log T)."""
    codes = np.asarray(codes, np.int64)
    logp = np.log(np.clip(np.asarray(prob, np.float64), _EPS, 1.0))
    if logp.ndim != 2 or len(codes) != len(logp) or len(codes) == 0:
        raise ValueError(f"temperature scaling needs class indices [n] and probabilities [n, K], got {codes.shape} and {logp.shape}")
    if codes.min() < 0 or codes.max() >= logp.shape[1]:
        raise ValueError(f"class indices must lie in [0, {logp.shape[1]})")
    rows = np.arange(len(codes))

    def loss(log_t: float) -> float:
        z = logp / math.exp(log_t)
        zmax = z.max(axis=1, keepdims=True)
        return float(np.sum(np.log(np.exp(z - zmax).sum(axis=1)) + zmax[:, 0] - z[rows, codes]))

    a, b = math.log(lo), math.log(hi)
    g = (math.sqrt(5) - 1) / 2
    c, d = b - g * (b - a), a + g * (b - a)
    fc, fd = loss(c), loss(d)
    for _ in range(iters):
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - g * (b - a)
            fc = loss(c)
        else:
            a, c, fc = c, d, fd
            d = a + g * (b - a)
            fd = loss(d)
    return TemperatureCalibrator(t=float(math.exp((a + b) / 2)), rows=int(len(codes)), classes=int(logp.shape[1]))


def calibrator_from_dict(d: dict[str, Any]) -> "Calibrator | TemperatureCalibrator":
    """A calibrator from its JSON, by its method."""
    kinds = {"platt": Calibrator, "temperature": TemperatureCalibrator}
    method = d.get("method", "platt")
    if method not in kinds:
        raise ValueError(f"unknown calibrator method {method!r}; this version knows {', '.join(kinds)}")
    return kinds[method].from_dict(d)


def fit_platt(y: np.ndarray, score: np.ndarray, *, max_iter: int = 100, tol: float = 1e-10) -> Calibrator:
    """Platt's method: a 1-feature logistic regression on logit(score), smoothed targets.

    Newton steps with a backtracking line search on the (convex) loss: a full Newton step from
    the identity can overshoot when the scores are far from calibrated, and diverge.
    """
    y = np.asarray(y, np.float64)
    x = _logit(score)
    if y.shape != x.shape or y.ndim != 1:
        raise ValueError(f"labels and scores must be 1-d and the same length, got {y.shape} and {x.shape}")
    n_pos = float(y.sum())
    n_neg = len(y) - n_pos
    if n_pos < 1 or n_neg < 1:
        raise ValueError(f"a calibrator needs both classes; got {int(n_pos)} positives and {int(n_neg)} negatives")
    t = np.where(y > 0.5, (n_pos + 1) / (n_pos + 2), 1 / (n_neg + 2))

    def loss(a: float, b: float) -> float:  # cross-entropy against the smoothed targets, overflow-free
        z = a * x + b
        return float(np.sum(np.logaddexp(0.0, z) - t * z))

    a, b = 1.0, 0.0
    current = loss(a, b)
    for _ in range(max_iter):
        p = _sigmoid(a * x + b)
        w = np.maximum(p * (1 - p), 1e-12)
        g = np.array([np.sum((p - t) * x), np.sum(p - t)])
        h = np.array([[np.sum(w * x * x), np.sum(w * x)], [np.sum(w * x), np.sum(w)]]) + 1e-9 * np.eye(2)
        step = np.linalg.solve(h, g)
        scale = 1.0
        while scale > 1e-6 and (trial := loss(a - scale * step[0], b - scale * step[1])) > current:
            scale *= 0.5
        if scale <= 1e-6:
            break  # no step lowers the loss: at the optimum, to rounding
        a, b, current = a - scale * step[0], b - scale * step[1], trial
        if np.max(np.abs(scale * step)) < tol:
            break
    return Calibrator(a=float(a), b=float(b), rows=int(len(y)), positives=int(n_pos))


@dataclass(frozen=True)
class Reference:
    """The model's primary metric on its holdout at training time, the policy's yardstick."""

    metric: str
    higher_is_better: bool
    realized: float | None  # on the holdout's labels
    se: float | None  # its standard error (Hanley-McNeil for AUC; delta method for RMSE)
    rows: int
    estimated: float | None = None  # estimated from the (calibrated) holdout scores alone
    estimated_se: float | None = None
    metrics: dict[str, float | None] = field(default_factory=dict)
    estimated_metrics: dict[str, float | None] = field(default_factory=dict)
    days: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "days": list(self.days)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Reference":
        return cls(metric=str(d["metric"]), higher_is_better=bool(d["higher_is_better"]), realized=_num(d.get("realized")),
                   se=_num(d.get("se")), rows=int(d.get("rows", 0)), estimated=_num(d.get("estimated")),
                   estimated_se=_num(d.get("estimated_se")), metrics=dict(d.get("metrics") or {}),
                   estimated_metrics=dict(d.get("estimated_metrics") or {}), days=tuple(d.get("days") or ()))


@dataclass(frozen=True)
class ModelCard:
    """What `calibration.json` holds: the calibrator (None: uncalibrated) and the holdout reference."""

    calibrator: "Calibrator | TemperatureCalibrator | None" = None
    reference: Reference | None = None
    note: str = ""
    threshold: float | None = None  # the decision threshold picked for business value (scoring.threshold = "value")
    value: dict[str, Any] | None = None  # business value on the holdout at the decision threshold (a cost matrix set)

    def calibrate(self, score: np.ndarray) -> np.ndarray:
        return np.asarray(score, np.float64) if self.calibrator is None else self.calibrator.apply(score)

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "calibrator": self.calibrator.to_dict() if self.calibrator else None,
                "reference": self.reference.to_dict() if self.reference else None, "note": self.note,
                "threshold": self.threshold, "value": self.value}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelCard":
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise ValueError(f"not a {FORMAT} document (format {d.get('format') if isinstance(d, dict) else None!r})")
        return cls(calibrator=calibrator_from_dict(d["calibrator"]) if d.get("calibrator") else None,
                   reference=Reference.from_dict(d["reference"]) if d.get("reference") else None,
                   note=str(d.get("note", "")), threshold=_num(d.get("threshold")),
                   value=dict(d["value"]) if d.get("value") else None)


UNCALIBRATED = ModelCard(note="no calibration.json: a bundle made before calibrators existed")


def write_model_card(path: str | Path, card: ModelCard) -> Path:
    """Write `calibration.json` into the bundle folder `path` (write, then rename)."""
    path = Path(path)
    tmp = path / f".{CALIBRATION}.tmp"
    tmp.write_text(json.dumps(card.to_dict(), indent=2, sort_keys=True, allow_nan=False) + "\n")
    tmp.replace(path / CALIBRATION)
    return path / CALIBRATION


def read_model_card(path: str | Path) -> ModelCard:
    """The bundle folder's card; `UNCALIBRATED` when the file is absent (older bundles)."""
    file = Path(path) / CALIBRATION
    if not file.is_file():
        return UNCALIBRATED
    try:
        return ModelCard.from_dict(json.loads(file.read_bytes()))
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"model bundle file {file} is corrupt: {exc}. Roll back to another version or retrain; "
                         f"if this is the local model cache, delete {file.parent} and rerun") from None


def method_words(card: ModelCard, task_method: str) -> str:
    """The estimate's method as recorded: the task's, and whether the scores were calibrated."""
    if task_method.startswith("not estimated"):
        return task_method
    if card.calibrator is None:
        return f"{task_method}; uncalibrated: the model has no calibrator, raw scores taken as probabilities"
    return f"{task_method}; {card.calibrator.words()}"


def _platt(task: Any, y: np.ndarray, pred: np.ndarray):
    n_pos = int(np.sum(y))
    if len(y) >= MIN_CALIBRATION_ROWS and min(n_pos, len(y) - n_pos) >= MIN_CLASS:
        return fit_platt(y, pred), ""
    return None, (f"uncalibrated: the holdout has {len(y)} rows, {n_pos} positive; a calibrator needs "
                  f"{MIN_CALIBRATION_ROWS} rows and {MIN_CLASS} of each class")


def _temperature(task: Any, y: np.ndarray, pred: np.ndarray):
    codes = task.codes(y)
    seen = codes >= 0  # labels of classes the model never saw cannot calibrate it
    present = len(np.unique(codes[seen]))
    if int(seen.sum()) >= MIN_CALIBRATION_ROWS and present >= 2:
        return fit_temperature(codes[seen], pred[seen]), ""
    return None, (f"uncalibrated: the holdout has {int(seen.sum())} rows of {present} known classes; a temperature "
                  f"needs {MIN_CALIBRATION_ROWS} rows and 2 classes")


_FITTERS = {"platt": _platt, "temperature": _temperature}  # by `Task.calibration`


def _num(v: Any) -> float | None:
    return None if v is None else float(v)


def fit_model_card(task: Any, y: np.ndarray, pred: np.ndarray, threshold: float = 0.5,
                   days: tuple[str, ...] | list[str] = (), value_model: Any = None,
                   pick_threshold: bool = False) -> ModelCard:
    """The card a retrain writes: the task's calibrator (`task.calibration`: Platt for binary, temperature
    scaling for multiclass) where the holdout allows, and the holdout reference (realized and estimated
    primary metric, standard errors). A multiclass `task` must be bound to the model's vocabulary.

    With a cost matrix (`value_model`, `nightshift.value`), also the holdout's business value at the
    decision threshold, realized and expected; with `pick_threshold` (scoring.threshold = "value") that
    threshold is first picked to maximise the realized value there, and recorded as the version's own."""
    y, pred = np.asarray(y), np.asarray(pred, np.float64)
    primary = task.primary.name
    calibrator, note = None, ""
    if len(y) == 0:
        return ModelCard(note="the holdout was empty: no calibrator and no reference")
    if task.calibration is not None:
        calibrator, note = _FITTERS[task.calibration](task, y, pred)
    picked = None
    if value_model is not None and pick_threshold and value_model.decides:
        picked, _ = value_model.best_threshold(y, pred)
        threshold = picked
    realized, se, _ = task.from_stats(task.stats(y, pred, threshold))
    exact = task.evaluate(y, pred, threshold)
    est_stats = task.estimate_stats(pred, threshold, calibrator.apply(pred) if calibrator else None)
    estimated, est_se, _ = task.from_stats(est_stats) if est_stats else ({}, None, 0)
    reference = Reference(metric=primary, higher_is_better=task.primary.higher_is_better, realized=exact.get(primary),
                          se=se, rows=int(len(y)), estimated=estimated.get(primary), estimated_se=est_se,
                          metrics={k: v for k, v in exact.items() if v is not None},
                          estimated_metrics={k: v for k, v in estimated.items() if v is not None}, days=tuple(days))
    value = None
    if value_model is not None:
        decision = pred >= threshold if value_model.decides else None
        expected = value_model.expected(pred, decision, calibrator.apply(pred) if calibrator else None)
        value = {"per_row": float(np.mean(value_model.realized(y, pred, decision))),
                 "estimated_per_row": None if expected is None else float(np.mean(expected)), "rows": int(len(y)),
                 "threshold": float(threshold) if value_model.decides else None, "picked": picked is not None,
                 "matrix": value_model.matrix(), "currency": value_model.currency}
    return ModelCard(calibrator=calibrator, reference=reference, note=note, threshold=picked, value=value)
