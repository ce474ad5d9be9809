"""Named errors instead of tracebacks: corrupt or planted model files, a full or read-only lake;
the CLI prints one line that says what to do and exits non-zero, and the old partition survives."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
import subprocess
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from model.bundle import META, WEIGHTS, BundleCorrupt, load_bundle, save_bundle

REPO = Path(__file__).resolve().parents[2]
DS = "2026-01-03"


class _Payload:
    """Unpickling this creates `marker`: the proof that a pickle ran."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def tiny_bundle(path: Path, spec, table: pa.Table) -> Path:
    from nightshift.settings import ModelSettings
    from training.train import init_model

    model, pre = init_model("scratch", table, spec, ModelSettings(hidden=(8,), embedding_dim=2), None, seed=0)
    return save_bundle(path, model, pre, {"task": spec.task}, reference=table.select(list(spec.features)).slice(0, 50))


def features(spec, n=300) -> pa.Table:
    rng = np.random.default_rng(0)
    data = {spec.entity_id: [f"e{i}" for i in range(n)]}
    data.update({c: rng.normal(size=n) for c in spec.numeric})
    data.update({c: [f"{c}{i % 3}" for i in range(n)] for c in spec.categorical})
    return pa.table(data)


def replace_weights(bundle: Path, data: bytes, fix_checksum: bool = True) -> None:
    """Overwrite the weights; with `fix_checksum`, as an attacker (or a consistent mix-up) would, so the
    checksum in bundle.json matches and only the loader itself stands in the way."""
    (bundle / WEIGHTS).write_bytes(data)
    if fix_checksum:
        meta = json.loads((bundle / META).read_text())
        meta["weights_sha256"] = hashlib.sha256(data).hexdigest()
        (bundle / META).write_text(json.dumps(meta))


@pytest.mark.parametrize("form", ["pickle", "torch.save"])
def test_a_planted_pickle_never_runs(tmp_path, spec, form):
    bundle = tiny_bundle(tmp_path / "bundle", spec, features(spec))
    marker = tmp_path / "pwned"
    if form == "pickle":
        payload = pickle.dumps(_Payload(marker))
    else:
        import io

        import torch

        buf = io.BytesIO()
        torch.save({"weight": _Payload(marker)}, buf)
        payload = buf.getvalue()
    replace_weights(bundle, payload)
    with pytest.raises(BundleCorrupt, match=r"model\.safetensors is corrupt: it is not a safetensors file"):
        load_bundle(bundle)
    assert not marker.exists()  # the payload never ran
    pickle.loads(pickle.dumps(_Payload(marker)))  # noqa: S301 - the control: this payload does run when unpickled
    assert marker.exists()


CORRUPTIONS = [
    ("truncated weights", lambda b: replace_weights(b, (b / WEIGHTS).read_bytes()[:100]), WEIGHTS, "not a safetensors file"),
    ("weights changed under the checksum", lambda b: (b / WEIGHTS).write_bytes((b / WEIGHTS).read_bytes()[:-4] + b"\0\0\0\0"),
     WEIGHTS, "does not match the checksum"),
    ("garbage weights", lambda b: replace_weights(b, b"\x00" * 64), WEIGHTS, "not a safetensors file"),
    ("architecture not JSON", lambda b: (b / "architecture.json").write_text("{nope"), "architecture.json", "not valid JSON"),
    ("architecture of another net", lambda b: (b / "architecture.json").write_text(json.dumps(
        {**json.loads((b / "architecture.json").read_text()), "params": {**json.loads((b / "architecture.json").read_text())["params"], "hidden": [4, 4]}})), WEIGHTS, "do not fit"),
    ("preprocessor not JSON", lambda b: (b / "preprocessor.json").write_bytes(b"\xff\xfe"), "preprocessor.json", "not valid JSON"),
    ("metadata not an object", lambda b: (b / META).write_text("[]"), META, "not a JSON object"),
    ("preprocessor of another vocabulary", lambda b: (b / "preprocessor.json").write_text(json.dumps(
        _drop_a_category(json.loads((b / "preprocessor.json").read_text())))), "preprocessor.json", "does not fit architecture.json"),
]


def _drop_a_category(pre: dict) -> dict:
    pre["categorical"][0]["vocabulary"] = pre["categorical"][0]["vocabulary"][:-1]
    return pre


@pytest.mark.parametrize("name,damage,file,detail", CORRUPTIONS, ids=[c[0] for c in CORRUPTIONS])
def test_a_corrupt_bundle_is_a_named_error(tmp_path, spec, name, damage, file, detail):
    bundle = tiny_bundle(tmp_path / "bundle", spec, features(spec))
    damage(bundle)
    with pytest.raises(BundleCorrupt) as err:
        load_bundle(bundle)
    assert str(err.value).startswith(f"model bundle file {bundle / file} is corrupt") and detail in str(err.value)
    assert "delete" in str(err.value)


def test_no_unsafe_torch_load_or_pickle_in_the_code():
    """Every `torch.load` passes weights_only=True; nothing unpickles (the planted-pickle test shows why)."""
    offenders = []
    for path in REPO.glob("**/*.py"):
        if any(part in (".venv", "tests", ".nightshift") or part.startswith(".") for part in path.relative_to(REPO).parts):
            continue
        text = path.read_text()
        for m in re.finditer(r"torch\.load\(([^)]*)\)", text):
            if "weights_only=True" not in m.group(1):
                offenders.append(f"{path}: {m.group(0)}")
        if re.search(r"\bpickle\.loads?\(|\bcloudpickle\b|\bjoblib\.load\(", text):
            offenders.append(f"{path}: unpickles")
    assert offenders == []


# -- the CLI: one line, non-zero exit, the old partition survives --------------------------------

@pytest.fixture
def scorable(home, settings, spec, monkeypatch):
    """Features for DS in a lake, a champion in force (from the alias history) whose bundle is in the
    local model cache, and predictions already committed for DS: no MLflow needed."""
    from nightshift.lake import FEATURES, Lake
    from nightshift.tables import aliases
    from nightshift.tables.aliases import AliasEvent

    def make(lake_uri: str):
        monkeypatch.setenv("NIGHTSHIFT_LAKE", lake_uri)
        lake = Lake(lake_uri)
        table = features(spec)
        lake.commit(FEATURES, DS, table)
        aliases.append(lake, AliasEvent(1, "2026-01-01", "champion", "1", None, "run-1", "test", "test"))
        bundle = tiny_bundle(home / "cache" / "models" / settings.model.name / "v1", spec, table)
        from cli.main import main

        assert main(["-q", "score", "--ds", DS, "--model", "as_of"]) == 0
        return lake, bundle

    return make


def run_cli(capsys, *args) -> tuple[int, list[str]]:
    from cli.main import main

    capsys.readouterr()
    rc = main(["-q", *args])
    return rc, capsys.readouterr().err.strip().splitlines()


def test_cli_corrupt_weights_one_line_and_the_old_partition_survives(scorable, tmp_path, capsys):
    lake, bundle = scorable(str(tmp_path / "lake"))
    before = lake.fingerprint("predictions", DS)
    replace_weights(bundle, pickle.dumps(_Payload(tmp_path / "pwned")))
    rc, err = run_cli(capsys, "score", "--ds", DS, "--model", "as_of")
    assert rc == 2 and len(err) == 1 and "corrupt" in err[0] and "Traceback" not in err[0]
    assert lake.fingerprint("predictions", DS) == before and not (tmp_path / "pwned").exists()


def _mount(path: Path, size: str) -> None:
    path.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root)")


def test_cli_disk_full_one_line_and_the_old_partition_survives(scorable, tmp_path, capsys):
    mnt = tmp_path / "small"
    _mount(mnt, "2m")
    try:
        lake, _ = scorable(str(mnt / "lake"))
        before = lake.fingerprint("predictions", DS)
        subprocess.run(["dd", "if=/dev/zero", f"of={mnt}/fill", "bs=64k"], capture_output=True)  # until the disk is full
        rc, err = run_cli(capsys, "score", "--ds", DS, "--model", "as_of")
        assert rc == 5 and len(err) == 1, err
        assert err[0].startswith(f"nightshift score: storage: could not write predictions/ds={DS}") and "disk is full" in err[0]
        (mnt / "fill").unlink()
        assert lake.fingerprint("predictions", DS) == before
        assert not list((mnt / "lake" / "_staging").rglob("*.parquet"))
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_cli_read_only_lake_one_line_and_the_old_partition_survives(scorable, tmp_path, capsys):
    mnt = tmp_path / "ro"
    _mount(mnt, "8m")
    try:
        lake, _ = scorable(str(mnt / "lake"))
        before = lake.fingerprint("predictions", DS)
        subprocess.run(["mount", "-o", "remount,ro", str(mnt)], check=True)
        rc, err = run_cli(capsys, "score", "--ds", DS, "--model", "as_of")
        assert rc == 5 and len(err) == 1, err
        assert "read-only" in err[0] and f"predictions/ds={DS}" in err[0]
        assert lake.fingerprint("predictions", DS) == before
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_ruff_with_the_security_and_airflow_rules_passes():
    """`ruff check` with flake8-bandit (S) and Airflow (AIR) rules (pyproject's [tool.ruff]): every
    exception is justified on its line."""
    import sys

    ruff = Path(sys.executable).parent / "ruff"
    out = subprocess.run([str(ruff), "check", "--output-format", "concise", str(REPO)], capture_output=True, text=True,
                         cwd=REPO)
    assert out.returncode == 0, out.stdout + out.stderr
    config = (REPO / "pyproject.toml").read_text()
    assert '"S"' in config and '"AIR"' in config


# -- the bad-input matrix through `nightshift nightly`: features and labels alike -----------------

def _feature_breaks(spec):
    from tests.unit.test_contract import BREAKS

    out = [(f"features: {name}", lambda d, s=spec, b=brk: b(d, s)) for name, brk, _, _ in BREAKS]
    out.append(("features: empty", lambda d: [d.__setitem__(k, v[:0]) for k, v in list(d.items())]))
    return out


def _label_breaks(spec):
    from tests.integration.test_labels_contract import BAD_LABELS

    return [(f"labels: {name}", brk) for name, brk, _, _ in BAD_LABELS]


@pytest.mark.integration  # in make test, not make check: every bad partition through the real `nightshift nightly` CLI
def test_the_bad_input_matrix_gives_named_errors_and_no_traceback(home, settings, spec, tmp_path, capsys):
    """Every bad features or labels partition, through `nightshift nightly`: exit 2, one line naming the
    partition, column and rule, no traceback, and nothing committed for that night."""
    from cli.main import main
    from nightshift.lake import FEATURES, LABELS, PERFORMANCE, PREDICTIONS, Lake
    from nightshift.spec import EVENT_DS
    from nightshift.tables import aliases
    from nightshift.tables.aliases import AliasEvent
    from tests.unit.test_contract import good

    cases = _feature_breaks(spec) + _label_breaks(spec)
    tracebacks, refused = 0, 0
    for i, (name, brk) in enumerate(cases):
        lake = Lake(str(tmp_path / f"lake{i}"))
        os.environ["NIGHTSHIFT_LAKE"] = lake.uri
        night, label_day = "2026-01-05", "2026-01-04"
        base = pa.table(good(spec))
        lake.commit(FEATURES, "2026-01-04", base)
        aliases.append(lake, AliasEvent(1, "2026-01-01", "champion", "1", None, "run-1", "test", "test"))
        if i == 0:
            tiny_bundle(home / "cache" / "models" / settings.model.name / "v1", spec, base)
        labels = {spec.entity_id: ["e1", "e2"], EVENT_DS: [label_day, label_day], spec.label: [1, 0]}
        features_data = good(spec)
        if name.startswith("features"):
            brk(features_data)
        else:
            change = brk(spec)
            if "drop" in change:
                labels.pop(change["drop"])
            else:
                labels.update(change)
        lake.commit(FEATURES, night, pa.table(features_data))
        lake.commit(LABELS, night, pa.table(labels))
        capsys.readouterr()
        try:
            rc = main(["-q", "nightly", "--ds", night, "--no-retrain"])
        except Exception:  # noqa: BLE001 - counted: an unhandled exception is what this test looks for
            tracebacks += 1
            continue
        err = capsys.readouterr().err.strip().splitlines()
        refused += rc == 2
        assert rc == 2 and len(err) == 1, (name, rc, err)
        assert "breaks rule" in err[0] and ("features/ds=" in err[0] or "labels/ds=" in err[0]), (name, err)
        assert not lake.exists(PERFORMANCE, night), name
        if name.startswith("features"):
            assert not lake.exists(PREDICTIONS, night), name
    del os.environ["NIGHTSHIFT_LAKE"]
    print(f"RESULT bad_inputs={len(cases)} refused_by_name={refused} unhandled_tracebacks={tracebacks}")
    assert tracebacks == 0 and refused == len(cases)


@pytest.mark.parametrize("total", [1, 2, 5, 6, 10, 30, 60, 120, 600])
def test_mlflow_retry_budget_fits_within_the_timeout(total):
    """MLflow's retry settings derived from `paths.mlflow_timeout_s`: the worst case (every try timing out,
    every backoff at its longest, jitter included) never exceeds the configured total."""
    from nightshift.registry import http_budget

    b = http_budget(total)
    retries, timeout = int(b["MLFLOW_HTTP_REQUEST_MAX_RETRIES"]), int(b["MLFLOW_HTTP_REQUEST_TIMEOUT"])
    factor, jitter = int(b["MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"]), float(b["MLFLOW_HTTP_REQUEST_BACKOFF_JITTER"])
    worst = (retries + 1) * timeout + sum(factor * 2 ** (n - 1) + jitter for n in range(1, retries + 1))
    assert worst <= total and b["MLFLOW_HTTP_RESPECT_RETRY_AFTER_HEADER"] == "false"
    if total >= 30:
        assert retries >= 3  # a passing fault is still retried
