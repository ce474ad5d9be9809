"""The generative world: feature rows, a known ground truth, late labels, and drift scenarios.

Everything a day draws comes from `numpy.random.default_rng([seed, day_index, stream])`, so a
day is the same whatever other days are generated, and days before a scenario's onset are
the same in every scenario. Column names come from the `DatasetSpec`; the world gives each
position a role (hinged, interacting, skewed, drifting, ...) rather than a name.

Why the ground truth has hinges: covariate drift should hurt a model trained before it, and
retraining on drifted data should help. The logit rises with the first two numeric features
but turns down sharply past `HINGE_AT` sd, a region that is rare before the drift and common
after it, so a model fitted on pre-drift data extrapolates the wrong way.

The spec's task picks what the ground truth becomes. `binary`: the label is 0/1 with
P(y=1|x) = sigmoid(logit). `regression`: the label is a float, E[y|x] an affine map of the
same logit (so the same hinges, interaction, concept flip and category effects act on it),
plus Gaussian noise. The map is calibrated once per world on pre-drift rows so the target
reads like a delivery time in minutes: mean `TARGET_MEAN`, sd `TARGET_SD`, with `TARGET_R2`
of its variance explained by x (noise sd = TARGET_SD * sqrt(1 - TARGET_R2), 5 minutes). It
is not clipped: drift may move it (the incremental scenario without bound). Labels are
rounded to 0.01. `multiclass`: the label is one of `CLASSES` (three card segments), drawn from
softmax(class scores): the first class's score is the same hinged logit, the second's its own
function of the interacting pair and the categories, the third's 0. So covariate drift hurts a
model fitted before it here too, and the concept scenario turns the first score around. Every
task draws the same features and the same label delays for a seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from nightshift.choices import TaskName
from nightshift.dates import add_days
from nightshift.spec import EVENT_DS, DatasetSpec

SCENARIOS: tuple[str, ...] = (
    "none",
    "sudden-covariate",
    "gradual-covariate",
    "incremental",
    "recurrent",
    "seasonal",
    "concept",
    "new-categories",
)

# Multiclass worlds only: from the onset a fourth class appears (its own score, high where the fifth numeric
# feature is high), so a model trained before it meets a label class it has never seen.
MULTICLASS_SCENARIOS: tuple[str, ...] = ("new-class",)

ARRIVAL_DS = "arrival_ds"  # in World.labels(): the day a label lands; routing only, not written to the lake

MIN_NUMERIC = 4  # the ground truth needs four numeric roles: two hinges, an interacting pair
MIN_CATEGORICAL = 1
CARDINALITIES = (8, 4, 3, 5, 20)  # categorical column j gets CARDINALITIES[j % 5] values

SHIFT_SD = 1.5  # size of the covariate shift of the drifting numeric features, in sd
RAMP_DAYS = 10  # gradual / incremental: days to reach the full shift
BLOCK_DAYS = 7  # recurrent: length of each new/old block
PERIOD_DAYS = 7  # seasonal: period of the modulation
SEASONAL_AMPLITUDE = 1.5
NEW_CATEGORY_SHARE = 0.25
NEW_CATEGORIES = 5
NAN_SHARE = 0.01  # numeric NaN share, in a few columns
NULL_SHARE = 0.005  # null share of the last categorical column
BASE_RATE = 0.27  # the intercept is calibrated so pre-drift P(y=1) is about this
HINGE_AT = 2.25
HINGE_SLOPE = -4.0  # times the feature's linear weight: past the hinge the slope turns negative
INTERACTION = 0.9
TARGET_MEAN = 50.0  # regression: pre-drift mean of the target ("minutes")
TARGET_SD = 10.0  # regression: pre-drift sd of the target
TARGET_R2 = 0.75  # regression: share of the pre-drift target variance that E[y|x] explains
CLASSES = ("basic", "gold", "platinum")  # multiclass: the label's classes, in the order of their scores
SECOND_SCORE_SHIFT = -0.3  # multiclass: the second class's intercept
NEW_CLASS = "titanium"  # the new-class scenario's fourth class
NEW_CLASS_SHIFT = -1.5  # its intercept: about a sixth of the rows after the onset

# RNG streams of a day: each component has its own, so adding a component or a scenario does
# not move the random numbers of the others.
_NUMERIC, _CATEGORICAL, _MISSING, _REGIME, _NEW_CATEGORY, _LABEL, _DELAY = range(1, 8)
_PARAMS = 2**40  # "day index" of the world's fixed parameters and its intercept calibration


@dataclass(frozen=True)
class LabelDelay:
    """Days from a feature day to its label's arrival: mostly fast, with a long tail.

    A share `p_fast` is a geometric delay with mean about `fast_mean_days`, truncated to
    1..`fast_max_days`; the rest is uniform on `fast_max_days`+1..`max_days`. Never 0: no
    label arrives the night its row is scored.
    """

    p_fast: float = 0.85
    fast_mean_days: float = 2.0
    fast_max_days: int = 7
    max_days: int = 30

    def __post_init__(self) -> None:
        if not 0 <= self.p_fast <= 1:
            raise ValueError(f"LabelDelay.p_fast must be in [0, 1], got {self.p_fast}")
        if self.fast_mean_days < 1:
            raise ValueError(f"LabelDelay.fast_mean_days must be >= 1 (delays are at least a day), got {self.fast_mean_days}")
        if not 1 <= self.fast_max_days <= self.max_days:
            raise ValueError(f"LabelDelay needs 1 <= fast_max_days <= max_days, got {self.fast_max_days} and {self.max_days}")
        if self.fast_max_days == self.max_days and self.p_fast < 1:
            raise ValueError("LabelDelay has no room for a tail: make max_days > fast_max_days or p_fast = 1")

    def draw(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """n delays in days (int16), each in 1..max_days."""
        u_fast, u_tail, u_pick = rng.random(n), rng.random(n), rng.random(n)
        q = 1.0 - 1.0 / self.fast_mean_days  # geometric on 1, 2, ...: mean 1/p
        if q <= 0:
            fast = np.ones(n)
        else:  # inverse CDF of the geometric truncated to 1..fast_max_days
            fast = np.ceil(np.log1p(-u_fast * (1.0 - q**self.fast_max_days)) / np.log(q))
        fast = np.clip(fast, 1, self.fast_max_days)
        tail_lo = self.fast_max_days + 1
        tail = tail_lo + np.floor(u_tail * max(self.max_days - self.fast_max_days, 1))
        delay = np.where(u_pick < self.p_fast, fast, np.minimum(tail, self.max_days))
        return delay.astype(np.int16)


def entity_ids(ds: str, index: np.ndarray) -> pa.Array:
    """The entity id of row `index` of day `ds`: unique across days and stable."""
    digits = pc.utf8_lpad(pc.cast(pa.array(np.asarray(index, dtype=np.int64)), pa.string()), width=7, padding="0")
    return pc.binary_join_element_wise(ds, digits, "-")


def _relu(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, 0.0)


class World:
    """A seeded world that draws a day's rows and labels under a drift scenario.

    `onset` is the 0-based index of the first drifted day; `day_index` counts from the
    first simulated day.
    """

    def __init__(self, spec: DatasetSpec, *, seed: int, scenario: str = "none", onset: int = 0, label_delay: LabelDelay = LabelDelay()):
        if scenario not in SCENARIOS + MULTICLASS_SCENARIOS:
            raise ValueError(f"unknown scenario {scenario!r}; valid scenarios: {', '.join(SCENARIOS + MULTICLASS_SCENARIOS)}")
        if scenario in MULTICLASS_SCENARIOS and spec.task != TaskName.MULTICLASS:
            raise ValueError(f"scenario {scenario!r} needs a multiclass world (dataset.task = 'multiclass'), not {spec.task}")
        if len(spec.numeric) < MIN_NUMERIC or len(spec.categorical) < MIN_CATEGORICAL:
            raise ValueError(
                f"the simulator needs at least {MIN_NUMERIC} numeric and {MIN_CATEGORICAL} categorical features; "
                f"the spec has {len(spec.numeric)} numeric and {len(spec.categorical)} categorical"
            )
        if not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        if onset < 0:
            raise ValueError(f"onset must be a day index >= 0, got {onset}")
        self.spec, self.seed, self.scenario, self.onset, self.label_delay = spec, int(seed), scenario, int(onset), label_delay

        n, m = len(spec.numeric), len(spec.categorical)
        rng = np.random.default_rng([self.seed, _PARAMS, 0])
        # Correlated Gaussians: a fixed mixing matrix, columns scaled to unit variance.
        mix = np.eye(n) + rng.normal(0.0, 0.4, (n, n)) / np.sqrt(n)
        self._mix = mix / np.linalg.norm(mix, axis=0)
        self._skewed = (n - 2, n - 1)  # lognormal, standardized
        self._with_nan = tuple(sorted({2, n // 2, n - 1}))
        self._shifted = (0, 1, 4, 5) if n >= 6 else (0, 1)
        w = rng.normal(0.0, 0.15, n) * (rng.random(n) < 0.6)  # the rest: weak effects, some none
        w[:4] = (1.2, 1.0, 0.6, -0.5)
        w[list(self._shifted[2:])] = -0.7  # opposite sign to x0, x1: the drift moves the base rate less
        self._w = w
        # The hinge turns each drifting feature's effect around past HINGE_AT sd.
        self._hinge = HINGE_SLOPE * w[list(self._shifted)]

        self._cards = [CARDINALITIES[j % len(CARDINALITIES)] for j in range(m)]
        self._probs = [np.sort(rng.dirichlet(np.full(c, 1.5)))[::-1] for c in self._cards]
        self._effects = [rng.normal(0.0, 0.4, c) for c in self._cards]
        self._drift_cat = 1 if m >= 2 else 0  # covariate drift reverses this column's frequencies
        self._new_cat = int(np.argmax(self._cards))  # new-categories: the highest-cardinality column
        self._null_cat = m - 1
        new_effects = rng.choice([-1.0, 1.0], NEW_CATEGORIES) * rng.uniform(0.8, 1.6, NEW_CATEGORIES)
        self._new_effects = new_effects
        self._second_effects = rng.normal(0.0, 0.6, self._cards[0])  # multiclass: the second score's category effects
        self._values = []
        for j, (col, c) in enumerate(zip(spec.categorical, self._cards)):
            extra = NEW_CATEGORIES if j == self._new_cat else 0
            self._values.append(pa.array([f"{col}_{k}" for k in range(c + extra)], pa.string()))

        self._intercept = 0.0
        self._intercept, z = self._calibrate()
        # regression: E[y|x] = TARGET_MEAN + _scale * (logit - _centre), calibrated on pre-drift rows
        self._centre, self._scale = float(z.mean()), TARGET_SD * np.sqrt(TARGET_R2) / float(z.std())

    # -- regimes ----------------------------------------------------------------------
    def _covariate_drift(self, day_index: int, rng: np.random.Generator, rows: int) -> tuple[np.ndarray, np.ndarray]:
        """Per-row (numeric shift in sd, weight of the new categorical distribution)."""
        u = rng.random(rows)  # drawn on every day and scenario, so the streams stay aligned
        k = day_index - self.onset
        s = self.scenario
        if k < 0 or s in ("none", "concept", "new-categories", *MULTICLASS_SCENARIOS):
            return np.zeros(rows), np.zeros(rows)
        if s == "sudden-covariate":
            a = np.ones(rows)
        elif s == "gradual-covariate":
            a = (u < min(1.0, (k + 1) / RAMP_DAYS)).astype(float)
        elif s == "incremental":
            a = np.full(rows, (k + 1) / RAMP_DAYS)  # keeps growing past the sudden shift's size
        elif s == "recurrent":
            a = np.full(rows, 1.0 if (k // BLOCK_DAYS) % 2 == 0 else 0.0)
        elif s == "seasonal":  # cos: never exactly 0 on a whole day, so every day after onset differs
            return np.full(rows, SEASONAL_AMPLITUDE / SHIFT_SD * np.cos(2 * np.pi * k / PERIOD_DAYS)), np.zeros(rows)
        else:  # pragma: no cover - SCENARIOS is checked in __init__
            raise AssertionError(s)
        return a, np.clip(a, 0.0, 1.0)

    def _concept_changed(self, day_index: int) -> bool:
        return self.scenario == "concept" and day_index >= self.onset

    # -- drawing ----------------------------------------------------------------------
    def _draw(self, day_index: int, rows: int, drift: bool = True) -> tuple[np.ndarray, list[np.ndarray]]:
        """A day's numeric matrix (with NaN) and categorical codes (-1 = null)."""

        def rng(stream: int) -> np.random.Generator:
            return np.random.default_rng([self.seed, day_index, stream])

        x = rng(_NUMERIC).standard_normal((rows, len(self.spec.numeric))) @ self._mix
        for j in self._skewed:
            s = 0.6
            x[:, j] = (np.exp(s * x[:, j]) - np.exp(s * s / 2)) / np.sqrt((np.exp(s * s) - 1) * np.exp(s * s))

        shift, cat_mix = self._covariate_drift(day_index, rng(_REGIME), rows)
        if not drift:
            shift, cat_mix = np.zeros(rows), np.zeros(rows)
        if shift.any():
            for j in self._shifted:
                x[:, j] += SHIFT_SD * shift

        missing = rng(_MISSING)
        for j in self._with_nan:
            x[missing.random(rows) < NAN_SHARE, j] = np.nan

        cat_rng = rng(_CATEGORICAL)
        codes = []
        for j, p in enumerate(self._probs):
            u, v = cat_rng.random(rows), cat_rng.random(rows)
            c = np.minimum(np.searchsorted(np.cumsum(p), u, side="right"), len(p) - 1)
            if j == self._drift_cat and cat_mix.any():
                new = np.minimum(np.searchsorted(np.cumsum(p[::-1]), u, side="right"), len(p) - 1)
                c = np.where(v < cat_mix, new, c)
            codes.append(c.astype(np.int32))

        new_rng = rng(_NEW_CATEGORY)
        take, which = new_rng.random(rows) < NEW_CATEGORY_SHARE, new_rng.integers(0, NEW_CATEGORIES, rows)
        if drift and self.scenario == "new-categories" and day_index >= self.onset:
            j = self._new_cat
            codes[j] = np.where(take, self._cards[j] + which, codes[j]).astype(np.int32)

        codes[self._null_cat][missing.random(rows) < NULL_SHARE] = -1
        return x, codes

    def _logit(self, x: np.ndarray, codes: list[np.ndarray], concept: bool) -> np.ndarray:
        x = np.nan_to_num(x, nan=0.0)  # a missing value counts as the pre-drift mean
        w = self._w.copy()
        inter = INTERACTION
        if concept:  # the relation of the interacting pair and of the first categorical turns around
            w[2:4] *= -1
            inter = -inter
        z = self._intercept + x @ w
        z += _relu(x[:, list(self._shifted)] - HINGE_AT) @ self._hinge
        z += inter * x[:, 2] * x[:, 3]
        z += 0.8 * np.sin(1.5 * x[:, 2])
        for j, c in enumerate(codes):
            eff = self._effects[j]
            if j == self._new_cat:
                eff = np.concatenate([eff, self._new_effects])
            if concept and j == 0:
                eff = -eff
            z += np.append(eff, 0.0)[c]  # code -1 (null or unknown) -> no effect
        return z

    def _calibrate(self) -> tuple[float, np.ndarray]:
        """The intercept that gives BASE_RATE, and the pre-drift logits of the calibration rows."""
        x, codes = self._draw(_PARAMS, 50_000, drift=False)
        z = self._logit(x, codes, concept=False)
        lo, hi = -10.0, 10.0
        for _ in range(60):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if np.mean(1 / (1 + np.exp(-(z + mid)))) < BASE_RATE else (lo, mid)
        return (lo + hi) / 2, z + (lo + hi) / 2

    # -- public -----------------------------------------------------------------------
    def features(self, day_index: int, ds: str, rows: int) -> pa.Table:
        """The feature rows of one day: entity id, numeric (float64, some NaN), categorical (string)."""
        if rows < 1:
            raise ValueError(f"rows must be >= 1, got {rows}")
        x, codes = self._draw(day_index, rows)
        cols = {self.spec.entity_id: entity_ids(ds, np.arange(rows))}
        for j, col in enumerate(self.spec.numeric):
            cols[col] = pa.array(x[:, j], pa.float64())
        for j, col in enumerate(self.spec.categorical):
            idx = pa.array(codes[j], pa.int32(), mask=codes[j] < 0)
            cols[col] = pa.DictionaryArray.from_arrays(idx, self._values[j]).cast(pa.string())
        return pa.table(cols)

    @property
    def regression(self) -> bool:
        return self.spec.task == TaskName.REGRESSION

    @property
    def multiclass(self) -> bool:
        return self.spec.task == TaskName.MULTICLASS

    @property
    def label_type(self) -> pa.DataType:
        """The Arrow type of the label: int64 (0/1) for binary, float64 for regression, string for multiclass."""
        return pa.float64() if self.regression else pa.string() if self.multiclass else pa.int64()

    def _features_logit(self, features: pa.Table, day_index: int) -> np.ndarray:
        x = np.empty((features.num_rows, len(self.spec.numeric)))
        for j, col in enumerate(self.spec.numeric):
            x[:, j] = pc.fill_null(pc.cast(features[col], pa.float64()), np.nan).to_numpy()
        codes = [
            pc.fill_null(pc.index_in(features[col], value_set=self._values[j]), -1).to_numpy().astype(np.int64)
            for j, col in enumerate(self.spec.categorical)
        ]
        return self._logit(x, codes, concept=self._concept_changed(day_index))

    def class_probabilities(self, features: pa.Table, day_index: int) -> np.ndarray:
        """Multiclass: the true P(class|x) [n, len(CLASSES)] under the regime of `day_index`."""
        z = self._features_logit(features, day_index)
        x = np.nan_to_num(np.column_stack([pc.fill_null(pc.cast(features[c], pa.float64()), np.nan).to_numpy()
                                           for c in self.spec.numeric[:4]]), nan=0.0)
        first = pc.fill_null(pc.index_in(features[self.spec.categorical[0]], value_set=self._values[0]), -1)
        cat = np.append(self._second_effects, 0.0)[first.to_numpy().astype(np.int64)]
        second = SECOND_SCORE_SHIFT + 1.1 * x[:, 2] - 0.8 * x[:, 3] + 0.6 * np.cos(1.2 * x[:, 1]) + cat
        scores = np.column_stack([z, second, np.zeros(len(z))])
        if self.scenario == "new-class":  # the fourth class's column is there from the start, 0 before the onset
            x4 = np.nan_to_num(pc.fill_null(pc.cast(features[self.spec.numeric[4]], pa.float64()), np.nan).to_numpy(), nan=0.0)
            new = NEW_CLASS_SHIFT + 2.0 * x4 if day_index >= self.onset else np.full(len(z), -np.inf)
            scores = np.column_stack([scores, new])
        e = np.exp(scores - scores.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    @property
    def classes(self) -> tuple[str, ...]:
        """Multiclass: the label's classes, in the columns' order of `class_probabilities`."""
        return (*CLASSES, NEW_CLASS) if self.scenario == "new-class" else CLASSES

    def expected(self, features: pa.Table, day_index: int) -> np.ndarray:
        """E[y|x] of each row under the regime of `day_index`: P(y=1|x) for binary, the mean target for regression,
        the class probabilities [n, K] for multiclass."""
        if self.multiclass:
            return self.class_probabilities(features, day_index)
        z = self._features_logit(features, day_index)
        if self.regression:
            return TARGET_MEAN + self._scale * (z - self._centre)
        return 1.0 / (1.0 + np.exp(-z))

    def probability(self, features: pa.Table, day_index: int) -> np.ndarray:
        """The true P(y=1|x) of each row under the regime of `day_index` (binary worlds only)."""
        if self.regression or self.multiclass:
            raise ValueError("World.probability is for a binary world; use World.expected for E[y|x]")
        return self.expected(features, day_index)

    def draw_labels(self, features: pa.Table, day_index: int) -> tuple[np.ndarray, np.ndarray]:
        """Each row's label (int64 0/1, float64 for regression, class names for multiclass) and its delay in
        days (>= 1), as arrays."""
        mean = self.expected(features, day_index)
        label_rng = np.random.default_rng([self.seed, day_index, _LABEL])
        if self.multiclass:  # one draw from each row's class probabilities
            u = label_rng.random(len(mean))
            idx = np.minimum((u[:, None] > np.cumsum(mean, axis=1)).sum(axis=1), mean.shape[1] - 1)
            y = np.array(self.classes, dtype=object)[idx]
        elif self.regression:
            y = np.round(mean + TARGET_SD * np.sqrt(1.0 - TARGET_R2) * label_rng.standard_normal(len(mean)), 2)
        else:
            y = (label_rng.random(len(mean)) < mean).astype(np.int64)
        delay = self.label_delay.draw(np.random.default_rng([self.seed, day_index, _DELAY]), len(mean))
        return y, delay

    def labels(self, features: pa.Table, day_index: int, ds: str) -> pa.Table:
        """Every row's label with the day it arrives (`arrival_ds`, for routing; not a lake column)."""
        y, delay = self.draw_labels(features, day_index)
        arrival = [add_days(ds, int(d)) for d in range(self.label_delay.max_days + 1)]
        return pa.table(
            {
                self.spec.entity_id: features[self.spec.entity_id],
                EVENT_DS: pa.repeat(pa.scalar(ds, pa.string()), len(y)),
                self.spec.label: pa.array(y, self.label_type),
                ARRIVAL_DS: pa.DictionaryArray.from_arrays(pa.array(delay.astype(np.int32)), pa.array(arrival)).cast(pa.string()),
            }
        )
