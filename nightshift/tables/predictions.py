"""`predictions/ds=D/` (and `shadow/ds=D/`): one row per scored entity, with its lineage.

Columns: the entity id, the task's output columns (`score`, `decision` for binary;
`prediction` for regression; `class`, `probability` and one `p__<class>` per class of the
scoring model's vocabulary for multiclass, so the schema can differ between nights scored by
models of different vocabularies; see `nightshift.task`), then the lineage every row carries:
which model (name, version, alias, how it was chosen, MLflow run), which input (a content
fingerprint of the features partition) and which code.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc

from nightshift.lake import PREDICTIONS, Lake

if TYPE_CHECKING:
    from nightshift.spec import DatasetSpec

LINEAGE = ("model_name", "model_version", "model_alias", "model_selection", "mlflow_run_id", "input_fingerprint", "code_version")


def schema(spec: "DatasetSpec", id_type: pa.DataType, task=None) -> pa.Schema:
    """The partition's schema; `task`: the scoring model's (bound to its class vocabulary for multiclass)."""
    from nightshift.task import task_for

    task = task if task is not None else task_for(spec.task)
    return pa.schema([(spec.entity_id, id_type), *task.output_fields()]
                     + [(name, pa.string()) for name in LINEAGE])


def repeating(schema: pa.Schema) -> list[str]:
    """The columns whose values repeat down a partition, worth dictionary-encoding: the lineage
    and any integer or text output (a decision, a predicted class); never the ids or the scores,
    which are mostly distinct."""
    return [f.name for f in schema if f.name in LINEAGE or ((pa.types.is_integer(f.type) or pa.types.is_string(f.type))
                                                            and f.name != schema.names[0])]


class PredictionWriter:
    """Appends scored batches with constant lineage columns (filled in C++, not per row in Python)."""

    def __init__(self, writer, schema: pa.Schema, lineage: dict[str, str]):
        self._writer, self.schema = writer, schema
        self._lineage = [pa.scalar(lineage[name], pa.string()) for name in LINEAGE]
        self._repeated: dict[int, list[pa.Array]] = {}  # by batch length: every full batch reuses one set
        self.rows = 0

    def write(self, ids: pa.Array, outputs: list[pa.Array]) -> None:
        n = len(ids)
        if n not in self._repeated:
            self._repeated = {**dict(list(self._repeated.items())[-1:]), n: [pa.repeat(s, n) for s in self._lineage]}
        columns = [ids, *outputs, *self._repeated[n]]
        self._writer.write_batch(pa.record_batch(columns, schema=self.schema))
        self.rows += n


@contextlib.contextmanager
def writer(lake: Lake, ds: str, schema: pa.Schema, lineage: dict[str, str], table: str = PREDICTIONS) -> Iterator[PredictionWriter]:
    """Stream scored batches into a new partition, committed atomically when the block succeeds."""
    with lake.writer(table, ds, schema) as w:
        yield PredictionWriter(w, schema, lineage)


def scored_by(lake: Lake, ds: str, table: str = PREDICTIONS) -> str | None:
    """The model version that scored a committed partition (None if not scored)."""
    if not lake.exists(table, ds):
        return None
    versions = pc.unique(lake.read(table, ds, columns=["model_version"]).column(0)).to_pylist()
    return versions[0] if len(versions) == 1 else ",".join(sorted(map(str, versions)))


def night(lake: Lake, ds: str) -> dict | None:
    """Rows scored on night `ds`, the model version and how it was chosen (None if not scored)."""
    if not lake.exists(PREDICTIONS, ds):
        return None
    t = lake.read(PREDICTIONS, ds, columns=["model_version", "model_selection"])
    first = t.slice(0, 1).to_pylist()
    return {"ds": ds, "rows": t.num_rows, "model_version": scored_by(lake, ds),
            "model_selection": first[0]["model_selection"] if first else None}


def nights(lake: Lake, days: list[str] | None = None) -> list[dict]:
    """Every scored night (or those of `days`): rows, model version(s) and selection, from the Parquet
    footers alone.

    Row counts and the lineage columns' min/max statistics are in each file's footer, so a
    year of nights costs one footer read per file, whatever the rows per night.
    """
    import pyarrow.parquet as pq

    files = lake.committed_files(PREDICTIONS)
    out = []
    for ds in sorted(d for d in files if days is None or d in days):
        rows, seen = 0, {"model_version": set(), "model_selection": set()}
        for path in files[ds]:
            with lake.fs.open_input_file(path) as f:
                meta = pq.ParquetFile(f).metadata
            rows += meta.num_rows
            names = meta.schema.names
            for rg in range(meta.num_row_groups):
                for col, values in seen.items():
                    stats = meta.row_group(rg).column(names.index(col)).statistics if col in names else None
                    if stats is not None and stats.has_min_max:
                        values.update({stats.min, stats.max})
        out.append({"ds": ds, "rows": rows, "model_version": ",".join(sorted(seen["model_version"])) or None,
                    "model_selection": ",".join(sorted(seen["model_selection"])) or None})
    return out
