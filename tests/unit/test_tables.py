"""The typed table readers and the Model health page's readers, through the Lake interface, on every backend."""

from __future__ import annotations

import pyarrow as pa
import pytest

from nightshift.lake import PREDICTIONS

BACKENDS = ["posix", "delta", "s3"]  # s3: the delta backend in a moto bucket


@pytest.fixture(params=BACKENDS)
def any_lake(request, lake_on):
    return lake_on(request.param)


def _predictions(n: int, version: str, offset: int = 0) -> pa.Table:
    return pa.table({"id": [f"e{i + offset}" for i in range(n)], "score": [0.5] * n, "decision": [1] * n,
                     "model_version": [version] * n, "model_selection": ["as_of"] * n})


def test_decisions_are_written_read_and_scanned_alike(any_lake):
    from nightshift.tables import decisions

    lake = any_lake
    decisions.write_decision(lake, "2026-01-01", "night", "NO_ACTION", ["quiet"], {"a": 1})
    decisions.write_decision(lake, "2026-01-02", "retrain", "RETRAIN", ["drift"], {"b": 2})
    decisions.write_decision(lake, "2026-01-02", "promotion", "PROMOTE", ["better"], {"c": 3}, model_version="2")
    decisions.write_decision(lake, "2026-01-02", "retrain", "RETRAIN", ["drift", "age"], {"b": 3})  # replaces its kind
    assert decisions.read_decision(lake, "2026-01-02", "retrain")["reasons"] == ["drift", "age"]
    assert decisions.latest_decision(lake, "night", "2026-01-05")["verdict"] == "NO_ACTION"
    hist = decisions.history(lake)
    assert [(d["ds"], d["kind"]) for d in hist] == [("2026-01-01", "night"), ("2026-01-02", "retrain"),
                                                    ("2026-01-02", "promotion")]
    assert hist[1]["evidence"] == {"b": 3}
    assert [d["ds"] for d in decisions.history(lake, days=["2026-01-02"])] == ["2026-01-02", "2026-01-02"]


def test_predictions_nights_read_the_committed_files_only(any_lake):
    from nightshift.tables import predictions

    lake = any_lake
    lake.commit(PREDICTIONS, "2026-01-01", _predictions(5, "1"))
    lake.commit(PREDICTIONS, "2026-01-01", _predictions(3, "2"))  # a rerun: the old copy is not counted
    lake.commit(PREDICTIONS, "2026-01-02", _predictions(4, "2"))
    assert predictions.nights(lake) == [
        {"ds": "2026-01-01", "rows": 3, "model_version": "2", "model_selection": "as_of"},
        {"ds": "2026-01-02", "rows": 4, "model_version": "2", "model_selection": "as_of"}]
    assert predictions.night(lake, "2026-01-01")["rows"] == 3 and predictions.scored_by(lake, "2026-01-02") == "2"


def test_alias_history_and_alert_ledger(any_lake):
    from airflow_integration.alerts import Alert, already_sent, record_sent, sent
    from nightshift.tables import aliases

    lake = any_lake
    for seq, (ds, version) in enumerate([("2026-01-01", "1"), ("2026-01-05", "2")], start=1):
        aliases.append(lake, aliases.AliasEvent(seq, ds, "champion", version, None, None, "r", "retrain"))
    assert aliases.next_seq(lake) == 3 and aliases.in_force(lake, "2026-01-03").version == "1"
    assert aliases.in_force(lake, "2026-01-06").version == "2" and aliases.pending(lake) == []
    alert = Alert("drift", "drift-2026-01-02", "2026-01-02", "Drift", "3 features", "http://x")
    assert not already_sent(lake, alert.key)
    record_sent(lake, alert, ("log",))
    assert already_sent(lake, alert.key) and [a["key"] for a in sent(lake)] == [alert.key]


def test_the_health_page_readers_see_each_new_commit(any_lake):
    from airflow_integration import health
    from nightshift.tables import decisions

    lake = any_lake
    health.clear_cache()
    decisions.write_decision(lake, "2026-01-01", "night", "NO_ACTION", ["quiet"], {})
    assert [d["verdict"] for d in health.decision_history(lake)] == ["NO_ACTION"]
    decisions.write_decision(lake, "2026-01-01", "night", "RETRAIN", ["drift"], {})
    assert [d["verdict"] for d in health.decision_history(lake)] == ["RETRAIN"]
    lake.commit(PREDICTIONS, "2026-01-01", _predictions(2, "1"))
    assert [n["rows"] for n in health.nights(lake)] == [2]
