"""Shared fixtures: every test gets its own Nightshift home (lake, MLflow store, model cache).

The suite's three folders are its three kinds, and each folder marks its tests:
- `tests/unit`: pure logic and code on a real local lake, no services (`make check` runs these);
- `tests/integration` (marked `integration`): real Airflow, MLflow, the S3 endpoint, whole loops;
- `tests/browser` (marked `integration` and `browser`): the Model health page in headless Chromium.

`make test` runs them all under pytest-xdist, a file to a worker (`--dist loadfile`), so a
module's expensive fixtures (an Airflow stack, a trained world) are built once. Two workers may each
run an Airflow stack at once: every stack has its own api-server port and its own log-server ports
(`scripts/airflow_stack.py`), and its own metadata database.
"""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


KINDS = {"integration": ("integration",), "browser": ("integration", "browser")}


def pytest_collection_modifyitems(config, items):
    import importlib.util

    has_cuda = False
    if importlib.util.find_spec("torch") is not None:
        import torch

        has_cuda = torch.cuda.is_available()
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU (none found)")
    for item in items:
        path = Path(str(item.fspath))
        for mark in KINDS.get(path.parent.name, ()):
            item.add_marker(getattr(pytest.mark, mark))
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


# -- an S3 endpoint on 127.0.0.1 (moto), for the object-store lake ----------------------------------

@pytest.fixture(scope="session")
def s3_endpoint():
    """moto's S3 server on a free loopback port for the whole session; the AWS_* variables point at it."""
    import os

    pytest.importorskip("moto")
    from moto.server import ThreadedMotoServer

    import logging

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {"AWS_ENDPOINT_URL": f"http://{host}:{port}", "AWS_ACCESS_KEY_ID": "nightshift-test",
           "AWS_SECRET_ACCESS_KEY": "nightshift-test", "AWS_REGION": "us-east-1", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_ALLOW_HTTP": "true", "AWS_EC2_METADATA_DISABLED": "true"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    yield env["AWS_ENDPOINT_URL"]
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    server.stop()


@pytest.fixture
def bucket(s3_endpoint, request) -> str:
    """A fresh bucket of its own for one test: `s3://<bucket>`."""
    import re
    import uuid

    import boto3

    name = ("ns-" + re.sub(r"[^a-z0-9-]", "-", request.node.name.lower())[:40] + "-" + uuid.uuid4().hex[:8]).replace("--", "-")
    boto3.client("s3").create_bucket(Bucket=name)
    return f"s3://{name}"


@pytest.fixture
def lake_on(tmp_path, request):
    """`lake_on(kind)`: a lake on "posix" or "delta" in a local folder, or "s3" (delta) in a fresh moto bucket."""
    from nightshift.lake import Lake

    def make(kind: str):
        if kind == "s3":
            return Lake(request.getfixturevalue("bucket") + "/lake", "delta")
        return Lake(str(tmp_path / f"lake-{kind}"), kind)

    return make
