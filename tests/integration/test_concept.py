"""A concept change (P(y|x) moves, the inputs do not) is caught through the ground-truth path while
drift stays quiet: the nightly flow in-process on real MLflow, alibi-detect and PyTorch."""

from __future__ import annotations

import pytest

from nightshift.dates import add_days

START, HISTORY, NIGHTS, ROWS, ONSET_NIGHT = "2026-03-01", 12, 10, 1500, 2
FAST = {"training.epochs": 4, "gate.n_boot": 300, "policy.onset_min_labels": 1000}


@pytest.fixture(scope="module")
def concept(tmp_path_factory):
    import os

    from batch_scoring.nightly import run_nights
    from nightshift.lake import Lake
    from nightshift.settings import load_settings
    from simulator.land import simulate
    from training.retrain import retrain

    home = tmp_path_factory.mktemp("concept")
    os.environ["NIGHTSHIFT_HOME"] = str(home)
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    try:
        s = load_settings().with_overrides(FAST)
        lake = Lake(s.lake_uri)
        simulate(lake, s.dataset, start=START, days=HISTORY + NIGHTS, rows_per_day=ROWS, scenario="concept",
                 onset=HISTORY + ONSET_NIGHT, seed=5, progress=False)
        retrain(s, add_days(START, HISTORY - 1), trigger="bootstrap")
        # decisions only: the retrain it asks for is not run, so every night is judged against the same champion
        nights = run_nights(s, add_days(START, HISTORY), add_days(START, HISTORY + NIGHTS - 1), retrain=False,
                            progress=False)
        yield {"settings": s, "lake": lake, "nights": nights}
    finally:
        os.environ.pop("NIGHTSHIFT_HOME", None)


def test_a_concept_change_is_a_retrain_through_ground_truth_while_drift_stays_quiet(concept):
    from nightshift.tables.decisions import read_decision

    nights, lake = concept["nights"], concept["lake"]
    onset = add_days(START, HISTORY + ONSET_NIGHT)
    assert not any(n["confirm_champion"]["drift_alarm"] for n in nights), "the inputs did not move: no drift alarm"
    retrains = [n for n in nights if n["decision"]["verdict"] == "RETRAIN"]
    assert retrains, [n["decision"]["reasons"] for n in nights]
    first = retrains[0]
    assert first["ds"] >= onset, "a retrain before the concept changed"
    # within the label delay (2 nights to half the labels) plus 3 nights of the onset
    assert first["ds"] <= add_days(onset, 5), first["ds"]
    assert any("realized" in r and "reference" in r for r in first["decision"]["reasons"]), first["decision"]["reasons"]
    record = read_decision(lake, first["ds"], "retrain")
    fired = {s["name"]: s for s in record["evidence"]["signals"] if s["fired"]}
    labels = fired.keys() & {"realized_drop", "realized_change"}
    assert labels and not fired.keys() & {"drift_persisted", "drift_cusum", "alarm_estimated_drop"}, fired
    drop = fired[sorted(labels)[0]]
    assert drop["value"] > drop["threshold"] and drop["se"] > 0 and drop["n"] > 0  # every signal carries its figures
