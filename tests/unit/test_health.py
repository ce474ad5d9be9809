"""The Model health page's data and rendering, on a small lake written through the tables' writers
(no server): what each chart is built from, the cache that re-reads only what changed, escaping."""

from __future__ import annotations

import sys
from pathlib import Path

import pyarrow as pa
import pytest

from nightshift.dates import add_days
from nightshift.lake import PREDICTIONS

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "plugins"))

START = "2026-05-01"


def _night(lake, n: int, *, alarm: bool, version: str = "1", rows: int = 100, feature: str = "x1",
           value: float | None = None) -> str:
    from nightshift.tables import decisions, drift, performance

    ds = add_days(START, n)
    base = {"kind": "numeric", "test": "KS", "statistic": 0.0, "threshold": 0.01, "effect_metric": "ks_distance",
            "min_effect": 0.1, "day_drift": alarm, "model_version": version, "reference_rows": 10, "sample_rows": 10}
    drift.write(lake, ds, [
        {**base, "feature": feature, "p_value": 1e-6 if alarm else 0.5, "significant": alarm, "effect_size": 0.3 if alarm else 0.01,
         "drifted": alarm},
        {**base, "feature": "x2", "p_value": 0.001, "significant": True, "effect_size": 0.05, "drifted": False},
        {**base, "feature": drift.OUTPUT_FEATURE, "kind": "score", "p_value": 0.5, "significant": False,
         "effect_size": 0.02, "drifted": False},
    ])
    perf = []
    for age in range(min(n + 1, 3)):  # each night knows the last three prediction days
        cov = age / 2
        perf.append({"prediction_ds": add_days(ds, -age), "age_days": age, "rows": rows, "labelled": int(rows * cov),
                     "coverage": cov, "matured": cov >= 0.9, "status": "", "metric": "auc",
                     "realized": 0.7 + n / 100 if age else None, "estimated": 0.8 - age / 100, "estimate_method": "",
                     "label_mean": 0.3, "mean_prediction": 0.3, "model_version": version,
                     **({"realized_value": value if age else None, "estimated_value": value + 0.5,
                         "realized_value_total": value * rows * cov if age else None} if value is not None else {})})
    performance.write(lake, ds, perf)
    decisions.write_decision(lake, ds, "retrain", "RETRAIN" if alarm else "NO_ACTION", ["why"],
                             {"evidence": {"drift_flags": [alarm]}, "policy": {"drift_k": 3, "drift_n": 5}}, model_version=version)
    schema = pa.schema([("id", pa.string()), ("score", pa.float64()), ("model_version", pa.string()),
                        ("model_selection", pa.string())])
    lake.commit(PREDICTIONS, ds, pa.table([[str(i) for i in range(rows)], [0.5] * rows, [version] * rows, ["as_of"] * rows],
                                          schema=schema))
    return ds


@pytest.fixture
def fresh():
    from airflow_integration import health

    health.clear_cache()
    yield health
    health.clear_cache()


def test_performance_shows_the_newest_knowledge_and_the_estimate_made_before_labels(lake, fresh):
    days = [_night(lake, n, alarm=False) for n in range(4)]
    perf = fresh.performance_series(lake)
    assert perf["metric"] == "auc"
    by_day = {d["ds"]: d for d in perf["days"]}
    assert list(by_day) == days
    # day 1 as known on night 3 (age 2): coverage 1.0, matured; the estimate is night 1's own (age 0)
    assert by_day[days[1]]["as_of"] == days[3] and by_day[days[1]]["coverage"] == 1.0 and by_day[days[1]]["matured"]
    assert by_day[days[1]]["estimated"] == pytest.approx(0.8)
    assert by_day[days[3]]["realized"] is None and not by_day[days[3]]["matured"]  # no label yet


def test_drift_matrix_keeps_the_score_apart_and_marks_alarms(lake, fresh):
    days = [_night(lake, n, alarm=n in (1, 2)) for n in range(4)]
    m = fresh.drift_matrix(lake)
    assert m["nights"] == days and m["features"] == ["x1", "x2"] and m["alarm"] == [False, True, True, False]
    assert [c["drifted"] for c in m["cells"]["x1"]] == [False, True, True, False]
    assert all(c["significant"] and not c["drifted"] for c in m["cells"]["x2"])  # significant, below its effect floor
    assert all(c["effect"] == 0.02 for c in m["score"])
    last = fresh.drift_matrix(lake, last=2)
    assert last["nights"] == days[2:] and last["alarm"] == [True, False] and len(last["cells"]["x1"]) == 2


def test_the_cache_rereads_only_new_or_rewritten_partitions(lake, fresh, monkeypatch):
    from nightshift.tables import drift

    days = [_night(lake, n, alarm=False) for n in range(3)]
    assert [n["ds"] for n in fresh.nights(lake)] == days
    reads = []
    real = drift.history
    monkeypatch.setattr(drift, "history", lambda *a, **k: reads.append(k.get("days", a[2] if len(a) > 2 else None)) or real(*a, **k))
    assert fresh.drift_matrix(lake)["alarm"] == [False] * 3 and reads == []  # unchanged: nothing read
    new = _night(lake, 3, alarm=True)
    assert fresh.drift_matrix(lake)["alarm"] == [False, False, False, True] and reads == [[new]]
    _night(lake, 1, alarm=True, version="2")  # a rerun rewrites night 1
    m = fresh.drift_matrix(lake)
    assert m["alarm"] == [False, True, False, True] and reads[-1] == [days[1]]
    assert {n["ds"]: n["model_version"] for n in fresh.nights(lake)}[days[1]] == "2"


def test_champion_timeline_carries_the_gate_evidence(lake, fresh):
    from nightshift.tables.aliases import AliasEvent, append
    from nightshift.tables.decisions import write_decision

    write_decision(lake, "2026-05-02", "promotion", "PROMOTE", ["non-inferior within margin 0.0050"],
                   {"metric": "auc", "champion": 0.80, "challenger": 0.82, "gain": 0.02, "ci_low": 0.01, "ci_high": 0.03,
                    "confidence": 0.95, "n": 900, "champion_version": "1",
                    "segments": [{"segment": "north", "gain": 0.01, "n": 400}]}, model_version="2")
    append(lake, AliasEvent(0, "2026-05-01", "champion", "1", None, "r1", "first model", "retrain"))
    append(lake, AliasEvent(1, "2026-05-02", "champion", "2", "1", "r2", "promoted", "retrain"))
    timeline = fresh.champion_timeline(lake)
    assert [(e["version"], e["verdict"]) for e in timeline] == [("1", None), ("2", "PROMOTE")]
    assert fresh.champion_now(lake)["version"] == "2"
    from airflow_integration.words import gate_words, segment_words

    words = gate_words("PROMOTE", timeline[1]["reasons"], timeline[1]["evidence"])
    assert words == ("PROMOTE · auc champion v1 0.8000 → challenger 0.8200, gain +0.0200 (95% CI +0.0100…+0.0300), "
                     "n=900 · rule: non-inferior within margin 0.0050")
    assert segment_words(timeline[1]["evidence"]) == "north: +0.0100 (n=400)"


def test_a_withdrawn_wait_shows_beside_the_wait_it_ends(lake, fresh):
    """The page lists the WAIT a user was alerted to, and the NO_ACTION that withdrew it; a plain NO_ACTION stays out."""
    from nightshift.tables import decisions

    policy = {"drift_k": 3, "drift_n": 5}
    decisions.write_decision(lake, "2026-05-01", "retrain", "NO_ACTION", ["no trigger fired"],
                             {"evidence": {"drift_flags": [False]}, "policy": policy}, model_version="1")
    decisions.write_decision(lake, "2026-05-02", "retrain", "WAIT", ["waiting for the drift alarm to last"],
                             {"evidence": {"drift_flags": [True]}, "policy": policy}, model_version="1")
    decisions.write_decision(lake, "2026-05-04", "retrain", "NO_ACTION", ["withdrawn: the retrain decided on 2026-05-02"],
                             {"evidence": {"drift_flags": [True, True, False], "pending_since": "2026-05-02"},
                              "policy": policy}, model_version="1")
    rows = fresh.retrain_decisions(lake)
    assert [(r["ds"], r["verdict"]) for r in rows] == [("2026-05-04", "NO_ACTION"), ("2026-05-02", "WAIT")]
    assert rows[0]["reasons"][0].startswith("withdrawn")


def test_the_page_renders_its_charts_and_escapes_names(lake, fresh):
    from airflow_integration.page import render

    for n in range(3):
        _night(lake, n, alarm=n == 1, feature="<script>x</script>")
    html = render(fresh.page(lake, "m<1>"), mlflow_url=None)
    assert "<script>x</script>" not in html and "&lt;script&gt;" in html and "m&lt;1&gt;" in html
    assert html.count('class="cell drifted"') == 1
    assert 'id="perf-chart"' in html and 'class="real"' in html and 'class="est"' in html
    assert "no champion yet" in html
    assert "http" not in html.split("<body>")[1].split("</nav>")[1]  # nothing loaded from anywhere
    assert 'id="value-chart"' not in html and 'id="episodes"' not in html  # no cost matrix: no value section


def test_the_value_chart_and_what_each_drift_episode_cost(lake, fresh):
    """With value in the lake: a value chart, and per drift episode the value lost against the champion's
    holdout value, through the night of the promotion that answered it."""
    from airflow_integration.page import render
    from nightshift.tables.aliases import AliasEvent, append
    from nightshift.tables.decisions import write_decision

    append(lake, AliasEvent(0, "2026-04-30", "champion", "1", None, "r1", "first model", "retrain"))
    write_decision(lake, "2026-04-30", "promotion", "PROMOTE", ["first model"],
                   {"first_model": True, "business_value": {"challenger": 2.0, "currency": "EUR"}}, model_version="1")
    for n in range(6):  # alarm on nights 1..3; v2 promoted on night 3 (scores from night 4)
        _night(lake, n, alarm=n in (1, 2, 3), version="1" if n <= 3 else "2", value=2.0 if n == 0 else 1.0)
    append(lake, AliasEvent(1, add_days(START, 3), "champion", "2", "1", "r2", "promoted", "retrain"))
    write_decision(lake, add_days(START, 3), "promotion", "PROMOTE", ["superior"],
                   {"business_value": {"champion": 1.0, "challenger": 1.8, "gain": 0.8, "ci_low": 0.5, "ci_high": 1.1,
                                       "confidence": 0.95, "currency": "EUR"}}, model_version="2")
    fresh.clear_cache()
    value = fresh.value_episodes(lake)
    assert value["currency"] == "EUR"
    (episode,) = value["episodes"]
    assert (episode["start"], episode["through"], episode["status"], episode["answered_by"]) == (
        add_days(START, 1), add_days(START, 3), "answered", "2")
    # three days of 100 rows at 1.0 a row against v1's holdout value of 2.0 a row
    assert episode["lost"] == pytest.approx(300.0) and episode["reference"] == 2.0 and episode["days"] == 3
    # answering at once would have earned v2's gate gain, 0.8 a row (0.5..1.1), on those 300 rows
    assert (episode["forgone"], episode["forgone_low"], episode["forgone_high"]) == pytest.approx((240.0, 150.0, 330.0))
    html = render(fresh.page(lake, "m"), mlflow_url=None)
    assert 'id="value-chart"' in html and 'id="episodes"' in html and "answered by v2" in html and "300.00" in html
    assert "240.00" in html
    assert "value 1 → 1.8 EUR/row, gain +0.8 (95% CI +0.5…+1.1)" in html


@pytest.mark.parametrize("alarm, moves, status, through, reference", [
    ([False, True, True, False, False], [], "ended", "d2", 3.0),           # no promotion: through the last alarm night
    ([False, True, None, True, True], [], "open", "d4", 3.0),              # a skipped night does not end it; still on
    ([False, True, True, True, False], [("d2", "2")], "answered", "d2", 3.0),
    ([True, True, False, False, False], [], "ended", "d1", None),          # no labelled day before it, no holdout value
])
def test_episodes_cost(alarm, moves, status, through, reference):
    from airflow_integration.health import episodes_cost

    nights = [f"d{i}" for i in range(5)]
    days = [{"ds": d, "rows": 10, "labelled": 10, "model_version": "1", "realized_value": 3.0 if i == 0 else 1.0,
             "estimated_value": None} for i, d in enumerate(nights)]
    timeline = [{"ds": ds, "version": v, "decided_by": "retrain", "evidence": {}} for ds, v in moves]
    (e,) = episodes_cost(nights, alarm, days, timeline)["episodes"]
    assert (e["status"], e["through"], e["reference"]) == (status, through, reference)
    assert e["forgone"] is None  # no answer with a measured value gain
    if reference is not None:  # v1's realized value before the episode, 3.0 a row, against 1.0 a row in it
        assert e["lost"] == pytest.approx(e["rows"] * 2.0) and "before the episode" in e["reference_from"]
    else:
        assert e["lost"] is None


def test_the_consumer_refuses_a_partition_that_disagrees_with_its_event(settings, lake):
    from nightshift.consumer import summarize_partition

    ds = _night(lake, 0, alarm=False, rows=50)
    assert summarize_partition({"ds": ds, "rows": 50, "model_version": "1"}, settings)["mean"] == 0.5
    with pytest.raises(ValueError, match=rf"predictions/ds={ds} holds 50 rows .* announced 40 rows"):
        summarize_partition({"ds": ds, "rows": 40, "model_version": "1"}, settings)
    with pytest.raises(ValueError, match="without a 'ds'"):
        summarize_partition({}, settings)
