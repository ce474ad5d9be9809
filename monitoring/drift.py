"""Drift detection for one night, and the alarm that follows it across nights.

Every alibi-detect call in Nightshift lives in this module. alibi-detect is under the Business
Source License 1.1 (since 0.11.5): production use needs a licence from Seldon. A team that
cannot take that swaps the backend here and nowhere else: `_feature_tests()`, `_score_test()`
and `_mmd_test()` are the only functions that touch it.

What a night is tested against (`drift.reference`):
- `training_window` (the default): the fixed-size sample of the champion's training window
  saved in its bundle (`reference.parquet`). It answers "is the model's world still the world
  it learned?". After a retrain on the new regime the alarm ends, as it should.
- `baseline`: a fixed-size sample of a fixed period (`drift.baseline_start..baseline_end`),
  drawn once and cached in the lake. It answers "has the data moved since the baseline
  period?", whatever the model has learned since: the alarm lasts as long as the change.

One night's tests (pure: `test_night`):
- The day is a fixed-size, seeded sample of its rows, read in one streaming pass, so cost and
  power do not grow with the partition.
- `TabularDrift` tests each feature (Kolmogorov-Smirnov for numeric, chi-squared for
  categorical). A missing numeric value is a value below every real one, so a change in
  missingness is drift too; a category unseen in the reference is its own category.
- Unseen categories are a signal of their own, per categorical feature: the share of the
  day's rows whose category the reference never saw, tested against the share expected of
  unseen values (the Good-Turing estimate from the reference: categories seen once / rows).
- Hotelling's two-sample T² tests the numeric features' means at once (`_mean_test`, scipy's F
  distribution, no alibi-detect): standardised by the reference, a missing value at the
  reference's mean. Its effect is the Mahalanobis distance between the means, so small
  shifts of several features add up in their own correlation: a drift that has moved 10% of
  a 200-row night is one clear number here, and below every KS floor.
- `MMDDrift` (`backend="pytorch"`) tests all features at once on a smaller fixed-size sample,
  in the model's own input space (standardised numerics, missing flags and the model's
  category embeddings), with its permutation-test p-value.
- The model's own output (the score for binary, the prediction for regression) gets a KS
  test (`KSDrift`) against the model's output on the reference. It is reported, and does not
  raise the alarm on its own (it moves with drift that the features already show). For
  multiclass the output is class probabilities [n, K]: the mix of predicted classes gets a
  chi-squared test (`ChiSquareDrift`, total-variation effect with its noise floor, as a
  categorical feature; row `__predicted_class__`) and the confidence (the top probability) the
  KS test (row `__score__`); both are reported the same way.
- Significance alone is not a verdict: at large samples every test fires. A per-feature test
  (drift or unseen categories) drifts only if its p-value survives Benjamini-Hochberg across
  the night's per-feature tests AND its
  effect reaches a floor that depends on the sample sizes: the larger of the configured
  minimum effect and the statistic's own noise level at those sizes (its (1 - p_val)
  quantile when nothing changed). A floor below the noise level would mean nothing. MMD and
  the mean test ask other questions (the joint distribution, the means together) and are
  judged at `p_val` on their own, with their floors at their null's quantile.
- A feature that is all null in the day's sample, or no longer numeric where the spec says
  numeric, is a data-quality failure reported with its name, not a crash in a detector.

Across nights (pure: `advance`): a night's evidence is the Simes p-value of its tests (a test
below its floor counts as p = 1), as a z-score. A one-sided CUSUM accumulates it:
S = max(0, S + z - k), and an alarm episode starts when S reaches h. h is set from the target
rate of false alarm episodes (`drift.false_alarms_per_100_nights`) by Siegmund's approximation
of the CUSUM's in-control run length. An episode ends after `drift.quiet_nights_to_end`
consecutive nights without a drifted test, or when the reference changes (a new champion
under `training_window`); either resets S. A sudden change is one night of overwhelming
evidence and alarms that night; a gradual one accumulates.

Why CUSUM: it controls the rate of false alarm *episodes* (its in-control average run length)
at a stated target whatever the daily volume, because its input is a p-value, whose null
distribution does not depend on n; it alarms on the first night of a large change (no
persistence delay); and it adds up moderate evidence that no single night shows. Alpha
spending and e-values control the chance of *any* false alarm over an unbounded horizon,
which costs power forever on a monitor meant to run for years; a k-of-n persistence rule
delays every alarm by k-1 nights.

The tests run in `detect_drift` (nights may run in parallel); the sequence needs the previous
night's state, so it is settled in the night's ordered part (`settle_alarm`, called by
`confirm_champion`). Until then the night's `day_drift` is null.
"""

from __future__ import annotations

import hashlib
import logging
import math
import posixpath
import uuid
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from nightshift.columns import category_strings
from nightshift.dates import ds_range
from nightshift.lake import DRIFT, FEATURES, PREDICTIONS, Lake
from nightshift.registry import Registry
from nightshift.tables import drift as drift_table
from nightshift.tables.drift import OUTPUT_FEATURE
from nightshift.tables.predictions import scored_by
from nightshift.task import task_for

if TYPE_CHECKING:
    from nightshift.settings import DriftSettings, Settings

log = logging.getLogger("nightshift.drift")

_MISSING = -1e300  # below every real value: KS treats missing as its own, lowest, value
_NULL = "\x00null"
_Z_MIN, _Z_MAX = -4.0, 10.0  # a night's evidence, clipped: one absurd night cannot hold an alarm for weeks
_TVD_DRAWS = 2000  # Monte Carlo draws for a categorical feature's noise level
TRAINING_WINDOW, BASELINE = "training_window", "baseline"
METHOD = "cusum"


# -- one night ------------------------------------------------------------------------------
def detect_drift(settings: "Settings", ds: str, *, lake: Lake | None = None, settle: bool = True) -> dict:
    """Test night `ds` against the reference; commit `monitoring/drift/ds=D/`.

    With `settle` (the default) the night's alarm is settled at once from the previous
    night's state, as the in-process replay does; the nightly DAG tests nights in parallel
    and settles them in date order in `confirm_champion`.
    """
    from model.bundle import load_bundle

    lake = lake or Lake.of(settings)
    spec, cfg = settings.dataset, settings.drift
    version = scored_by(lake, ds)
    if version is None:
        raise RuntimeError(f"predictions/ds={ds} is missing: score the night before checking drift")
    bundle = load_bundle(Registry(settings, lake).local_path(version.split(",")[-1]),
                         allow_code_drift=settings.model.allow_code_drift)
    reference, ref_kind, ref_id = reference_for(settings, lake, bundle, version)

    n_rows = lake.dataset(FEATURES, ds).count_rows()
    if n_rows == 0:
        rows = [skip_row(f"features/ds={ds} has 0 rows: nothing to test, the alarm state carries over")]
        log.warning("drift on %s skipped: features/ds=%s is empty", ds, ds)
    else:
        idx = sample_indices(n_rows, cfg.sample_size, ds)
        sample = take_rows(lake, FEATURES, ds, idx, [*spec.features])
        task = task_for(spec.task).from_schema(lake.dataset(PREDICTIONS, ds).schema.names)
        day_out = task.pred_of(take_rows(lake, PREDICTIONS, ds, idx, task.prediction_columns()))
        ref_out = task.align(bundle.predict(reference), bundle.preprocessor.classes)
        rows = test_night(reference, sample, spec.numeric, spec.categorical, cfg, seed=_seed(ds),
                          ref_out=ref_out, day_out=day_out, embed=lambda t: embed(bundle, t),
                          time_index=spec.time_index)
    for r in rows:
        r.update(model_version=version, reference_rows=reference.num_rows, sample_rows=0 if n_rows == 0 else len(idx),
                 reference_kind=ref_kind, reference_id=ref_id)
    drift_table.write(lake, ds, rows)
    if settle:
        rows = settle_alarm(settings, ds, lake=lake) or rows
    return summary(ds, rows)


def summary(ds: str, rows: list[dict]) -> dict:
    """What the night's tests found, and its alarm, in a small dict (the step's return value)."""
    first = rows[0] if rows else {}
    drifted = [r["feature"] for r in rows if r["drifted"] and r["kind"] not in ("score", "skip")]
    score = [r for r in rows if r["kind"] == "score"]
    return {"ds": ds, "drift": bool(first.get("day_drift")), "night_drift": bool(first.get("night_drift")),
            "drifted_features": drifted, "score_drift": any(r["drifted"] for r in score),
            "night_p": first.get("night_p"), "cusum": first.get("cusum"), "episode_start": first.get("episode_start"),
            "model_version": first.get("model_version"), "sample_rows": first.get("sample_rows")}


def test_night(reference: pa.Table, sample: pa.Table, numeric: list[str], categorical: list[str],
               cfg: "DriftSettings", *, seed: int, ref_out: np.ndarray | None = None,
               day_out: np.ndarray | None = None, embed: Callable[[pa.Table], np.ndarray] | None = None,
               time_index: tuple[str, ...] | list[str] = ()) -> list[dict]:
    """Every test of one night, with FDR across them and the size-dependent floors (pure; no lake).

    The first row of the result carries the night: `night_p` (the Simes p-value of its tests)
    and `night_drift` (whether any test drifted tonight). `day_drift` (the alarm) is settled
    later, from the sequence of nights.

    `time_index`: features that only index time (`dataset.time_index`). Their tests are
    reported like any other, but do not count towards the night (nor enter the mean test): a
    new year is drift by construction, and alone it must not start a retrain.
    """
    quality = _quality(reference, sample, numeric, categorical)
    num = [c for c in numeric if c not in quality]
    cat = [c for c in categorical if c not in quality]
    rows = _feature_tests(reference, sample, num, cat, cfg, seed) if num or cat else []
    rows += [_unseen_test(reference, sample, c, cfg) for c in cat]
    _fdr(rows, cfg.p_val)
    if cfg.mean_test and (mean := _mean_test(reference, sample, [c for c in num if c not in time_index], cfg)) is not None:
        rows.append(mean)
    if embed is not None and cfg.mmd_sample_size:  # its own question (the joint distribution), at its own level
        rows.append(_mmd_test(reference, sample, embed, cfg, seed))
    rows += [quality_row(c, "numeric" if c in numeric else "categorical", why) for c, why in quality.items()]
    if ref_out is not None and day_out is not None:
        if np.ndim(ref_out) == 2:  # class probabilities: the predicted class mix, and the confidence
            rows.append(_class_mix_test(np.argmax(ref_out, axis=1), np.argmax(day_out, axis=1), cfg, seed))
            ref_out, day_out = np.max(ref_out, axis=1), np.max(day_out, axis=1)
        rows.append(_score_test(ref_out, day_out, cfg))
    counted = [r for r in rows if r["kind"] != "score" and r["feature"] not in time_index]
    night_p = simes([r["p_value"] if r["drifted"] or r["test"] == "quality" else 1.0 for r in counted])
    night = {"night_p": night_p, "night_drift": any(r["drifted"] for r in counted)}
    for r in rows:
        r.update(night)
    return rows


def _fdr(rows: list[dict], q: float) -> None:
    """Benjamini-Hochberg across the night's tests; a test drifts if significant and at its floor."""
    p = np.array([r["p_value"] for r in rows], np.float64)
    if not len(p):
        return
    order = np.argsort(p)
    passed = p[order] <= q * np.arange(1, len(p) + 1) / len(p)
    cut = float(p[order][np.nonzero(passed)[0].max()]) if passed.any() else 0.0
    threshold = cut if passed.any() else q / len(p)
    for r, pv in zip(rows, p):
        r["threshold"] = threshold
        r["significant"] = bool(passed.any() and pv <= cut)
        r["drifted"] = bool(r["significant"] and r["effect_size"] >= r["min_effect"])


def simes(p_values: list[float]) -> float:
    """The Simes combination: the smallest p-value at which Benjamini-Hochberg rejects anything."""
    p = np.sort(np.asarray([x for x in p_values if x is not None and not math.isnan(x)], np.float64))
    if not len(p):
        return 1.0
    return float(min(1.0, np.min(p * len(p) / np.arange(1, len(p) + 1))))


def sample_indices(n_rows: int, size: int, ds: str) -> np.ndarray:
    """A seeded, sorted sample of row positions: the same day always gets the same rows."""
    if n_rows <= size:
        return np.arange(n_rows)
    return np.sort(np.random.default_rng(_seed(ds)).choice(n_rows, size=size, replace=False))


def _seed(key: str) -> int:
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big")


def take_rows(lake: Lake, table: str, ds: str, idx: np.ndarray, columns: list[str]) -> pa.Table:
    """Rows at sorted positions `idx`, in one streaming pass (memory bounded by one batch)."""
    parts, offset = [], 0
    for batch in lake.batches(table, ds, 262_144, columns=columns):
        lo, hi = np.searchsorted(idx, [offset, offset + batch.num_rows])
        if hi > lo:
            parts.append(batch.take(pa.array(idx[lo:hi] - offset)))
        offset += batch.num_rows
    return pa.Table.from_batches(parts) if parts else pa.table({c: [] for c in columns})


# -- the reference ----------------------------------------------------------------------------
def reference_for(settings: "Settings", lake: Lake, bundle, version: str) -> tuple[pa.Table, str, str]:
    """(the reference sample, its kind, its identity): the state of the alarm belongs to the identity."""
    cfg = settings.drift
    if cfg.reference == TRAINING_WINDOW:
        return bundle.reference(), TRAINING_WINDOW, f"v{version.split(',')[-1]}"
    key = f"{cfg.baseline_start}..{cfg.baseline_end}"
    return baseline_reference(settings, lake), BASELINE, key


def baseline_reference(settings: "Settings", lake: Lake) -> pa.Table:
    """A fixed-size, seeded sample of the baseline period's features, drawn once and cached in the lake."""
    import pyarrow.parquet as pq

    cfg, spec = settings.drift, settings.dataset
    size = settings.training.reference_size
    days = [d for d in ds_range(cfg.baseline_start, cfg.baseline_end) if lake.exists(FEATURES, d)]
    if not days:
        raise ValueError(f"drift.reference = 'baseline' but features has no partition in {cfg.baseline_start}.."
                         f"{cfg.baseline_end}: set drift.baseline_start/baseline_end to days that were landed, or "
                         f"use drift.reference = 'training_window'")
    key = hashlib.sha256(f"{days}|{size}|{spec.features}".encode()).hexdigest()[:16]
    path = posixpath.join(lake.root, "_work", "drift", f"baseline-{cfg.baseline_start}-{cfg.baseline_end}-{key}.parquet")
    if lake.fs.get_file_info(path).type == pa.fs.FileType.File:
        return pq.read_table(path, filesystem=lake.fs)
    per_day = max(1, size // len(days))
    parts = [take_rows(lake, FEATURES, d, sample_indices(lake.dataset(FEATURES, d).count_rows(), per_day, d),
                       [*spec.features]) for d in days]
    table = pa.concat_tables(parts, promote_options="permissive")
    lake.fs.create_dir(posixpath.dirname(path), recursive=True)
    tmp = f"{path}.tmp-{uuid.uuid4().hex}"
    pq.write_table(table, tmp, filesystem=lake.fs)
    lake.fs.move(tmp, path)  # atomic: a reader sees the whole sample or none
    return table


# -- the tests ---------------------------------------------------------------------------------
def _numeric(t: pa.Table, c: str) -> np.ndarray:
    v = pc.fill_null(pc.cast(t.column(c), pa.float64()), np.nan).to_numpy(zero_copy_only=False)
    return np.where(np.isnan(v), _MISSING, v)


def _categories(t: pa.Table, c: str) -> pa.Array:
    return pc.fill_null(category_strings(t.column(c)), _NULL).combine_chunks()


def _quality(reference: pa.Table, sample: pa.Table, numeric: list[str], categorical: list[str]) -> dict[str, str]:
    """Features the detectors cannot test tonight, with why: missing, no longer numeric, all null."""
    out = {}
    for c in [*numeric, *categorical]:
        if c not in sample.column_names:
            out[c] = "missing from the day's features"
            continue
        col = sample.column(c)
        if c in numeric and not (pa.types.is_integer(col.type) or pa.types.is_floating(col.type)
                                 or pa.types.is_decimal(col.type) or pa.types.is_boolean(col.type) or pa.types.is_null(col.type)):
            out[c] = f"dtype {col.type} where the spec says numeric"
        elif sample.num_rows and col.null_count == sample.num_rows:
            out[c] = f"all {sample.num_rows} sampled rows are null"
    return out


def _ks_floor(n: int, m: int, alpha: float, minimum: float) -> float:
    """KS distance noise level: the asymptotic (1 - alpha) critical value at sample sizes n, m."""
    if not n or not m:
        return minimum
    return max(minimum, math.sqrt(-0.5 * math.log(alpha / 2)) * math.sqrt((n + m) / (n * m)))


def _tvd_floor(ref_codes: np.ndarray, n: int, alpha: float, minimum: float, seed: int) -> float:
    """TVD noise level: its (1 - alpha) quantile between two samples of sizes len(ref), n of the same categories."""
    m = len(ref_codes)
    if not n or not m:
        return minimum
    _, counts = np.unique(ref_codes, return_counts=True)
    p = counts / m
    rng = np.random.default_rng(seed)
    a = rng.multinomial(m, p, size=_TVD_DRAWS) / m
    b = rng.multinomial(n, p, size=_TVD_DRAWS) / n
    # effect >= floor must be rarer than alpha by chance: the quantile, and ties at it, fall below the floor
    q = float(np.quantile(0.5 * np.abs(a - b).sum(axis=1), 1 - alpha, method="higher"))
    return max(minimum, float(np.nextafter(q, np.inf)))


def _feature_tests(reference: pa.Table, sample: pa.Table, numeric: list[str], categorical: list[str],
                   cfg: "DriftSettings", seed: int) -> list[dict]:
    from alibi_detect.cd import TabularDrift

    ref_cols, x_cols = [_numeric(reference, c) for c in numeric], [_numeric(sample, c) for c in numeric]
    for c in categorical:
        r, x = _categories(reference, c), _categories(sample, c)
        vocab = pc.unique(pa.concat_arrays([r, x])).sort()
        ref_cols.append(pc.index_in(r, vocab).to_numpy(zero_copy_only=False).astype(np.float64))
        x_cols.append(pc.index_in(x, vocab).to_numpy(zero_copy_only=False).astype(np.float64))
    x_ref, x = np.column_stack(ref_cols), np.column_stack(x_cols)
    n_num, n, m = len(numeric), len(x), len(x_ref)
    cat_idx = {n_num + j: None for j in range(len(categorical))}
    # FDR is applied across all the night's tests in `_fdr`, so here each test keeps its own p-value.
    detector = TabularDrift(x_ref, p_val=cfg.p_val, categories_per_feature=cat_idx or None, correction="fdr")
    out = detector.predict(x, drift_type="feature", return_p_val=True, return_distance=True)["data"]
    p_vals, dist = np.asarray(out["p_val"], np.float64), np.asarray(out["distance"], np.float64)

    rows = []
    for i, name in enumerate([*numeric, *categorical]):
        if i < n_num:
            effect, floor = float(dist[i]), _ks_floor(n, m, cfg.p_val, cfg.min_effect_numeric)
        else:
            effect = _tvd(x_ref[:, i], x[:, i])
            floor = _tvd_floor(x_ref[:, i], n, cfg.p_val, cfg.min_effect_categorical, seed + i)
        rows.append(_row(name, "numeric" if i < n_num else "categorical", "KS" if i < n_num else "chi2",
                         float(dist[i]), float(p_vals[i]), effect, "ks_distance" if i < n_num else "total_variation", floor))
    return rows


def _row(feature: str, kind: str, test: str, statistic: float, p_value: float, effect: float, metric: str,
         floor: float, **extra: Any) -> dict:
    return {"feature": feature, "kind": kind, "test": test, "statistic": statistic, "p_value": p_value,
            "threshold": None, "significant": False, "effect_size": effect, "effect_metric": metric,
            "min_effect": floor, "drifted": False, "unseen_rows": None, "unseen_values": None, "quality": None, **extra}


def quality_row(feature: str, kind: str, why: str) -> dict:
    """A data-quality failure: reported as drifted, with the reason, and counted as overwhelming evidence."""
    return _row(feature, kind, "quality", float("nan"), 0.0, float("nan"), "none", 0.0, drifted=True, quality=why)


def skip_row(why: str) -> dict:
    return {**_row("", "skip", "none", float("nan"), float("nan"), float("nan"), "none", 0.0, quality=why),
            "night_p": None, "night_drift": False}


def _tvd(a: np.ndarray, b: np.ndarray) -> float:
    cats = np.union1d(a, b)
    pa_ = (a[:, None] == cats).mean(axis=0)
    pb_ = (b[:, None] == cats).mean(axis=0)
    return float(0.5 * np.abs(pa_ - pb_).sum())


def _unseen_test(reference: pa.Table, sample: pa.Table, feature: str, cfg: "DriftSettings") -> dict:
    """The share of the day's rows whose category the reference never saw, against what chance gives.

    Under no change, the chance that a row's category is unseen in a reference of m rows is
    about the Good-Turing missing mass: (categories seen exactly once) / m. The p-value is
    the binomial tail of the day's unseen count at that rate (at least 1/m).
    """
    from scipy.stats import binom

    r, x = _categories(reference, feature), _categories(sample, feature)
    m, n = len(r), len(x)
    values, counts = np.unique(r.to_numpy(zero_copy_only=False), return_counts=True)
    missing_mass = max(float((counts == 1).sum()) / max(m, 1), 1.0 / max(m, 1))
    new = pc.invert(pc.is_in(x, pa.array(values, pa.string())))
    unseen = x.filter(new)
    k = len(unseen)
    p = float(binom.sf(k - 1, n, missing_mass)) if k else 1.0
    share = k / n if n else 0.0
    top = []
    if k:
        vc = pc.value_counts(unseen).to_pylist()
        top = [v["values"] for v in sorted(vc, key=lambda v: -v["counts"])[:5]]
    return _row(feature, "unseen", "unseen_share", share, p, share, "unseen_share",
                max(cfg.min_unseen_share, missing_mass), unseen_rows=k, unseen_values=", ".join(top) or None)


def embed(bundle, table: pa.Table) -> np.ndarray:
    """Rows in the model's input space: standardised numerics, missing flags, category embeddings."""
    x_num, x_cat = bundle.preprocessor.transform(table)
    return bundle.net.input_space(x_num, x_cat)


MEAN_FEATURE = "(numeric means)"  # the row of the multivariate mean test


def _mean_test(reference: pa.Table, sample: pa.Table, numeric: list[str], cfg: "DriftSettings") -> dict | None:
    """Hotelling's two-sample T² on the numeric features' means, with its exact F p-value; None when it cannot run.

    Each feature is standardised by the reference's mean and sd, and a missing value is put at
    the reference's mean (missingness is the KS tests' business). The effect is the Mahalanobis
    distance between the two means, in reference sd; its floor is the larger of
    `min_effect_mean` and the distance's own (1 - p_val) quantile when nothing changed. It
    weighs every feature's shift together, in the features' own correlation: a shift of 10% of
    the rows that no single KS distance shows yet is one number here.
    """
    from scipy.stats import f as f_dist

    def matrix(t: pa.Table) -> np.ndarray:
        return np.column_stack([pc.fill_null(pc.cast(t.column(c), pa.float64()), np.nan).to_numpy(zero_copy_only=False)
                                for c in numeric]) if numeric else np.empty((t.num_rows, 0))

    if reference.num_rows <= len(numeric):
        return None
    x_ref, x = matrix(reference), matrix(sample)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-missing reference column: NaN, dropped below
        mu, sd = np.nanmean(x_ref, axis=0), np.nanstd(x_ref, axis=0)
    keep = np.isfinite(mu) & np.isfinite(sd) & (sd > 0)  # a constant or all-missing reference column carries no mean test
    x_ref, x = (np.nan_to_num((a[:, keep] - mu[keep]) / sd[keep]) for a in (x_ref, x))
    p, m, n = int(keep.sum()), len(x_ref), len(x)
    if p == 0 or n < 2 or n + m - p - 1 < 1 or m <= p or n + m - 2 <= p:
        return None
    d = x.mean(axis=0) - x_ref.mean(axis=0)
    pooled = ((m - 1) * np.cov(x_ref, rowvar=False).reshape(p, p) + (n - 1) * np.cov(x, rowvar=False).reshape(p, p)) / (n + m - 2)
    pooled += np.eye(p) * 1e-9 * max(float(np.trace(pooled)) / p, 1e-12)  # collinear features: still invertible
    dist2 = float(d @ np.linalg.solve(pooled, d))  # squared Mahalanobis distance between the means
    t2 = dist2 / (1.0 / n + 1.0 / m)
    df2 = n + m - p - 1
    scale = p * (n + m - 2) / df2
    p_value = float(f_dist.sf(t2 / scale, p, df2))
    null_q = math.sqrt(scale * float(f_dist.isf(cfg.p_val, p, df2)) * (1.0 / n + 1.0 / m))
    row = _row(MEAN_FEATURE, "multivariate", "Hotelling T2", t2, p_value, math.sqrt(max(dist2, 0.0)), "mahalanobis",
               max(cfg.min_effect_mean, null_q), threshold=cfg.p_val, significant=p_value < cfg.p_val)
    row["drifted"] = bool(row["significant"] and row["effect_size"] >= row["min_effect"])
    return row


def _mmd_test(reference: pa.Table, sample: pa.Table, embed: Callable[[pa.Table], np.ndarray],
              cfg: "DriftSettings", seed: int) -> dict:
    """Maximum mean discrepancy between fixed-size samples of the reference and the day, permutation-tested."""
    import torch
    from alibi_detect.cd import MMDDrift

    rng = np.random.default_rng(seed)

    def pick(t: pa.Table) -> pa.Table:
        k = min(cfg.mmd_sample_size, t.num_rows)
        return t.take(pa.array(np.sort(rng.choice(t.num_rows, size=k, replace=False))))

    x_ref, x = embed(pick(reference)), embed(pick(sample))
    torch.manual_seed(seed % (2**31))
    detector = MMDDrift(x_ref, backend="pytorch", p_val=cfg.p_val, n_permutations=cfg.mmd_permutations, device="cpu")
    out = detector.predict(x, return_p_val=True, return_distance=True)["data"]
    stat, null_q = float(out["distance"]), float(out["distance_threshold"])
    # the permutation p-value counts the observed statistic among the permutations: never below 1/(B+1)
    p = max(float(out["p_val"]), 1.0 / (cfg.mmd_permutations + 1))
    row = _row("(all features)", "multivariate", "MMD", stat, p, stat, "mmd2", max(cfg.min_effect_mmd, null_q),
               threshold=cfg.p_val, significant=p < cfg.p_val)
    row["drifted"] = bool(row["significant"] and stat >= row["min_effect"])
    return row


def _score_test(ref_scores: np.ndarray, day_scores: np.ndarray, cfg: "DriftSettings") -> dict:
    from alibi_detect.cd import KSDrift

    detector = KSDrift(ref_scores.reshape(-1, 1).astype(np.float64), p_val=cfg.p_val)
    out = detector.predict(day_scores.reshape(-1, 1).astype(np.float64), return_p_val=True, return_distance=True)["data"]
    p_val, dist = float(np.ravel(out["p_val"])[0]), float(np.ravel(out["distance"])[0])
    floor = _ks_floor(len(day_scores), len(ref_scores), cfg.p_val, cfg.min_effect_numeric)
    row = _row(OUTPUT_FEATURE, "score", "KS", dist, p_val, dist, "ks_distance", floor, threshold=cfg.p_val)
    row["significant"] = p_val < cfg.p_val
    row["drifted"] = bool(row["significant"] and dist >= floor)
    return row


OUTPUT_CLASS_FEATURE = "__predicted_class__"  # the row that tests a multiclass model's mix of predicted classes


def _class_mix_test(ref_classes: np.ndarray, day_classes: np.ndarray, cfg: "DriftSettings", seed: int) -> dict:
    """Chi-squared on the predicted classes, judged like a categorical feature (total variation and its floor)."""
    from alibi_detect.cd import ChiSquareDrift

    # Codes 0..n-1 over the classes either side predicted: a class the reference never predicted is a category too.
    cats, codes = np.unique(np.concatenate([ref_classes, day_classes]), return_inverse=True)
    x_ref = codes[:len(ref_classes)].astype(np.float64).reshape(-1, 1)
    x = codes[len(ref_classes):].astype(np.float64).reshape(-1, 1)
    detector = ChiSquareDrift(x_ref, p_val=cfg.p_val, categories_per_feature={0: len(cats)})
    out = detector.predict(x, return_p_val=True, return_distance=True)["data"]
    p_val, stat = float(np.ravel(out["p_val"])[0]), float(np.ravel(out["distance"])[0])
    effect = _tvd(x_ref[:, 0], x[:, 0])
    floor = _tvd_floor(x_ref[:, 0], len(x), cfg.p_val, cfg.min_effect_categorical, seed)
    row = _row(OUTPUT_CLASS_FEATURE, "score", "chi2", stat, p_val, effect, "total_variation", floor, threshold=cfg.p_val)
    row["significant"] = p_val < cfg.p_val
    row["drifted"] = bool(row["significant"] and effect >= floor)
    return row


# -- across nights -----------------------------------------------------------------------------
@dataclass(frozen=True)
class AlarmRule:
    """The CUSUM's parameters: reference value k (in z units) and decision interval h."""
    k: float
    h: float
    quiet_nights_to_end: int
    target_per_100_nights: float

    @classmethod
    def from_settings(cls, cfg: "DriftSettings") -> "AlarmRule":
        return cls(cfg.cusum_k, cusum_h(cfg.cusum_k, 100.0 / cfg.false_alarms_per_100_nights), cfg.quiet_nights_to_end,
                   cfg.false_alarms_per_100_nights)


@dataclass(frozen=True)
class AlarmState:
    """Where the alarm stands after a night: carried from night to night in the drift partition."""
    cusum: float = 0.0
    alarm: bool = False
    episode_start: str | None = None
    quiet_nights: int = 0
    reference_id: str | None = None


def cusum_h(k: float, arl0: float) -> float:
    """The decision interval whose in-control average run length is `arl0` nights, for N(0,1) increments.

    Siegmund's approximation of a one-sided CUSUM's ARL at mean 0 with reference value k:
    ARL = (exp(2kb) - 2kb - 1) / (2k^2), b = h + 1.166. Solved for h by bisection.
    """
    def arl(h: float) -> float:
        b = h + 1.166
        return (math.exp(2 * k * b) - 2 * k * b - 1) / (2 * k * k)

    lo, hi = 0.0, 50.0
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if arl(mid) < arl0 else (lo, mid)
    return round(hi, 4)


def night_z(p: float | None) -> float | None:
    """A night's evidence as a z-score (one-sided), clipped so one night cannot dominate for weeks."""
    from scipy.stats import norm

    if p is None or math.isnan(p):
        return None
    return float(min(_Z_MAX, max(_Z_MIN, norm.isf(max(p, 1e-300)))))


def advance(state: AlarmState, night_p: float | None, night_drift: bool, reference_id: str | None, ds: str,
            rule: AlarmRule) -> AlarmState:
    """The alarm after night `ds`, from the state after the previous night (pure)."""
    if reference_id != state.reference_id:  # a new reference: what was accumulated against the old one is moot
        state = AlarmState(reference_id=reference_id)
    z = night_z(night_p)
    if z is None:  # a skipped night changes nothing
        return state
    s = max(0.0, state.cusum + z - rule.k)
    quiet = 0 if night_drift else state.quiet_nights + 1
    if state.alarm:
        if quiet >= rule.quiet_nights_to_end:
            return AlarmState(0.0, False, None, quiet, reference_id)
        return AlarmState(s, True, state.episode_start, quiet, reference_id)
    if s >= rule.h:  # an episode starts; it ends after `quiet_nights_to_end` quiet nights from here
        return AlarmState(s, True, ds, 0, reference_id)
    return AlarmState(s, False, None, quiet, reference_id)


def settle_alarm(settings: "Settings", ds: str, *, lake: Lake | None = None) -> list[dict] | None:
    """Settle night `ds`'s alarm from the latest earlier checked night's state; rewrite its drift partition.

    Called in date order (the night's ordered part). If an earlier night was never settled
    (tested outside the flow), its state is replayed from the last settled one. Returns the
    rows as committed, or None when `ds` was not tested.
    """
    lake = lake or Lake.of(settings)
    rule = AlarmRule.from_settings(settings.drift)
    rows = drift_table.read(lake, ds)
    if not rows:
        return None
    state = _state_before(lake, ds, rule)
    first = rows[0]
    new = advance(state, first.get("night_p"), bool(first.get("night_drift")), first.get("reference_id"), ds, rule)
    skipped = first.get("night_p") is None
    settled = {"day_drift": None if skipped else new.alarm, "alarm_method": METHOD, "cusum": new.cusum, "cusum_k": rule.k,
               "cusum_h": rule.h, "alarm_target_per_100_nights": rule.target_per_100_nights,
               "night_z": night_z(first.get("night_p")), "episode_start": new.episode_start,
               "quiet_nights": new.quiet_nights, "alarm_reference_id": new.reference_id}
    if all(first.get(k) == v for k, v in settled.items()):
        return rows
    for r in rows:
        r.update(settled)
    drift_table.write(lake, ds, rows)
    if new.alarm and new.episode_start == ds:
        log.warning("drift alarm starts on %s: CUSUM %.2f reached h=%.2f (k=%.2f, target %.2g false alarms per 100 "
                    "nights); night p=%.3g", ds, new.cusum, rule.h, rule.k, rule.target_per_100_nights, first["night_p"])
    return rows


def _state_before(lake: Lake, ds: str, rule: AlarmRule) -> AlarmState:
    earlier = [d for d in lake.partitions(DRIFT) if d < ds]
    pending: list[dict] = []
    state = AlarmState()
    for d in reversed(earlier):
        rows = drift_table.read(lake, d)
        if not rows:
            continue
        first = rows[0]
        if first.get("alarm_method") == METHOD and first.get("cusum") is not None:
            state = AlarmState(first["cusum"], bool(first["day_drift"]) if first["day_drift"] is not None else
                               bool(first.get("episode_start")), first.get("episode_start"),
                               int(first.get("quiet_nights") or 0), first.get("alarm_reference_id"))
            break
        pending.append({"ds": d, **first})
    for p in reversed(pending):  # nights tested but never settled: replay them in date order
        state = advance(state, p.get("night_p"), bool(p.get("night_drift")), p.get("reference_id"), p["ds"], rule)
    return state

