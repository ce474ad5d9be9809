"""Flat-file exports for import tests: same bytes for a seed, the documented columns and types, learnable labels."""

from __future__ import annotations

import gzip
import hashlib

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from nightshift.dates import add_days, days_between
from nightshift.settings import load_settings
from nightshift.spec import DatasetSpec
from simulator.export import (
    LABEL_TIME,
    ODD_BOOLEAN,
    ODD_CATEGORICAL,
    ODD_COLUMNS,
    ODD_INTEGER,
    ODD_NUMERIC,
    TIMESTAMP,
    odd_table_csv,
    world_csv,
)
from simulator.world import World

START = "2024-03-01"


@pytest.fixture(scope="module")
def spec() -> DatasetSpec:
    return load_settings(env={}).dataset


def _sha(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _linear(numeric: list[str], categorical: list[str], binary: bool):
    """A quick linear model (imputed, scaled numbers; one-hot categories): fast, and enough to show the labels are learnable."""
    from sklearn.compose import make_column_transformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    pre = make_column_transformer((make_pipeline(SimpleImputer(), StandardScaler()), numeric), (OneHotEncoder(handle_unknown="ignore"), categorical))
    return make_pipeline(pre, LogisticRegression(max_iter=500) if binary else Ridge())


# -- world_csv -------------------------------------------------------------------------------
def test_world_csv_same_seed_same_bytes_other_seed_other_bytes(spec, tmp_path):
    kw = dict(start=START, days=3, rows_per_day=200, scenario="sudden-covariate", onset=1)
    a = world_csv(tmp_path / "a.csv", spec, seed=1, **kw)
    b = world_csv(tmp_path / "b.csv", spec, seed=1, **kw)
    c = world_csv(tmp_path / "c.csv", spec, seed=2, **kw)
    assert _sha(a["path"]) == _sha(b["path"]) != _sha(c["path"])
    gz = world_csv(tmp_path / "a2.csv", spec, seed=1, compress=True, **kw)
    assert gz["path"] == str(tmp_path / "a2.csv.gz")
    assert gz["bytes"] < a["bytes"]
    with gzip.open(gz["path"], "rb") as f:
        assert f.read() == open(a["path"], "rb").read()
    assert _sha(gz["path"]) == _sha(world_csv(tmp_path / "a3.csv.gz", spec, seed=1, **kw)["path"])  # no mtime in the header
    assert pacsv.read_csv(gz["path"]).equals(pacsv.read_csv(a["path"]))


def test_world_csv_rows_are_the_worlds(spec, tmp_path):
    days, rows = 4, 300
    s = world_csv(tmp_path / "w.csv", spec, start=START, days=days, rows_per_day=rows, scenario="concept", onset=2, seed=5)
    assert s["rows"] == s["labelled"] == days * rows and s["end"] == add_days(START, days - 1)
    assert s["columns"] == [spec.entity_id, TIMESTAMP, *spec.numeric, *spec.categorical, spec.label, LABEL_TIME]
    assert (s["id_col"], s["timestamp_col"], s["label_col"], s["label_time_col"], s["task"]) == (spec.entity_id, TIMESTAMP, spec.label, LABEL_TIME, "binary")
    t = pacsv.read_csv(s["path"])
    assert t.column_names == s["columns"]
    assert t.schema.field(TIMESTAMP).type == t.schema.field(LABEL_TIME).type == pa.timestamp("s")
    assert all(t.schema.field(c).type == pa.float64() for c in spec.numeric)
    assert t.schema.field(spec.label).type == pa.int64()
    df = t.to_pandas()
    world = World(spec, seed=5, scenario="concept", onset=2)
    for i in range(days):
        ds = add_days(START, i)
        day = df.iloc[i * rows : (i + 1) * rows].reset_index(drop=True)
        feats = world.features(i, ds, rows)
        y, delay = world.draw_labels(feats, i)
        expected = feats.to_pandas()
        assert (day[spec.entity_id] == expected[spec.entity_id]).all()
        pd.testing.assert_frame_equal(day[list(spec.numeric)], expected[list(spec.numeric)])  # NaN <-> empty field
        for c in spec.categorical:  # a null category is an empty field, read back as ""
            assert (day[c] == expected[c].fillna("")).all()
        assert (day[spec.label].to_numpy() == y).all()
        stamps = day[TIMESTAMP]
        assert (stamps.dt.strftime("%Y-%m-%d") == ds).all() and stamps.is_monotonic_increasing
        arrival = day[LABEL_TIME].dt.strftime("%Y-%m-%d")
        assert [days_between(ds, a) for a in arrival] == delay.tolist()


def test_world_csv_regression_censor_and_no_label_time(spec, tmp_path):
    days, rows = 5, 200
    s = world_csv(tmp_path / "r.csv", spec, start=START, days=days, rows_per_day=rows, seed=3, task="regression", censor=True)
    t = pacsv.read_csv(s["path"])
    assert s["task"] == "regression" and t.schema.field(spec.label).type == pa.float64()
    df = t.to_pandas()
    last = add_days(START, days - 1)
    # censored: a label (and its time) is there iff it arrived by the last day
    arrived = df[LABEL_TIME].notna()
    assert (df[spec.label].notna() == arrived).all()
    assert s["labelled"] == arrived.sum() < days * rows
    assert (df.loc[arrived, LABEL_TIME].dt.strftime("%Y-%m-%d") <= last).all()
    assert 40 < df[spec.label].mean() < 60
    # day 0's labels are the regression world's
    world = World(spec.model_copy(update={"task": "regression"}), seed=3)
    y, delay = world.draw_labels(world.features(0, START, rows), 0)
    first = df.iloc[:rows]
    keep = (delay <= days - 1)
    assert np.array_equal(first[spec.label].to_numpy()[keep], y[keep])

    plain = world_csv(tmp_path / "n.csv", spec, start=START, days=2, rows_per_day=50, label_time=False)
    assert plain["label_time_col"] is None and pacsv.read_csv(plain["path"]).column_names[-1] == spec.label


def test_world_csv_parquet_has_real_timestamps(spec, tmp_path):
    kw = dict(start=START, days=2, rows_per_day=1000, seed=1)
    t = pq.read_table(world_csv(tmp_path / "w.parquet", spec, **kw)["path"])
    csv = pacsv.read_csv(world_csv(tmp_path / "w.csv", spec, **kw)["path"])
    assert t.schema.field(TIMESTAMP).type == t.schema.field(LABEL_TIME).type == pa.timestamp("ms")
    assert t.column_names == csv.column_names and t.num_rows == 2000
    assert t.select([TIMESTAMP, LABEL_TIME]).cast(csv.select([TIMESTAMP, LABEL_TIME]).schema).equals(csv.select([TIMESTAMP, LABEL_TIME]))
    assert t.select(list(spec.numeric) + [spec.label]).equals(csv.select(list(spec.numeric) + [spec.label]))
    assert t[spec.categorical[-1]].null_count > 0  # Parquet keeps a missing category null


def test_world_csv_is_learnable(spec, tmp_path):
    from sklearn.metrics import roc_auc_score

    s = world_csv(tmp_path / "w.csv", spec, start=START, days=4, rows_per_day=1500, seed=0)
    df = pacsv.read_csv(s["path"]).to_pandas()
    y = df.pop(spec.label).to_numpy()
    n = len(df) // 2  # fit on the first two days, score the last two
    model = _linear(list(spec.numeric), list(spec.categorical), binary=True).fit(df[:n], y[:n])
    assert roc_auc_score(y[n:], model.predict_proba(df[n:])[:, 1]) > 0.78


def test_world_csv_refuses_bad_arguments(spec, tmp_path):
    with pytest.raises(ValueError, match="valid scenarios"):
        world_csv(tmp_path / "x.csv", spec, start=START, days=2, rows_per_day=10, scenario="tsunami")
    with pytest.raises(ValueError, match="onset must be a day index in 0..1"):
        world_csv(tmp_path / "x.csv", spec, start=START, days=2, rows_per_day=10, scenario="concept", onset=2)
    with pytest.raises(ValueError, match="days must be >= 1"):
        world_csv(tmp_path / "x.csv", spec, start=START, days=0, rows_per_day=10)
    with pytest.raises(ValueError, match="reserves"):
        world_csv(tmp_path / "x.csv", spec.model_copy(update={"label": "timestamp"}), start=START, days=1, rows_per_day=10)
    with pytest.raises(ValueError):
        world_csv(tmp_path / "x.csv", spec, start=START, days=1, rows_per_day=10, task="ordinal")
    assert not (tmp_path / "x.csv").exists()


# -- odd_table_csv -----------------------------------------------------------------------------
def test_odd_table_same_seed_same_bytes(tmp_path):
    a = odd_table_csv(tmp_path / "a.csv", start=START, days=3, seed=4)
    b = odd_table_csv(tmp_path / "b.csv", start=START, days=3, seed=4)
    c = odd_table_csv(tmp_path / "c.csv", start=START, days=3, seed=5)
    assert _sha(a["path"]) == _sha(b["path"]) != _sha(c["path"])
    gz = odd_table_csv(tmp_path / "a.csv.gz", start=START, days=3, seed=4)
    assert _sha(gz["path"]) == _sha(odd_table_csv(tmp_path / "b.csv.gz", start=START, days=3, seed=4)["path"])
    assert pacsv.read_csv(gz["path"]).equals(pacsv.read_csv(a["path"]))


@pytest.mark.parametrize("task, label, label_type", [("binary", "churned", pa.int64()), ("regression", "delivery_minutes", pa.float64())])
def test_odd_table_columns_and_types(tmp_path, task, label, label_type):
    days = 30
    s = odd_table_csv(tmp_path / f"{task}.csv", start=START, days=days, seed=1, task=task)
    t = pacsv.read_csv(s["path"])
    assert t.column_names == s["columns"] == [*ODD_COLUMNS, label, "label_ts"]
    assert (s["timestamp_col"], s["id_col"], s["label_col"], s["label_time_col"]) == ("order_ts", "customer_ref", label, "label_ts")
    assert s["rows"] == t.num_rows == days * 200
    types = {f.name: f.type for f in t.schema}
    assert types["order_ts"] == types["label_ts"] == pa.timestamp("s")
    assert types["customer_ref"] == pa.string() and pc.count_distinct(t["customer_ref"]).as_py() == t.num_rows
    assert {types[c] for c in ODD_NUMERIC} == {pa.float64(), pa.int64()}
    assert all(types[c] == pa.int64() for c in ODD_INTEGER) and all(types[c] == pa.bool_() for c in ODD_BOOLEAN)
    assert all(types[c] == pa.string() for c in ODD_CATEGORICAL) and types[label] == label_type
    df = t.to_pandas()
    assert set(df["weekday"]) == set(range(7)) and df["n_children"].between(0, 4).all() and df["hour"].between(0, 23).all()
    assert (df["weekday"] == df["order_ts"].dt.weekday).all() and (df["hour"] == df["order_ts"].dt.hour).all()
    assert df["order_ts"].is_monotonic_increasing
    assert 2_000 <= df["postcode"].nunique() <= 5_000 and df["campaign"].nunique() > 900
    assert df["campaign"].value_counts(normalize=True).max() < 0.005  # every campaign is rare
    assert {"web", "app", "phone", "partner", "marketplace", ""} == set(df["channel"])  # "" = missing (pyarrow reads it so)
    with_gaps = [c for c in ODD_NUMERIC if df[c].isna().any()]
    assert len(with_gaps) >= 3 and df[with_gaps].isna().mean().max() < 0.15
    assert 0.01 < (df["channel"] == "").mean() < 0.08
    delay = (df["label_ts"].dt.normalize() - df["order_ts"].dt.normalize()).dt.days
    assert delay.min() >= 1 and delay.max() <= 21 and (delay <= 7).mean() > 0.85
    if task == "binary":
        assert set(df[label]) == {0, 1} and 0.18 < df[label].mean() < 0.33
    else:
        assert 20 < df[label].mean() < 80 and df[label].min() >= 5


@pytest.mark.parametrize("task", ["binary", "regression"])
def test_odd_table_is_learnable(tmp_path, task):
    from sklearn.metrics import r2_score, roc_auc_score

    s = odd_table_csv(tmp_path / "o.csv", start=START, days=30, seed=0, task=task)
    df = pacsv.read_csv(s["path"]).to_pandas()
    y = df.pop(s["label_col"]).to_numpy()
    df["basket_value"], df["age_days"] = np.log(df["basket_value"]), np.log1p(df["age_days"])
    numeric = [*ODD_NUMERIC, *ODD_INTEGER, *ODD_BOOLEAN]
    df[list(ODD_BOOLEAN)] = df[list(ODD_BOOLEAN)].astype(float)
    model = _linear(numeric, ["channel", "weekday", "hour"], binary=task == "binary")
    n = len(df) // 2  # fit on the first 15 days, score the last 15
    model.fit(df[:n], y[:n])
    if task == "binary":
        assert 0.75 <= roc_auc_score(y[n:], model.predict_proba(df[n:])[:, 1]) <= 0.88
    else:
        assert 0.5 <= r2_score(y[n:], model.predict(df[n:])) <= 0.88


def test_odd_table_drift_from_moves_distance_and_channel(tmp_path):
    from scipy.stats import ks_2samp

    plain = pacsv.read_csv(odd_table_csv(tmp_path / "p.csv", start=START, days=10, seed=2)["path"]).to_pandas()
    s = odd_table_csv(tmp_path / "d.csv", start=START, days=10, seed=2, drift_from=6)
    assert s["drift_from_ds"] == add_days(START, 6)
    drifted = pacsv.read_csv(s["path"]).to_pandas()
    day = drifted["order_ts"].dt.strftime("%Y-%m-%d")
    before, after = drifted[day < s["drift_from_ds"]], drifted[day >= s["drift_from_ds"]]
    pd.testing.assert_frame_equal(before, plain[day < s["drift_from_ds"]])  # nothing moves before the drift
    assert ks_2samp(before["distance_km"].dropna(), after["distance_km"].dropna()).statistic > 0.15
    tvd = 0.5 * before["channel"].value_counts(normalize=True).sub(after["channel"].value_counts(normalize=True), fill_value=0).abs().sum()
    assert tvd > 0.15
    assert ks_2samp(before["basket_value"], after["basket_value"]).pvalue > 0.001  # the rest stays put


def test_odd_table_censor_and_parquet(tmp_path):
    s = odd_table_csv(tmp_path / "o.parquet", start=START, days=5, seed=0, censor=True)
    t = pq.read_table(s["path"])
    assert t.schema.field("order_ts").type == pa.timestamp("ms") and t.schema.field("channel").type == pa.string()
    df = t.to_pandas()
    assert (df["churned"].notna() == df["label_ts"].notna()).all() and s["labelled"] == df["churned"].notna().sum() < len(df)
    assert (df["label_ts"].dropna().dt.strftime("%Y-%m-%d") <= s["end"]).all()
    assert df["channel"].isna().any()  # Parquet keeps the missing category a null
    with pytest.raises(ValueError, match="drift_from must be a day index in 0..4"):
        odd_table_csv(tmp_path / "x.csv", start=START, days=5, drift_from=5)
    with pytest.raises(ValueError):
        odd_table_csv(tmp_path / "x.csv", start=START, days=5, task="ranking")


def test_a_failed_export_leaves_no_file(spec, tmp_path, monkeypatch):
    import simulator.export as export

    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(export._Sink, "write", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        world_csv(tmp_path / "w.csv", spec, start=START, days=2, rows_per_day=10)
    with pytest.raises(RuntimeError, match="disk full"):
        odd_table_csv(tmp_path / "o.csv.gz", start=START, days=2)
    assert list(tmp_path.iterdir()) == []
