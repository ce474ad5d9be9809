"""Run forms that cannot start a failing run: each DAG's Params, validated as the trigger form
and the REST API validate them (JSON schema with format checks), table-driven."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

CASES = [
    # dag, conf, accepted?
    ("retrain", {}, False),                                   # no ds: refused, not a run that fails later
    ("retrain", {"ds": ""}, False),                           # empty ds from the form
    ("retrain", {"ds": None}, False),
    ("retrain", {"ds": "2026-13-45"}, False),                 # not a date
    ("retrain", {"ds": "12/03/2026"}, False),
    ("retrain", {"ds": "2026-03-12"}, True),
    ("retrain", {"ds": "2026-03-12", "trigger": "because"}, False),   # trigger is an enum
    ("retrain", {"ds": "2026-03-12", "trigger": "nightly", "reasons": ["drift"]}, True),
    ("retrain", {"ds": "2026-03-12", "init_from": "random"}, False),
    ("rollback", {"ds": "2026-03-12", "reason": "calibration broke"}, True),   # version: previous_champion
    ("rollback", {"ds": "2026-03-12", "reason": "calibration broke", "version": "3"}, True),
    ("rollback", {"ds": "2026-03-12", "reason": "calibration broke", "version": "v3"}, False),
    ("rollback", {"ds": "2026-03-12", "reason": "calibration broke", "version": "champion"}, False),
    ("rollback", {"ds": "2026-03-12", "reason": ""}, False),
    ("rollback", {"reason": "calibration broke"}, False),
    ("nightly_scoring", {"model": "latest"}, False),
    ("nightly_scoring", {"model": "as_of"}, True),
]


def test_forms_refuse_what_would_fail(tmp_path):
    code = f"""
import copy, json
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder={str(REPO / 'dags')!r})
out = []
for dag_id, conf, _ in {CASES!r}:
    params = copy.deepcopy(bag.dags[dag_id].params)
    try:
        params.update(conf)  # what a trigger with this conf does (it validates each value it sets)
        params.validate()
        out.append([True, ""])
    except Exception as exc:
        out.append([False, str(exc)])
print(json.dumps(out))
"""
    env = {**os.environ, "AIRFLOW_HOME": str(tmp_path / "airflow"), "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
           "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    wrong = [(dag, conf, msg) for (dag, conf, want), (got, msg) in zip(CASES, results) if got != want]
    assert not wrong, wrong
    # the refusal says which field and why
    assert "ds" in results[0][1]


def test_rollback_errors_name_the_champions(lake):
    from airflow_integration.health import champions_in_words
    from nightshift.tables.aliases import AliasEvent, append

    assert champions_in_words(lake) == "no champion yet"
    for seq, (ds, version, previous) in enumerate([("2026-03-01", "1", None), ("2026-03-10", "2", "1"),
                                                   ("2026-03-20", "3", "2")]):
        append(lake, AliasEvent(seq, ds, "champion", version, previous, None, "promoted", "retrain"))
    assert champions_in_words(lake) == ("champion v3 (from the night after 2026-03-20), previous_champion v2; "
                                        "earlier champions: v2, v1")
