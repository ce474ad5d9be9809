"""Multiclass end to end through the real DAGs (`dag.test()`): a three-class world with a sudden covariate drift.

Bootstrap (the retrain DAG), nights through the nightly DAG until the drift's retrain hand-off,
the retrain DAG on that decision, the gate on the macro AUC and a promotion; the predictions
carry `class`, `probability` and `p__<class>`, and monitoring/performance the macro AUC.
(`benchmarks/multiclass_loop.py` runs the same loop in-process.)
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from nightshift.dates import add_days

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "scripts"))

START, HISTORY, NIGHTS, ROWS, ONSET_NIGHT = "2026-06-01", 14, 5, 1500, 1
CLASSES = ["basic", "gold", "platinum"]
ENV = {"NIGHTSHIFT__DATASET__TASK": "multiclass", "NIGHTSHIFT__DATASET__LABEL": "segment",
       "NIGHTSHIFT__TRAINING__EPOCHS": "4", "NIGHTSHIFT__GATE__N_BOOT": "300", "NIGHTSHIFT__POLICY__ONSET_MIN_LABELS": "1000"}


@pytest.fixture
def multiclass_home(tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("NIGHTSHIFT_HOME", str(home))
    monkeypatch.setenv("NIGHTSHIFT_CONFIG", str(REPO / "nightshift.toml"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("NIGHTSHIFT_LAKE", raising=False)
    for k, v in ENV.items():
        monkeypatch.setenv(k, v)
    return home


def test_multiclass_end_to_end_through_the_dags(multiclass_home):
    import airflow_stack as stack

    from nightshift.lake import Lake
    from nightshift.settings import load_settings
    from simulator.land import simulate

    s = load_settings()
    assert s.dataset.task == "multiclass" and s.dataset.label == "segment"
    simulate(Lake(s.lake_uri), s.dataset, start=START, days=HISTORY + NIGHTS, rows_per_day=ROWS,
             scenario="sudden-covariate", onset=HISTORY + ONSET_NIGHT, seed=7, progress=False)

    env = stack.airflow_env(multiclass_home, port=stack.free_port(), extra=ENV)
    subprocess.run([str(stack.VENV_BIN / "airflow"), "db", "migrate"], env=env, check=True, capture_output=True, timeout=600)
    script = textwrap.dedent(f"""
        import json
        from datetime import datetime, timedelta, timezone
        from airflow.dag_processing.dagbag import DagBag
        from nightshift.lake import Lake, PREDICTIONS
        from nightshift.registry import CHAMPION, Registry
        from nightshift.settings import load_settings
        from nightshift.tables import performance
        from nightshift.tables.decisions import read_decision
        bag = DagBag(dag_folder={str(REPO / 'dags')!r})
        s = load_settings()
        lake = Lake(s.lake_uri)
        states = lambda run: {{ti.task_id: str(ti.state) for ti in run.get_task_instances()}}
        out = {{"nights": {{}}}}
        r = bag.dags["retrain"].test(run_conf={{"ds": "{add_days(START, HISTORY - 1)}", "trigger": "bootstrap", "init_from": "scratch"}})
        out["bootstrap"] = states(r)
        out["bootstrap_verdict"] = read_decision(lake, "{add_days(START, HISTORY - 1)}", "promotion")
        day0 = datetime.fromisoformat("{add_days(START, HISTORY)}").replace(tzinfo=timezone.utc)
        retrain_ds = None
        for i in range({NIGHTS}):
            # Under dag.test() a triggered run never executes: the hand-off is marked, and the retrain runs
            # below with the decision's conf (as test_any_table's regression loop does).
            ds = (day0 + timedelta(days=i)).date().isoformat()
            n = bag.dags["nightly_scoring"].test(logical_date=day0 + timedelta(days=i), mark_success_pattern="trigger_retrain")
            out["nights"][ds] = states(n)
            decision = read_decision(lake, ds, "retrain")
            out["nights"][ds]["verdict"] = decision["verdict"]
            if decision["verdict"] == "RETRAIN":
                retrain_ds = ds
                r = bag.dags["retrain"].test(run_conf={{"ds": ds, "trigger": "nightly", "reasons": decision["reasons"]}})
                out["retrain"] = states(r)
                out["verdict"] = read_decision(lake, ds, "promotion")
                break
        out["retrain_ds"] = retrain_ds
        out["champion"] = Registry(s, lake).current(CHAMPION).version
        last = max(out["nights"])
        preds = lake.read(PREDICTIONS, last)
        out["columns"] = preds.column_names
        out["classes"] = sorted(set(preds.column("class").to_pylist()))
        out["performance"] = performance.read(lake, last)
        print("RESULT " + json.dumps(out, default=str))
    """)
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=1500)
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert line, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = json.loads(line[0][len("RESULT "):])

    assert out["bootstrap"]["promote"] == "success", out["bootstrap"]
    boot = out["bootstrap_verdict"]
    assert boot["verdict"] == "PROMOTE" and boot["evidence"]["metric"] == "macro_auc" and boot["evidence"]["classes"] == CLASSES
    for ds, night in out["nights"].items():
        assert night["score"] == "success" and night["decide_retrain"] == "success", (ds, night)
    onset = add_days(START, HISTORY + ONSET_NIGHT)
    assert out["retrain_ds"] is not None and out["retrain_ds"] >= onset, out["nights"]
    assert out["nights"][out["retrain_ds"]]["trigger_retrain"] == "success"
    assert out["retrain"]["train_challenger"] == "success" and out["retrain"]["promote"] == "success", out["retrain"]
    verdict = out["verdict"]
    ev = verdict["evidence"]
    assert verdict["verdict"] == "PROMOTE", verdict["reasons"]
    assert ev["metric"] == "macro_auc" and ev["gain_unit"] == "macro AUC points" and ev["trigger"] == "nightly"
    assert "drift" in " ".join(ev["retrain_reasons"]) and ev["ci_low"] > 0 and ev["challenger"] > ev["champion"]
    assert out["champion"] == ev["challenger_version"] != "1"

    assert out["columns"][:5] == ["entity_id", "class", "probability", "p__basic", "p__gold"]
    assert "p__platinum" in out["columns"] and "score" not in out["columns"] and set(out["classes"]) <= set(CLASSES)
    rows = out["performance"]
    assert rows and {r["metric"] for r in rows} == {"macro_auc"}
    realized = [r for r in rows if r["realized"] is not None]
    assert realized and set(realized[0]["realized_metrics"]) == {"macro_auc", "log_loss", "accuracy", "macro_f1"}
    assert all(r["estimated"] is not None and 0.5 < r["estimated"] < 1 for r in rows)
    assert all(r["unseen_labels"] == 0 for r in rows)


def test_a_new_class_is_counted_nightly_then_a_warm_retrain_grows_the_head(multiclass_home):
    """In-process: a fourth class appears; the nights go on scoring and count it (unseen_labels), a warm retrain
    grows the head with the old rows copied, the gate judges both models in one vocabulary, and the nights after
    score four classes."""
    from batch_scoring.nightly import run_nights
    from model.bundle import load_bundle
    from nightshift.lake import PREDICTIONS, Lake
    from nightshift.registry import CHAMPION, Registry
    from nightshift.settings import load_settings
    from nightshift.tables import performance
    from nightshift.tables.decisions import read_decision
    from simulator.land import simulate
    from training.retrain import retrain

    s = load_settings()
    lake = Lake(s.lake_uri)
    history, nights = 12, 6
    simulate(lake, s.dataset, start=START, days=history + nights, rows_per_day=ROWS, scenario="new-class",
             onset=history, seed=11, progress=False)
    assert retrain(s, add_days(START, history - 1), trigger="bootstrap")["verdict"] == "PROMOTE"
    first = add_days(START, history)
    before = run_nights(s, first, add_days(START, history + 3), retrain=False, progress=False)
    assert all(n["score"] if "score" in n else True for n in before)
    night = add_days(START, history + 3)
    rows = performance.read(lake, night)
    counted = [r for r in rows if r["prediction_ds"] >= first and r["labelled"]]
    assert counted and all(r["unseen_labels"] > 0 and r["unseen_classes"] == "titanium" for r in counted), rows
    assert all(r["realized"] is not None for r in counted)  # the known classes are still measured
    assert lake.read(PREDICTIONS, night).column_names[:5] == ["entity_id", "class", "probability", "p__basic", "p__gold"]

    out = retrain(s, night, trigger="manual", reasons=["a new class"])
    verdict = read_decision(lake, night, "promotion")
    assert out["init_from"] == "warm" and verdict["verdict"] == "PROMOTE", verdict["reasons"]
    ev = verdict["evidence"]
    assert ev["classes"] == ["basic", "gold", "platinum", "titanium"] and ev["challenger"] > ev["champion"] + 0.05
    bundle = load_bundle(Registry(s, lake).local_path(out["version"]))
    champion = load_bundle(Registry(s, lake).local_path("1"))
    assert bundle.preprocessor.classes == ("basic", "gold", "platinum", "titanium")
    w_new, w_old = bundle.weights, champion.weights
    grown = {k for k in w_new if w_new[k].shape != w_old[k].shape}  # the head's weight and bias, nothing else
    assert grown == {"head.weight", "head.bias"} and all(w_new[k].shape[0] == 4 and w_old[k].shape[0] == 3 for k in grown)

    run_nights(s, add_days(START, history + 4), add_days(START, history + nights - 1), retrain=False, progress=False)
    last = lake.read(PREDICTIONS, add_days(START, history + nights - 1))
    assert "p__titanium" in last.column_names and Registry(s, lake).current(CHAMPION).version == out["version"]
    # A few days of the new class in a 12-day window: it seldom wins the argmax yet, but it has its own probability.
    assert 0.01 < float(np.mean(last.column("p__titanium").to_numpy())) < 0.5
    newest = [r for r in performance.read(lake, add_days(START, history + nights - 1))
              if r["model_version"] == out["version"] and r["labelled"]]
    assert newest and all(r["unseen_labels"] == 0 and r["rare_classes"] is None for r in newest), newest
    # The Model health page renders the multiclass metric and the output drift rows.
    sys.path.insert(0, str(REPO / "plugins"))
    from airflow_integration.page import render

    from airflow_integration import health

    page = render(health.page(lake, s.model.name, None))
    assert "Performance over time (macro_auc)" in page and "__predicted_class__" in page
