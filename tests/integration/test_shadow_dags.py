"""A shadow trial through the real DAGs (`dag.test()`, real MLflow): gate.mode = "shadow:2".

A weak champion (bootstrapped on a few optimizer steps), then a properly trained challenger: the
retrain DAG puts it on trial (`open_trial`), the nightly DAG scores its two nights into `shadow/`
(`score_shadow` green on those nights only), and once their labels have matured `settle_trial`
judges it on them, paired, and promotes it. A worse challenger after that (a few steps from
scratch) is rejected by the gate and never becomes a candidate, so it is never promoted.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from nightshift.dates import add_days

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "scripts"))

START, DAYS, ROWS = "2026-03-01", 15, 1500
# Labels mature at 40% coverage here (a day old in the simulated world): the trial is judged on its third night.
ENV = {"NIGHTSHIFT__GATE__MODE": "shadow:2", "NIGHTSHIFT__DATASET__LABEL_DELAY__MIN_COVERAGE": "0.4",
       "NIGHTSHIFT__TRAINING__EPOCHS": "3", "NIGHTSHIFT__GATE__N_BOOT": "300", "NIGHTSHIFT__GATE__POWER_CHECK": "false"}
WEAK = {"training.max_steps": 3, "gate.first_model_floor": 0.5}  # a champion a proper challenger beats for sure
WORSE = {"training.max_steps": 2}


@pytest.fixture
def shadow_home(tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("NIGHTSHIFT_HOME", str(home))
    monkeypatch.setenv("NIGHTSHIFT_CONFIG", str(REPO / "nightshift.toml"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("NIGHTSHIFT_LAKE", raising=False)
    for k, v in ENV.items():
        monkeypatch.setenv(k, v)
    return home


def test_a_better_challenger_is_promoted_after_its_trial_and_a_worse_one_never(shadow_home):
    import airflow_stack as stack

    from nightshift.lake import Lake
    from nightshift.settings import load_settings
    from simulator.land import simulate

    s = load_settings()
    assert s.gate.shadow_nights == 2
    simulate(Lake(s.lake_uri), s.dataset, start=START, days=DAYS, rows_per_day=ROWS, seed=3, progress=False)
    boot, opened = add_days(START, 9), add_days(START, 10)
    nights = [add_days(START, 11 + i) for i in range(3)]

    env = stack.airflow_env(shadow_home, port=stack.free_port(), extra=ENV)
    subprocess.run([str(stack.VENV_BIN / "airflow"), "db", "migrate"], env=env, check=True, capture_output=True, timeout=600)
    script = textwrap.dedent(f"""
        import json
        from datetime import datetime, timezone
        from airflow.dag_processing.dagbag import DagBag
        from nightshift.lake import Lake
        from nightshift.registry import CANDIDATE, CHAMPION, Registry
        from nightshift.settings import load_settings
        from nightshift.tables import trials
        from nightshift.tables.decisions import read_decision
        bag = DagBag(dag_folder={str(REPO / 'dags')!r})
        s = load_settings()
        lake, registry = Lake(s.lake_uri), Registry(load_settings())
        states = lambda run: {{ti.task_id: str(ti.state) for ti in run.get_task_instances()}}
        out = {{"nights": {{}}}}
        r = bag.dags["retrain"].test(run_conf={{"ds": "{boot}", "trigger": "bootstrap", "init_from": "scratch",
                                                "reasons": ["bootstrap"], "settings": {WEAK!r}}})
        out["bootstrap"] = states(r)
        # Every conf names every Param: under dag.test() a run's conf stays in the DAG's params for the next run.
        r = bag.dags["retrain"].test(run_conf={{"ds": "{opened}", "trigger": "manual", "init_from": "warm",
                                                "reasons": ["a better challenger"], "settings": {{}}}})
        out["challenger"] = states(r)
        out["challenger_verdict"] = read_decision(lake, "{opened}", "promotion")
        out["candidate_after_retrain"] = registry.current(CANDIDATE).version
        for ds in {nights!r}:
            # Under dag.test() a triggered run never executes: the hand-off (if the policy asks for one) is marked.
            n = bag.dags["nightly_scoring"].test(logical_date=datetime.fromisoformat(ds).replace(tzinfo=timezone.utc),
                                                 mark_success_pattern="trigger_retrain")
            out["nights"][ds] = states(n)
        out["trials"] = trials.history(lake)
        out["shadow"] = lake.partitions("shadow")
        out["shadow_rows"] = lake.read("shadow", "{nights[0]}", columns=["model_version", "model_alias"]).to_pylist()[:1]
        out["champion"] = registry.current(CHAMPION).version
        out["champion_moves"] = [[e.ds, e.version, e.decided_by] for e in registry.history() if e.alias == CHAMPION]
        r = bag.dags["retrain"].test(run_conf={{"ds": "{nights[-1]}", "trigger": "manual", "init_from": "scratch",
                                                "reasons": ["a worse challenger"], "settings": {WORSE!r}}})
        out["worse"] = states(r)
        out["worse_verdict"] = read_decision(lake, "{nights[-1]}", "promotion")
        out["champion_after_worse"] = registry.current(CHAMPION).version
        out["candidate_after_worse"] = registry.current(CANDIDATE)
        from airflow_integration.alerts import sent
        out["alerts"] = [[a["kind"], a["key"], a["subject"]] for a in sent(lake)]
        print("RESULT " + json.dumps(out, default=str))
    """)
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=1500)
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert line, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = json.loads(line[0][len("RESULT "):])

    assert out["bootstrap"]["promote"] == "success" and out["bootstrap"]["open_trial"] == "skipped", out["bootstrap"]
    # the better challenger passes the offline gate and goes on trial instead of being promoted
    assert out["challenger"]["open_trial"] == "success", out["challenger"]
    assert out["challenger"]["promote"] == "skipped" and out["challenger"]["reject"] == "skipped"
    verdict = out["challenger_verdict"]
    assert verdict["verdict"] == "ON_TRIAL" and verdict["evidence"]["ci_low"] > 0 and verdict["model_version"] == "2"
    assert out["candidate_after_retrain"] == "2"

    first, second, third = (out["nights"][d] for d in nights)
    for night in (first, second, third):
        assert night["settle_trial"] == "success" and night["decide_retrain"] == "success", night
    # the shadow step runs on the trial's two nights only
    assert first["score_shadow"] == second["score_shadow"] == "success" and first["commit_shadow"] == "success"
    assert third["score_shadow"] == "skipped" and third["commit_shadow"] == "skipped", third
    assert out["shadow"] == nights[:2]
    assert out["shadow_rows"] == [{"model_version": "2", "model_alias": "candidate"}]

    by_day = {r["ds"]: r for r in out["trials"]}
    assert [by_day[d]["state"] for d in (opened, *nights)] == ["open", "open", "open", "promoted"]
    assert [len(by_day[d]["nights"]) for d in nights] == [0, 1, 2]
    assert by_day[nights[1]]["running"]["gain"] > 0  # the first night's labels so far
    concluded = by_day[nights[2]]
    assert all(n["matured"] for n in concluded["nights"])
    c = concluded["conclusion"]
    assert c["verdict"] == "PROMOTE" and c["ci_low"] > 0 and c["nights"] == nights[:2]
    assert c["n"] == sum(n["labelled"] for n in concluded["nights"])  # paired on the labelled rows of both nights
    assert out["champion"] == "2" and out["champion_moves"][-1] == [nights[2], "2", "shadow trial"]

    # a worse challenger: rejected by the gate, never a candidate, never promoted
    assert out["worse"]["reject"] == "success" and out["worse"]["open_trial"] == "skipped", out["worse"]
    assert out["worse_verdict"]["verdict"] != "PROMOTE"
    assert out["champion_after_worse"] == "2" and out["candidate_after_worse"] is None

    keys = [a[1] for a in out["alerts"]]
    assert "trial-opened-2026-03-11-v2" in keys and "trial-promoted-2026-03-11-v2" in keys, out["alerts"]
