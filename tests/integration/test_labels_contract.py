"""Data tests: labels are checked, deduplicated and counted; coverage never exceeds 1.

Each test lands predictions and labels in a real lake and measures ground truth as the
nightly run does (`measure_ground_truth`), or checks a label partition through the contract.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from batch_scoring.contract import ContractViolation, validate_labels
from monitoring.ground_truth import measure_ground_truth
from nightshift.lake import LABELS, PREDICTIONS
from nightshift.spec import EVENT_DS
from nightshift.tables import labels as labels_table
from nightshift.tables import performance
from nightshift.tables import predictions as predictions_table

P = "2026-01-10"  # the prediction day
D = "2026-01-14"  # the night that measures it


def land_predictions(lake, spec, day=P, n=100):
    rng = np.random.default_rng(0)
    score = rng.uniform(size=n)
    schema = predictions_table.schema(spec, pa.string())
    data = {spec.entity_id: [f"e{i}" for i in range(n)], "score": score, "decision": (score >= 0.5).astype(np.int8)}
    data.update({name: ["1"] * n for name in predictions_table.LINEAGE})
    lake.commit(PREDICTIONS, day, pa.Table.from_pydict(data, schema=schema))


def land_labels(lake, spec, arrival, ids, values, event=P, **overrides):
    data = {spec.entity_id: ids, EVENT_DS: [event] * len(ids), spec.label: values}
    data.update(overrides)
    lake.commit(LABELS, arrival, pa.table(data))


def night(settings, lake, ds=D):
    summary = measure_ground_truth(settings, ds, lake=lake)
    return summary, {r["prediction_ds"]: r for r in performance.read(lake, ds)}


def test_duplicate_labels_cannot_push_coverage_over_one_nor_mature_a_day(settings, lake, spec):
    """50 of 100 rows labelled, each sent three times: coverage 0.5, still provisional, AUC on 50 rows."""
    land_predictions(lake, spec)
    ids = [f"e{i}" for i in range(50)]
    y = [i % 2 for i in range(50)]
    land_labels(lake, spec, "2026-01-11", ids + ids, y + y)  # duplicated within one arrival day
    land_labels(lake, spec, "2026-01-12", ids, y)  # and re-sent the next day
    summary, rows = night(settings, lake)
    row = rows[P]
    assert row["labelled"] == 50 and row["coverage"] == 0.5
    assert not row["matured"] and row["status"] == "provisional"
    assert row["duplicate_labels"] == 100 and row["conflicting_labels"] == 0
    assert summary["labels"]["duplicate_labels"] == 100 and summary["labels"]["label_rows"] == 150


def test_coverage_never_exceeds_one(settings, lake, spec):
    land_predictions(lake, spec, n=20)
    ids = [f"e{i}" for i in range(20)]
    for arrival in ("2026-01-11", "2026-01-12", "2026-01-13"):
        land_labels(lake, spec, arrival, ids * 2, [1, 0] * 20)
    _, rows = night(settings, lake)
    assert rows[P]["coverage"] == 1.0 and rows[P]["labelled"] == 20


def test_conflicting_labels_latest_arrival_wins_and_they_are_counted(settings, lake, spec):
    land_predictions(lake, spec, n=10)
    ids = [f"e{i}" for i in range(10)]
    land_labels(lake, spec, "2026-01-11", ids, [0] * 10)
    land_labels(lake, spec, "2026-01-12", ids[:3], [1, 1, 0])  # e0, e1 change their mind; e2 repeats itself
    summary, rows = night(settings, lake)
    assert rows[P]["conflicting_labels"] == 2 and rows[P]["duplicate_labels"] == 3
    assert summary["labels"]["conflicting_labels"] == 2
    table = labels_table.arrived(lake, spec, D, [P])
    got = dict(zip(table.column(spec.entity_id).to_pylist(), table.column(spec.label).to_pylist()))
    assert got["e0"] == 1 and got["e1"] == 1 and got["e2"] == 0 and got["e9"] == 0
    assert rows[P]["label_mean"] == pytest.approx(0.2)


def test_within_one_arrival_day_the_last_row_wins(lake, spec):
    land_labels(lake, spec, "2026-01-11", ["e1", "e1", "e1"], [0, 1, 0])
    land_labels(lake, spec, "2026-01-12", ["e2", "e2"], [0, 1])
    known = labels_table.known(lake, spec, D, [P])
    got = dict(zip(known.table.column(spec.entity_id).to_pylist(), known.table.column(spec.label).to_pylist()))
    assert got == {"e1": 0, "e2": 1}
    assert known.duplicates == {P: 3} and known.conflicts == {P: 2}


def test_unknown_ids_are_counted_and_left_out_of_coverage(settings, lake, spec, caplog):
    land_predictions(lake, spec, n=10)
    land_labels(lake, spec, "2026-01-11", ["e0", "e1", "ghost-1", "ghost-2", "ghost-3"], [1, 0, 1, 1, 0])
    summary, rows = night(settings, lake)
    assert rows[P]["unknown_ids"] == 3 and rows[P]["labelled"] == 2 and rows[P]["coverage"] == 0.2
    assert summary["labels"]["unknown_ids"] == 3
    assert "3 ids that day never scored" in caplog.text


def test_a_label_that_arrives_before_its_prediction_is_held_until_the_prediction_exists(settings, lake, spec):
    land_labels(lake, spec, "2026-01-11", [f"e{i}" for i in range(10)], [1, 0] * 5)
    summary, rows = night(settings, lake, "2026-01-12")
    assert P not in rows and summary["labels"]["held_labels"] == 10
    land_predictions(lake, spec, n=10)  # the day is scored late (a failed night rerun, a backfill)
    summary, rows = night(settings, lake, "2026-01-12")
    assert rows[P]["labelled"] == 10 and rows[P]["coverage"] == 1.0 and summary["labels"]["held_labels"] == 0


# (what breaks, how, the column named, the rule named)
BAD_LABELS = [
    ("missing id", lambda s: {"drop": s.entity_id}, "entity_id", "required column present"),
    ("missing event_ds", lambda s: {"drop": EVENT_DS}, EVENT_DS, "required column present"),
    ("missing label", lambda s: {"drop": s.label}, "label", "required column present"),
    ("float ids", lambda s: {s.entity_id: [1.5, 2.5]}, "entity_id", "entity id is a string or integer"),
    ("null id", lambda s: {s.entity_id: ["e1", None]}, "entity_id", "is never null"),
    ("null event day", lambda s: {EVENT_DS: [P, None]}, EVENT_DS, "is never null"),
    ("bad event day", lambda s: {EVENT_DS: [P, "10/01/2026"]}, EVENT_DS, "YYYY-MM-DD"),
    ("event day as int", lambda s: {EVENT_DS: [20260110, 20260110]}, EVENT_DS, "YYYY-MM-DD"),
    ("label from the future", lambda s: {EVENT_DS: [P, "2026-01-20"]}, EVENT_DS, "arrives on or after the day it labels"),
    ("label 2", lambda s: {s.label: [1, 2]}, "label", "label is valid for the binary task"),
    ("null label", lambda s: {s.label: [1, None]}, "label", "label is valid for the binary task"),
    ("text label", lambda s: {s.label: ["yes", "no"]}, "label", "label is valid for the binary task"),
]


@pytest.mark.parametrize("name,brk,col,rule", BAD_LABELS, ids=[b[0] for b in BAD_LABELS])
def test_bad_label_partitions_are_refused_by_name(settings, lake, spec, name, brk, col, rule):
    data = {spec.entity_id: ["e1", "e2"], EVENT_DS: [P, P], spec.label: [1, 0]}
    change = brk(spec)
    if "drop" in change:
        data.pop(change["drop"])
    else:
        data.update(change)
    lake.commit(LABELS, "2026-01-12", pa.table(data))
    with pytest.raises(ContractViolation) as err:
        validate_labels(lake, spec, "2026-01-12")
    assert err.value.partition == "labels/ds=2026-01-12" and err.value.column == col and rule in err.value.rule
    land_predictions(lake, spec, n=10)
    with pytest.raises(ContractViolation, match=rf"labels/ds=2026-01-12, column '{col}' breaks rule"):
        measure_ground_truth(settings, D, lake=lake)  # the night refuses it the same way, and commits nothing
    assert not lake.exists("monitoring/performance", D)


def test_label_ids_that_cannot_match_the_predictions_are_named(settings, lake, spec):
    land_predictions(lake, spec, n=5)
    land_labels(lake, spec, "2026-01-11", [1, 2], [1, 0])  # integer ids against string predictions: cast works
    summary, rows = night(settings, lake)
    assert rows[P]["unknown_ids"] == 2
    # string ids that are not numbers, against integer-id predictions
    schema = predictions_table.schema(spec, pa.int64())
    data = {spec.entity_id: [1, 2], "score": [0.1, 0.9], "decision": pa.array([0, 1], pa.int8())}
    data.update({name: ["1"] * 2 for name in predictions_table.LINEAGE})
    lake.commit(PREDICTIONS, P, pa.Table.from_pydict(data, schema=schema))
    land_labels(lake, spec, "2026-01-11", ["abc", "e2"], [1, 0])
    with pytest.raises(ContractViolation, match="label ids have the type of the ids they label"):
        measure_ground_truth(settings, D, lake=lake)


def test_a_good_label_partition_passes(lake, spec):
    land_labels(lake, spec, "2026-01-11", ["e1", "e2"], [1, 0])
    assert validate_labels(lake, spec, "2026-01-11")["rows"] == 2
    with pytest.raises(ContractViolation, match="partition exists"):
        validate_labels(lake, spec, "2026-01-12")


def test_event_day_as_a_date_type_is_read_as_its_day(settings, lake, spec):
    import datetime as dt

    land_predictions(lake, spec, n=4)
    lake.commit(LABELS, "2026-01-11", pa.table({spec.entity_id: ["e0", "e1"],
                                                 EVENT_DS: pa.array([dt.date(2026, 1, 10)] * 2, pa.date32()),
                                                 spec.label: [1, 0]}))
    _, rows = night(settings, lake)
    assert rows[P]["labelled"] == 2 and rows[P]["coverage"] == 0.5
