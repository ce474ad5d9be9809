"""As known on D, for real: labels that land *after* a night was run must not change that night
when it is rerun or backfilled (the nightly flow, in-process, with a model from the local cache)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from nightshift.dates import add_days
from nightshift.lake import DECISIONS, DRIFT, FEATURES, LABELS, PERFORMANCE, PREDICTIONS, Lake

pytestmark = pytest.mark.integration

START = "2026-03-01"
DAYS = 12
D = add_days(START, 7)  # the night that is rerun
TABLES = (PREDICTIONS, DRIFT, PERFORMANCE, DECISIONS)


@pytest.fixture
def world(home, settings, tmp_path):
    """Every day's features and labels, landed in a side lake; the test copies labels in as they arrive."""
    from nightshift.tables import aliases
    from nightshift.tables.aliases import AliasEvent
    from simulator.land import simulate
    from tests.unit.test_robustness import tiny_bundle

    side = Lake(str(tmp_path / "side"))
    simulate(side, settings.dataset, start=START, days=DAYS, rows_per_day=1500, seed=11, progress=False)
    lake = Lake(settings.lake_uri)
    for ds in side.partitions(FEATURES):
        lake.commit(FEATURES, ds, side.read(FEATURES, ds))
    aliases.append(lake, AliasEvent(1, add_days(START, -1), "champion", "1", None, "run-1", "bootstrap", "test"))
    tiny_bundle(home / "cache" / "models" / settings.model.name / "v1", settings.dataset, side.read(FEATURES, START))
    return side, lake


def arrive(side: Lake, lake: Lake, until: str) -> None:
    """Land every label partition that arrived on or before `until` (and none after)."""
    for ds in side.partitions(LABELS):
        if ds <= until:
            lake.commit(LABELS, ds, side.read(LABELS, ds))


def fingerprints(lake: Lake, ds: str) -> dict[str, str]:
    return {t: lake.fingerprint(t, ds) for t in TABLES if lake.exists(t, ds)}


def nights(settings, start: str, end: str) -> None:
    from batch_scoring.nightly import run_nights

    run_nights(settings, start, end, model="as_of", retrain=False, progress=False)


def run_then_land_more_then_rerun(settings, world) -> tuple[dict, dict, dict]:
    side, lake = world
    arrive(side, lake, D)  # night D runs with what had arrived by D
    nights(settings, START, D)
    first = fingerprints(lake, D)
    assert set(first) == set(TABLES)
    for later in (add_days(D, 1), add_days(D, 2)):  # the following nights run as labels keep arriving
        arrive(side, lake, later)
        nights(settings, later, later)
    arrive(side, lake, add_days(START, DAYS - 1))  # then everything else lands, late labels for D's window included
    nights(settings, D, D)  # rerun D
    rerun = fingerprints(lake, D)
    for t in TABLES:  # backfill: D's partitions gone, the night run again from scratch
        shutil.rmtree(Path(lake.path(t, D)))
    nights(settings, D, D)
    backfill = fingerprints(lake, D)
    return first, rerun, backfill


def test_labels_landed_after_a_night_never_change_its_rerun_or_backfill(settings, world):
    first, rerun, backfill = run_then_land_more_then_rerun(settings, world)
    side, lake = world
    later = [ds for ds in side.partitions(LABELS) if ds > D]
    assert later and sum(side.read(LABELS, ds).num_rows for ds in later) > 0  # there was something to leak
    differences = sum(first[t] != rerun[t] for t in TABLES) + sum(first[t] != backfill[t] for t in TABLES)
    print(f"RESULT fingerprint_differences={differences} tables={len(TABLES)} reruns=1 backfills=1")
    assert rerun == first
    assert backfill == first


def test_the_check_sees_a_leak_when_there_is_one(settings, world, monkeypatch):
    """The control: a label reader that ignores the arrival day makes the rerun differ."""
    from nightshift.tables import labels

    real = labels.known
    monkeypatch.setattr(labels, "known", lambda lake, spec, as_of, days, since=None: real(lake, spec, "2099-12-31", days, since))
    first, rerun, _ = run_then_land_more_then_rerun(settings, world)
    assert first[PERFORMANCE] != rerun[PERFORMANCE]


def _backfill(home: str, config: str, start: str, end: str) -> None:
    import os

    os.environ.update({"NIGHTSHIFT_HOME": home, "NIGHTSHIFT_CONFIG": config})
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    from nightshift.settings import load_settings

    nights(load_settings(), start, end)


def test_two_overlapping_backfills_do_not_corrupt_a_partition(home, settings, world):
    """Two processes backfill the same nights at once: every partition is whole, equal to a serial
    run's, and nothing is left behind in staging or trash."""
    import multiprocessing
    import os

    side, lake = world
    end = add_days(START, 5)
    arrive(side, lake, end)
    nights(settings, START, end)  # the serial reference
    serial = {ds: fingerprints(lake, ds) for ds in lake.partitions(PREDICTIONS)}
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_backfill, args=(str(home), os.environ["NIGHTSHIFT_CONFIG"], START, end)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(600)
    assert [p.exitcode for p in procs] == [0, 0]
    assert {ds: fingerprints(lake, ds) for ds in lake.partitions(PREDICTIONS)} == serial
    root = Path(lake.root)
    assert not list((root / "_staging").rglob("*.parquet")) and not list((root / "_trash").rglob("*.parquet"))
    for t in TABLES:
        assert not [p for p in Path(lake.table_path(t)).rglob("*") if p.name.startswith("_") and p.suffix == ".parquet"]
