"""Your model: the architecture switch, the load checks, warm start by name and shape, and the recorded code."""

from __future__ import annotations

import importlib
import json
import sys
import textwrap

import numpy as np
import pyarrow as pa
import pytest
import torch
from torch import nn

from model import architectures as arch
from model.architectures import ArchitectureError, CodeDrift, ModelSpec
from model.bundle import ARCHITECTURE, load_bundle, save_bundle
from model.transplant import NothingTransplanted, transplant
from nightshift.settings import ModelSettings, load_settings
from nightshift.spec import DatasetSpec

SPEC = ModelSpec(n_numeric=6, cardinalities=[5, 3], n_outputs=1, params={})


# -- modules the load checks must refuse (importable by path: tests.unit.test_architectures:NAME) ----------
class _Good(nn.Module):
    def __init__(self, spec):
        super().__init__()
        self.emb = nn.ModuleList(nn.Embedding(c, 2) for c in spec.cardinalities)
        self.body = nn.Linear(spec.n_numeric + 2 * len(spec.cardinalities), 8)
        self.head = nn.Linear(8, spec.n_outputs)

    def forward(self, x_num, x_cat):
        z = torch.cat([x_num, *(e(x_cat[:, i]) for i, e in enumerate(self.emb))], 1)
        return self.head(torch.relu(self.body(z)))


class _Squeezed(_Good):
    def forward(self, x_num, x_cat):
        return super().forward(x_num, x_cat).squeeze(-1)  # [n]: the old one-logit habit


class _NaN(_Good):
    def forward(self, x_num, x_cat):
        return super().forward(x_num, x_cat) * float("nan")


class _BatchStats(_Good):
    def forward(self, x_num, x_cat):  # normalises over the batch even in eval mode
        out = super().forward(x_num, x_cat)
        return (out - out.mean(0)) / (out.std(0, unbiased=False) + 1e-3)


class _Broken(_Good):
    def forward(self, x_num, x_cat):
        return self.head(x_num)  # the wrong width: a shape error inside


def good(spec):
    return _Good(spec)


def squeezed(spec):
    return _Squeezed(spec)


def nan(spec):
    return _NaN(spec)


def batch_stats(spec):
    return _BatchStats(spec)


def broken(spec):
    return _Broken(spec)


def not_a_module(spec):
    return "a string"


def raises(spec):
    raise RuntimeError("CUDA out of memory")


LOAD_CHECKS = [
    ("a good module", "tests.unit.test_architectures:good", None),
    ("the built-in tabularnet", "tabularnet", None),
    ("the built-in ft_transformer", "ft_transformer", None),
    ("logits [n] instead of [n, 1]", "tests.unit.test_architectures:squeezed", r"must return logits \[n, n_outputs\] = \[3, 1\], got \(3,\)"),
    ("NaN logits", "tests.unit.test_architectures:nan", "non-finite logits"),
    ("batch statistics at inference", "tests.unit.test_architectures:batch_stats", "scores differently alone than inside a batch"),
    ("forward fails", "tests.unit.test_architectures:broken", r"forward\(x_num \[3, 6\] float, x_cat \[3, 2\] long\) failed"),
    ("build returns no module", "tests.unit.test_architectures:not_a_module", "must return a torch.nn.Module, got str"),
    ("build raises", "tests.unit.test_architectures:raises", "build\\(spec\\) failed .*CUDA out of memory"),
    ("a module that does not import", "no_such_package.models:build", "does not import"),
    ("no such function", "tests.unit.test_architectures:missing", "has no callable 'missing'"),
    ("not a path", "my model", "neither a built-in"),
]


@pytest.mark.parametrize("name,path,error", LOAD_CHECKS, ids=[c[0] for c in LOAD_CHECKS])
def test_load_checks(name, path, error):
    if error is None:
        module = arch.build(path, SPEC)
        assert not module.training
        return
    with pytest.raises(ArchitectureError, match=error) as caught:
        arch.build(path, SPEC)
    assert path in str(caught.value) or path == "my model"  # the builder is named


def test_a_bad_architecture_is_refused_at_settings_time(tmp_path):
    toml = tmp_path / "nightshift.toml"
    toml.write_text('[dataset]\nentity_id = "id"\nnumeric = ["x"]\nlabel = "y"\n')
    with pytest.raises(ValueError, match="neither a built-in.*NIGHTSHIFT__MODEL__ARCHITECTURE"):
        load_settings(toml, env={"NIGHTSHIFT__MODEL__ARCHITECTURE": "my model"})
    s = load_settings(toml, env={"NIGHTSHIFT__MODEL__ARCHITECTURE": "my_pkg.nets:build",
                                 "NIGHTSHIFT__MODEL__PARAMS": '{"width": 64}'})
    assert s.model.architecture == "my_pkg.nets:build" and s.model.effective_params == {"width": 64}
    assert ModelSettings().effective_params == {"embedding_dim": 8, "hidden": [128, 64], "dropout": 0.1}


# -- warm start and transfer by name and shape ------------------------------------------------------
def _source(spec=SPEC, name="tabularnet", params=None):
    torch.manual_seed(0)
    return arch.build(name, ModelSpec(spec.n_numeric, spec.cardinalities, spec.n_outputs, params or {"hidden": [16]}))


TRANSPLANTS = [
    # (case, new spec's cardinalities, outputs, params, keep_head, copied, grown, initialised)
    ("same architecture", [5, 3], 1, {"hidden": [16]}, True, 8, 0, 0),
    ("categories first seen since", [7, 3], 1, {"hidden": [16]}, True, 7, 1, 0),
    ("transfer: a new head", [5, 3], 1, {"hidden": [16]}, False, 6, 0, 2),
    ("a new class: the head's shape changed", [5, 3], 3, {"hidden": [16]}, True, 6, 0, 2),
    ("a wider layer: what still fits is copied", [5, 3], 1, {"hidden": [32]}, True, 3, 0, 5),
]


@pytest.mark.parametrize("case,cards,outputs,params,keep_head,copied,grown,initialised", TRANSPLANTS,
                         ids=[t[0] for t in TRANSPLANTS])
def test_transplant_copies_grows_and_initialises(case, cards, outputs, params, keep_head, copied, grown, initialised):
    source = _source()
    new = arch.build("tabularnet", ModelSpec(6, cards, outputs, params))
    state = {k: v.clone() for k, v in source.state_dict().items()}
    report = transplant(new, state, growable=arch.growable(new), head_prefixes=arch.head_prefixes(new), keep_head=keep_head)
    assert (len(report.copied), len(report.grown), len(report.initialised)) == (copied, grown, initialised), report
    after = new.state_dict()
    for name in report.copied:
        assert torch.equal(after[name], state[name])
    for name in report.grown:  # old rows kept exactly, new rows the mean of the known ones
        old = state[name]
        assert torch.equal(after[name][:old.shape[0]], old)
        assert torch.allclose(after[name][old.shape[0]:], old[1:].mean(0, keepdim=True).expand_as(after[name][old.shape[0]:]))


def test_a_warm_start_that_copies_nothing_of_the_body_is_an_error():
    source = _source()
    other = arch.build("ft_transformer", ModelSpec(6, [5, 3], 1, {}))
    with pytest.raises(NothingTransplanted, match="init_from='warm' copied none of the source model's body"):
        transplant(other, source.state_dict(), growable=arch.growable(other), head_prefixes=arch.head_prefixes(other))


def test_ft_transformer_warm_start_grows_its_tables_and_keeps_old_outputs():
    torch.manual_seed(0)
    old = arch.build("ft_transformer", ModelSpec(6, [5, 3], 1, {}))
    new = arch.build("ft_transformer", ModelSpec(6, [9, 3], 1, {}))
    report = transplant(new, old.state_dict(), growable=arch.growable(new), head_prefixes=arch.head_prefixes(new))
    assert report.grown == ["net.cat_embeddings.embeddings.0.weight"] and not report.initialised
    x_num, x_cat = torch.randn(50, 6), torch.stack([torch.randint(0, 5, (50,)), torch.randint(0, 3, (50,))], 1)
    with torch.inference_mode():
        torch.testing.assert_close(new.eval()(x_num, x_cat), old.eval()(x_num, x_cat))  # known categories: same scores


# -- the bundle records the code --------------------------------------------------------------------
USER_MODULE = '''
import torch
from torch import nn


class Net(nn.Module):
    head_prefixes = ("out.",)

    def __init__(self, spec):
        super().__init__()
        self.tables = nn.ModuleList(nn.Embedding(c, 3) for c in spec.cardinalities)
        self.body = nn.Sequential(nn.Linear(spec.n_numeric + 3 * len(spec.cardinalities), spec.params.get("width", 16)),
                                  nn.LayerNorm(spec.params.get("width", 16)), nn.ReLU())
        self.out = nn.Linear(spec.params.get("width", 16), spec.n_outputs)

    @property
    def growable(self):
        return {f"tables.{i}.weight": i for i in range(len(self.tables))}

    def forward(self, x_num, x_cat):
        return self.out(self.body(torch.cat([x_num, *(t(x_cat[:, i]) for i, t in enumerate(self.tables))], 1)))


def build(spec):
    return Net(spec)
'''


@pytest.fixture
def user_package(tmp_path, monkeypatch):
    """A team's own package, installed the way a worker has it (on sys.path), outside every bundle folder."""
    root = tmp_path / "site"
    (root / "acme_models").mkdir(parents=True)
    (root / "acme_models" / "__init__.py").write_text("")
    (root / "acme_models" / "nets.py").write_text(USER_MODULE)
    monkeypatch.syspath_prepend(str(root))
    importlib.invalidate_caches()
    yield root / "acme_models" / "nets.py"
    sys.modules.pop("acme_models.nets", None)
    sys.modules.pop("acme_models", None)


def _user_bundle(path, tmp_path):
    from model.preprocess import Preprocessor

    spec = DatasetSpec(entity_id="id", numeric=("a", "b"), categorical=("c",), label="y")
    table = pa.table({"id": ["1", "2", "3", "4"], "a": [0.1, 0.2, 0.3, 0.4], "b": [1.0, 2.0, 3.0, 4.0],
                      "c": ["x", "y", "x", "z"], "y": [0, 1, 0, 1]})
    pre = Preprocessor.fit(table, spec)
    torch.manual_seed(0)
    module = arch.build_recorded("acme_models.nets:build", ModelSpec(pre.n_numeric_inputs, pre.cardinalities, 1, {"width": 8}))
    save_bundle(path, module, pre, {"task": "binary"}, reference=table.select(["a", "b", "c"]))
    return table, module


def test_a_user_bundle_round_trips_through_torch_and_records_its_code(user_package, tmp_path):
    table, module = _user_bundle(tmp_path / "bundle", tmp_path)
    recorded = json.loads((tmp_path / "bundle" / ARCHITECTURE).read_text())
    assert recorded["builder"] == "acme_models.nets:build" and recorded["params"] == {"width": 8}
    assert recorded["code"]["modules"] == ["acme_models.nets"] and len(recorded["code"]["source_sha256"]) == 64
    loaded = load_bundle(tmp_path / "bundle")
    with torch.inference_mode():
        want = torch.sigmoid(module(*map(torch.from_numpy, loaded.preprocessor.transform(table)))[:, 0]).double().numpy()
    np.testing.assert_allclose(loaded.predict(table), want, rtol=0, atol=1e-6)
    assert str(tmp_path / "bundle") not in sys.path  # the code came from the installed package, not the bundle


def test_changed_code_is_refused_naming_both_hashes_unless_allowed(user_package, tmp_path, caplog):
    table, _ = _user_bundle(tmp_path / "bundle", tmp_path)
    recorded = json.loads((tmp_path / "bundle" / ARCHITECTURE).read_text())["code"]["source_sha256"]
    user_package.write_text(user_package.read_text().replace("nn.ReLU()", "nn.GELU()"))
    installed = arch.source_hash(["acme_models.nets"])
    with pytest.raises(CodeDrift, match=f"{installed[:16]} installed, {recorded[:16]} recorded") as caught:
        load_bundle(tmp_path / "bundle")
    assert "model.allow_code_drift" in str(caught.value)
    with caplog.at_level("WARNING", logger="nightshift.model"):
        assert len(load_bundle(tmp_path / "bundle", allow_code_drift=True).predict(table)) == 4
    assert "Loaded anyway" in caplog.text


def test_a_bundle_from_before_the_switch_still_loads(tmp_path, spec):
    from tests.unit.test_robustness import features, tiny_bundle

    table = features(spec)
    bundle = tiny_bundle(tmp_path / "bundle", spec, table)
    before = load_bundle(bundle).predict(table)
    v2 = json.loads((bundle / ARCHITECTURE).read_text())
    v1 = arch.tabularnet_v1(v2)
    del v1["n_outputs"]  # format 1 had one output and no such field
    (bundle / ARCHITECTURE).write_text(json.dumps(v1))
    np.testing.assert_array_equal(load_bundle(bundle).predict(table), before)


def test_every_builtin_is_a_choice_of_the_settings():
    from nightshift.choices import Architecture

    assert set(arch.BUILTINS) == set(Architecture)
    for name in arch.BUILTINS:
        textwrap.dedent(name)  # the registry's keys are the settings' values
        assert arch.builder_path(name) == arch.BUILTINS[name]


class _Hungry(_Good):
    def forward(self, x_num, x_cat):
        if self.training:  # as a too-large model does on a real batch: the allocator refuses
            torch.empty(2**44, dtype=torch.float32)
        return super().forward(x_num, x_cat)


def hungry(spec):
    return _Hungry(spec)


def test_a_model_too_large_for_memory_fails_the_retrain_with_its_size_and_the_setting():
    from model.preprocess import Preprocessor
    from nightshift.settings import TrainingSettings
    from training.train import ModelTooLarge, fit

    spec = DatasetSpec(entity_id="id", numeric=("a",), categorical=("c",), label="y")
    table = pa.table({"id": [str(i) for i in range(64)], "a": np.linspace(0, 1, 64), "c": ["x", "y"] * 32,
                      "y": [0, 1] * 32})
    pre = Preprocessor.fit(table, spec)
    module = arch.build_recorded("tests.unit.test_architectures:hungry", ModelSpec(pre.n_numeric_inputs, pre.cardinalities, 1, {}))
    with pytest.raises(ModelTooLarge, match=r"out of memory on cpu training batches of 32 rows: "
                                            r"tests.unit.test_architectures:hungry .* parameters. Lower training.batch_size"):
        fit(module, pre, table, spec, TrainingSettings(epochs=1, batch_size=32, device="cpu"))


def test_a_builder_that_does_not_import_fails_the_retrain_before_anything_starts(settings, lake):
    from training.retrain import retrain

    s = settings.with_overrides({"model.architecture": "acme_missing.nets:build"})
    with pytest.raises(ArchitectureError, match="'acme_missing.nets:build': module 'acme_missing.nets' does not import"):
        retrain(s, "2026-03-12", trigger="bootstrap")
    assert not lake.fs.get_file_info(f"{lake.root}/_work").type  # no window was staged
