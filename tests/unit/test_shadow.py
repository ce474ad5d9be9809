"""Shadow trials (`gate.mode = "shadow:N"`): the mode's forms, the pure rules (table-driven), the flow runner's
three-way branch and mid-flow gate, and trials run in-process on real MLflow, PyTorch and lake: a trial that
promotes, one the gate rejects on its nights, and one whose candidate is deleted from MLflow.

The DAGs run the same steps in tests/test_shadow_dags.py.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from nightshift.dates import add_days
from nightshift.tables.trials import (ENDED_CHAMPION, ENDED_DELETED, ENDED_DRIFT, ENDED_NEWER, OPEN, PROMOTED,
                                      REJECTED)
from training.shadow import END, JUDGE, OPEN_TRIAL, PROMOTE_NOW, REJECT_NOW, SCORE, WAIT, Tonight, conclusion, next_move, route

REPO = Path(__file__).resolve().parents[2]
FORMS = "use 'offline' (promote on the holdout's verdict) or 'shadow:N'"


# -- the mode's forms -------------------------------------------------------------------------------

@pytest.mark.parametrize("mode, nights", [("offline", None), ("shadow:1", 1), ("shadow:7", 7), ("shadow:60", 60)])
def test_gate_mode_forms(home, monkeypatch, mode, nights):
    from nightshift.settings import load_settings

    monkeypatch.setenv("NIGHTSHIFT__GATE__MODE", mode)
    gate = load_settings().gate
    assert (gate.mode, gate.shadow_nights) == (mode, nights)


@pytest.mark.parametrize("mode", ["shadow:0", "shadow:x", "online", "shadow:", "shadow:-2", "shadow:61", "Shadow:3",
                                  "shadow: 3", "offline "])
def test_a_wrong_gate_mode_is_refused_when_settings_load(home, monkeypatch, mode):
    from nightshift.settings import load_settings

    monkeypatch.setenv("NIGHTSHIFT__GATE__MODE", mode)
    with pytest.raises(ValueError) as err:
        load_settings()
    text = str(err.value)
    assert "gate.mode" in text and FORMS in text and repr(mode) in text, text
    assert "NIGHTSHIFT__GATE__MODE" in text  # where the bad value came from


def test_the_default_mode_is_offline(settings):
    assert settings.gate.mode == "offline" and settings.gate.shadow_nights is None


# -- the pure rules ----------------------------------------------------------------------------------

@pytest.mark.parametrize("verdict, first_model, nights, expected", [
    ("PROMOTE", False, None, PROMOTE_NOW),  # offline: as before
    ("PROMOTE", False, 3, OPEN_TRIAL),  # shadow: on trial instead
    ("PROMOTE", True, 3, PROMOTE_NOW),  # the first model has no champion to score beside
    ("REJECT", False, 3, REJECT_NOW),
    ("INSUFFICIENT_EVIDENCE", False, 3, REJECT_NOW),
    ("REJECT", False, None, REJECT_NOW),
    ("INSUFFICIENT_EVIDENCE", True, None, REJECT_NOW),
])
def test_route_after_the_offline_verdict(verdict, first_model, nights, expected):
    assert route(verdict, first_model, nights) == expected


TRIAL = {"trial": "2026-03-10-v5", "candidate": "5", "champion": "4", "opened_ds": "2026-03-10", "nights_planned": 3}


def _tonight(**kw) -> Tonight:
    base = dict(ds="2026-03-14", candidate_exists=True, champion="4", challenger="5", newer_trial=None, alarm=False,
                episode_start=None, scored=3, matured=True)
    return Tonight(**{**base, **kw})


@pytest.mark.parametrize("facts, action, state, words", [
    (dict(scored=0, matured=False), SCORE, OPEN, "night 1 of 3"),
    (dict(scored=2, matured=False), SCORE, OPEN, "night 3 of 3"),
    (dict(scored=3, matured=False), WAIT, OPEN, "waiting for their labels"),
    (dict(scored=3, matured=True), JUDGE, OPEN, "the gate judges v5"),
    (dict(candidate_exists=False), END, ENDED_DELETED, "v5 no longer exists in MLflow"),
    (dict(candidate_exists=False, alarm=True, episode_start="2026-03-12"), END, ENDED_DELETED, "deleted"),  # first
    (dict(newer_trial="6"), END, ENDED_NEWER, "newer trial (candidate v6)"),
    (dict(challenger="6"), END, ENDED_NEWER, "newer challenger v6"),
    (dict(challenger=None), JUDGE, OPEN, "the gate judges"),  # the challenger alias cleared: nothing newer
    (dict(challenger="3"), JUDGE, OPEN, "the gate judges"),  # an older one is not newer
    (dict(champion="3"), END, ENDED_CHAMPION, "v4 -> v3"),  # a rollback under the trial
    (dict(alarm=True, episode_start="2026-03-12"), END, ENDED_DRIFT, "since 2026-03-12"),
    (dict(alarm=True, episode_start="2026-03-10"), JUDGE, OPEN, "the gate judges"),  # the drift it answers goes on
    (dict(alarm=True, episode_start="2026-03-02", scored=1, matured=False), SCORE, OPEN, "night 2 of 3"),
    (dict(alarm=True, episode_start=None), END, ENDED_DRIFT, "since 2026-03-14"),
])
def test_next_move(facts, action, state, words):
    move = next_move(TRIAL, _tonight(**facts))
    assert (move.action, move.state) == (action, state)
    assert words in " ".join(move.reasons)


@pytest.mark.parametrize("verdict, state", [("PROMOTE", PROMOTED), ("REJECT", REJECTED),
                                            ("INSUFFICIENT_EVIDENCE", REJECTED)])
def test_conclusion(verdict, state):
    assert conclusion(verdict) == state


# -- the flow runner: a three-way branch, a gate in the middle ------------------------------------------

def test_a_branch_names_one_of_three_ways_and_a_mid_flow_gate_skips_only_its_downstream():
    from nightshift.flow import BRANCH, GATE, Flow, Step, run_flow

    flow = Flow("f", (
        Step("start", _record),
        Step("pick", _pick, after=("start",), kind=BRANCH, choices=("a", "b", "c")),
        Step("a", _record, after=("pick",)),
        Step("b", _record, after=("pick",)),
        Step("c", _record, after=("pick",)),
        Step("gate", _gate, after=("start",), kind=GATE),
        Step("gated", _record, after=("gate",)),
        Step("beside", _record, after=("start",)),
        Step("last", _record, after=("beside", "start")),
    ))
    for way in ("a", "b", "c"):
        ran = run_flow(flow, None, "2026-01-01", {"way": way, "open": False})
        assert set(ran) == {"start", "pick", way, "gate", "beside", "last"}, ran  # the gate closed only "gated"
    assert "gated" in run_flow(flow, None, "2026-01-01", {"way": "a", "open": True})
    with pytest.raises(ValueError, match="chose 'd', which is not one of its choices"):
        run_flow(flow, None, "2026-01-01", {"way": "d", "open": True})


def _record(ctx):
    return {"ran": ctx.ds}


def _pick(ctx):
    return ctx.params["way"]


def _gate(ctx):
    return ctx.params["open"]


# -- trials in-process ------------------------------------------------------------------------------

START = "2026-03-01"
FAST = {"training.epochs": 3, "gate.n_boot": 300, "gate.power_check": False, "dataset.label_delay.min_coverage": 0.4,
        "gate.mode": "shadow:2"}
BOOT, OPENED = add_days(START, 9), add_days(START, 10)
NIGHTS = [add_days(START, 11 + i) for i in range(3)]


@pytest.fixture(scope="module")
def on_trial(tmp_path_factory):
    """A weak champion v1 and a better challenger v2 that the offline gate put on a 2-night trial (built once)."""
    import os

    from nightshift.lake import Lake
    from nightshift.settings import load_settings
    from simulator.land import simulate
    from training.retrain import retrain

    home = tmp_path_factory.mktemp("shadow") / "home"
    saved = {k: os.environ.get(k) for k in ("NIGHTSHIFT_HOME", "NIGHTSHIFT_CONFIG", "MLFLOW_TRACKING_URI", "NIGHTSHIFT_LAKE")}
    os.environ["NIGHTSHIFT_HOME"] = str(home)
    os.environ["NIGHTSHIFT_CONFIG"] = str(REPO / "nightshift.toml")
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    os.environ.pop("NIGHTSHIFT_LAKE", None)
    try:
        s = load_settings().with_overrides(FAST)
        simulate(Lake(s.lake_uri), s.dataset, start=START, days=15, rows_per_day=1500, seed=3, progress=False)
        weak = s.with_overrides({"training.max_steps": 3, "gate.first_model_floor": 0.5, "training.init_from": "scratch"})
        assert retrain(weak, BOOT, trigger="bootstrap")["verdict"] == "PROMOTE"
        out = retrain(s, OPENED, trigger="manual", reasons=["a better challenger"])
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    assert out["verdict"] == "ON_TRIAL" and out["version"] == "2" and out["trial"] == f"{OPENED}-v2", out
    return home


@pytest.fixture
def trial_home(on_trial, home):
    """A copy of the world on trial, for one test to change (the lake, the MLflow store, the model cache)."""
    from nightshift.settings import load_settings

    shutil.copytree(on_trial, home, dirs_exist_ok=True)
    return load_settings().with_overrides(FAST)


@pytest.mark.integration
def test_in_process_a_better_candidate_is_promoted_after_its_nights_matured(trial_home):
    from airflow_integration import health
    from airflow_integration.alerts import notify, sent
    from airflow_integration.page import render
    from batch_scoring.nightly import run_nights
    from nightshift.lake import PREDICTIONS, Lake
    from nightshift.registry import CANDIDATE, CHAMPION, Registry
    from nightshift.tables import trials
    from nightshift.tables.decisions import read_decision

    s, lake = trial_home, Lake(trial_home.lake_uri)
    registry = Registry(s, lake)
    assert registry.current(CANDIDATE).version == "2" and registry.current(CHAMPION).version == "1"
    assert read_decision(lake, OPENED, "promotion")["verdict"] == "ON_TRIAL"

    first = run_nights(s, NIGHTS[0], NIGHTS[1], retrain=False, progress=False)
    assert [t["action"] for n in first for t in n["trials"]] == ["score", "score"]
    page = render(health.page(lake, s.model.name))  # an open trial: its nights, coverage so far, running gain
    assert 'id="trial-open"' in page and "1 of 2 nights scored" in page and "running gain +" in page
    assert 'id="trial-nights"' in page and NIGHTS[0] in page

    last = run_nights(s, NIGHTS[2], NIGHTS[2], retrain=False, progress=False)[0]
    assert last["trials"][0]["state"] == PROMOTED and "score_shadow" not in last
    assert lake.partitions("shadow") == NIGHTS[:2]
    for night in NIGHTS[:2]:  # the same rows as the champion's, tagged with the candidate's version
        shadow, preds = lake.read("shadow", night), lake.read(PREDICTIONS, night)
        assert sorted(shadow.column("entity_id").to_pylist()) == sorted(preds.column("entity_id").to_pylist())
        assert set(shadow.column("model_version").to_pylist()) == {"2"}
        assert set(shadow.column("model_alias").to_pylist()) == {"candidate"}
        assert set(preds.column("model_version").to_pylist()) == {"1"}
    record = trials.on_day(lake, NIGHTS[2])[0]
    c = record["conclusion"]
    assert c["verdict"] == "PROMOTE" and c["ci_low"] > 0 and c["champion_version"] == "1" and c["challenger_version"] == "2"
    assert all(n["matured"] for n in record["nights"]) and c["n"] == sum(n["labelled"] for n in record["nights"])
    assert registry.current(CHAMPION).version == "2" and registry.current(CANDIDATE) is None
    assert registry.version_as_of(add_days(NIGHTS[2], 1)).decided_by == "shadow trial"

    # alerts: one when the trial opened, one when it concluded (built from the records, sent once)
    assert notify("trial", s, OPENED).key == f"trial-opened-{OPENED}-v2"
    assert notify("trial", s, NIGHTS[2]).subject.startswith("[Nightshift] v2 promoted to champion")
    assert notify("trial", s, NIGHTS[2]) is None and notify("trial", s, NIGHTS[0]) is None
    assert sorted(a["key"] for a in sent(lake)) == [f"trial-opened-{OPENED}-v2", f"trial-promoted-{OPENED}-v2"]
    page = render(health.page(lake, s.model.name))
    assert 'id="trial-none"' in page and "badge promoted" in page and 'id="champion-version">v2<' in page
    from monitoring.report import summarize

    assert {"ds": NIGHTS[2], "version": "2"} in summarize(s, NIGHTS[0], NIGHTS[2])["promotions"]


@pytest.mark.integration
def test_in_process_a_candidate_the_gate_rejects_on_its_nights_is_never_promoted(trial_home):
    """The nights' gate is the run's: a bar the candidate does not clear (gate.min_gain) ends the trial rejected."""
    from batch_scoring.nightly import run_nights
    from nightshift.lake import Lake
    from nightshift.registry import CANDIDATE, CHAMPION, Registry
    from nightshift.tables import trials

    strict = trial_home.with_overrides({"gate.min_gain": 0.5})
    lake = Lake(strict.lake_uri)
    run_nights(strict, NIGHTS[0], NIGHTS[2], retrain=False, progress=False)
    record = trials.on_day(lake, NIGHTS[2])[0]
    assert record["state"] == REJECTED and record["conclusion"]["verdict"] == "REJECT"
    assert "not shown superior" in " ".join(record["reasons"]) and record["conclusion"]["gain"] > 0
    registry = Registry(strict, lake)
    assert registry.current(CHAMPION).version == "1" and registry.current(CANDIDATE) is None
    assert [e.version for e in registry.history() if e.alias == CHAMPION] == ["1"]
    from airflow_integration.alerts import notify

    alert = notify("trial", strict, NIGHTS[2])
    assert alert.subject == f"[Nightshift] shadow trial of v2 rejected on {NIGHTS[2]}; champion v1 stays"
    assert "not shown superior" in alert.evidence and "on 2 nights" not in alert.evidence and "of 2 nights" in alert.evidence


@pytest.mark.integration
def test_a_candidate_deleted_from_mlflow_ends_its_trial_with_a_record_and_the_champion_is_untouched(trial_home):
    from batch_scoring.nightly import run_nights
    from nightshift.lake import PREDICTIONS, Lake
    from nightshift.registry import CANDIDATE, CHAMPION, Registry
    from nightshift.tables import trials

    s, lake = trial_home, Lake(trial_home.lake_uri)
    registry = Registry(s, lake)
    run_nights(s, NIGHTS[0], NIGHTS[0], retrain=False, progress=False)  # one night scored in shadow
    registry.client.delete_model_version(s.model.name, "2")

    night = run_nights(s, NIGHTS[1], NIGHTS[1], retrain=False, progress=False)[0]
    assert night["trials"][0]["state"] == ENDED_DELETED and "score_shadow" not in night
    record = trials.on_day(lake, NIGHTS[1])[0]
    assert record["state"] == ENDED_DELETED and record["candidate"] == "2" and record["nights_scored"] == NIGHTS[:1]
    assert "candidate v2 no longer exists in MLflow" in record["reasons"][0] and "champion v1 stays" in record["reasons"][0]
    assert lake.partitions("shadow") == NIGHTS[:1]  # nothing scored by a deleted model
    assert registry.current(CHAMPION).version == "1" and registry.current(CANDIDATE) is None
    moves = [e for e in registry.history() if e.alias == CANDIDATE]
    assert [(e.ds, e.version) for e in moves] == [(OPENED, "2"), (NIGHTS[1], None)]
    assert set(lake.read(PREDICTIONS, NIGHTS[1], columns=["model_version"]).column(0).to_pylist()) == {"1"}
    # the next night: no trial is open any more, nothing to settle
    after = run_nights(s, NIGHTS[2], NIGHTS[2], retrain=False, progress=False)[0]
    assert after["trials"] == [] and after["settle_trial"]["score"] is None
