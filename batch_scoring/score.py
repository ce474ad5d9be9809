"""Nightly scoring: stream a features partition through a model into `predictions/ds=D/`.

Record batches flow through one at a time, so memory is bounded by `scoring.batch_rows`
whatever the partition's size. The output columns come from the task (`score` and
`decision` for binary, `prediction` for regression), and every row carries its lineage (see
`nightshift.tables.predictions`). The partition is committed atomically; a rerun replaces it.
"""

from __future__ import annotations

import functools
import subprocess
from typing import TYPE_CHECKING

import nightshift
from nightshift.dates import ds_range
from nightshift.lake import FEATURES, PREDICTIONS, Lake
from nightshift.registry import ModelRef, Registry
from nightshift.settings import REPO_ROOT
from nightshift.tables import predictions
from nightshift.tables.predictions import scored_by  # noqa: F401 - re-exported for callers of scoring
from nightshift.task import task_for

if TYPE_CHECKING:
    from nightshift.settings import Settings


@functools.cache
def code_version() -> str:
    """Package version plus the git commit it runs from, when there is one."""
    try:
        sha = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "--short=12", "HEAD"],
                             capture_output=True, text=True, timeout=5, check=True).stdout.strip()
        return f"{nightshift.__version__}+g{sha}"
    except (OSError, subprocess.SubprocessError):
        return nightshift.__version__


def score_partition(settings: "Settings", ds: str, model: str | None = None, *, lake: Lake | None = None,
                    table: str = PREDICTIONS, ref: ModelRef | None = None) -> dict:
    """Score `features/ds=ds` with the model chosen by `model` (as_of | champion) and commit it."""
    from training.bundle import load_bundle

    lake = lake or Lake(settings.lake_uri)
    registry = Registry(settings, lake)
    mode = model or settings.scoring.model
    ref = ref or registry.resolve(ds, mode)
    bundle = load_bundle(registry.local_path(ref.version))
    spec, threshold, task = settings.dataset, settings.scoring.threshold, task_for(settings.dataset.task)
    fingerprint = lake.fingerprint(FEATURES, ds)
    schema = predictions.schema(spec, lake.dataset(FEATURES, ds).schema.field(spec.entity_id).type)
    lineage = {"model_name": ref.name, "model_version": ref.version, "model_alias": "champion",
               "model_selection": str(mode), "mlflow_run_id": ref.run_id, "input_fingerprint": fingerprint,
               "code_version": code_version()}

    total = 0.0
    with predictions.writer(lake, ds, schema, lineage, table) as out:
        for batch in lake.batches(FEATURES, ds, settings.scoring.batch_rows, columns=[spec.entity_id, *spec.features]):
            pred = bundle.predict(batch)
            out.write(batch.column(spec.entity_id), task.output_arrays(pred, threshold))
            total += float(pred.sum())
    return {"ds": ds, "table": table, "rows": out.rows, "model_version": ref.version, "model_selection": str(mode),
            f"mean_{task.prediction_column}": round(total / max(out.rows, 1), 6), "input_fingerprint": fingerprint}


def rescore(settings: "Settings", start: str, end: str) -> dict:
    """Rescore nights start..end with today's champion (`model=champion`), e.g. after a rollback."""
    lake = Lake(settings.lake_uri)
    days = [d for d in ds_range(start, end) if lake.exists(FEATURES, d)]
    results = [score_partition(settings, d, "champion", lake=lake) for d in days]
    return {"nights": len(results), "rows": sum(r["rows"] for r in results),
            "model_version": results[0]["model_version"] if results else None}
