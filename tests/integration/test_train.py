"""Training loop behaviour: learns a learnable rule, is reproducible, warm-starts faithfully."""

import logging
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
import torch

from nightshift.settings import ModelSettings, TrainingSettings
from nightshift.spec import DatasetSpec
from model.bundle import load_bundle, save_bundle
from training.evaluate import auc
from training.train import FitResult, fit, init_model, labels, resolve_device

SPEC = DatasetSpec(entity_id="id", numeric=("n0", "n1", "n2", "n3"), categorical=("shop", "tier"), label="y")
MODEL = ModelSettings(hidden=(32, 16), embedding_dim=4, dropout=0.0)
TRAINING = TrainingSettings(epochs=4, batch_size=256, lr=1e-2, device="cpu", seed=0)
SHOPS = [f"shop{i}" for i in range(8)]
SHOP_EFFECT = np.linspace(-1.5, 1.5, len(SHOPS))


def world(n: int, seed: int, shops: list[str] = SHOPS) -> pa.Table:
    """A learnable rule: label depends on two numerics, an interaction and the shop."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4))
    shop = rng.integers(0, len(shops), n)
    effect = np.array([SHOP_EFFECT[i % len(SHOP_EFFECT)] for i in range(len(shops))])[shop]
    logit = 1.5 * x[:, 0] - 1.0 * x[:, 1] + 0.8 * x[:, 2] * x[:, 3] + effect
    y = (rng.random(n) < 1 / (1 + np.exp(-2 * logit))).astype(np.int64)
    n0 = x[:, 0].copy()
    n0[rng.random(n) < 0.05] = np.nan  # some missing values, as in real data
    return pa.table({
        "id": np.arange(n),
        "n0": n0, "n1": x[:, 1], "n2": x[:, 2], "n3": x[:, 3],
        "shop": pa.array(np.array(shops, dtype=object)[shop].tolist(), pa.string()),
        "tier": pa.array(rng.choice(["gold", "silver", None], n).tolist(), pa.string()),
        "y": y,
    })


def predict(model, preprocessor, table):
    x_num, x_cat = preprocessor.transform(table)
    model.eval()
    with torch.inference_mode():
        return torch.sigmoid(model(torch.from_numpy(x_num), torch.from_numpy(x_cat))[:, 0].double()).numpy()


@pytest.fixture(scope="module")
def champion(tmp_path_factory):
    train = world(4000, seed=1)
    model, pre = init_model("scratch", train, SPEC, MODEL, None, seed=0)
    result = fit(model, pre, train, SPEC, TRAINING, valid_table=world(1000, seed=2))
    path = save_bundle(tmp_path_factory.mktemp("bundle") / "champion", result.model, pre, {"init_from": "scratch", "history": result.history},
                       reference=train.select(list(SPEC.features)).slice(0, 200))
    return result, pre, path


def test_cpu_fit_learns_the_rule(champion):
    result, pre, _ = champion
    assert isinstance(result, FitResult)
    assert result.device == "cpu" and result.rows == 4000 and result.seconds > 0
    assert [h["epoch"] for h in result.history] == [1, 2, 3, 4]
    assert set(result.history[0]) == {"epoch", "train_loss", "valid_loss", "valid_auc"}
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    assert not result.model.training and next(result.model.parameters()).device.type == "cpu"
    holdout = world(3000, seed=3)
    assert auc(labels(holdout, "y"), predict(result.model, pre, holdout)) > 0.75


def test_same_seed_same_weights():
    train = world(1500, seed=4)
    settings = TrainingSettings(epochs=2, batch_size=128, device="cpu", seed=7)
    runs = []
    for _ in range(2):
        model, pre = init_model("scratch", train, SPEC, ModelSettings(hidden=(16,), embedding_dim=4, dropout=0.2), None, seed=7)
        runs.append(fit(model, pre, train, SPEC, settings).model.state_dict())
    assert runs[0].keys() == runs[1].keys()
    for k in runs[0]:
        assert torch.equal(runs[0][k], runs[1][k]), k


def test_require_gpu_without_cuda_says_what_to_do():
    if torch.cuda.is_available():
        pytest.skip("CUDA is present")
    with pytest.raises(RuntimeError, match="gpu queue.*require_gpu=false"):
        resolve_device("auto", require_gpu=True)
    with pytest.raises(RuntimeError, match="no CUDA device"):
        resolve_device("cuda")
    with pytest.raises(RuntimeError, match="require_gpu"):
        fit(*init_model("scratch", world(100, 0), SPEC, MODEL, None, 0), world(100, 0), SPEC,
            TrainingSettings(device="auto", require_gpu=True))


def test_auto_device_says_it_trains_on_cpu(caplog):
    if torch.cuda.is_available():
        pytest.skip("CUDA is present")
    with caplog.at_level(logging.INFO, logger="nightshift.training"):
        assert resolve_device("auto") == torch.device("cpu")
    assert "training on CPU: no CUDA device found" in caplog.text


def test_init_from_switch_errors():
    train = world(200, 0)
    with pytest.raises(ValueError, match="scratch, warm, transfer"):
        init_model("pretrained", train, SPEC, MODEL, None, 0)
    with pytest.raises(ValueError, match="needs a champion"):
        init_model("warm", train, SPEC, MODEL, None, 0)
    with pytest.raises(ValueError, match="init_from='transfer' needs a champion"):
        init_model("transfer", train, SPEC, MODEL, None, 0)


def test_warm_start_keeps_champion_predictions_for_old_categories(champion):
    _, _, path = champion
    bundle = load_bundle(path)
    newer = world(2000, seed=5, shops=[*SHOPS, "shop8", "shop9"])  # two shops first seen since
    model, pre = init_model("warm", newer, SPEC, MODEL, bundle, seed=123)
    assert pre.vocabularies[0][: len(SHOPS)] == bundle.preprocessor.vocabularies[0]
    assert pre.vocabularies[0][len(SHOPS):] == ("shop8", "shop9")
    assert model.cardinalities == pre.cardinalities

    old = pc.is_in(newer.column("shop"), value_set=pa.array(SHOPS))
    old_rows = newer.filter(old)
    # torch (the warm-started copy) against the bundle's numpy forward pass: equal to float32 rounding
    np.testing.assert_allclose(predict(model, pre, old_rows), bundle.predict(old_rows), rtol=0, atol=1e-6)
    # the champion's own weights are untouched by warm start and by training the copy
    before = {k: v.clone() for k, v in bundle.model.state_dict().items()}
    fit(model, pre, newer, SPEC, TrainingSettings(epochs=1, device="cpu"))
    for k, v in bundle.model.state_dict().items():
        assert torch.equal(v, before[k])


def test_bundle_round_trip_identical_predictions_and_no_pickle(champion, tmp_path):
    result, pre, path = champion
    holdout = world(500, seed=6)
    bundle = load_bundle(path)
    assert not bundle.model.training
    assert sorted(p.name for p in Path(path).iterdir()) == ["architecture.json", "bundle.json", "model.safetensors", "preprocessor.json", "reference.parquet"]
    for file in Path(path).iterdir():
        assert not file.read_bytes().startswith(b"\x80"), f"{file} looks like a pickle"
    p = bundle.predict(holdout)
    assert p.dtype == np.float64 and p.shape == (500,)
    np.testing.assert_allclose(p, predict(result.model, pre, holdout), rtol=0, atol=1e-6)  # numpy forward vs torch
    np.testing.assert_array_equal(p, bundle.predict(holdout))
    # a bundle saved from a loaded bundle is the same bundle
    again = load_bundle(save_bundle(tmp_path / "again", bundle.model, bundle.preprocessor, bundle.meta, reference=bundle.reference()))
    np.testing.assert_array_equal(again.predict(holdout), p)
    assert bundle.meta["init_from"] == "scratch" and bundle.meta["torch_version"] == torch.__version__


def test_bad_labels_are_named_and_counted():
    t = world(50, 0)
    bad = t.set_column(t.schema.get_field_index("y"), "y", pa.array([0, 1, 2] + [None] * 2 + [0] * 45, pa.int64()))
    with pytest.raises(ValueError, match=r"'y'.* 3 of 50"):
        labels(bad, "y")
    with pytest.raises(KeyError, match="'y'"):
        labels(t.drop_columns(["y"]), "y")


@pytest.mark.gpu
def test_cuda_bf16_fit_learns_the_rule():
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    train = world(4000, seed=1)
    model, pre = init_model("scratch", train, SPEC, MODEL, None, seed=0)
    settings = TrainingSettings(epochs=4, batch_size=256, lr=1e-2, device="cuda", require_gpu=True)
    result = fit(model, pre, train, SPEC, settings, valid_table=world(1000, seed=2))
    assert result.device.startswith("cuda")
    assert next(result.model.parameters()).device.type == "cpu"
    holdout = world(3000, seed=3)
    assert auc(labels(holdout, "y"), predict(result.model, pre, holdout)) > 0.75
