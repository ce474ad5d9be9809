"""Nightly scoring: stream a features partition through a model into `predictions/ds=D/`.

Record batches flow through one at a time, so memory is bounded by `scoring.batch_rows`
whatever the partition's size. Every row carries its lineage: which model (name, version,
alias, how it was chosen, MLflow run), which input (a content fingerprint of the features
partition) and which code. The partition is committed atomically; a rerun replaces it.
"""

from __future__ import annotations

import functools
import subprocess
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

import nightshift
from nightshift.lake import FEATURES, PREDICTIONS, Lake
from nightshift.registry import ModelRef, Registry
from nightshift.settings import REPO_ROOT

if TYPE_CHECKING:
    from nightshift.settings import Settings

LINEAGE = ("model_name", "model_version", "model_alias", "model_selection", "mlflow_run_id", "input_fingerprint", "code_version")


@functools.cache
def code_version() -> str:
    """Package version plus the git commit it runs from, when there is one."""
    try:
        sha = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "--short=12", "HEAD"],
                             capture_output=True, text=True, timeout=5, check=True).stdout.strip()
        return f"{nightshift.__version__}+g{sha}"
    except (OSError, subprocess.SubprocessError):
        return nightshift.__version__


def predictions_schema(id_name: str, id_type: pa.DataType) -> pa.Schema:
    return pa.schema(
        [(id_name, id_type), ("score", pa.float64()), ("decision", pa.int8())]
        + [(name, pa.string()) for name in LINEAGE]
    )


def score_partition(settings: "Settings", ds: str, model: str | None = None, *, lake: Lake | None = None,
                    table: str = PREDICTIONS, ref: ModelRef | None = None) -> dict:
    """Score `features/ds=ds` with the model chosen by `model` (as_of | champion) and commit it."""
    from training.bundle import load_bundle

    lake = lake or Lake(settings.lake_uri)
    registry = Registry(settings, lake)
    mode = model or settings.scoring.model
    ref = ref or registry.resolve(ds, mode)
    bundle = load_bundle(registry.local_path(ref.version))
    spec, threshold = settings.dataset, settings.scoring.threshold
    fingerprint = lake.fingerprint(FEATURES, ds)
    id_type = lake.dataset(FEATURES, ds).schema.field(spec.entity_id).type
    schema = predictions_schema(spec.entity_id, id_type)
    lineage = {"model_name": ref.name, "model_version": ref.version, "model_alias": "champion",
               "model_selection": mode, "mlflow_run_id": ref.run_id, "input_fingerprint": fingerprint,
               "code_version": code_version()}

    lineage_scalars = {name: pa.scalar(lineage[name], pa.string()) for name in LINEAGE}
    rows, score_sum = 0, 0.0
    with lake.writer(table, ds, schema) as writer:
        for batch in lake.batches(FEATURES, ds, settings.scoring.batch_rows, columns=[spec.entity_id, *spec.features]):
            scores = bundle.predict_proba(batch)
            n = batch.num_rows
            columns = [batch.column(spec.entity_id), pa.array(scores, pa.float64()),
                       pa.array((scores >= threshold).astype(np.int8))]
            columns += [pa.repeat(lineage_scalars[name], n) for name in LINEAGE]  # C++ fill, not n Python strings
            writer.write_batch(pa.record_batch(columns, schema=schema))
            rows += n
            score_sum += float(scores.sum())
    return {"ds": ds, "table": table, "rows": rows, "model_version": ref.version, "model_selection": mode,
            "mean_score": round(score_sum / max(rows, 1), 6), "input_fingerprint": fingerprint}


def scored_by(lake: Lake, ds: str) -> str | None:
    """The model version that scored a committed predictions partition (None if not scored)."""
    if not lake.exists(PREDICTIONS, ds):
        return None
    versions = pc.unique(lake.read(PREDICTIONS, ds, columns=["model_version"]).column(0)).to_pylist()
    return versions[0] if len(versions) == 1 else ",".join(sorted(map(str, versions)))
