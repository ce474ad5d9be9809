"""Multiclass as a task: the class vocabulary, label checks, metrics (against scikit-learn), pooled
statistics, temperature scaling, the CBPE estimate, the gate's resampled macro AUC and the head growth."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from sklearn.metrics import accuracy_score, f1_score, log_loss, roc_auc_score

from model.calibration import (ModelCard, TemperatureCalibrator, fit_model_card, fit_temperature, method_words,
                               read_model_card, write_model_card)
from model.preprocess import Preprocessor
from nightshift import metrics as m
from nightshift.task import MIN_CLASS_ROWS, LabelError, class_order, task_for

ABC = task_for("multiclass", ["a", "b", "c"])


def world(n: int, k: int = 3, *, sharp: float = 1.0, temperature: float = 1.0, seed: int = 0):
    """Labels drawn from true class probabilities softmax(sharp * z); the model's probabilities are the truth
    at `temperature` (1: calibrated; below 1: over-confident)."""
    rng = np.random.default_rng(seed)
    z = sharp * rng.normal(size=(n, k))
    true = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    codes = (rng.random(n)[:, None] > np.cumsum(true, axis=1)).sum(axis=1)
    shown = np.exp(z / temperature) / np.exp(z / temperature).sum(axis=1, keepdims=True)
    names = np.array([chr(ord("a") + i) for i in range(k)], dtype=object)
    return names[codes], shown


# -- the vocabulary ---------------------------------------------------------------------
@pytest.mark.parametrize("values, order", [
    (["b", "c", "a", "b"], ("a", "b", "c")),
    ([10, 2, 1, 2], ("1", "2", "10")),  # integers sort as numbers, not as text
    (["gold", "10", "2"], ("10", "2", "gold")),  # mixed: as text
    (["x"], ("x",)),
])
def test_the_first_vocabulary_is_the_sorted_distinct_classes(values, order):
    assert class_order(values) == order
    assert task_for("multiclass").vocabulary(np.array([str(v) for v in values], dtype=object)) == order


@pytest.mark.parametrize("old, y, grown", [
    (("a", "b", "c"), ["c", "a"], ("a", "b", "c")),  # nothing new: unchanged
    (("a", "b", "c"), ["z", "a", "d", "z"], ("a", "b", "c", "z", "d")),  # new ones appended in order of appearance
    (("b", "c"), ["a"], ("b", "c", "a")),  # never re-sorted: the old head rows keep their indices
    (None, ["b", "a"], ("a", "b")),
])
def test_a_warm_retrain_appends_new_classes_after_the_old(old, y, grown):
    assert task_for("multiclass").grown(old, np.array(y, dtype=object)) == grown


@pytest.mark.parametrize("y, codes, unseen", [
    (["a", "c", "b"], [0, 2, 1], {}),
    (["a", "z", "z", "q"], [0, -1, -1, -1], {"z": 2, "q": 1}),
    ([], [], {}),
])
def test_codes_and_unseen_classes(y, codes, unseen):
    y = np.array(y, dtype=object)
    assert ABC.codes(y).tolist() == codes
    assert ABC.unseen(y) == unseen


def test_the_vocabulary_travels_in_the_preprocessor_json_and_old_json_loads():
    pre = Preprocessor({"x": (0.0, 1.0)}, {"c": ["u", "v"]}, None, ("a", "b", "c"))
    back = Preprocessor.from_dict(pre.to_dict())
    assert back.classes == ("a", "b", "c") and task_for("multiclass").n_outputs(back) == 3
    old = pre.to_dict()
    del old["classes"]  # a preprocessor.json from before multiclass
    assert Preprocessor.from_dict(old).classes is None
    assert "classes" not in Preprocessor({"x": (0.0, 1.0)}, {}).to_dict()  # binary/regression JSON unchanged


def test_an_unbound_task_says_how_to_bind_it():
    with pytest.raises(ValueError, match="bind it"):
        task_for("multiclass").output_fields()


# -- labels -----------------------------------------------------------------------------
@pytest.mark.parametrize("col, out", [
    (pa.array(["a", "b"]), ["a", "b"]),
    (pa.array([2, 0, 11], pa.int8()), ["2", "0", "11"]),  # integer classes are their digits
    (pa.array(["x", "y"]).dictionary_encode(), ["x", "y"]),
    (pa.chunked_array([["a"], ["b"]]), ["a", "b"]),
])
def test_labels_are_class_values(col, out):
    assert task_for("multiclass").labels(col, "t").tolist() == out


@pytest.mark.parametrize("col, words", [
    (pa.array(["a", None, "b"]), "must not be null; 1 of 3"),
    (pa.array([0.5, 1.0]), r"a string or an integer\), but its type is double"),
    (pa.array([True, False]), "its type is bool"),
])
def test_bad_labels_are_refused_with_the_rule(col, words):
    with pytest.raises(LabelError, match=words):
        task_for("multiclass").labels(col, "label column 'segment'")


def test_training_targets_refuse_unseen_classes_and_one_class_is_untrainable():
    assert ABC.targets(np.array(["c", "a"], dtype=object)).tolist() == [2, 0]
    with pytest.raises(LabelError, match="'z'"):
        ABC.targets(np.array(["a", "z"], dtype=object))
    assert "alone" in ABC.untrainable(np.array(["a", "a"], dtype=object))
    assert ABC.untrainable(np.array(["a", "b"], dtype=object)) is None


# -- metrics against scikit-learn -----------------------------------------------------------
@pytest.mark.parametrize("n, k, sharp, seed", [(600, 3, 1.0, 0), (2000, 4, 2.0, 1), (300, 5, 0.3, 2)])
def test_metrics_agree_with_sklearn(n, k, sharp, seed):
    y, p = world(n, k, sharp=sharp, seed=seed)
    task = task_for("multiclass", class_order(y))
    codes = task.codes(y)
    assert np.bincount(codes).min() >= MIN_CLASS_ROWS  # every class counts in the macro AUC
    got = task.evaluate(y, p)
    assert got["macro_auc"] == pytest.approx(roc_auc_score(codes, p, multi_class="ovr", average="macro"), abs=1e-12)
    assert got["log_loss"] == pytest.approx(log_loss(codes, p, labels=list(range(k))), rel=1e-9)
    assert got["accuracy"] == pytest.approx(accuracy_score(codes, p.argmax(axis=1)))
    assert got["macro_f1"] == pytest.approx(f1_score(codes, p.argmax(axis=1), average="macro"))
    assert task.primary_value(y, p) == got["macro_auc"]
    # Pooled statistics give the same metrics (the AUC on score bins, within 1e-4), split over any days.
    pooled, se, rows = task.from_stats(m.pool([task.stats(y[i::3], p[i::3]) for i in range(3)]))
    assert rows == n and se is not None and 0 < se < 0.1
    assert pooled["macro_auc"] == pytest.approx(got["macro_auc"], abs=1e-4)
    for name in ("log_loss", "accuracy", "macro_f1"):
        assert pooled[name] == pytest.approx(got[name], rel=1e-9), name
    # The whole-sample resample is the metric itself.
    assert task.resampled(y, p)(np.arange(n)[None, :])[0] == pytest.approx(got["macro_auc"], abs=1e-12)


@pytest.mark.parametrize("counts, rare, counted", [
    ({"a": 300, "b": 300, "c": 5}, ["c"], 2),  # too rare: named, and left out of the macro AUC
    ({"a": 300, "b": 300, "c": 0}, ["c"], 2),  # absent
    ({"a": 300, "b": 300, "c": 300}, [], 3),
])
def test_a_rare_class_is_named_and_not_averaged_in(counts, rare, counted):
    rng = np.random.default_rng(3)
    y = np.array([c for c, n in counts.items() for _ in range(n)], dtype=object)
    p = rng.dirichlet([1, 1, 1], len(y))
    p[np.arange(len(y)), ABC.codes(y)] += 1.0
    p /= p.sum(axis=1, keepdims=True)
    assert ABC.rare_classes(y) == rare
    assert any(f"'{c}'" in " ".join(ABC.caveats(y)) for c in rare) or not rare
    eligible = [j for j, c in enumerate("abc") if counts[c] >= MIN_CLASS_ROWS]
    codes = ABC.codes(y)
    expect = np.mean([roc_auc_score(codes == j, p[:, j]) for j in eligible])
    assert len(eligible) == counted and ABC.evaluate(y, p)["macro_auc"] == pytest.approx(expect)


def test_too_few_needs_two_classes_with_enough_rows():
    y = np.array(["a"] * 100 + ["b"] * 5, dtype=object)
    assert "the macro AUC needs 20 rows of at least 2 classes" in " ".join(ABC.too_few(y, 50))
    assert ABC.too_few(np.array(["a"] * 30 + ["b"] * 30, dtype=object), 50) == ()


def test_unseen_labels_are_left_out_of_every_metric():
    y, p = world(900, 3, sharp=1.5, seed=4)
    extra = np.array(["zebra"] * 50, dtype=object)
    with_unseen = (np.concatenate([y, extra]), np.vstack([p, np.full((50, 3), 1 / 3)]))
    assert ABC.evaluate(*with_unseen) == ABC.evaluate(y, p)
    assert ABC.unseen(with_unseen[0]) == {"zebra": 50}
    # The gate's resamples index every row, the unseen ones included, and still leave them out.
    n = len(with_unseen[0])
    assert ABC.resampled(*with_unseen)(np.arange(n)[None, :])[0] == pytest.approx(ABC.primary_value(y, p))


def test_scoring_columns_name_the_classes():
    p = np.array([[0.2, 0.5, 0.3], [0.7, 0.1, 0.2]])
    fields = ABC.output_fields()
    assert [f for f, _ in fields] == ["class", "probability", "p__a", "p__b", "p__c"]
    cls, prob, *per = ABC.output_arrays(p, 0.5)
    assert cls.to_pylist() == ["b", "a"] and prob.to_pylist() == [0.5, 0.7]
    table = pa.table(dict(zip([f for f, _ in fields], [cls, prob, *per])))
    back = task_for("multiclass").from_schema(table.schema.names)
    assert back.classes == ("a", "b", "c") and np.array_equal(back.pred_of(table), p)


def test_align_lays_another_vocabulary_out_by_name():
    wide = task_for("multiclass", ["a", "b", "c", "d"])
    got = wide.align(np.array([[0.1, 0.2, 0.7]]), ("c", "a", "b"))
    assert got.tolist() == [[0.2, 0.7, 0.1, 0.0]]


# -- temperature scaling ----------------------------------------------------------------------
@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.0])
def test_temperature_scaling_recovers_the_temperature(temperature):
    y, p = world(20_000, 4, sharp=1.5, temperature=temperature, seed=5)
    cal = fit_temperature(task_for("multiclass", "abcd").codes(y), p)
    assert cal.t == pytest.approx(1 / temperature, rel=0.06)
    q = cal.apply(p)
    assert np.allclose(q.sum(axis=1), 1) and np.array_equal(q.argmax(axis=1), p.argmax(axis=1))


def test_temperature_card_round_trips_and_needs_rows(tmp_path):
    y, p = world(400, 3, sharp=1.5, temperature=0.5, seed=6)
    card = fit_model_card(ABC, y, p)
    assert isinstance(card.calibrator, TemperatureCalibrator) and card.reference.metric == "macro_auc"
    write_model_card(tmp_path, card)
    back = read_model_card(tmp_path)
    assert back.calibrator == card.calibrator and "temperature-scaled" in method_words(back, ABC.estimate_method)
    small = fit_model_card(ABC, y[:30], p[:30])
    assert small.calibrator is None and "uncalibrated" in small.note
    assert isinstance(ModelCard.from_dict(card.to_dict()).calibrator, TemperatureCalibrator)


# -- the estimate before labels (CBPE) -----------------------------------------------------------
def test_cbpe_on_calibrated_probabilities_is_close_to_realized():
    errors_raw, errors_cal = {}, {}
    y_fit, p_fit = world(5_000, 3, sharp=1.5, temperature=0.5, seed=10)  # over-confident model, its holdout
    cal = fit_temperature(ABC.codes(y_fit), p_fit)
    for name in ("macro_auc", "log_loss", "accuracy", "macro_f1"):
        raw, calibrated = [], []
        for seed in range(11, 15):
            y, p = world(5_000, 3, sharp=1.5, temperature=0.5, seed=seed)
            realized = ABC.evaluate(y, p)[name]
            raw.append(ABC.estimate(p)[name] - realized)
            calibrated.append(ABC.estimate(p, calibrated=cal.apply(p))[name] - realized)
        errors_raw[name], errors_cal[name] = float(np.mean(raw)), float(np.mean(calibrated))
    for name, tolerance in (("macro_auc", 0.01), ("log_loss", 0.02), ("accuracy", 0.01), ("macro_f1", 0.015)):
        assert abs(errors_cal[name]) < tolerance, (name, errors_cal)
        assert abs(errors_cal[name]) < abs(errors_raw[name]), (name, errors_raw, errors_cal)


def test_estimate_stats_pool_like_realized_ones():
    _, p = world(900, 3, sharp=1.0, seed=7)
    whole = ABC.from_stats(ABC.estimate_stats(p))[0]
    parts = ABC.from_stats(m.pool([ABC.estimate_stats(p[i::2]) for i in range(2)]))[0]
    for name in whole:
        assert parts[name] == pytest.approx(whole[name], abs=1e-9)


# -- the gate -------------------------------------------------------------------------------------
def test_the_paired_bootstrap_sees_a_better_multiclass_model():
    from training.evaluate import paired_bootstrap

    y, p_good = world(3_000, 3, sharp=2.0, seed=8)
    noise = np.random.default_rng(9).dirichlet([1, 1, 1], len(y))
    p_bad = 0.5 * p_good + 0.5 * noise
    boot = paired_bootstrap(y, p_bad, p_good, n_boot=300, confidence=0.95, seed=0, task=ABC)
    assert boot["metric"] == "macro_auc" and boot["gain"] > 0 and boot["ci_low"] > 0
    same = paired_bootstrap(y, p_good, p_good, n_boot=100, confidence=0.95, seed=0, task=ABC)
    assert same["gain"] == 0 and same["ci_low"] == same["ci_high"] == 0


# -- training: loss goes down, the head grows ------------------------------------------------------
def test_a_warm_start_grows_the_head_and_keeps_the_old_classes_rows(spec_multi):
    import torch

    from model.bundle import Bundle
    from nightshift.settings import ModelSettings, TrainingSettings
    from training.train import fit, init_model

    table = _table(["a", "b", "c"], 600, seed=0)
    model, pre = init_model("scratch", table, spec_multi, ModelSettings(), None, seed=0)
    assert pre.classes == ("a", "b", "c")
    result = fit(model, pre, table, spec_multi, TrainingSettings(epochs=3, batch_size=128, device="cpu"))
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    champion = Bundle(result.model, pre, {"task": "multiclass"})
    grown_table = _table(["a", "b", "c", "d"], 600, seed=1)
    warm, grown = init_model("warm", grown_table, spec_multi, ModelSettings(), champion, seed=0)
    assert grown.classes == ("a", "b", "c", "d")
    old, new = champion.model.state_dict(), warm.state_dict()
    assert new["head.weight"].shape[0] == 4 and torch.equal(new["head.weight"][:3], old["head.weight"])
    assert torch.equal(new["head.bias"][:3], old["head.bias"])
    assert "head.weight" in warm.transplant_report.grown
    assert Bundle(warm, grown, {"task": "multiclass"}).predict(grown_table).shape == (600, 4)


@pytest.mark.gpu
def test_cuda_bf16_fit_learns_the_classes(spec_multi):
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    from model.bundle import Bundle
    from nightshift.settings import ModelSettings, TrainingSettings
    from training.train import fit, init_model

    table = _table(["a", "b", "c"], 4000, seed=0)
    model, pre = init_model("scratch", table, spec_multi, ModelSettings(), None, seed=0)
    result = fit(model, pre, table, spec_multi, TrainingSettings(epochs=4, batch_size=256, lr=1e-2, device="cuda",
                                                                 require_gpu=True), valid_table=_table(["a", "b", "c"], 1000, seed=2))
    assert result.device.startswith("cuda") and result.best["valid_macro_auc"] > 0.75
    holdout = _table(["a", "b", "c"], 2000, seed=3)
    pred = Bundle(result.model, pre, {"task": "multiclass"}).predict(holdout)
    assert task_for("multiclass", pre.classes).evaluate(np.array(holdout.column("y").to_pylist(), dtype=object), pred)["macro_auc"] > 0.75


def _table(classes: list[str], n: int, seed: int) -> pa.Table:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 2))
    y = np.array(classes, dtype=object)[np.argmax(np.c_[x, -x.sum(axis=1), np.zeros(n)][:, :len(classes)]
                                                    + rng.gumbel(size=(n, len(classes))), axis=1)]
    return pa.table({"id": [str(i) for i in range(n)], "x0": x[:, 0], "x1": x[:, 1],
                     "c": rng.choice(["u", "v"], n), "y": y.tolist()})


@pytest.fixture
def spec_multi():
    from nightshift.spec import DatasetSpec

    return DatasetSpec(entity_id="id", numeric=["x0", "x1"], categorical=["c"], label="y", task="multiclass")


# -- prediction drift -------------------------------------------------------------------------------
@pytest.mark.parametrize("day_alpha, drifted", [((1, 1, 1), False), ((6, 1, 1), True)])
def test_the_class_mix_and_the_confidence_replace_the_score_test(day_alpha, drifted):
    from monitoring.drift import OUTPUT_CLASS_FEATURE, summary, test_night
    from nightshift.settings import DriftSettings
    from nightshift.tables.drift import OUTPUT_FEATURE

    rng = np.random.default_rng(0)
    ref, day = pa.table({"x": rng.normal(size=800)}), pa.table({"x": rng.normal(size=400)})
    ref_out, day_out = rng.dirichlet((1, 1, 1), 800), rng.dirichlet(day_alpha, 400)
    rows = test_night(ref, day, ["x"], [], DriftSettings(), seed=0, ref_out=ref_out, day_out=day_out)
    output = {r["feature"]: r for r in rows if r["kind"] == "score"}
    assert set(output) == {OUTPUT_CLASS_FEATURE, OUTPUT_FEATURE}
    assert output[OUTPUT_CLASS_FEATURE]["test"] == "chi2" and output[OUTPUT_FEATURE]["test"] == "KS"
    assert output[OUTPUT_CLASS_FEATURE]["drifted"] == drifted
    assert summary("2026-01-01", rows)["score_drift"] == drifted
    assert not rows[0]["night_drift"]  # the output alone raises no alarm, as for the other tasks


# -- import ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("values, task", [
    (pa.array(["standard", "gold", "platinum", "gold"]), "multiclass"),  # the three card segments
    (pa.array([" Gold", "silver", "bronze", None]), "multiclass"),
    (pa.array([1, 2, 3, 2, 1, 3, 1]), "multiclass"),  # a few repeated integer codes
    (pa.array(["1", "2", "3", "3", "2", "1"]), "multiclass"),
    (pa.array([3, 7, 0]), "regression"),  # all distinct: a number to predict, not codes
    (pa.array([0.5, 1.0, 2.0, 0.5, 1.0, 2.0]), "regression"),  # not whole numbers
    (pa.array(list(range(20)) * 3), "regression"),  # more codes than a small integer category has
    (pa.array([0, 1, 1, 0]), "binary"),  # two values stay binary
    (pa.array(["true", "false"]), "binary"),
])
def test_import_infers_multiclass_from_a_few_classes(values, task):
    from importer.core import infer_task

    assert infer_task(values) == task


@pytest.mark.parametrize("values, message", [
    (pa.array([f"segment {i % 60}" for i in range(300)]), "60 distinct values in 300 labelled rows: too many to be classes"),
    (pa.array([f"id-{i}" for i in range(40)]), "40 distinct values in 40 labelled rows"),  # nearly all distinct
    (pa.array(["yes", "no"]), "2 distinct values are no multiclass label"),
    (pa.array(["gold", "1", "silver"]), "mixed types"),
])
def test_import_refuses_what_is_no_class_label(values, message):
    from importer.core import ImportFailed, infer_task

    with pytest.raises(ImportFailed, match=message):
        infer_task(values)


def test_a_table_with_card_segments_imports_as_multiclass(tmp_path):
    """The issue's case: a label of three card segments went through import as `binary`, then was refused."""
    import pyarrow.csv as pacsv

    from importer.core import ImportOptions, import_table
    from nightshift.lake import LABELS, Lake

    rng = np.random.default_rng(0)
    n = 600
    ts = (np.datetime64("2026-03-02") + np.sort(rng.integers(0, 3 * 86_400, n)).astype("timedelta64[s]")).astype(str)
    segment = rng.choice(["standard", "gold", "platinum"], n).astype(object)
    segment[::50] = None  # missing labels land as feature rows without a label
    table = pa.table({"card": [f"c{i:05d}" for i in range(n)], "ts": ts.tolist(), "limit": rng.normal(5, 1, n),
                      "region": rng.choice(["n", "s"], n), "segment": segment.tolist()})
    pacsv.write_csv(table, tmp_path / "cards.csv")
    home = tmp_path / "home"
    report = import_table(ImportOptions(source=str(tmp_path / "cards.csv"), timestamp_col="ts", label_col="segment",
                                        id_col="card", progress=False), env={"NIGHTSHIFT_HOME": str(home)})
    assert report.task == "multiclass" and report.task_inferred and report.spec.task == "multiclass"
    lake = Lake(str(home / "lake"))
    labels = pa.concat_tables([lake.read(LABELS, d) for d in lake.partitions(LABELS)])
    assert labels.schema.field("segment").type == pa.string()
    assert set(labels.column("segment").to_pylist()) == {"standard", "gold", "platinum"}
    assert labels.num_rows == n - len(segment[::50])
    assert 'task = "multiclass"' in (home / "nightshift.toml").read_text()


def test_an_import_with_too_many_classes_names_the_count(tmp_path):
    import pyarrow.csv as pacsv

    from importer.core import ImportFailed, ImportOptions, import_table

    n = 400
    ts = (np.datetime64("2026-03-02") + np.arange(n).astype("timedelta64[m]")).astype(str)
    table = pa.table({"ts": ts.tolist(), "x": np.arange(n, dtype=float), "label": [f"s{i % 80}" for i in range(n)]})
    pacsv.write_csv(table, tmp_path / "t.csv")
    with pytest.raises(ImportFailed, match="80 distinct values .* --task regression"):
        import_table(ImportOptions(source=str(tmp_path / "t.csv"), timestamp_col="ts", label_col="label", progress=False),
                     env={"NIGHTSHIFT_HOME": str(tmp_path / "home")})


def test_readers_of_a_multiclass_predictions_partition(settings, lake):
    """The predictions consumer reads the confidence; ground truth reads the night's vocabulary from its columns."""
    from nightshift.consumer import summarize_partition
    from nightshift.lake import PREDICTIONS
    from nightshift.tables import predictions

    s = settings.with_overrides({"dataset.task": "multiclass"})
    schema = predictions.schema(s.dataset, pa.string(), ABC)
    p = np.array([[0.2, 0.5, 0.3], [0.7, 0.1, 0.2]])
    lineage = [pa.array(["v"] * 2) if name != "model_version" else pa.array(["3"] * 2) for name in predictions.LINEAGE]
    lake.commit(PREDICTIONS, "2026-01-05", pa.Table.from_arrays([pa.array(["e1", "e2"]), *ABC.output_arrays(p, 0.5),
                                                                  *lineage], schema=schema))
    got = summarize_partition({"ds": "2026-01-05", "rows": 2, "model_version": "3"}, s)
    assert got["output"] == "probability" and got["mean"] == pytest.approx(0.6)
    day = task_for("multiclass").from_schema(lake.dataset(PREDICTIONS, "2026-01-05").schema.names)
    assert day.classes == ("a", "b", "c") and np.array_equal(day.pred_of(lake.read(PREDICTIONS, "2026-01-05")), p)
    assert "class" in predictions.repeating(schema) and "p__a" not in predictions.repeating(schema)


def test_gate_words_name_the_multiclass_metric_and_its_caveats():
    from airflow_integration.words import gate_words

    ev = {"metric": "macro_auc", "champion_version": "1", "champion": 0.74, "challenger": 0.76, "gain": 0.02,
          "confidence": 0.95, "ci_low": 0.01, "ci_high": 0.03, "n": 796,
          "caveats": ["classes with fewer than 20 rows are left out of the macro AUC: 'titanium' (4 rows)"]}
    words = gate_words("PROMOTE", ["superior"], ev)
    assert "macro_auc champion v1 0.7400 → challenger 0.7600" in words and "'titanium' (4 rows)" in words
    assert "note:" not in gate_words("PROMOTE", ["superior"], {**ev, "caveats": []})


def test_a_multiclass_world_exported_as_csv_imports_as_multiclass(tmp_path):
    from importer.core import ImportOptions, import_table
    from nightshift.settings import load_settings
    from simulator.export import world_csv

    spec = load_settings(env={}).dataset
    out = world_csv(tmp_path / "cards.csv", spec, start="2026-03-01", days=3, rows_per_day=300, seed=1,
                    task="multiclass", label_time=True, censor=True)
    report = import_table(ImportOptions(source=out["path"], timestamp_col="timestamp", label_col=spec.label,
                                        id_col=spec.entity_id, label_time_col="label_time", progress=False),
                          env={"NIGHTSHIFT_HOME": str(tmp_path / "home")})
    assert report.task == "multiclass" and report.task_inferred


@pytest.mark.parametrize("values, conflicts", [(["gold", "basic", "gold"], {"d1": 1}), (["gold", "gold", "gold"], {})])
def test_duplicate_class_labels_keep_the_latest_and_count_conflicts(values, conflicts):
    from nightshift.tables.labels import latest_arrival

    t = pa.table({"id": ["a", "a", "b"], "event_ds": ["d1"] * 3, "ds": ["d2", "d3", "d2"], "y": values})
    kept, duplicates, found = latest_arrival(t, "id", "y")
    assert duplicates == {"d1": 1} and found == conflicts
    assert dict(zip(kept.column("id").to_pylist(), kept.column("y").to_pylist())) == {"a": values[1], "b": values[2]}


def test_a_nightly_temperature_refit_on_the_days_before_corrects_an_uncalibrated_estimate():
    from monitoring.ground_truth import DayInput, performance_rows

    days = []
    for i in range(6):
        y, p = world(2_000, 3, sharp=1.5, temperature=0.5, seed=40 + i)  # an over-confident model, no card calibrator
        days.append(DayInput(f"2026-01-0{i + 1}", "1", p, y, p, None, classes=("a", "b", "c")))

    def rows(refit_days: int):
        return performance_rows(task_for("multiclass"), days, "2026-01-20", min_coverage=0.9, max_delay_days=30,
                                window_days=3, signal_min_coverage=0.5, recalibrate_days=refit_days,
                                recalibrate_min_rows=500)

    plain, refit = rows(0), rows(3)
    assert "recalibrated" not in plain[1]["estimate_method"]
    assert "temperature recalibrated (T=" in refit[1]["estimate_method"] and "2026-01-01..2026-01-01" in refit[1]["estimate_method"]
    assert refit[0]["estimated"] == plain[0]["estimated"]  # the first day has no days before it
    for name in ("accuracy", "log_loss"):
        err_plain = np.mean([abs(r["estimated_metrics"][name] - r["realized_metrics"][name]) for r in plain[1:]])
        err_refit = np.mean([abs(r["estimated_metrics"][name] - r["realized_metrics"][name]) for r in refit[1:]])
        assert err_refit < err_plain / 3, (name, err_plain, err_refit)
