"""Transfer learning and the training loop's hygiene: new head on a source backbone, frozen then
unfrozen; weighted sampling; early stopping; NaN stop; max steps; one-class windows; determinism."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pyarrow as pa
import pytest
import torch

from nightshift.settings import ModelSettings, TrainingSettings
from nightshift.spec import DatasetSpec
from nightshift.task import task_for
from model.bundle import load_bundle, save_bundle
from training.evaluate import auc
from training.train import NonFiniteLoss, UntrainableWindow, check_trainable, fit, init_model, labels

NUM = ("n0", "n1", "n2", "n3")
BINARY = DatasetSpec(entity_id="id", numeric=NUM, categorical=("shop",), label="y")
REGRESSION = DatasetSpec(entity_id="id", numeric=NUM, categorical=("shop",), label="minutes", task="regression")
MODEL = ModelSettings(hidden=(32, 16), embedding_dim=4, dropout=0.0)
SHOPS = [f"shop{i}" for i in range(12)]


def world(n: int, seed: int) -> pa.Table:
    """Two targets on the same entities: a binary label and a continuous one from the same latent score."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4))
    shop = rng.integers(0, len(SHOPS), n)
    latent = np.tanh(1.5 * x[:, 0]) - np.abs(x[:, 1]) + 0.8 * x[:, 2] * x[:, 3] + np.linspace(-1.5, 1.5, len(SHOPS))[shop]
    y = (rng.random(n) < 1 / (1 + np.exp(-2 * latent))).astype(np.int64)
    return pa.table({
        "id": np.arange(n), "n0": x[:, 0], "n1": x[:, 1], "n2": x[:, 2], "n3": x[:, 3],
        "shop": pa.array(np.array(SHOPS, dtype=object)[shop].tolist(), pa.string()),
        "y": y, "minutes": 40 + 8 * latent + rng.normal(0, 2, n),
    })


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A binary champion trained on plenty of rows."""
    train = world(12_000, seed=1)
    model, pre = init_model("scratch", train, BINARY, MODEL, None, seed=0)
    result = fit(model, pre, train, BINARY, TrainingSettings(epochs=6, batch_size=256, lr=5e-3, device="cpu"))
    path = save_bundle(tmp_path_factory.mktemp("src") / "m", result.model, pre, {"task": "binary"},
                       reference=train.select(["n0"]).slice(0, 100))
    return load_bundle(path)


def _body(model) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("head.")}


def test_transfer_puts_a_new_head_on_the_source_backbone_for_a_regression_target(source):
    target = world(600, seed=5)
    model, pre = init_model("transfer", target, REGRESSION, MODEL, source, seed=0)
    src = source.model.state_dict()
    for k, v in _body(model).items():
        assert torch.equal(v, src[k]), k  # embeddings and backbone come over exactly
    assert not torch.equal(model.state_dict()["head.weight"], src["head.weight"])  # the head is new
    minutes = target.column("minutes").to_numpy()
    assert pre.target == pytest.approx((minutes.mean(), minutes.std()))  # the new target's scale, not the source's None
    assert pre.numeric == source.preprocessor.numeric and np.allclose(pre.means, source.preprocessor.means)


def test_frozen_phase_trains_only_the_head_then_the_backbone_joins(source):
    target = world(800, seed=6)
    settings = TrainingSettings(epochs=3, batch_size=128, lr=5e-3, device="cpu")
    model, pre = init_model("transfer", target, REGRESSION, MODEL, source, seed=0)
    before, head = _body(model), model.head.weight.clone()
    frozen = fit(model, pre, target, REGRESSION, settings, freeze_epochs=3).model
    assert all(torch.equal(v, frozen.state_dict()[k]) for k, v in before.items())
    assert not torch.equal(head, frozen.head.weight)
    assert all(p.requires_grad for p in frozen.parameters())  # nothing stays frozen for the caller

    model, pre = init_model("transfer", target, REGRESSION, MODEL, source, seed=0)
    thawed = fit(model, pre, target, REGRESSION, settings, freeze_epochs=1, unfreeze_lr_factor=0.1).model
    assert not all(torch.equal(v, thawed.state_dict()[k]) for k, v in before.items())

    model, pre = init_model("transfer", target, REGRESSION, MODEL, source, seed=0)
    kept = fit(model, pre, target, REGRESSION, settings, freeze_epochs=1, unfreeze_lr_factor=0.0).model
    assert all(torch.equal(v, kept.state_dict()[k]) for k, v in before.items())  # factor 0: frozen for good


def _rmse(model, pre, table) -> float:
    x_num, x_cat = pre.transform(table)
    with torch.inference_mode():
        out = model(torch.from_numpy(x_num), torch.from_numpy(x_cat)).double()
    pred = task_for("regression").link(out, pre.target).numpy()
    return float(np.sqrt(np.mean((pred - table.column("minutes").to_numpy()) ** 2)))


def test_transfer_beats_scratch_on_a_small_new_target(source):
    small, test = world(400, seed=7), world(5000, seed=8)
    settings = TrainingSettings(epochs=20, batch_size=64, lr=5e-3, device="cpu", seed=0)
    model, pre = init_model("transfer", small, REGRESSION, MODEL, source, seed=0)
    transfer = _rmse(fit(model, pre, small, REGRESSION, settings, freeze_epochs=5, unfreeze_lr_factor=0.1).model, pre, test)
    model, pre = init_model("scratch", small, REGRESSION, MODEL, None, seed=0)
    scratch = _rmse(fit(model, pre, small, REGRESSION, settings).model, pre, test)
    assert transfer < 0.9 * scratch, (transfer, scratch)


def test_transfer_checks_the_features_match(source):
    other = DatasetSpec(entity_id="id", numeric=("n0", "n1"), categorical=("shop",), label="y")
    with pytest.raises(ValueError, match=r"init_from='transfer' needs the source model's features to match"):
        init_model("transfer", world(100, 0), other, MODEL, source, seed=0)


def test_sample_weights_decide_which_rows_an_epoch_draws():
    clean = world(3000, seed=2)
    y = clean.column("y").to_numpy().copy()
    y[1500:] = 1 - y[1500:]  # the second half has its labels flipped
    table = clean.set_column(clean.schema.get_field_index("y"), "y", pa.array(y))
    weights = np.r_[np.ones(1500), np.zeros(1500)]
    settings = TrainingSettings(epochs=4, batch_size=128, lr=1e-2, device="cpu")
    test = world(3000, seed=3)
    model, pre = init_model("scratch", table, BINARY, MODEL, None, seed=0)
    weighted = fit(model, pre, table, BINARY, settings, sample_weight=weights).model
    x_num, x_cat = pre.transform(test)
    with torch.inference_mode():
        p = torch.sigmoid(weighted(torch.from_numpy(x_num), torch.from_numpy(x_cat))[:, 0]).numpy()
    assert auc(labels(test, "y"), p) > 0.75  # the flipped half was never drawn
    with pytest.raises(ValueError, match="sample_weight must hold 3000"):
        fit(model, pre, table, BINARY, settings, sample_weight=np.ones(10))


def test_early_stopping_keeps_the_best_epochs_weights():
    train, valid = world(2000, seed=4), world(1000, seed=9)
    # A big net, a high rate and no dropout overfit 2000 rows: validation loss turns up.
    settings = TrainingSettings(epochs=40, batch_size=64, lr=2e-2, device="cpu", early_stop_patience=2)
    model, pre = init_model("scratch", train, BINARY, ModelSettings(hidden=(256, 256), dropout=0.0), None, seed=0)
    result = fit(model, pre, train, BINARY, settings, valid_table=valid)
    assert result.stopped_early and len(result.history) < 40
    assert result.best_epoch == min(result.history, key=lambda h: h["valid_loss"])["epoch"]
    assert len(result.history) == result.best_epoch + 2  # patience 2
    x_num, x_cat = pre.transform(valid)
    with torch.inference_mode():
        out = result.model(torch.from_numpy(x_num), torch.from_numpy(x_cat))
    kept = task_for("binary").loss(out, torch.from_numpy(labels(valid, "y").astype(np.float32)), None).item()
    assert kept == pytest.approx(result.best["valid_loss"], rel=1e-5)  # the model returned is the best epoch's


def test_a_nan_loss_stops_training_and_says_what_to_do():
    train = world(500, seed=0)
    bad = train.set_column(train.schema.get_field_index("minutes"), "minutes",
                           pa.array(np.r_[[1e308, -1e308], train.column("minutes").to_numpy()[2:]]))
    model, pre = init_model("scratch", bad, REGRESSION, MODEL, None, seed=0)
    with pytest.raises(NonFiniteLoss, match=r"training loss became (nan|inf) in epoch 1.*lower training.lr"):
        fit(model, pre, bad, REGRESSION, TrainingSettings(epochs=2, device="cpu"))


def test_max_steps_caps_the_optimizer_steps():
    train = world(5000, seed=0)
    model, pre = init_model("scratch", train, BINARY, MODEL, None, seed=0)
    result = fit(model, pre, train, BINARY, TrainingSettings(epochs=5, batch_size=100, max_steps=7, device="cpu"))
    assert result.steps == 7 and len(result.history) == 1


@pytest.mark.parametrize("y, task, fragment", [
    (np.zeros(900, dtype=np.int64), "binary", "900 labelled rows of one class only (0 positives, 900 negatives)"),
    (np.ones(40, dtype=np.int64), "binary", "40 labelled rows of one class only (40 positives, 0 negatives)"),
    (np.array([0, 1]), "binary", "holds 2 labelled rows, fewer than the 5 needed"),
    (np.full(900, 3.0), "regression", None),  # a constant regression target still trains (to its mean)
    (np.array([0, 1] * 300), "binary", None),
])
def test_untrainable_windows_are_named_with_their_counts(y, task, fragment):
    where = "training window 2026-01-01..2026-01-21"
    if fragment is None:
        check_trainable(y, task_for(task), where, min_rows=5)
        return
    with pytest.raises(UntrainableWindow) as err:
        check_trainable(y, task_for(task), where, min_rows=5)
    assert where in str(err.value) and fragment in str(err.value)


def test_same_seed_same_weights_with_weighted_sampling_and_transfer(source):
    target = world(1000, seed=11)
    w = np.linspace(0.1, 2, 1000)
    settings = TrainingSettings(epochs=2, batch_size=64, device="cpu", seed=3)
    runs = []
    for _ in range(2):
        model, pre = init_model("transfer", target, REGRESSION, MODEL, source, seed=3)
        runs.append(fit(model, pre, target, REGRESSION, settings, sample_weight=w, freeze_epochs=1).model.state_dict())
    assert all(torch.equal(runs[0][k], runs[1][k]) for k in runs[0])


def test_the_training_core_imports_without_airflow_mlflow_alibi_or_pydantic():
    # The GPU host's image has torch, numpy, pandas, pyarrow, safetensors and scikit-learn only.
    code = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in {'airflow', 'mlflow', 'alibi_detect', 'pydantic', 'rich'}:
            raise ImportError('blocked: ' + name)
sys.meta_path.insert(0, Block())
import training.train, model.tabularnet, model.preprocess, model.bundle, training.reweight
print('ok')
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


def _loss_falls_and_warm_starts_from_the_champion(source, device: str) -> None:
    train, valid = world(20_000, seed=21), world(4000, seed=22)
    common = dict(batch_size=1024, lr=5e-3, device=device, require_gpu=device == "cuda", early_stop_patience=0)
    model, pre = init_model("scratch", train, BINARY, MODEL, None, seed=0)
    scratch = fit(model, pre, train, BINARY, TrainingSettings(epochs=3, **common), valid_table=valid)
    assert scratch.device.startswith(device)
    assert scratch.history[-1]["train_loss"] < scratch.history[0]["train_loss"]
    assert scratch.history[-1]["valid_loss"] < scratch.history[0]["valid_loss"]

    # One optimizer step each: warm is where the champion was, scratch is where chance is.
    x_num, x_cat = source.preprocessor.transform(valid)
    with torch.inference_mode():
        out = source.model(torch.from_numpy(x_num), torch.from_numpy(x_cat))
    champion_loss = task_for("binary").loss(out, torch.from_numpy(labels(valid, "y").astype(np.float32)), None).item()
    one_step = TrainingSettings(epochs=1, max_steps=1, **common)
    model, pre = init_model("warm", train, BINARY, MODEL, source, seed=0)
    warm = fit(model, pre, train, BINARY, one_step, valid_table=valid)
    model, pre = init_model("scratch", train, BINARY, MODEL, None, seed=0)
    cold = fit(model, pre, train, BINARY, one_step, valid_table=valid)
    assert warm.device.startswith(device) and warm.steps == 1
    assert abs(warm.history[0]["valid_loss"] - champion_loss) < 0.03
    assert cold.history[0]["valid_loss"] > champion_loss + 0.1


def test_cpu_loss_falls_and_warm_starts_from_the_champion(source):
    _loss_falls_and_warm_starts_from_the_champion(source, "cpu")


@pytest.mark.gpu
def test_cuda_loss_falls_and_warm_starts_from_the_champion(source):
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    _loss_falls_and_warm_starts_from_the_champion(source, "cuda")
