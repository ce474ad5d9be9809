"""The whole loop in-process, on real MLflow, alibi-detect and PyTorch (no scheduler).

A short world with a sudden covariate drift: bootstrap a champion, run the nights, and
check drift detected -> retrain ran -> challenger judged -> aliases moved, with every
partition in place; then determinism and the no-leakage rules.
"""

from __future__ import annotations

import pyarrow as pa
import pytest

from nightshift.dates import add_days
from nightshift.tables.decisions import read_decision
from nightshift.lake import DECISIONS, DRIFT, FEATURES, LABELS, PERFORMANCE, PREDICTIONS, Lake
from nightshift.registry import CHALLENGER, CHAMPION, PREVIOUS_CHAMPION, Registry

START, HISTORY, NIGHTS, ROWS, ONSET_NIGHT = "2026-03-01", 12, 8, 1500, 2
# A short world: a drift retrain waits for 1,000 labelled rows since the onset, not the default 15,000.
FAST = {"training.epochs": 4, "gate.n_boot": 300, "policy.onset_min_labels": 1000}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """One simulated run shared by the tests below (it takes ~20 s)."""
    import os

    from batch_scoring.nightly import run_nights
    from nightshift.settings import load_settings
    from simulator.land import simulate
    from training.retrain import retrain

    home = tmp_path_factory.mktemp("pipeline")
    os.environ["NIGHTSHIFT_HOME"] = str(home)
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    try:
        s = load_settings().with_overrides(FAST)
        lake = Lake(s.lake_uri)
        simulate(lake, s.dataset, start=START, days=HISTORY + NIGHTS, rows_per_day=ROWS,
                 scenario="sudden-covariate", onset=HISTORY + ONSET_NIGHT, seed=3, progress=False)
        boot = retrain(s, add_days(START, HISTORY - 1), trigger="bootstrap")
        first, last = add_days(START, HISTORY), add_days(START, HISTORY + NIGHTS - 1)
        nights = run_nights(s, first, last, progress=False)
        yield {"settings": s, "lake": lake, "boot": boot, "nights": nights, "first": first, "last": last}
    finally:
        os.environ.pop("NIGHTSHIFT_HOME", None)
    assert "MLFLOW_TRACKING_URI" not in os.environ, "something set MLflow's global tracking URI"


def test_first_model_bootstraps_as_champion(world):
    assert world["boot"]["verdict"] == "PROMOTE"
    assert world["boot"]["version"] == "1"
    assert "first model" in world["boot"]["reasons"][0]


def test_drift_detected_retrain_judged_aliases_moved(world):
    nights = world["nights"]
    onset = add_days(world["first"], ONSET_NIGHT)
    assert not any(n["confirm_champion"]["drift_alarm"] for n in nights if n["ds"] < onset), "false alarm before the onset"
    assert nights[ONSET_NIGHT]["confirm_champion"]["drift_alarm"], "drift missed on its first day"

    retrained = [n for n in nights if "retrain" in n]
    assert retrained, "the policy never handed off to retrain"
    night = retrained[0]
    assert any("drift persisted" in r for r in night["decision"]["reasons"])
    # A shift too large to be noise decided on the onset night (drift_cusum), before the drift had persisted; the
    # retrain waited, without a cooldown, for the alarm to last and for policy.onset_min_labels labelled rows since
    # the onset, and says so.
    records = [read_decision(world["lake"], n["ds"], "retrain") for n in nights if onset <= n["ds"] <= night["ds"]]
    waits = [r for r in records if r["verdict"] == "WAIT"]
    assert waits and [r["verdict"] for r in records[-len(waits) - 1:]] == ["WAIT"] * len(waits) + ["RETRAIN"], records
    assert waits[0]["ds"] == onset
    assert "drift too strong to be noise: the drift alarm's CUSUM" in " ".join(waits[0]["reasons"])
    assert waits[0]["reasons"][0].startswith("waiting for the drift alarm to last: on 1 night in a row")
    assert waits[0]["evidence"]["evidence"]["onset"] == onset
    assert f"waited {len(waits)} days with data since {waits[0]['ds']}" in records[-1]["reasons"][0], records[-1]
    verdict = read_decision(world["lake"], night["ds"], "promotion")
    assert verdict["verdict"] == "PROMOTE", verdict["reasons"]
    ev = verdict["evidence"]
    from nightshift.task import task_for
    from training.evaluate import effective_gate

    gate = effective_gate(world["settings"].gate, task_for("binary"))
    assert ev["ci_low"] > -gate.margin and ev["holdout_rows"] >= gate.min_rows
    # A reason to swap: superior, or non-inferior on the rows since the onset of the drift the retrain answers.
    assert (ev["basis"] == "superior" and ev["ci_low"] > gate.min_gain) or (
        ev["basis"] == "stale" and f"a drift since {onset}" in ev["champion_stale"]), (ev["basis"], verdict["reasons"])
    assert ev["churn"]["kind"] == "decision_flips" and 0 <= ev["churn"]["value"] <= 1
    # After the drift the gate judged on the holdout's rows since the onset, and the power check looked at those rows.
    chosen = ev["gate_holdout"]
    assert chosen["since_onset"] and chosen["onset"] == onset and min(ev["holdout_days"]) >= onset
    assert ev["power"]["n"] == ev["holdout_rows"] == chosen["rows"] < chosen["whole_rows"]
    # Two days of new-world labels cannot resolve the margin for an equal challenger; the record says so, and
    # what gain it takes. (Without an onset the holdout grows until it can.)
    assert ev["power"]["mde"] <= gate.margin or (chosen["power_short"] and "gain above about" in " ".join(verdict["reasons"]))
    assert ev["trigger"] == "nightly" and ev["retrain_reasons"] == night["decision"]["reasons"]  # passed on, not re-derived

    registry = Registry(world["settings"], world["lake"])
    new = night["retrain"]["version"]
    assert registry.current(CHAMPION).version == retrained[-1]["retrain"]["version"]
    assert registry.current(PREVIOUS_CHAMPION) is not None
    assert registry.current(CHALLENGER) is None  # cleared once promoted
    champion_moves = [e for e in registry.history() if e.alias == CHAMPION]
    assert [e.version for e in champion_moves][:2] == ["1", new]
    # time is the logical date: the promotion decided on night D takes effect from D+1
    assert registry.version_as_of(night["ds"]).version == "1"
    assert registry.version_as_of(add_days(night["ds"], 1)).version == new


def test_replaying_the_recorded_policy_reproduces_its_decisions(world):
    from monitoring.replay import render, replay_policy

    s = world["settings"]
    got = replay_policy(s, START, world["last"])
    # The history days before the first night have data but no decision: named, not replayed.
    assert got["missing"] == [add_days(START, i) for i in range(HISTORY)]
    assert got["replayed_nights"] == NIGHTS and got["replay_matches_history"] == 1, got["differ"]
    assert got["recorded"] == got["replayed"] and got["recorded"]["retrains"] >= 1
    assert got["nights_alarmed"] >= 1
    assert "RESULT replay_matches_history=1" in render(got)

    # Another policy, from the same records: a cooldown no retrain gets out of, and a drift that must persist longer.
    other = replay_policy(s.with_overrides({"policy.drift_k": 5, "policy.drift_n": 5}), world["first"], world["last"],
                          retrain_cost_s=60.0)
    assert other["missing"] == [] and other["nights_alarmed"] == got["nights_alarmed"]
    assert other["replayed"]["training_s"] == 60.0 * other["replayed"]["retrains"]
    assert other["replayed"]["retrains"] <= other["recorded"]["retrains"]


def test_every_night_has_its_partitions_and_lineage(world):
    lake, spec = world["lake"], world["settings"].dataset
    for n in world["nights"]:
        for table in (PREDICTIONS, DRIFT, PERFORMANCE, DECISIONS):
            assert lake.exists(table, n["ds"]), f"{table}/ds={n['ds']} missing"
        preds = lake.read(PREDICTIONS, n["ds"])
        assert preds.num_rows == lake.read(FEATURES, n["ds"]).num_rows  # nothing dropped
        row = preds.slice(0, 1).to_pylist()[0]
        assert row["model_name"] == world["settings"].model.name and row["mlflow_run_id"]
        assert row["input_fingerprint"] == lake.fingerprint(FEATURES, n["ds"]) and row["code_version"]
        assert set(preds.column("decision").to_pylist()) <= {0, 1}
        assert preds.column_names[:3] == [spec.entity_id, "score", "decision"]
        assert preds.schema.field(spec.entity_id).type == pa.string()


def test_nights_after_a_promotion_use_the_new_champion(world):
    registry = Registry(world["settings"], world["lake"])
    for n in world["nights"]:
        expected = registry.version_as_of(n["ds"]).version
        got = set(world["lake"].read(PREDICTIONS, n["ds"], columns=["model_version"]).column(0).to_pylist())
        assert got == {expected}, n["ds"]


def test_rescoring_gives_identical_content(world):
    from batch_scoring.score import score_partition

    lake, ds = world["lake"], world["last"]
    before = lake.read(PREDICTIONS, ds)
    fp = lake.fingerprint(PREDICTIONS, ds)
    score_partition(world["settings"], ds)
    assert lake.read(PREDICTIONS, ds).equals(before)
    assert lake.fingerprint(PREDICTIONS, ds) == fp  # byte for byte


def test_monitoring_never_reads_labels_from_the_future(world):
    """Ground truth on night D is unchanged by labels that arrive after D."""
    from monitoring.ground_truth import measure_ground_truth

    s, lake = world["settings"], world["lake"]
    ds = add_days(world["first"], 3)
    committed = lake.read(PERFORMANCE, ds)
    later = [a for a in lake.partitions(LABELS) if a > ds]
    assert later, "the test needs labels that arrived after D"
    measure_ground_truth(s, ds)
    assert lake.read(PERFORMANCE, ds).equals(committed)
    rows = committed.to_pylist()
    assert all(r["age_days"] >= 0 for r in rows) and rows[-1]["labelled"] == 0  # nothing arrives the same night
    assert {r["metric"] for r in rows} == {"auc"} and rows[-1]["estimated"] is not None
    assert set(dict(rows[0]["realized_metrics"])) == {"auc", "log_loss", "brier", "accuracy"}


def test_training_window_only_uses_labels_arrived_by_its_day(world):
    from training.window import build_window

    s, lake = world["settings"], world["lake"]
    ds = add_days(world["first"], 4)
    window = build_window(lake, s.dataset, ds, s.training)
    arrived = lake.read_days(LABELS, [a for a in lake.partitions(LABELS) if a <= ds], columns=[s.dataset.entity_id])
    allowed = set(arrived.column(0).to_pylist())
    used = set(window.train.column(s.dataset.entity_id).to_pylist()) | set(window.holdout.column(s.dataset.entity_id).to_pylist())
    assert used and used <= allowed
    assert max(window.days) < ds


def test_model_param_chooses_as_of_or_todays_champion(world):
    """`as_of` (the default) rescoring an old night reproduces it; `champion` uses today's model."""
    from batch_scoring.score import score_partition, scored_by

    s, lake, ds = world["settings"], world["lake"], world["first"]
    assert s.scoring.model == "as_of"
    today = Registry(s, lake).current(CHAMPION).version
    assert today != "1"
    assert score_partition(s, ds, "champion")["model_version"] == today
    assert scored_by(lake, ds) == today
    row = lake.read(PREDICTIONS, ds).slice(0, 1).to_pylist()[0]
    assert row["model_selection"] == "champion"
    assert score_partition(s, ds)["model_version"] == "1"  # default as_of: the champion on that night
    assert scored_by(lake, ds) == "1"


def test_rollback_restores_the_previous_champion_from_its_day(world):
    from batch_scoring.score import rescore
    from training.promotion import roll_back

    s, lake, ds = world["settings"], world["lake"], world["last"]
    registry = Registry(s, lake)
    before, previous = registry.current(CHAMPION).version, registry.current(PREVIOUS_CHAMPION).version
    with pytest.raises(ValueError, match="needs a reason"):
        roll_back(s, ds, reason=" ")
    out = roll_back(s, ds, reason="bad calibration seen downstream")
    assert (out["from_version"], out["champion"]) == (before, previous)
    assert registry.current(CHAMPION).version == previous and registry.current(PREVIOUS_CHAMPION).version == before
    assert registry.version_as_of(ds).version == before  # takes effect from the next night
    assert registry.version_as_of(add_days(ds, 1)).version == previous
    assert read_decision(lake, ds, "rollback")["reasons"] == ["bad calibration seen downstream"]
    assert rescore(s, ds, ds)["model_version"] == previous
    with pytest.raises(ValueError, match="already the champion"):
        roll_back(s, ds, reason="again", version=previous)
    roll_back(s, ds, reason="undo")  # a second rollback undoes the first
    assert registry.current(CHAMPION).version == before

