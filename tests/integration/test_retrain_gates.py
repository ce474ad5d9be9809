"""A retrain that cannot pay off does not train: the power check, unchanged data, gaps, and a bootstrap without a champion.

Real MLflow, PyTorch and lake; small simulated worlds (a few hundred rows a day).
"""

from __future__ import annotations

import pytest

from nightshift.dates import add_days
from nightshift.registry import CHAMPION, Registry
from nightshift.tables.decisions import read_decision
from simulator.land import simulate
from training.promotion import NoChampion
from training.retrain import retrain

pytestmark = pytest.mark.integration
START = "2026-05-01"
FAST = {"training.epochs": 2, "gate.n_boot": 200}


def _world(settings, lake, days: int, rows: int, seed: int = 1):
    simulate(lake, settings.dataset, start=START, days=days, rows_per_day=rows, seed=seed, progress=False)


def test_a_holdout_too_small_for_the_margin_defers_with_the_numbers(settings, lake):
    s = settings.with_overrides(FAST)
    _world(s, lake, 30, 200)
    boot = retrain(s, add_days(START, 25), trigger="bootstrap")
    assert boot["verdict"] == "PROMOTE" and boot["version"] == "1"
    assert any("holdout grew" in n for n in boot["window"]["notes"])  # 200 rows a day: the holdout reached back

    out = retrain(s, add_days(START, 29), trigger="nightly", reasons=["champion is 60 days with data old (max 60)"])
    assert out["verdict"] == "DEFERRED" and out["version"] is None  # nothing was trained
    assert Registry(s, lake).versions() == ["1"] and Registry(s, lake).current(CHAMPION).version == "1"
    record = read_decision(lake, add_days(START, 29), "promotion")
    assert record["verdict"] == "DEFERRED"
    power = record["evidence"]["power"]
    assert power["mde"] > record["evidence"]["gate"]["margin"] == 0.005 and power["n"] == record["evidence"]["holdout_rows"]
    words = " ".join(record["reasons"])
    assert f"{power['n']} rows cannot resolve the margin" in words and "gate.margin is 0.0050" in words
    assert "holdout rows" in words  # how many it would take
    # ...and once, in the settings' words, what would make it judgeable: the days it takes, or the margin it resolves
    judgeable = record["evidence"]["judgeable"]
    assert judgeable["rows"] == power["n"] and judgeable["resolvable_margin"] == pytest.approx(power["mde"])
    assert f"set training.holdout_max_days to at least {judgeable['days_needed']}" in words
    assert f"or gate.margin to {power['mde']:.4f}" in words

    # The next nights, on the same grounds, the policy holds the retrain instead of deciding (and deferring) it again.
    from monitoring.policy import deferral_holds, gather_evidence

    ev = gather_evidence(s, add_days(START, 30), lake)
    assert ev.deferred_on == add_days(START, 29) and ev.deferred == judgeable
    assert deferral_holds(ev).startswith(f"held: the retrain of {add_days(START, 29)} could not be judged")
    wider = s.with_overrides({"gate.margin": round(power["mde"] + 0.001, 4)})
    assert deferral_holds(gather_evidence(wider, add_days(START, 30), lake)) is None  # a change of settings: decided again


def test_the_same_window_and_champion_skip_the_retrain(settings, lake):
    # A margin the holdout can resolve, and a minimum gain no challenger reaches: it trains, and is rejected.
    s = settings.with_overrides({**FAST, "gate.margin": 0.2, "gate.min_gain": 0.5,
                                 "training.window": "expanding", "training.window_start": START})
    _world(s, lake, 20, 300)
    assert retrain(s, add_days(START, 19), trigger="bootstrap")["verdict"] == "PROMOTE"
    first = retrain(s, add_days(START, 20), trigger="nightly", reasons=["drift persisted"])
    assert (first["version"], first["verdict"]) == ("2", "REJECT")  # the last day's labels are new: it trains
    again = retrain(s, add_days(START, 21), trigger="nightly", reasons=["drift persisted"])  # no data since
    assert again["verdict"] == "UNCHANGED" and again["version"] is None
    assert "would train the same challenger (verdict then: REJECT)" in again["reasons"][0]
    assert Registry(s, lake).versions() == ["1", "2"]
    by_hand = retrain(s, add_days(START, 21), trigger="manual")  # asking by hand always trains
    assert by_hand["version"] == "3"


def test_a_window_over_a_gap_reaches_back_and_says_so(settings, lake):
    s = settings.with_overrides(FAST)
    _world(s, lake, 30, 400)
    out = retrain(s, add_days(START, 70), trigger="bootstrap")  # 40 days after the data ended
    notes = " ".join(out["window"]["notes"])
    assert "reached back" in notes and out["window"]["last_day"] <= add_days(START, 29)
    assert out["verdict"] == "PROMOTE"


def test_a_bootstrap_without_enough_labels_fails_and_names_the_setting(settings, lake):
    s = settings.with_overrides({**FAST, "training.holdout_max_days": 3, "training.window_days": 6, "training.window_min_rows": 0})
    _world(s, lake, 8, 120)
    with pytest.raises(NoChampion, match="gate.min_rows"):
        retrain(s, add_days(START, 7), trigger="bootstrap")
    assert read_decision(lake, add_days(START, 7), "promotion")["verdict"] == "DEFERRED"


def test_the_cli_bootstrap_exits_non_zero_without_a_champion(home, settings, lake, capsys):
    from cli.main import main

    _world(settings, lake, 6, 100)
    code = main(["-q", "retrain", "--ds", add_days(START, 5), "--init-from", "scratch"])
    assert code == 3
    err = capsys.readouterr().err
    assert "no champion" in err and "gate.min_rows" in err


def _drift_on_record(lake, ds: str, flagged: set[str]) -> None:
    from nightshift.tables.decisions import write_decision

    days = [add_days(ds, -i) for i in range(4, -1, -1)]
    write_decision(lake, ds, "retrain", "RETRAIN", ["drift persisted: 3 of the last 5 nights"],
                   {"evidence": {"drift_days": days, "drift_flags": [d in flagged for d in days]},
                    "signals": [{"name": "drift_persisted", "fired": True}]})


def test_after_a_drift_the_gate_judges_on_the_holdout_rows_since_the_onset(settings, lake):
    from model.calibration import read_model_card

    s = settings.with_overrides({**FAST, "gate.power_check": False, "gate.min_rows": 200, "training.holdout_days": 5,
                                 "training.drift_candidates": []})
    simulate(lake, s.dataset, start=START, days=30, rows_per_day=400, scenario="sudden-covariate", onset=22, seed=3,
             progress=False)
    assert retrain(s, add_days(START, 20), trigger="bootstrap")["verdict"] == "PROMOTE"
    ds, onset = add_days(START, 27), add_days(START, 24)
    _drift_on_record(lake, ds, {onset, add_days(START, 25), add_days(START, 26)})  # the onset: the first drifted night

    out = retrain(s, ds, trigger="nightly", reasons=["drift persisted: 3 of the last 5 nights"])
    ev = read_decision(lake, ds, "promotion")["evidence"]
    chosen = ev["gate_holdout"]
    assert chosen["onset"] == onset and chosen["since_onset"] and chosen["whole_days"] == 5
    assert ev["holdout_days"] == chosen["days"] == [onset, add_days(START, 25), add_days(START, 26)]
    assert ev["n"] == ev["holdout_rows"] == chosen["rows"] < chosen["whole_rows"]
    assert any(f"since the drift onset {onset}" in r for r in out["reasons"])  # the verdict says which rows judged
    registry = Registry(s, lake)
    assert registry.client.get_model_version(registry.name, "2").tags["nightshift.promotion.holdout"] == \
        f"since {onset}: {chosen['rows']} rows"
    # the calibrator and the reference describe the same rows: the world production is in
    reference = read_model_card(registry.local_path("2")).reference
    assert reference.rows == chosen["rows"] and list(reference.days) == chosen["days"]
    # The champion is known stale (a drift, judged on the rows since its onset): non-inferiority is a reason to swap,
    # and the drift reference saved with the challenger is that world, so a promotion closes the drift episode.
    assert ev["champion_stale"].startswith(f"a drift since {onset} (drift_persisted)")
    assert out["verdict"] != "PROMOTE" or ev["basis"] in ("superior", "stale")
    from model.bundle import load_bundle

    v2 = load_bundle(registry.local_path("2"))
    assert v2.meta["drift_reference"] == {"kind": "since_onset", "onset": onset, "rows": v2.reference().num_rows}
    assert v2.reference().num_rows <= s.training.reference_size

    off = retrain(s.with_overrides({"gate.onset_aware": False}), ds, trigger="manual")
    ev = read_decision(lake, ds, "promotion")["evidence"]
    assert off["version"] == "3" and not ev["gate_holdout"]["since_onset"] and len(ev["holdout_days"]) == 5
    assert ev["holdout_rows"] == chosen["whole_rows"] and any("gate.onset_aware is off" in r for r in off["reasons"])
    assert ev["champion_stale"] is None  # judged on older rows too: the drift says nothing about the champion there
    assert load_bundle(registry.local_path("3")).meta["drift_reference"]["kind"] == "training_window"
