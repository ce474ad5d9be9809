"""Features: numeric standardisation with missing indicators, categorical vocabularies.

The preprocessor is fitted once per model from scratch and then travels with the model as
JSON. `transform` sits on the nightly scoring hot path, so it is pyarrow.compute and numpy
column operations only, never a Python loop over rows.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from nightshift.columns import category_strings
from nightshift.task import task_for

if TYPE_CHECKING:
    from nightshift.spec import DatasetSpec

FORMAT = "nightshift.preprocessor/1"
OOV = 0  # index shared by categories never seen in training and by nulls
_MIN_STD = 1e-6

Columnar = pa.RecordBatch | pa.Table


class Preprocessor:
    """Numeric means/stds, categorical vocabularies, for regression the target's scale, and for
    multiclass the label's class vocabulary (`classes`, in the head's output order; None otherwise)."""

    def __init__(self, numeric: dict[str, tuple[float, float]], categorical: dict[str, list[str]],
                 target: tuple[float, float] | None = None, classes: "tuple[str, ...] | list[str] | None" = None):
        self.numeric = tuple(numeric)
        self.means = np.array([numeric[c][0] for c in self.numeric], dtype=np.float64)
        self.stds = np.array([numeric[c][1] for c in self.numeric], dtype=np.float64)
        self.categorical = tuple(categorical)
        self.vocabularies = tuple(tuple(categorical[c]) for c in self.categorical)
        # Built once: index_in hashes the value set on every call, the array need not be rebuilt.
        self._value_sets = [pa.array(v, pa.string()) for v in self.vocabularies]
        # (mean, std) the network's output is standardised with (regression); None for binary.
        self.target = None if target is None else (float(target[0]), float(target[1]))
        self.classes = None if classes is None else tuple(str(c) for c in classes)

    def __repr__(self) -> str:
        return f"Preprocessor(numeric={len(self.numeric)}, cardinalities={self.cardinalities})"

    # -- fitting ----------------------------------------------------------------------
    @classmethod
    def fit(cls, table: Columnar, spec: DatasetSpec) -> Preprocessor:
        """Means/stds ignoring missing values; vocabularies = sorted distinct non-null values;
        the target's scale when the task standardises it and the class vocabulary when it has one
        (and the label is in `table`)."""
        numeric = {}
        for name in spec.numeric:
            x = _floats(_column(table, name))
            x = x[np.isfinite(x)]
            mean = float(x.mean()) if x.size else 0.0
            std = float(x.std()) if x.size else 1.0
            # A (near) constant column gets std 1, not a tiny floor: a later change in it must
            # not become millions of standard deviations and saturate the network.
            numeric[name] = (mean, std if std >= _MIN_STD else 1.0)
        categorical = {name: sorted(_distinct(_column(table, name))) for name in spec.categorical}
        target = classes = None
        if table.schema.get_field_index(spec.label) >= 0:
            task = task_for(spec.task)
            y = task.labels(_column(table, spec.label), f"label column {spec.label!r}")
            target, classes = task.target_stats(y), task.vocabulary(y)
        return cls(numeric, categorical, target, classes)

    def extend(self, table: Columnar) -> Preprocessor:
        """A new preprocessor that keeps every index and appends categories first seen in `table`.

        Scaling stats stay as they are, so warm-started weights keep their meaning.
        """
        categorical = {}
        for name, vocab, value_set in zip(self.categorical, self.vocabularies, self._value_sets):
            distinct = pa.array(sorted(_distinct(_column(table, name))), pa.string())
            new = distinct.filter(pc.invert(pc.is_in(distinct, value_set=value_set))).to_pylist()
            categorical[name] = [*vocab, *new]
        numeric = {c: (float(m), float(s)) for c, m, s in zip(self.numeric, self.means, self.stds)}
        return Preprocessor(numeric, categorical, self.target, self.classes)

    def with_classes(self, classes: "tuple[str, ...] | None") -> Preprocessor:
        """The same preprocessor with another class vocabulary (a warm retrain's grown one)."""
        d = self.to_dict()
        d["classes"] = None if classes is None else list(classes)
        return Preprocessor.from_dict(d)

    # -- applying ---------------------------------------------------------------------
    @property
    def cardinalities(self) -> list[int]:
        """Embedding table sizes: the vocabulary plus the shared OOV/null row."""
        return [len(v) + 1 for v in self.vocabularies]

    @property
    def n_numeric_inputs(self) -> int:
        """Standardised values plus one missing indicator per numeric feature."""
        return 2 * len(self.numeric)

    def transform(self, batch: Columnar) -> tuple[np.ndarray, np.ndarray]:
        """(float32 [n, 2*n_numeric], int64 [n, n_categorical]) model inputs."""
        n, k = batch.num_rows, len(self.numeric)
        x_num = np.empty((n, 2 * k), dtype=np.float32)
        for j, name in enumerate(self.numeric):
            x = _floats(_column(batch, name))
            missing = ~np.isfinite(x)
            z = (x - self.means[j]) / self.stds[j]
            z[missing] = 0.0
            x_num[:, j] = z
            x_num[:, k + j] = missing
        x_cat = np.empty((n, len(self.categorical)), dtype=np.int64)
        for j, (name, value_set) in enumerate(zip(self.categorical, self._value_sets)):
            col = _strings(_column(batch, name))
            # index_in gives null for nulls and unseen values; shift by one so OOV/null is 0.
            idx = pc.fill_null(pc.index_in(col, value_set=value_set), -1)
            x_cat[:, j] = _numpy(idx) + 1
        return x_num, x_cat

    # -- serialisation ----------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "numeric": [{"name": c, "mean": float(m), "std": float(s)} for c, m, s in zip(self.numeric, self.means, self.stds)],
            "categorical": [{"name": c, "vocabulary": list(v)} for c, v in zip(self.categorical, self.vocabularies)],
            "target": None if self.target is None else {"mean": self.target[0], "std": self.target[1]},
            **({} if self.classes is None else {"classes": list(self.classes)}),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Preprocessor:
        if d.get("format") != FORMAT:
            raise ValueError(f"not a preprocessor of format {FORMAT!r}: got format {d.get('format')!r}")
        numeric = {f["name"]: (float(f["mean"]), float(f["std"])) for f in d["numeric"]}
        categorical = {f["name"]: [str(v) for v in f["vocabulary"]] for f in d["categorical"]}
        target = d.get("target")
        # `classes` (multiclass only) is absent from every older preprocessor.json: it loads with None.
        return cls(numeric, categorical, None if target is None else (target["mean"], target["std"]), d.get("classes"))


def _column(data: Columnar, name: str) -> pa.Array | pa.ChunkedArray:
    if data.schema.get_field_index(name) < 0:
        raise KeyError(f"column {name!r} is missing; the data has {data.schema.names}")
    return data.column(name)


def _floats(col: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """float64 numpy values, nulls as NaN."""
    col = pc.fill_null(pc.cast(col, pa.float64()), np.nan)
    return _numpy(col)


def _strings(col: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    # Categories are compared as strings whatever their storage (int codes, dictionary,
    # bool), by the one rule the contract and the import use too.
    return category_strings(col)


def _distinct(col: pa.Array | pa.ChunkedArray) -> list[str]:
    return pc.unique(_strings(col)).drop_null().to_pylist()


def _numpy(col: pa.Array | pa.ChunkedArray) -> np.ndarray:
    # Nulls are filled before this, so a single chunk converts without a copy.
    return col.to_numpy(zero_copy_only=False) if isinstance(col, pa.Array) else col.to_numpy()
