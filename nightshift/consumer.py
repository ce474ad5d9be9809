"""What the example `predictions_consumer` DAG does with a `predictions` Asset event: read the
partition the event names and check it holds what the event says."""

from __future__ import annotations

from typing import Any

import pyarrow.compute as pc

from nightshift.lake import PREDICTIONS, Lake


def summarize_partition(extra: dict[str, Any], settings=None) -> dict[str, Any]:
    """Rows, model version and the mean model output of `predictions/ds=<extra['ds']>`; raises if the
    partition disagrees with the event (it was rewritten since: the newer event follows)."""
    from nightshift.settings import load_settings
    from nightshift.task import task_for

    if not extra or "ds" not in extra:
        raise ValueError(f"predictions Asset event without a 'ds' in its extra ({extra!r}): it was not emitted by "
                         "nightly_scoring's confirm_champion; trigger the consumer from a nightly run")
    settings = settings or load_settings()
    lake, ds = Lake.of(settings), extra["ds"]
    output = task_for(settings.dataset.task).prediction_column  # the score, the prediction, the confidence
    table = lake.read(PREDICTIONS, ds, columns=[output, "model_version"])
    versions = sorted(set(pc.unique(table["model_version"]).to_pylist()))
    if table.num_rows != extra.get("rows") or versions != [extra.get("model_version")]:
        raise ValueError(f"predictions/ds={ds} holds {table.num_rows} rows scored by {versions}, but the Asset event "
                         f"announced {extra.get('rows')} rows by v{extra.get('model_version')}: the partition was "
                         "rewritten after the event; the rewrite's own event triggers another run")
    return {"ds": ds, "rows": table.num_rows, "model_version": versions[0], "output": output,
            "mean": float(pc.mean(table[output]).as_py())}
