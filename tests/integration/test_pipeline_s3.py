"""The nightly loop with the lake in an S3 bucket (moto on 127.0.0.1, the delta backend), in-process.

The same short world as tests/integration/test_pipeline.py: bootstrap, nights with a sudden drift, a
retrain and a promotion, every partition committed as a Delta table in the bucket.
"""

from __future__ import annotations

import pytest

from nightshift.dates import add_days
from nightshift.lake import DECISIONS, DRIFT, PERFORMANCE, PREDICTIONS, Lake
from nightshift.tables.decisions import read_decision

pytestmark = pytest.mark.integration

START, HISTORY, NIGHTS, ROWS, ONSET_NIGHT = "2026-03-01", 12, 8, 1500, 2
FAST = {"training.epochs": 4, "gate.n_boot": 300, "policy.onset_min_labels": 1000}


@pytest.fixture(scope="module")
def world(tmp_path_factory, s3_endpoint):
    import os

    import boto3

    from batch_scoring.nightly import run_nights
    from nightshift.settings import load_settings
    from simulator.land import simulate
    from training.retrain import retrain

    boto3.client("s3").create_bucket(Bucket="ns-pipeline")
    home = tmp_path_factory.mktemp("pipeline-s3")
    env = {"NIGHTSHIFT_HOME": str(home), "NIGHTSHIFT_LAKE": "s3://ns-pipeline/lake",
           "NIGHTSHIFT__PATHS__LAKE_BACKEND": "delta"}
    os.environ.update(env)
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    try:
        s = load_settings().with_overrides(FAST)
        lake = Lake.of(s)
        assert lake.backend == "delta" and lake.uri == "s3://ns-pipeline/lake"
        simulate(lake, s.dataset, start=START, days=HISTORY + NIGHTS, rows_per_day=ROWS,
                 scenario="sudden-covariate", onset=HISTORY + ONSET_NIGHT, seed=3, progress=False)
        boot = retrain(s, add_days(START, HISTORY - 1), trigger="bootstrap")
        first, last = add_days(START, HISTORY), add_days(START, HISTORY + NIGHTS - 1)
        nights = run_nights(s, first, last, progress=False)
        yield {"settings": s, "lake": lake, "boot": boot, "nights": nights, "first": first, "last": last}
    finally:
        for k in env:
            os.environ.pop(k, None)


def test_nights_retrain_and_promote_in_a_bucket(world):
    from nightshift.tables import aliases

    lake, nights = world["lake"], world["nights"]
    assert world["boot"]["verdict"] == "PROMOTE"
    retrained = [n for n in nights if "retrain" in n]
    assert retrained, "the policy never handed off to retrain"
    assert read_decision(lake, retrained[0]["ds"], "promotion")["verdict"] == "PROMOTE"
    champions = [e for e in aliases.history(lake) if e.alias == "champion"]
    assert [e.version for e in champions][:2] == ["1", "2"]
    seqs = [e.seq for e in aliases.history(lake)]
    assert len(seqs) == len(set(seqs))
    for n in nights:
        ds = n["ds"]
        assert lake.read(PREDICTIONS, ds).num_rows == ROWS
        for table in (DRIFT, PERFORMANCE, DECISIONS):
            assert lake.exists(table, ds), f"{table}/ds={ds} missing"
    # Nothing of the lake is outside the bucket.
    assert not (world["settings"].home / "lake").exists()


def test_rescoring_in_a_bucket_gives_identical_content(world):
    from batch_scoring.score import score_partition

    lake, ds = world["lake"], world["last"]
    fp, version = lake.fingerprint(PREDICTIONS, ds), lake.version(PREDICTIONS, ds)
    score_partition(world["settings"], ds)
    assert lake.version(PREDICTIONS, ds) == version + 1  # a new commit...
    assert lake.fingerprint(PREDICTIONS, ds) == fp  # ...of the same content
    assert lake.read(PREDICTIONS, ds, version=version).equals(lake.read(PREDICTIONS, ds))
