"""DAG integrity: every DAG imports cleanly, and parsing one pulls in nothing heavy."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DAG_FILES = sorted((REPO / "dags").glob("*.py"))
HEAVY = ["torch", "pandas", "pyarrow", "mlflow", "alibi_detect", "sklearn"]


def _env(tmp_path) -> dict:
    return {**os.environ, "AIRFLOW_HOME": str(tmp_path / "airflow"), "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"), "PYTHONWARNINGS": "ignore"}


def test_dagbag_has_no_import_errors(tmp_path):
    code = (
        "import json\nfrom airflow.dag_processing.dagbag import DagBag\n"
        f"b = DagBag(dag_folder={str(REPO / 'dags')!r})\n"
        "print(json.dumps({'errors': {k: str(v) for k, v in b.import_errors.items()},"
        " 'dags': {d.dag_id: sorted(t.task_id for t in d.tasks) for d in b.dags.values()},"
        " 'docs': {d.dag_id: bool((d.doc_md or '').strip()) for d in b.dags.values()},"
        " 'links': {f'{d.dag_id}.{t.task_id}': sorted(l.name for l in t.operator_extra_links)"
        "           for d in b.dags.values() for t in d.tasks if t.operator_extra_links}}))"
    )
    out = subprocess.run([sys.executable, "-c", code], env=_env(tmp_path), capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["errors"] == {}
    assert set(result["dags"]) == {f.stem for f in DAG_FILES} == {"nightly_scoring", "retrain", "rollback",
                                                                  "predictions_consumer"}
    assert all(result["docs"].values()), f"every DAG has doc_md: {result['docs']}"
    mlflow = ["MLflow model version", "MLflow run", "Model health"]
    assert result["links"] == {"retrain.train_challenger": mlflow, "retrain.evaluate_challenger": mlflow,
                               "retrain.promote": mlflow, "nightly_scoring.flag_drift": ["Model health"],
                               "nightly_scoring.decide_retrain": ["Model health"],
                               "nightly_scoring.trigger_retrain": ["Triggered DAG"]}  # the retrain run it started
    assert {"validate", "score", "detect_drift", "confirm_champion", "measure_ground_truth",
            "decide_retrain", "trigger_retrain"} <= set(result["dags"]["nightly_scoring"])
    assert {"prepare_window", "ready_to_train", "train_challenger", "defer", "evaluate_challenger", "promote",
            "reject"} <= set(result["dags"]["retrain"])


@pytest.mark.parametrize("dag_file", DAG_FILES, ids=[f.stem for f in DAG_FILES])
def test_parsing_a_dag_imports_nothing_heavy(dag_file, tmp_path):
    code = (
        "import importlib.util, json, sys\n"
        f"spec = importlib.util.spec_from_file_location('d', {str(dag_file)!r})\n"
        "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)\n"
        f"print(json.dumps([h for h in {HEAVY!r} if h in sys.modules]))"
    )
    out = subprocess.run([sys.executable, "-c", code], env=_env(tmp_path), capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_dag_shape(tmp_path):
    """The ordering the semantics rely on is wired as designed."""
    code = (
        "import json\nfrom airflow.dag_processing.dagbag import DagBag\n"
        f"b = DagBag(dag_folder={str(REPO / 'dags')!r})\n"
        "n = b.dags['nightly_scoring']; r = b.dags['retrain']\n"
        "t = n.task_dict\n"
        "print(json.dumps({'confirm_wfd': t['confirm_champion'].wait_for_downstream,"
        " 'dop': [k for k, v in t.items() if v.depends_on_past],"
        " 'confirm_down': sorted(t['confirm_champion'].downstream_task_ids),"
        " 'score_dop': t['score'].depends_on_past,"
        " 'weights': {k: v.priority_weight for k, v in t.items()}, 'rules': sorted({str(getattr(v.weight_rule, 'value', v.weight_rule)) for v in t.values()}),"
        " 'train_queue': r.task_dict['train_challenger'].queue, 'train_pool': r.task_dict['train_challenger'].pool,"
        " 'retrain_mar': r.max_active_runs, 'nightly_doc': bool(n.doc_md), 'params': sorted(n.params.keys())}))"
    )
    out = subprocess.run([sys.executable, "-c", code], env=_env(tmp_path), capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert r["confirm_wfd"] is True and r["score_dop"] is False
    assert {"confirm_champion", "measure_ground_truth", "decide_retrain"} <= set(r["dop"])
    # the next night waits for this one to close: its decision's hand-off run or skipped
    assert "trigger_retrain" in r["confirm_down"]
    assert r["rules"] == ["absolute"] and r["weights"]["decide_retrain"] > r["weights"]["validate"] and r["weights"]["confirm_champion"] > r["weights"]["score"]
    assert (r["train_queue"], r["train_pool"], r["retrain_mar"]) == ("gpu", "gpu", 1)
    assert r["nightly_doc"] and r["params"] == ["model", "settings"]


def test_dags_run_the_one_flow_definition(tmp_path):
    """The DAGs' tasks, edges, ordering, queues and trigger rules are exactly the flows' steps."""
    from batch_scoring.flows import NIGHTLY
    from training.flows import RETRAIN

    code = (
        "import json\nfrom airflow.dag_processing.dagbag import DagBag\n"
        f"b = DagBag(dag_folder={str(REPO / 'dags')!r})\n"
        "out = {}\n"
        "for dag_id in ('nightly_scoring', 'retrain'):\n"
        "    d = b.dags[dag_id]\n"
        "    out[dag_id] = {t.task_id: {'up': sorted(t.upstream_task_ids), 'dop': t.depends_on_past, 'queue': t.queue,"
        " 'pool': t.pool, 'rule': getattr(t.trigger_rule, 'value', t.trigger_rule)} for t in d.tasks}\n"
        "print(json.dumps(out))"
    )
    out = subprocess.run([sys.executable, "-c", code], env=_env(tmp_path), capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr
    dags = json.loads(out.stdout.strip().splitlines()[-1])
    for flow in (NIGHTLY, RETRAIN):
        tasks = dags[flow.id]
        assert set(tasks) == set(flow.ids), f"{flow.id}: DAG tasks {sorted(tasks)} != flow steps {flow.ids}"
        edges = {(up, t) for t, info in tasks.items() for up in info["up"]}
        assert edges == flow.edges(), f"{flow.id}: DAG edges differ from the flow: {edges ^ flow.edges()}"
        for step in flow.steps:
            t = tasks[step.id]
            assert t["dop"] == step.ordered, (flow.id, step.id)
            assert t["rule"] == step.trigger_rule, (flow.id, step.id)
            if step.queue:
                assert (t["queue"], t["pool"]) == (step.queue, step.pool), (flow.id, step.id)


def test_the_in_process_runner_follows_gates_and_branches():
    """`run_flow` (what the CLI runs) skips after a closed gate, and takes one side of a branch."""
    from nightshift.flow import BRANCH, GATE, JOIN, Flow, Step, run_flow


    flow = Flow("f", (
        Step("gate", _gate, kind=GATE),
        Step("a", _record, after=("gate",)),
        Step("pick", _pick, after=("a",), kind=BRANCH, choices=("yes", "no")),
        Step("yes", _record, after=("pick",)),
        Step("no", _record, after=("pick",)),
        Step("end", after=("yes", "no"), kind=JOIN, trigger_rule="none_failed_min_one_success"),
    ))
    ran = run_flow(flow, None, "2026-01-01", {"open": True, "pick": False})
    assert set(ran) == {"gate", "a", "pick", "no", "end"} and ran["no"] == {"ran": "2026-01-01"}
    assert set(run_flow(flow, None, "2026-01-01", {"open": True, "pick": True})) == {"gate", "a", "pick", "yes", "end"}
    assert set(run_flow(flow, None, "2026-01-01", {"open": False})) == {"gate"}  # nothing after a closed gate


def test_a_decision_and_its_branch_are_one_step():
    """A branch with `choose` keeps its own record; with one choice, not taken skips that choice only."""
    from nightshift.flow import BRANCH, Flow, Step, run_flow

    flow = Flow("f", (
        Step("decide", _decide, kind=BRANCH, choose=_wants,
             choices=("act",)),
        Step("other", _record),
        Step("act", _record, after=("decide", "other")),
    ))
    ran = run_flow(flow, None, "2026-01-01", {"act": True})
    assert set(ran) == {"decide", "other", "act"} and ran["decide"] == {"act": True, "why": "asked"}
    ran = run_flow(flow, None, "2026-01-01", {"act": False})
    assert set(ran) == {"decide", "other"} and ran["decide"] == {"act": False, "why": "asked"}
    assert flow.step("decide").follow(True) == ("act", None) and flow.step("decide").follow(False) == (None, "act")


def _decide(ctx):
    return {"act": ctx.params["act"], "why": "asked"}


def _wants(ctx, record):
    return record["act"]


def _gate(ctx):
    return ctx.params["open"]


def _record(ctx):
    return {"ran": ctx.ds}


def _pick(ctx):
    return ctx.params["pick"]
