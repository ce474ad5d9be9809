"""The numpy forward pass scoring runs (model/folded.py) against the torch network it mirrors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from nightshift.task import task_for
from model.folded import FoldedNet, expected_shapes, misfit
from model.tabularnet import TabularNet, predict_logits

REPO = Path(__file__).resolve().parents[2]

ARCHITECTURES = [
    # (n_numeric_inputs, cardinalities, embedding_dim, hidden)
    (40, [12, 12, 12, 12, 12], 8, (128, 64)),  # the default model on the simulator's table
    (6, [3, 1, 7], 4, (16,)),                   # one hidden layer; a feature with only the OOV row
    (0, [5, 5], 8, (32, 16, 8)),                # categorical only, three layers
    (10, [], 8, (64,)),                         # numeric only
    (4, [2000], 16, (8,)),                      # a wide vocabulary
]


def _random_net(arch, seed=1, positive_gains=False) -> TabularNet:
    torch.manual_seed(seed)
    model = TabularNet(*arch).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.normal_(0, 0.5)  # not the initialisation: LayerNorm gains and biases away from 1 and 0 too
            if positive_gains and name.startswith("backbone.") and name.endswith(".weight") and p.dim() == 1:
                p.abs_().add_(0.05)  # every gain > 0: the gains fold into the next layer
    return model


def _inputs(arch, n, seed=2):
    rng = np.random.default_rng(seed)
    x_num = rng.normal(size=(n, arch[0])).astype(np.float32)
    x_cat = np.stack([rng.integers(0, c, n) for c in arch[1]], axis=1) if arch[1] else np.zeros((n, 0), np.int64)
    return x_num, x_cat


@pytest.mark.parametrize("arch", ARCHITECTURES, ids=[f"{a[0]}num-{len(a[1])}cat-{'x'.join(map(str, a[3]))}" for a in ARCHITECTURES])
@pytest.mark.parametrize("n", [0, 1, 4097, 10_000])  # empty, one row, a block boundary, several blocks
@pytest.mark.parametrize("gains", ["mixed", "positive"])
def test_numpy_logits_match_torch(arch, n, gains):
    model = _random_net(arch, positive_gains=gains == "positive")
    net = FoldedNet(model.architecture(), {k: v.numpy() for k, v in model.state_dict().items()})
    assert all(net.scaled) == (gains == "positive")
    x_num, x_cat = _inputs(arch, n)
    want = predict_logits(model, torch.from_numpy(x_num), torch.from_numpy(x_cat)).numpy()
    got = net.logits(x_num, x_cat)
    assert got.shape == (n, 1) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * max(1.0, float(np.abs(want).max(initial=0))))
    # the input space drift's MMD works in is the network's own first input
    if n:
        parts = [torch.from_numpy(x_num), *(emb(torch.from_numpy(x_cat[:, i])) for i, emb in enumerate(model.embeddings))]
        np.testing.assert_allclose(net.input_space(x_num, x_cat), torch.cat(parts, 1).detach().numpy(), rtol=0, atol=1e-7)


@pytest.mark.parametrize("arch", ARCHITECTURES[:3], ids=["default", "one-layer", "categorical-only"])
def test_a_head_of_several_outputs_folds_too(arch):
    torch.manual_seed(3)
    model = TabularNet(*arch, n_outputs=3).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.normal_(0, 0.5)
            if name.startswith("backbone.") and name.endswith(".weight") and p.dim() == 1:
                p.abs_().add_(0.05)  # the gains fold into the head's three columns
    net = FoldedNet(model.architecture(), {k: v.numpy() for k, v in model.state_dict().items()})
    x_num, x_cat = _inputs(arch, 5000)
    want = predict_logits(model, torch.from_numpy(x_num), torch.from_numpy(x_cat)).numpy()
    got = net.logits(x_num, x_cat)
    assert got.shape == (5000, 3)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * max(1.0, float(np.abs(want).max())))


@pytest.mark.parametrize("arch", ARCHITECTURES, ids=[f"{a[0]}num-{len(a[1])}cat" for a in ARCHITECTURES])
def test_torch_scoring_of_tabularnet_equals_its_numpy_path(arch):
    """The torch path every other architecture scores through gives tabularnet's numpy numbers (1e-6)."""
    from model.torchnet import TorchNet

    model = _random_net(arch, positive_gains=True)
    x_num, x_cat = _inputs(arch, 20_000)
    folded = FoldedNet(model.architecture(), {k: v.numpy() for k, v in model.state_dict().items()}).logits(x_num, x_cat)
    through_torch = TorchNet(model, list(arch[1])).logits(x_num, x_cat)
    assert through_torch.shape == folded.shape == (20_000, 1)
    scale = max(1.0, float(np.abs(folded).max()))
    np.testing.assert_allclose(through_torch, folded, rtol=0, atol=1e-6 * scale)


def test_the_folded_net_does_less_arithmetic_than_the_network():
    net = FoldedNet(_random_net(ARCHITECTURES[0]).architecture(), {k: v.numpy() for k, v in _random_net(ARCHITECTURES[0]).state_dict().items()})
    assert net.macs_per_row == 40 * 128 + 128 * 64 + 64 == 13_376  # TabularNet: 80 * 128 + 128 * 64 + 64 = 18,496


MISFITS = [
    ("a tensor missing", lambda w: w.pop("head.bias"), "missing tensors ['head.bias']"),
    ("an extra tensor", lambda w: w.update(extra=np.zeros(3, np.float32)), "unexpected tensors ['extra']"),
    ("a wrong shape", lambda w: w.update({"embeddings.0.weight": np.zeros((3, 4), np.float32)}), "embeddings.0.weight: (3, 4) where (12, 8)"),
    ("integer weights", lambda w: w.update({"head.bias": np.zeros(1, np.int64)}), "not floating point: ['head.bias']"),
]


@pytest.mark.parametrize("name,damage,says", MISFITS, ids=[m[0] for m in MISFITS])
def test_weights_that_do_not_fit_the_architecture_are_named(name, damage, says):
    model = _random_net(ARCHITECTURES[0])
    weights = {k: v.numpy().copy() for k, v in model.state_dict().items()}
    assert misfit(model.architecture(), weights) is None
    assert set(expected_shapes(model.architecture())) == set(weights)
    damage(weights)
    assert says in misfit(model.architecture(), weights)
    with pytest.raises(ValueError, match="do not fit the architecture"):
        FoldedNet(model.architecture(), weights)


def test_inputs_of_the_wrong_shape_or_range_are_refused():
    model = _random_net(ARCHITECTURES[1])
    net = FoldedNet(model.architecture(), {k: v.numpy() for k, v in model.state_dict().items()})
    x_num, x_cat = _inputs(ARCHITECTURES[1], 10)
    with pytest.raises(ValueError, match="do not fit a network of 6 numeric inputs and 3 categorical"):
        net.logits(x_num[:, :5], x_cat)
    x_cat[3, 2] = 7  # cardinality 7: indices 0..6
    with pytest.raises(ValueError, match="outside its embedding table"):
        net.logits(x_num, x_cat)


@pytest.mark.parametrize("task", ["binary", "regression"])
def test_the_numpy_link_is_the_torch_link(task):
    out = np.array([-800.0, -40.0, -3.5, 0.0, 1e-9, 2.25, 40.0, 800.0], dtype=np.float32)
    t = task_for(task)
    target = (3.0, 2.5) if task == "regression" else None
    with np.errstate(over="raise", invalid="raise", divide="raise"):  # no overflow on the way
        got = t.prediction(out, target)
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, t.link(torch.from_numpy(out), target).numpy(), rtol=1e-15, atol=0)
    if task == "binary":
        assert got[0] == 0.0 and 0 < got[1] < got[2] and got[-1] == 1.0  # tiny scores keep their order


def test_loading_a_bundle_and_scoring_imports_no_torch(tmp_path, spec):
    from tests.unit.test_robustness import features, tiny_bundle

    table = features(spec)
    bundle = tiny_bundle(tmp_path / "bundle", spec, table)
    import pyarrow.parquet as pq

    pq.write_table(table, tmp_path / "rows.parquet")
    code = f"""
import sys, json
import pyarrow.parquet as pq
from model.bundle import load_bundle
b = load_bundle({str(bundle)!r})
p = b.predict(pq.read_table({str(tmp_path / 'rows.parquet')!r}))
print(json.dumps({{"torch": "torch" in sys.modules, "n": len(p), "first": float(p[0])}}))
"""
    out = json.loads(subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True,
                                    env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}).stdout)
    assert out == {"torch": False, "n": 300, "first": pytest.approx(out["first"])}
    from model.bundle import load_bundle

    loaded = load_bundle(bundle)
    assert loaded.predict(table)[0] == out["first"]  # the same numbers in a process that has torch
    assert not loaded.model.training  # and the torch network is still there when asked for
