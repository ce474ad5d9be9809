"""Shared fixtures: every test gets its own Nightshift home (lake, MLflow store, model cache)."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def pytest_collection_modifyitems(config, items):
    import importlib.util

    has_cuda = False
    if importlib.util.find_spec("torch") is not None:
        import torch

        has_cuda = torch.cuda.is_available()
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU (none found)")
    for item in items:
        if "gpu" in item.keywords and not has_cuda:
            item.add_marker(skip_gpu)


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """An isolated NIGHTSHIFT_HOME, also seen by code that calls load_settings() itself."""
    h = tmp_path / "home"
    h.mkdir()
    monkeypatch.setenv("NIGHTSHIFT_HOME", str(h))
    monkeypatch.setenv("NIGHTSHIFT_CONFIG", str(REPO / "nightshift.toml"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("NIGHTSHIFT_LAKE", raising=False)
    return h


@pytest.fixture
def settings(home):
    from nightshift.settings import load_settings

    return load_settings()


@pytest.fixture
def lake(settings):
    from nightshift.lake import Lake

    return Lake(settings.lake_uri)


@pytest.fixture
def spec(settings):
    return settings.dataset
