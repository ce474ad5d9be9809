"""The recipes of docs/guide/predictions.md ("Reading the predictions"), run as written, on each backend (S3: a moto bucket)."""

from __future__ import annotations

import pyarrow as pa
import pytest

from nightshift.lake import PREDICTIONS

DAYS = ["2026-02-09", "2026-02-10"]


def _commit(lake) -> None:
    for k, ds in enumerate(DAYS):
        t = pa.table({"id": [f"e{i}" for i in range(3)], "score": [0.1 * (k + 1)] * 3, "model_version": [str(k + 1)] * 3})
        lake.commit(PREDICTIONS, ds, t)
        lake.commit(PREDICTIONS, ds, t)  # a rerun: on delta the old files stay (time travel) and must not be read


def test_posix_recipes(lake_on):
    import duckdb
    import pandas as pd
    import polars as pl

    lake = lake_on("posix")
    _commit(lake)
    root = lake.root
    df = pd.read_parquet(f"{root}/predictions", filters=[("ds", "=", "2026-02-10")])
    assert len(df) == 3 and set(df.model_version) == {"2"}
    rows = duckdb.sql(f"SELECT ds, model_version, count(*) FROM '{root}/predictions/*/*.parquet' GROUP BY ALL ORDER BY ds").fetchall()
    assert [(str(r[0]), r[1], r[2]) for r in rows] == [("2026-02-09", "1", 3), ("2026-02-10", "2", 3)]
    got = pl.scan_parquet(f"{root}/predictions/**/*.parquet", hive_partitioning=True).collect()
    assert got.height == 6


@pytest.mark.parametrize("where", ["delta", "s3"])
def test_delta_recipes(lake_on, where):
    import duckdb
    import polars as pl
    from deltalake import DeltaTable

    lake = lake_on(where)
    _commit(lake)
    root = lake.uri.rstrip("/") if where == "s3" else lake.root  # e.g. s3://bucket/lake
    # pandas: one night
    df = DeltaTable(f"{root}/predictions/ds=2026-02-10").to_pandas()
    assert len(df) == 3 and set(df.model_version) == {"2"}
    # pandas: several nights (each night is its own Delta table)
    import pandas as pd

    many = pd.concat([DeltaTable(f"{root}/predictions/ds={d}").to_pandas().assign(ds=d) for d in DAYS])
    assert len(many) == 6
    # DuckDB, through Arrow (works offline; `delta_scan` needs the delta extension downloaded)
    night = DeltaTable(f"{root}/predictions/ds=2026-02-10").to_pyarrow_dataset()  # noqa: F841 - DuckDB reads it by name
    assert duckdb.sql("SELECT model_version, count(*) FROM night GROUP BY ALL").fetchall() == [("2", 3)]
    # Polars
    assert pl.read_delta(f"{root}/predictions/ds=2026-02-10").height == 3
    # As of an earlier commit (time travel): version 0 is the night's first commit
    assert DeltaTable(f"{root}/predictions/ds=2026-02-09", version=0).to_pyarrow_table().num_rows == 3
    # Nightshift's own reader
    from nightshift.lake import Lake

    assert Lake(lake.uri, "delta").read_days(PREDICTIONS, DAYS).num_rows == 6
