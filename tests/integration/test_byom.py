"""Your own model through the whole loop: a module outside the Nightshift packages, named only in settings.

examples/byom/my_tabular/tabm_adapter.py (TabM behind a short adapter) is importable from
PYTHONPATH, as a team's package is on its workers. The table goes through `nightshift import`,
then each step is a real DAG run (`dag.test()`): bootstrap, drifted nights, the drift retrain
(its tournament warm-starts the user's module), the gate, the promotion, and a night scored
by the new champion through torch.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from nightshift.dates import add_days

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "byom"
sys.path.insert(0, str(REPO / "scripts"))

START, HISTORY, ONSET_NIGHT, ROWS = "2026-06-01", 14, 1, 1500
BUILDER = "my_tabular.tabm_adapter:build"
SETTINGS = {"NIGHTSHIFT__MODEL__ARCHITECTURE": BUILDER,
            "NIGHTSHIFT__MODEL__PARAMS": json.dumps({"k": 4, "n_blocks": 2, "d_block": 64}),
            "NIGHTSHIFT__TRAINING__EPOCHS": "4", "NIGHTSHIFT__GATE__N_BOOT": "300",
            "NIGHTSHIFT__POLICY__ONSET_MIN_LABELS": "1000"}


def test_a_user_module_named_only_in_settings_runs_the_whole_loop_through_the_dags(tmp_path, monkeypatch):
    import airflow_stack as stack

    from cli.import_command import main as import_main
    from nightshift.settings import load_settings
    from simulator.export import world_csv

    home = tmp_path / "home"
    for var in ("NIGHTSHIFT_CONFIG", "MLFLOW_TRACKING_URI", "NIGHTSHIFT_LAKE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NIGHTSHIFT_HOME", str(home))
    spec = load_settings(REPO / "nightshift.toml", env={}).dataset
    csv = tmp_path / "world.csv"
    nights = 4
    world_csv(csv, spec, start=START, days=HISTORY + ONSET_NIGHT + nights, rows_per_day=ROWS,
              scenario="sudden-covariate", onset=HISTORY + ONSET_NIGHT, seed=5, task="binary")
    assert import_main([str(csv), "--no-progress", "--timestamp-col", "timestamp", "--label-col", "label",
                        "--id-col", "entity_id", "--label-time-col", "label_time"]) == 0

    env = stack.airflow_env(home, port=stack.free_port(), extra={
        **SETTINGS, "PYTHONPATH": os.pathsep.join([str(EXAMPLE), str(REPO)])})
    env.pop("NIGHTSHIFT_CONFIG", None)  # the home's nightshift.toml, as import wrote it
    subprocess.run([str(stack.VENV_BIN / "airflow"), "db", "migrate"], env=env, check=True, capture_output=True, timeout=600)
    first = HISTORY + ONSET_NIGHT
    script = textwrap.dedent(f"""
        import json
        from datetime import datetime, timedelta, timezone
        from airflow.dag_processing.dagbag import DagBag
        from nightshift.lake import Lake, PREDICTIONS
        from nightshift.registry import CHAMPION, Registry
        from nightshift.settings import load_settings
        from nightshift.tables.decisions import read_decision
        bag = DagBag(dag_folder={str(REPO / 'dags')!r})
        states = lambda run: {{ti.task_id: str(ti.state) for ti in run.get_task_instances()}}
        s = load_settings()
        lake = Lake(s.lake_uri)
        out = {{"nights": {{}}, "architecture": s.model.architecture}}
        r = bag.dags["retrain"].test(run_conf={{"ds": "{add_days(START, HISTORY - 1)}", "trigger": "bootstrap", "init_from": "scratch"}})
        out["bootstrap"] = states(r)
        day0 = datetime.fromisoformat("{add_days(START, first)}").replace(tzinfo=timezone.utc)
        decided = None
        for i in range({nights - 1}):
            n = bag.dags["nightly_scoring"].test(logical_date=day0 + timedelta(days=i), mark_success_pattern="trigger_retrain")
            out["nights"][str(i)] = states(n)
            ds = (day0 + timedelta(days=i)).date().isoformat()
            if read_decision(lake, ds, "retrain")["verdict"] == "RETRAIN":
                decided = ds
                break
        out["decided"] = decided
        decision = read_decision(lake, decided, "retrain")
        r = bag.dags["retrain"].test(run_conf={{"ds": decided, "trigger": "nightly", "reasons": decision["reasons"]}})
        out["retrain"] = states(r)
        out["verdict"] = read_decision(lake, decided, "promotion")
        reg = Registry(s, lake)
        champion = reg.current(CHAMPION)
        out["champion"] = champion.version
        bundle = reg.local_path(champion.version)
        out["bundle_architecture"] = json.loads((bundle / "architecture.json").read_text())
        out["bundle_meta"] = json.loads((bundle / "bundle.json").read_text())
        nxt = datetime.fromisoformat(decided).replace(tzinfo=timezone.utc) + timedelta(days=1)
        n = bag.dags["nightly_scoring"].test(logical_date=nxt, mark_success_pattern="trigger_retrain")
        out["after"] = states(n)
        preds = lake.read(PREDICTIONS, nxt.date().isoformat())
        out["after_versions"] = sorted(set(preds.column("model_version").to_pylist()))
        out["after_rows"] = preds.num_rows
        print("RESULT " + json.dumps(out, default=str))
    """)
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=1200)
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert line, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = json.loads(line[0][len("RESULT "):])
    assert out["architecture"] == BUILDER
    assert out["bootstrap"]["promote"] == "success", out["bootstrap"]
    assert out["decided"], out["nights"]
    for i, night in out["nights"].items():
        assert night["score"] == "success" and night["decide_retrain"] == "success", (i, night)
    assert out["retrain"]["train_challenger"] == "success" and out["retrain"]["promote"] == "success", out["retrain"]
    assert out["verdict"]["verdict"] == "PROMOTE", out["verdict"]["reasons"]
    arch = out["bundle_architecture"]
    assert arch["builder"] == BUILDER and arch["params"] == {"k": 4, "n_blocks": 2, "d_block": 64}
    assert arch["code"]["modules"] == ["my_tabular.tabm_adapter", "tabm"] and len(arch["code"]["source_sha256"]) == 64
    meta = out["bundle_meta"]
    # the drift retrain's tournament: the warm candidates transplanted the champion's tensors by name and shape
    warm = [c for c in meta["tournament"] if c.get("init_from") == "warm"]
    assert warm and all(c["score"] is not None for c in warm), meta["tournament"]
    if meta["init_from"] == "warm":
        assert meta["transplant"]["copied"] and "tabm.output.weight" in meta["transplant"]["copied"], meta["transplant"]
    assert out["after"]["score"] == "success" and out["after_versions"] == [out["champion"]] and out["after_rows"] == ROWS
