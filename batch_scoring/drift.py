"""Drift detection for one night. Every alibi-detect call in Nightshift lives in this module.

alibi-detect is under the Business Source License 1.1 (since 0.11.5): production use needs a
licence from Seldon. A team that cannot take that swaps the backend here and nowhere else:
`_feature_tests()` and `_score_test()` are the only functions that touch it.

Method:
- The reference is the fixed-size sample of the champion's training window saved with the
  model version (`reference.parquet` in its bundle).
- The day is represented by a fixed-size, seeded sample of its rows, read in one streaming
  pass, so cost and statistical power do not grow with the partition.
- `TabularDrift` tests each feature (Kolmogorov-Smirnov for numeric, chi-squared for
  categorical) with Benjamini-Hochberg FDR control across features. A missing numeric value
  is a value below every real one, so a change in missingness is drift too; a category
  unseen in the reference is its own category.
- Significance alone is not a verdict: at large samples every test fires. A feature drifts
  only if it is significant AND its effect size reaches a floor (KS distance for numeric,
  total variation distance for categorical).
- The model's own output (the score for binary, the prediction for regression) gets a KS
  test (`KSDrift`) against the model's output on the reference.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from nightshift.columns import category_strings
from nightshift.lake import FEATURES, PREDICTIONS, Lake
from nightshift.registry import Registry
from nightshift.tables import drift as drift_table
from nightshift.tables.drift import OUTPUT_FEATURE
from nightshift.tables.predictions import scored_by
from nightshift.task import task_for

if TYPE_CHECKING:
    from nightshift.settings import DriftSettings, Settings

_MISSING = -1e300  # below every real value: KS treats missing as its own, lowest, value


def detect_drift(settings: "Settings", ds: str, *, lake: Lake | None = None) -> dict:
    """Test night `ds` against the reference of the model that scored it; commit `monitoring/drift/ds=D/`."""
    from training.bundle import load_bundle

    lake = lake or Lake(settings.lake_uri)
    spec, cfg = settings.dataset, settings.drift
    version = scored_by(lake, ds)
    if version is None:
        raise RuntimeError(f"predictions/ds={ds} is missing: score the night before checking drift")
    bundle = load_bundle(Registry(settings, lake).local_path(version.split(",")[-1]))
    reference = bundle.reference()

    idx = sample_indices(lake.dataset(FEATURES, ds).count_rows(), cfg.sample_size, ds)
    sample = take_rows(lake, FEATURES, ds, idx, [*spec.features])
    rows = _feature_tests(reference, sample, spec.numeric, spec.categorical, cfg)

    output = task_for(spec.task).prediction_column
    day_out = take_rows(lake, PREDICTIONS, ds, idx, [output]).column(0).to_numpy()
    rows.append(_score_test(bundle.predict(reference), day_out, cfg))

    day_drift = any(r["drifted"] for r in rows if r["kind"] != "score")
    for r in rows:
        r.update(day_drift=day_drift, model_version=version, reference_rows=reference.num_rows, sample_rows=len(idx))
    drift_table.write(lake, ds, rows)
    drifted = [r["feature"] for r in rows if r["drifted"] and r["kind"] != "score"]
    return {"ds": ds, "drift": day_drift, "drifted_features": drifted,
            "score_drift": bool(rows[-1]["drifted"]), "model_version": version, "sample_rows": len(idx)}


def sample_indices(n_rows: int, size: int, ds: str) -> np.ndarray:
    """A seeded, sorted sample of row positions: the same day always gets the same rows."""
    seed = int.from_bytes(hashlib.sha256(ds.encode()).digest()[:8], "big")
    if n_rows <= size:
        return np.arange(n_rows)
    return np.sort(np.random.default_rng(seed).choice(n_rows, size=size, replace=False))


def take_rows(lake: Lake, table: str, ds: str, idx: np.ndarray, columns: list[str]) -> pa.Table:
    """Rows at sorted positions `idx`, in one streaming pass (memory bounded by one batch)."""
    parts, offset = [], 0
    for batch in lake.batches(table, ds, 262_144, columns=columns):
        lo, hi = np.searchsorted(idx, [offset, offset + batch.num_rows])
        if hi > lo:
            parts.append(batch.take(pa.array(idx[lo:hi] - offset)))
        offset += batch.num_rows
    return pa.Table.from_batches(parts) if parts else pa.table({c: [] for c in columns})


def _encode(reference: pa.Table, sample: pa.Table, numeric, categorical) -> tuple[np.ndarray, np.ndarray]:
    """Both tables as float matrices: numeric with missing -> lowest value, categories -> codes."""
    def numeric_col(t, c):
        v = pc.fill_null(pc.cast(t.column(c), pa.float64()), np.nan).to_numpy(zero_copy_only=False)
        return np.where(np.isnan(v), _MISSING, v)

    ref_cols, x_cols = [], []
    for c in numeric:
        ref_cols.append(numeric_col(reference, c))
        x_cols.append(numeric_col(sample, c))
    for c in categorical:
        ref_vals = pc.fill_null(category_strings(reference.column(c)), "\x00null")
        x_vals = pc.fill_null(category_strings(sample.column(c)), "\x00null")
        vocab = pc.unique(pa.concat_arrays([ref_vals.combine_chunks(), x_vals.combine_chunks()])).sort()
        ref_cols.append(pc.index_in(ref_vals, vocab).to_numpy(zero_copy_only=False).astype(np.float64))
        x_cols.append(pc.index_in(x_vals, vocab).to_numpy(zero_copy_only=False).astype(np.float64))
    return np.column_stack(ref_cols), np.column_stack(x_cols)


def _tvd(a: np.ndarray, b: np.ndarray) -> float:
    cats = np.union1d(a, b)
    pa_ = np.array([(a == c).mean() for c in cats])
    pb_ = np.array([(b == c).mean() for c in cats])
    return float(0.5 * np.abs(pa_ - pb_).sum())


def _feature_tests(reference: pa.Table, sample: pa.Table, numeric, categorical, cfg: "DriftSettings") -> list[dict]:
    from alibi_detect.cd import TabularDrift

    x_ref, x = _encode(reference, sample, numeric, categorical)
    n_num = len(numeric)
    cat_idx = {n_num + j: None for j in range(len(categorical))}
    detector = TabularDrift(x_ref, p_val=cfg.p_val, categories_per_feature=cat_idx or None, correction="fdr")
    out = detector.predict(x, drift_type="batch", return_p_val=True, return_distance=True)["data"]
    p_vals, dist = np.asarray(out["p_val"], np.float64), np.asarray(out["distance"], np.float64)
    # FDR: with a discovery, alibi returns the BH cut-off; without one, nothing is significant
    threshold = float(out["threshold"]) if out["is_drift"] else float(cfg.p_val / len(p_vals))
    significant = (p_vals < threshold) if out["is_drift"] else np.zeros(len(p_vals), dtype=bool)

    rows = []
    for i, name in enumerate([*numeric, *categorical]):
        is_num = i < n_num
        effect = float(dist[i]) if is_num else _tvd(x_ref[:, i], x[:, i])
        floor = cfg.min_effect_numeric if is_num else cfg.min_effect_categorical
        rows.append({
            "feature": name, "kind": "numeric" if is_num else "categorical", "test": "KS" if is_num else "chi2",
            "statistic": float(dist[i]), "p_value": float(p_vals[i]), "threshold": threshold,
            "significant": bool(significant[i]), "effect_size": effect,
            "effect_metric": "ks_distance" if is_num else "total_variation", "min_effect": floor,
            "drifted": bool(significant[i] and effect >= floor),
        })
    return rows


def _score_test(ref_scores: np.ndarray, day_scores: np.ndarray, cfg: "DriftSettings") -> dict:
    from alibi_detect.cd import KSDrift

    detector = KSDrift(ref_scores.reshape(-1, 1).astype(np.float64), p_val=cfg.p_val)
    out = detector.predict(day_scores.reshape(-1, 1).astype(np.float64), return_p_val=True, return_distance=True)["data"]
    p_val, dist = float(np.ravel(out["p_val"])[0]), float(np.ravel(out["distance"])[0])
    significant = p_val < cfg.p_val
    return {"feature": OUTPUT_FEATURE, "kind": "score", "test": "KS", "statistic": dist, "p_value": p_val,
            "threshold": cfg.p_val, "significant": significant, "effect_size": dist, "effect_metric": "ks_distance",
            "min_effect": cfg.min_effect_numeric, "drifted": bool(significant and dist >= cfg.min_effect_numeric)}
