"""Preprocessor: data expectations (OOV, nulls, NaN), JSON round trip, vocabulary growth."""

import json
import math

import numpy as np
import pyarrow as pa
import pytest

from nightshift.spec import DatasetSpec
from model.preprocess import Preprocessor

SPEC = DatasetSpec(entity_id="id", numeric=("a", "b"), categorical=("color", "size"), label="y")


def table(a, b, color, size):
    return pa.table({
        "id": pa.array(range(len(a)), pa.int64()),
        "a": pa.array(a, pa.float64()),
        "b": pa.array(b, pa.int64()),
        "color": pa.array(color, pa.string()),
        "size": pa.array(size, pa.int32()),  # integer codes are categories too
        "y": pa.array([0] * len(a), pa.int64()),
    })


TRAIN = table(
    a=[1.0, 3.0, float("nan"), None, 5.0],
    b=[10, 10, 10, 10, None],
    color=["red", "blue", None, "red", "green"],
    size=[1, 2, 2, None, 3],
)


def test_fit_stats_ignore_missing():
    pre = Preprocessor.fit(TRAIN, SPEC)
    assert pre.means[0] == pytest.approx(3.0)
    assert pre.stds[0] == pytest.approx(np.std([1.0, 3.0, 5.0]))
    assert pre.means[1] == 10.0 and pre.stds[1] == 1.0  # constant column: std 1, not a tiny floor
    assert pre.vocabularies == (("blue", "green", "red"), ("1", "2", "3"))
    assert pre.cardinalities == [4, 4]
    assert pre.n_numeric_inputs == 4


def test_all_missing_numeric_gets_identity_scaling():
    t = table([None, None], [1, 2], ["x", "y"], [1, 1])
    pre = Preprocessor.fit(t, SPEC)
    assert (pre.means[0], pre.stds[0]) == (0.0, 1.0)


def test_nan_and_null_numeric_become_zero_with_indicator():
    pre = Preprocessor.fit(TRAIN, SPEC)
    x_num, _ = pre.transform(TRAIN)
    assert x_num.dtype == np.float32 and x_num.shape == (5, 4)
    np.testing.assert_array_equal(x_num[:, 2], [0, 0, 1, 1, 0])  # a's missing indicator
    np.testing.assert_array_equal(x_num[2:4, 0], [0, 0])
    assert x_num[0, 0] == pytest.approx((1.0 - 3.0) / np.std([1.0, 3.0, 5.0]))
    np.testing.assert_array_equal(x_num[:, 3], [0, 0, 0, 0, 1])  # b's null
    assert not np.isnan(x_num).any()


def test_unseen_and_null_categories_map_to_zero():
    pre = Preprocessor.fit(TRAIN, SPEC)
    new = table([0.0] * 4, [0] * 4, ["red", "purple", None, "blue"], [3, 9, None, 1])
    _, x_cat = pre.transform(new)
    assert x_cat.dtype == np.int64
    np.testing.assert_array_equal(x_cat[:, 0], [3, 0, 0, 1])
    np.testing.assert_array_equal(x_cat[:, 1], [3, 0, 0, 1])


def test_transform_accepts_record_batches_dictionary_and_chunks():
    pre = Preprocessor.fit(TRAIN, SPEC)
    expected = pre.transform(TRAIN)
    for batch in TRAIN.to_batches(max_chunksize=2):
        assert pre.transform(batch)[1].shape[0] == batch.num_rows
    chunked = pa.concat_tables([TRAIN.slice(0, 2), TRAIN.slice(2)])
    dictionary = TRAIN.set_column(TRAIN.schema.get_field_index("color"), "color", TRAIN.column("color").dictionary_encode())
    for other in (chunked, dictionary):
        got = pre.transform(other)
        np.testing.assert_array_equal(got[0], expected[0])
        np.testing.assert_array_equal(got[1], expected[1])


def test_json_round_trip_gives_identical_transforms():
    pre = Preprocessor.fit(TRAIN, SPEC)
    back = Preprocessor.from_dict(json.loads(json.dumps(pre.to_dict())))
    for a, b in zip(pre.transform(TRAIN), back.transform(TRAIN)):
        np.testing.assert_array_equal(a, b)
    assert back.to_dict() == pre.to_dict()


def test_extend_keeps_old_indices_and_appends_new_sorted():
    pre = Preprocessor.fit(TRAIN, SPEC)
    later = table([100.0, 200.0, 300.0], [0, 0, 0], ["yellow", "red", "amber"], [7, 1, None])
    ext = pre.extend(later)
    assert ext.vocabularies == (("blue", "green", "red", "amber", "yellow"), ("1", "2", "3", "7"))
    assert ext.cardinalities == [6, 5]
    np.testing.assert_array_equal(ext.means, pre.means)  # scaling untouched
    np.testing.assert_array_equal(ext.stds, pre.stds)
    np.testing.assert_array_equal(ext.transform(TRAIN)[1], pre.transform(TRAIN)[1])
    assert pre.vocabularies[0] == ("blue", "green", "red")  # the original is unchanged


def test_missing_column_names_it():
    pre = Preprocessor.fit(TRAIN, SPEC)
    with pytest.raises(KeyError, match="'color'"):
        pre.transform(TRAIN.drop_columns(["color"]))
    with pytest.raises(KeyError, match="'b'"):
        Preprocessor.fit(TRAIN.drop_columns(["b"]), SPEC)


def test_large_batch_is_vectorised():
    rng = np.random.default_rng(0)
    n = 200_000
    big = table(rng.normal(size=n), rng.integers(0, 5, n), rng.choice(["a", "b", "c"], n).tolist(), rng.integers(0, 50, n))
    pre = Preprocessor.fit(big, SPEC)
    x_num, x_cat = pre.transform(big)
    assert x_num.shape == (n, 4) and x_cat.shape == (n, 2)
    assert math.isclose(float(x_num[:, 0].mean()), 0.0, abs_tol=1e-3)
    assert x_cat.min() >= 1  # everything was seen in training
