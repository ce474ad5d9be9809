"""The strategy tournament and the new windows: pure decisions (table-driven), the weights, and
real retrains with MLflow parent/child runs, lineage tags and failed runs."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from nightshift.dates import add_days
from nightshift.registry import CHALLENGER, CHAMPION, Registry
from nightshift.settings import TrainingSettings
from nightshift.spec import EVENT_DS
from training.retrain import pick_best, tournament_candidates
from training.reweight import recent_weights, representative_weights
from training.window import HOLDOUT_SHARE, _unit_hash, since_onset, split_validation

START = "2026-05-01"
FAST = {"training.epochs": 3, "gate.n_boot": 200, "gate.power_check": False}


# -- pure decisions -------------------------------------------------------------------------

@pytest.mark.parametrize("configured, trigger, reasons, expected", [
    ({}, "manual", ["requested by hand"], [("warm", "sliding")]),
    ({}, "nightly", ["champion is 60 days with data old (max 60)"], [("warm", "sliding")]),
    ({}, "nightly", ["drift persisted: 3 of the last 5 nights"], [("warm", "sliding"), ("warm", "recent"), ("scratch", "recent")]),
    ({"drift_candidates": ()}, "nightly", ["drift persisted"], [("warm", "sliding")]),
    ({"init_from": "scratch", "window": "recent"}, "bootstrap", [], [("scratch", "recent")]),
    ({"candidates": ("transfer:sliding", "scratch:representative")}, "manual", [],
     [("transfer", "sliding"), ("scratch", "representative")]),
    ({"candidates": ("scratch:sliding",)}, "nightly", ["drift persisted"], [("scratch", "sliding")]),
])
def test_which_candidates_a_retrain_trains(configured, trigger, reasons, expected):
    assert tournament_candidates(TrainingSettings(**configured), trigger, reasons) == expected


@pytest.mark.parametrize("bad, fragment", [
    (("warm",), "must be 'init_from:window'"),
    (("hot:sliding",), "init_from one of"),
    (("warm:weekly",), "window one of"),
    (("warm:recent", "warm:recent"), "name one candidate twice"),
])
def test_bad_candidates_are_refused_with_the_rule(bad, fragment):
    with pytest.raises(ValueError, match=fragment):
        TrainingSettings(candidates=bad)


def _s(candidate, score, higher=True, failed=False):
    return {"candidate": candidate, "score": score, "higher_is_better": higher, "failed": failed}


@pytest.mark.parametrize("scores, best", [
    ([_s("a", 0.80), _s("b", 0.85), _s("c", 0.84)], 1),  # AUC: highest wins
    ([_s("a", 4.0, False), _s("b", 3.5, False)], 1),  # RMSE: lowest wins
    ([_s("a", 0.85), _s("b", 0.85)], 0),  # a tie goes to the configured order
    ([_s("a", None, failed=True), _s("b", 0.70)], 1),  # a failed candidate never wins
    ([_s("a", None, failed=True)], None),  # nothing left: no winner
    ([_s("a", None), _s("b", None)], 0),  # no validation at all: the first
    ([_s("a", None), _s("b", 0.6)], 1),  # a scored candidate beats an unscored one
])
def test_the_best_candidate_on_validation_wins(scores, best):
    assert pick_best(scores) == best


def _days_table(counts: dict[str, int], ids: np.ndarray | None = None) -> pa.Table:
    days = [d for d, c in counts.items() for _ in range(c)]
    return pa.table({"id": np.arange(len(days)) if ids is None else ids, EVENT_DS: pa.array(days, pa.string())})


def _per_day(table: pa.Table) -> dict[str, int]:
    days, counts = np.unique(table.column(EVENT_DS).to_numpy(zero_copy_only=False).astype(str), return_counts=True)
    return dict(zip(days.tolist(), counts.tolist()))


D1, D2, D3 = "2026-01-01", "2026-01-02", "2026-01-03"


@pytest.mark.parametrize("counts, share, valid_days", [
    ({D1: 500, D2: 300, D3: 200}, 0.10, [D3]),  # half of the newest day holds the share
    ({D1: 500, D2: 300, D3: 200}, 0.15, [D2, D3]),  # it reaches over as many days as it needs
    ({D1: 500, D2: 300, D3: 200}, 0.30, [D2, D3]),  # never the oldest day
    ({D1: 500, D2: 300, D3: 200}, 0.0, []),
    ({D1: 1000}, 0.2, []),  # one day: nothing to split in time
    ({D1: 100, D2: 900}, 0.45, [D2]),
])
def test_validation_is_a_hash_half_of_the_newest_days(counts, share, valid_days):
    table = _days_table(counts)
    train, valid = split_validation(table, share, "id")
    in_train, in_valid = _per_day(train), _per_day(valid)
    assert sorted(in_valid) == valid_days
    for day, n in counts.items():
        if day in valid_days:  # both sides, about half each
            assert in_train[day] + in_valid[day] == n and abs(in_valid[day] - n / 2) <= 3 * np.sqrt(n / 4)
        else:  # older days train whole
            assert in_train[day] == n
    ids_train, ids_valid = set(train.column("id").to_pylist()), set(valid.column("id").to_pylist())
    assert not ids_train & ids_valid and len(ids_train | ids_valid) == table.num_rows
    again_train, again_valid = split_validation(table, share, "id")
    assert again_valid.equals(valid) and again_train.equals(train)


@pytest.mark.parametrize("share, since, valid_days", [
    (0.30, D3, [D3]),  # a drift onset on the newest day: validation stays on its side
    (0.10, D2, [D3]),  # the onset further back than the share needs: as without it
    (0.30, D1, [D2, D3]),  # never the oldest day
    (0.30, "2026-01-04", []),  # no day since the onset: no split
])
def test_validation_never_reaches_before_the_onset(share, since, valid_days):
    table = _days_table({D1: 500, D2: 300, D3: 200})
    train, valid = split_validation(table, share, "id", since=since)
    assert sorted(_per_day(valid)) == valid_days and train.num_rows + valid.num_rows == table.num_rows
    if valid_days:  # the same rows as without an onset, on the days they share
        _, unbounded = split_validation(table, share, "id")
        on_days = pc.is_in(unbounded.column(EVENT_DS), value_set=pa.array(valid_days))
        assert unbounded.filter(on_days).equals(valid)


@pytest.mark.parametrize("share", [0.05, 0.10, 0.15, 0.23, 0.3, 0.45])
def test_validation_holds_about_the_share(share):
    table = _days_table({add_days("2026-01-01", i): 1000 for i in range(30)})
    _, valid = split_validation(table, share, "id")
    # Whole days are chosen: up to half a day (500 of 30,000 rows) over the share, plus the hash's noise.
    assert share - 0.01 <= valid.num_rows / table.num_rows <= share + 500 / 30_000 + 0.01


def test_validation_draws_apart_from_the_gate_holdout():
    """The window's training rows of the newest days are the half the holdout's hash left; validation still
    halves them (a hash with the same salt would take all of them or none), and keeps an entity on one side."""
    ids = np.arange(20_000)
    kept = ids[_unit_hash(pa.chunked_array([ids])) >= HOLDOUT_SHARE]  # what the holdout left to train
    table = _days_table({D1: 3000, D2: 3000}, ids=kept[:6000])
    _, valid = split_validation(table, 0.25, "id")
    assert _per_day(valid) == pytest.approx({D2: 1500}, abs=120)
    same_entities = np.concatenate([kept[3000:6000], kept[:3000], kept[:3000]])  # D2 and D3: the same entities
    train, valid = split_validation(_days_table({D1: 3000, D2: 3000, D3: 3000}, ids=same_entities), 0.3, "id")
    assert set(_per_day(valid)) == {D2, D3}
    assert not set(train.column("id").to_pylist()) & set(valid.column("id").to_pylist())


def test_the_holdout_since_an_onset_is_its_rows_from_that_day_on():
    table = _days_table({"2026-01-01": 5, "2026-01-02": 3, "2026-01-03": 2})
    assert since_onset(table, "2026-01-02").column(EVENT_DS).to_pylist() == ["2026-01-02"] * 3 + ["2026-01-03"] * 2
    assert since_onset(table, "2026-01-01").equals(table) and since_onset(table, "2026-01-04").num_rows == 0


def test_recent_weights_weigh_up_the_days_since_the_onset():
    days = np.array(["2026-01-01"] * 6 + ["2026-01-05"] * 2)
    w = recent_weights(days, "2026-01-04", 4.0)
    assert np.allclose(w.weights[6:] / w.weights[0], 4.0) and w.weights.mean() == pytest.approx(1.0)
    assert "2 of 8 rows are from the drift onset 2026-01-04 on" in w.notes[0]
    flat = recent_weights(days, None, 4.0)
    assert np.all(flat.weights == 1) and "no drift onset" in flat.notes[0]


def test_representative_weights_favour_history_that_looks_like_now():
    rng = np.random.default_rng(0)
    n_old, n_new = 6000, 1500
    x_old, x_new = rng.normal(0, 1, (n_old, 3)), rng.normal(1.5, 1, (n_new, 3))  # production moved right
    x = np.vstack([x_old, x_new]).astype(np.float32)
    days = np.array([f"2026-01-{1 + i % 10:02d}" for i in range(n_old)] + ["2026-01-11", "2026-01-12", "2026-01-13"] * (n_new // 3))
    got = representative_weights(x, np.zeros((len(x), 0), np.int64), days, recent_days=3, max_weight=10.0, seed=0)
    w_old = got.weights[:n_old]
    like_now = x_old[:, 0] > 1.0
    assert w_old[like_now].mean() > 3 * w_old[~like_now].mean()
    assert got.weights.max() <= got.weights.min() * 100 + 1e-9  # clipped to [1/10, 10] before normalising
    assert got.info["domain_auc"] > 0.8 and "effective sample size" in got.notes[0]


# -- real retrains: MLflow parent/child runs, lineage, failures --------------------------------

def _bootstrap(s, lake, scenario="sudden-covariate"):
    from simulator.land import simulate
    from training.retrain import retrain

    simulate(lake, s.dataset, start=START, days=30, rows_per_day=400, scenario=scenario, onset=22, seed=3, progress=False)
    boot = retrain(s, add_days(START, 20), trigger="bootstrap")
    assert boot["verdict"] == "PROMOTE"
    return boot


def _record_drift(lake, ds, flagged_days):
    from nightshift.tables.decisions import write_decision

    days = [add_days(ds, -i) for i in range(4, -1, -1)]
    write_decision(lake, ds, "retrain", "RETRAIN", ["drift persisted: 3 of the last 5 nights"],
                   {"evidence": {"drift_days": days, "drift_flags": [d in flagged_days for d in days]}})


@pytest.mark.integration
def test_a_drift_triggered_retrain_runs_a_tournament_of_child_runs(settings, lake):
    from training.retrain import retrain

    s = settings.with_overrides(FAST)
    _bootstrap(s, lake)
    ds = add_days(START, 27)
    _record_drift(lake, ds, {add_days(START, 24), add_days(START, 25), add_days(START, 26)})
    out = retrain(s.with_overrides({"training.valid_onset_min_rows": 50}), ds, trigger="nightly",
                  reasons=["drift persisted: 3 of the last 5 nights"])
    assert out["version"] == "2"  # only the winner is registered
    assert [c["candidate"] for c in out["tournament"]] == ["warm:sliding", "warm:recent", "scratch:recent"]
    assert out["candidate"] in {c["candidate"] for c in out["tournament"]}
    assert all(c["score"] is not None and c["best_epoch"] for c in out["tournament"])

    registry = Registry(s, lake)
    client = registry.client
    runs = client.search_runs([registry.experiment_id()], filter_string=f"tags.`nightshift.ds` = '{ds}'")
    parents = [r for r in runs if r.data.tags.get("nightshift.tournament") == "parent"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    parent = parents[0]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert sorted(r.data.tags["nightshift.candidate"] for r in children) == ["scratch:recent", "warm:recent", "warm:sliding"]
    assert parent.data.tags["nightshift.winner"] == out["candidate"] and "tournament_seconds" in parent.data.metrics

    mv = client.get_model_version(registry.name, "2")
    init, window = out["candidate"].split(":")
    assert mv.tags["nightshift.lineage.strategy"] == init and mv.tags["nightshift.lineage.window"] == window
    assert mv.tags["nightshift.lineage.fingerprint"] == out["window"]["fingerprint"]
    assert mv.tags["nightshift.lineage.parent_version"] == ("" if init == "scratch" else f"{registry.name}:1")
    if window == "recent":
        assert mv.tags["nightshift.lineage.onset"] == add_days(START, 24)  # the first drifted night on record
    assert client.get_run(mv.run_id).data.tags["nightshift.cpu_fallback"].startswith("no CUDA device")
    from model.bundle import load_bundle

    validation = load_bundle(registry.local_path("2")).meta["validation"]
    assert validation["since_onset"] == add_days(START, 24) and validation["rows"] >= 50  # judged on the new world only


@pytest.mark.integration
def test_a_nan_loss_marks_the_run_failed_and_moves_no_alias(settings, lake):
    from training.retrain import retrain
    from training.train import NonFiniteLoss

    s = settings.with_overrides(FAST)
    _bootstrap(s, lake, scenario="none")
    registry = Registry(s, lake)
    def aliases():
        return [(ref.version if ref else None) for ref in (registry.current(CHAMPION), registry.current(CHALLENGER))]

    before = aliases()
    bad = s.with_overrides({"training.lr": 1e30, "training.init_from": "scratch"})
    with pytest.raises(NonFiniteLoss, match="training loss became"):
        retrain(bad, add_days(START, 28), trigger="manual")
    assert registry.versions() == ["1"]
    assert aliases() == before and before[0] == "1"
    failed = registry.client.search_runs([registry.experiment_id()], filter_string="attributes.status = 'FAILED'")
    assert len(failed) == 1 and "training loss became" in failed[0].data.tags["nightshift.error"]


@pytest.mark.integration
def test_a_one_class_window_defers_naming_the_window_and_counts(settings, lake):
    from nightshift.lake import LABELS
    from training.retrain import retrain

    s = settings.with_overrides(FAST)
    _bootstrap(s, lake, scenario="none")
    # Every label that arrives from now on says 0; a window of only those days has one class.
    for day in lake.partitions(LABELS):
        if day >= add_days(START, 21):
            t = lake.read(LABELS, day)
            y = t.schema.get_field_index(s.dataset.label)
            lake.commit(LABELS, day, t.set_column(y, s.dataset.label, pa.array(np.zeros(t.num_rows, np.int64))))
    s2 = s.with_overrides({"training.window": "fixed", "training.window_start": add_days(START, 21),
                           "training.window_end": add_days(START, 27), "gate.min_rows": 1})
    out = retrain(s2, add_days(START, 29), trigger="manual")
    assert out["verdict"] == "DEFERRED" and out["version"] is None
    words = " ".join(out["reasons"])
    assert "one class only" in words and "0 positives" in words and f"training window {add_days(START, 21)}" in words
    assert Registry(s, lake).versions() == ["1"]


@pytest.mark.integration
def test_smoke_mode_retrains_on_cpu_in_a_few_steps(home, settings, lake, capsys):
    """What CI runs: `nightshift retrain --max-steps N --device cpu`."""
    import json

    from cli.main import main
    from simulator.land import simulate

    simulate(lake, settings.dataset, start=START, days=22, rows_per_day=400, seed=1, progress=False)
    code = main(["-q", "retrain", "--ds", add_days(START, 21), "--init-from", "scratch", "--max-steps", "5", "--device", "cpu"])
    out = json.loads(capsys.readouterr().out)
    assert code in (0, 3) and out["version"] == "1" and out["device"] == "cpu"
    registry = Registry(settings, lake)
    run = registry.client.get_run(registry.client.get_model_version(registry.name, "1").run_id)
    assert run.data.params["training.max_steps"] == "5" and run.data.params["training.device"] == "cpu"
    assert run.data.tags["nightshift.cpu_fallback"] == "training.device=cpu"
    from model.bundle import load_bundle

    steps = load_bundle(registry.local_path("1")).meta["history"]
    assert len(steps) == 1  # 5 steps of 512 rows: the first epoch is cut short
