"""Business value (`nightshift.value`): the cost matrix's settings, a row's value, the expected value
before labels, the value-maximising threshold, and the value a stretch of days lost. Pure: no lake."""

from __future__ import annotations

import numpy as np
import pytest

from nightshift.settings import load_settings
from nightshift.task import task_for
from nightshift.value import (FALLBACK_THRESHOLD, BinaryValue, RegressionValue, decide, decision_threshold,
                              episode_cost, resampled_mean_gain, summary)

M = BinaryValue(tp=10.0, fp=-2.0, fn=-5.0, tn=0.0, currency="EUR")


# -- a row's value -------------------------------------------------------------------------
@pytest.mark.parametrize("y, decision, value", [(1, 1, 10.0), (0, 1, -2.0), (1, 0, -5.0), (0, 0, 0.0)])
def test_a_binary_row_is_worth_its_cell(y, decision, value):
    assert M.realized(np.array([y]), np.array([0.5]), np.array([decision]))[0] == value


@pytest.mark.parametrize("y, pred, over, under, value", [
    (10.0, 12.0, 1.0, 3.0, -2.0),   # over-predicted by 2 at 1 a unit
    (10.0, 7.0, 1.0, 3.0, -9.0),    # under-predicted by 3 at 3 a unit
    (10.0, 10.0, 1.0, 3.0, 0.0),
])
def test_a_regression_row_costs_its_error_asymmetrically(y, pred, over, under, value):
    assert RegressionValue(over, under).realized(np.array([y]), np.array([pred]))[0] == value


def test_binary_value_needs_the_decision():
    with pytest.raises(ValueError, match="decision"):
        M.realized(np.array([1]), np.array([0.9]), None)


def test_the_expected_value_under_calibrated_scores_is_what_the_labels_then_realize():
    rng = np.random.default_rng(0)
    score = rng.uniform(0, 1, 200_000)
    c = score ** 1.5  # the calibrated P(y=1): not the raw score
    y = (rng.uniform(0, 1, len(c)) < c).astype(int)
    d = decide(score, 0.4)
    expected = M.expected(score, d, c).mean()
    realized = M.realized(y, score, d).mean()
    assert expected == pytest.approx(realized, abs=0.03)
    # the raw scores taken as probabilities overstate the positives, and the estimate with them
    assert abs(M.expected(score, d, None).mean() - realized) > 0.3
    assert RegressionValue(1, 1).expected(score, None, None) is None


# -- the threshold -------------------------------------------------------------------------
def _brute(m: BinaryValue, y, s) -> float:
    cuts = np.concatenate([[np.inf], np.unique(s)])
    return max(m.realized(y, s, s >= t).mean() for t in cuts)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("m", [M, BinaryValue(1, -1, -1, 1), BinaryValue(0, -1, -20, 0), BinaryValue(5, -50, 0, 0)])
def test_best_threshold_is_the_best_cut_and_decides_as_it_says(seed, m):
    rng = np.random.default_rng(seed)
    s = np.round(rng.uniform(0, 1, 3000), 3)  # ties
    y = (rng.uniform(0, 1, len(s)) < s).astype(int)
    t, v = m.best_threshold(y, s)
    assert v == pytest.approx(_brute(m, y, s))
    assert m.realized(y, s, decide(s, t)).mean() == pytest.approx(v)  # the value it reports is the threshold's
    assert 0 < t <= 1


def test_best_threshold_lands_near_the_bayes_rule_on_calibrated_scores():
    """With calibrated scores the value-optimal cut is where c tp + (1-c) fp = c fn + (1-c) tn."""
    rng = np.random.default_rng(3)
    s = rng.uniform(0, 1, 400_000)
    y = (rng.uniform(0, 1, len(s)) < s).astype(int)
    t, _ = M.best_threshold(y, s)
    bayes = (M.tn - M.fp) / ((M.tp - M.fn) + (M.tn - M.fp))  # 2/17
    assert t == pytest.approx(bayes, abs=0.02)


@pytest.mark.parametrize("m, all_positive", [(BinaryValue(1, -100, 0, 0), False), (BinaryValue(1, 0, -100, 0), True)])
def test_best_threshold_at_the_ends(m, all_positive):
    s = np.array([0.2, 0.4, 0.6, 0.8])
    y = np.array([1, 0, 1, 0])  # the top score is a negative: any positive decision costs 100 first
    t, _ = m.best_threshold(y, s)
    assert decide(s, t).all() if all_positive else not decide(s, t).any()


def test_best_threshold_needs_rows_and_a_decision():
    with pytest.raises(ValueError, match="labelled rows"):
        M.best_threshold(np.array([]), np.array([]))
    with pytest.raises(ValueError, match="no decision threshold"):
        RegressionValue(1, 1).best_threshold(np.array([1.0]), np.array([1.0]))


@pytest.mark.parametrize("setting, recorded, used", [(0.3, 0.7, 0.3), ("value", 0.7, 0.7), ("value", None, FALLBACK_THRESHOLD)])
def test_decision_threshold(setting, recorded, used):
    assert decision_threshold(setting, recorded) == used


# -- sums, resamples, episodes ----------------------------------------------------------------
def test_summary_and_the_paired_resampled_gain():
    assert summary(np.array([1.0, 3.0])) == (2.0, 4.0) and summary(np.array([])) == (None, None)
    a, b = np.array([1.0, 2.0, 3.0]), np.array([2.0, 2.0, 5.0])
    idx = np.array([[0, 1, 2], [2, 2, 2], [1, 1, 1]])
    assert resampled_mean_gain(a, b, idx).tolist() == pytest.approx([1.0, 2.0, 0.0])


@pytest.mark.parametrize("days, reference, lost, known, unknown", [
    ([{"rows": 100, "realized_value": 1.0}, {"rows": 50, "realized_value": 2.0}], 2.0, 100.0, 2, 0),
    # no label yet: the estimate counts; neither: left out and counted
    ([{"rows": 100, "realized_value": None, "estimated_value": 1.5}, {"rows": 10}], 2.0, 50.0, 1, 1),
    ([{"rows": 100, "realized_value": 3.0}], 2.0, -100.0, 1, 0),  # better than the reference: a negative loss
    ([{"rows": 100, "realized_value": 3.0}], None, None, 0, 1),  # no reference: nothing to say
])
def test_episode_cost(days, reference, lost, known, unknown):
    got = episode_cost(days, reference)
    assert got["lost"] == (None if lost is None else pytest.approx(lost))
    assert (got["days"], got["unknown_days"]) == (known, unknown)


# -- settings --------------------------------------------------------------------------------
BINARY = """
[dataset]
entity_id = "id"
numeric = ["a"]
categorical = []
label = "y"
task = "{task}"
"""


def _load(tmp_path, extra: str, task: str = "binary", env: dict | None = None):
    p = tmp_path / "n.toml"
    p.write_text(BINARY.format(task=task) + extra)
    return load_settings(p, env=env or {})


def test_no_cost_matrix_changes_nothing(tmp_path):
    s = _load(tmp_path, "")
    assert not s.value.enabled and s.value_model() is None and s.scoring.threshold == 0.5 and s.gate.metric == "task"


def test_a_binary_and_a_regression_matrix(tmp_path):
    s = _load(tmp_path, "[value]\ntp = 10\nfp = -2\nfn = -5\ntn = 0\ncurrency = 'EUR'\n[scoring]\nthreshold = 'value'\n")
    assert s.value_model() == M and s.scoring.threshold == "value"
    r = _load(tmp_path, "[value]\nper_unit = 3\n", task="regression")
    assert r.value_model() == RegressionValue(3.0, 3.0)
    assert _load(tmp_path, "[value]\nover = 1\nunder = 4\n", task="regression").value_model() == RegressionValue(1.0, 4.0)
    assert task_for("binary").value_keys == ("tp", "fp", "fn", "tn")


@pytest.mark.parametrize("task, extra, key, says", [
    ("binary", "[value]\ntp = 10\nfp = -2\ntn = 0\n", "value.fn", "missing: value.fn"),
    ("binary", "[value]\ntp = 10\nfp = 'two'\nfn = -5\ntn = 0\n", "value.fp", "must be a number"),
    ("binary", "[value]\ntp = 10\nfp = true\nfn = -5\ntn = 0\n", "value.fp", "got True"),
    ("binary", "[value]\ntp = 10\nfp = nan\nfn = -5\ntn = 0\n", "value.fp", "finite"),
    ("binary", "[value]\ntp = 1\nfp = -1\nfn = -1\ntn = 0\nover = 2\n", "value.over", "not part of a binary cost matrix"),
    ("regression", "[value]\nover = 1\n", "value.under", "missing: value.under"),
    ("regression", "[value]\nover = -1\nunder = 1\n", "value.over", "greater than or equal to 0"),
    ("regression", "[value]\nper_unit = 1\nover = 2\n", "value.per_unit", "per_unit alone"),
    ("regression", "[value]\ntp = 1\n", "value.tp", "not part of a regression cost matrix"),
    ("multiclass", "[value]\ntp = 1\n", "value", "multiclass, which has no cost matrix"),
    ("binary", "[scoring]\nthreshold = 'value'\n", "scoring.threshold", "set the cost matrix"),
    ("regression", "[value]\nper_unit = 1\n[scoring]\nthreshold = 'value'\n", "scoring.threshold", "regression, which has none"),
    ("binary", "[scoring]\nthreshold = 'best'\n", "scoring.threshold", "or \"value\""),
    ("binary", "[gate]\nmetric = 'value'\n", "gate.metric", "set the [value] cost matrix"),
    ("binary", "[value]\ntp = 1\nfp = -1\nfn = -1\ntn = 0\n[gate]\nmetric = 'value'\n", "gate.margin", "in value per row"),
])
def test_a_bad_cost_matrix_is_named_when_the_settings_load(tmp_path, task, extra, key, says):
    with pytest.raises(ValueError) as err:
        _load(tmp_path, extra, task=task)
    text = str(err.value)
    assert f"\n  {key}: " in text and says in text and "n.toml" in text, text


def test_an_env_override_is_named_as_the_source(tmp_path):
    with pytest.raises(ValueError) as err:
        _load(tmp_path, "[value]\ntp = 10\nfp = -2\nfn = -5\ntn = 0\n", env={"NIGHTSHIFT__VALUE__TN": "zero"})
    assert "value.tn: " in str(err.value) and "NIGHTSHIFT__VALUE__TN='zero'" in str(err.value)


# -- the gate: the value gain on the metric's resamples ------------------------------------------
def _holdout(n: int, seed: int):
    rng = np.random.default_rng(seed)
    z = rng.normal(-1.0, 1.5, n)
    y = (rng.random(n) < 1 / (1 + np.exp(-z))).astype(np.int64)
    champion = 1 / (1 + np.exp(-(0.6 * z + rng.normal(0, 1.2, n))))
    challenger = 1 / (1 + np.exp(-(z + rng.normal(0, 0.5, n))))
    return y, champion, challenger


def test_the_value_gain_gets_its_interval_from_the_metrics_resamples():
    from nightshift.metrics import resample_indices
    from nightshift.value import row_values
    from training.evaluate import paired_bootstrap

    y, a, b = _holdout(600, 1)
    va, vb = row_values(M, y, a, 0.5), row_values(M, y, b, 0.3)  # each at its own threshold
    got = paired_bootstrap(y, a, b, n_boot=300, confidence=0.9, seed=4, values=(va, vb))
    naive = [vb[i].mean() - va[i].mean() for i in np.concatenate(list(resample_indices(600, 300, 4)))
             if 0 < y[i].sum() < len(i)]  # the resamples the AUC's interval counts
    v = got["business_value"]
    assert v["gain"] == pytest.approx(vb.mean() - va.mean()) and v["n_boot"] == got["n_boot"] == len(naive)
    assert v["ci_low"] == pytest.approx(np.quantile(naive, 0.05)) and v["ci_high"] == pytest.approx(np.quantile(naive, 0.95))
    assert v["champion"] == pytest.approx(va.mean()) and v["challenger"] == pytest.approx(vb.mean())
    # without a cost matrix the evidence is as before
    assert "business_value" not in paired_bootstrap(y, a, b, n_boot=300, confidence=0.9, seed=4)


def test_gate_metric_value_decides_on_the_value_with_the_same_rules():
    from nightshift.settings import GateSettings
    from training.evaluate import deciding, judge_challenger

    gate = GateSettings(metric="value", margin=0.1)
    base = {"metric": "auc", "champion": 0.80, "challenger": 0.80, "gain": 0.0, "ci_low": -0.01, "ci_high": 0.01, "n": 900,
            "confidence": 0.95, "too_few": ()}
    better = {**base, "business_value": {"champion": 1.0, "challenger": 1.4, "gain": 0.4, "ci_low": 0.2, "ci_high": 0.6, "se": 0.1}}
    assert judge_challenger(deciding(better, "task"), [], gate).verdict == "REJECT"  # the AUC shows no gain
    verdict = judge_challenger(deciding(better, "value"), [], gate)
    assert verdict.verdict == "PROMOTE" and verdict.basis == "superior" and "value 1.0000 -> 1.4000" in verdict.reasons[0]
    close = {**base, "business_value": {**better["business_value"], "gain": 0.0, "ci_low": -0.05, "ci_high": 0.05}}
    assert judge_challenger(deciding(close, "value"), [], gate, stale="drift").basis == "stale"  # within the value margin
    wide = {**base, "business_value": {**better["business_value"], "gain": 0.0, "ci_low": -0.2, "ci_high": 0.2}}
    assert judge_challenger(deciding(wide, "value"), [], gate, stale="drift").verdict == "INSUFFICIENT_EVIDENCE"
    with pytest.raises(ValueError, match="cost matrix"):
        deciding(base, "value")


def test_the_value_power_check_is_the_means_standard_error():
    from training.evaluate import detectable_value_gain

    v = np.random.default_rng(0).normal(1.0, 4.0, 10_000)
    p = detectable_value_gain(v, confidence=0.95, correlation=0.9)
    assert p["se_metric"] == pytest.approx(np.std(v, ddof=1) / 100)
    assert p["mde"] == pytest.approx(1.959964 * p["se_metric"] * np.sqrt(0.2), rel=1e-5)
    assert detectable_value_gain(v[:1], confidence=0.95, correlation=0.9)["mde"] == float("inf")


def test_churn_counts_flips_between_each_models_own_threshold():
    from training.evaluate import _churn_words, prediction_churn

    a, b = np.array([0.2, 0.4, 0.6]), np.array([0.2, 0.4, 0.6])
    same = prediction_churn(task_for("binary"), a, b, 0.5)
    assert same["value"] == 0 and "challenger_threshold" not in same
    moved = prediction_churn(task_for("binary"), a, b, 0.5, 0.3)
    assert moved["value"] == pytest.approx(1 / 3) and "thresholds 0.5 -> 0.3" in _churn_words(moved)


# -- the card records the threshold; ground truth values each day --------------------------------
def test_the_card_picks_and_records_the_threshold_only_when_asked(tmp_path):
    from model.calibration import fit_model_card, read_model_card, write_model_card

    y, _, p = _holdout(3000, 2)
    fixed = fit_model_card(task_for("binary"), y, p, 0.5, value_model=M)
    assert fixed.threshold is None and fixed.value["threshold"] == 0.5 and not fixed.value["picked"]
    assert fixed.value["per_row"] == pytest.approx(M.realized(y, p, p >= 0.5).mean())
    picked = fit_model_card(task_for("binary"), y, p, 0.5, value_model=M, pick_threshold=True)
    t, best = M.best_threshold(y, p)
    assert picked.threshold == t != 0.5 and picked.value["per_row"] == pytest.approx(best)
    assert best > fixed.value["per_row"]
    assert picked.reference.metrics["accuracy"] == pytest.approx(np.mean((p >= t) == (y == 1)))  # at the picked threshold
    write_model_card(tmp_path, picked)
    assert read_model_card(tmp_path) == picked
    assert fit_model_card(task_for("binary"), y, p, 0.5).value is None  # no cost matrix: no value


def test_ground_truth_values_each_day_at_the_decisions_scoring_made():
    from model.calibration import fit_platt
    from monitoring.ground_truth import DayInput, performance_rows

    rows_per_day, days = 4000, []
    for i in range(3):
        y, _, p = _holdout(rows_per_day, 10 + i)
        c = fit_platt(y, p).apply(p)
        decision = p >= 0.3  # the version decides at 0.3
        labelled = rows_per_day if i < 2 else 0
        days.append(DayInput(f"2026-01-0{i + 1}", "1", p, y[:labelled], p[:labelled], c, decision=decision,
                             y_decision=decision[:labelled], threshold=0.3))
    out = performance_rows(task_for("binary"), days, "2026-01-03", min_coverage=0.9, max_delay_days=30, window_days=3,
                           signal_min_coverage=0.5, value_model=M)
    first = out[0]
    y0, p0 = days[0].y, days[0].y_pred
    assert first["realized_value"] == pytest.approx(M.realized(y0, p0, p0 >= 0.3).mean())
    assert first["realized_value_total"] == pytest.approx(M.realized(y0, p0, p0 >= 0.3).sum())
    assert first["estimated_value_total"] == pytest.approx(first["estimated_value"] * rows_per_day)
    assert first["decision_threshold"] == 0.3
    assert abs(first["value_estimate_error"]) < 0.15  # calibrated: the estimate is near what the labels realized
    assert out[2]["realized_value"] is None and out[2]["estimated_value"] is not None  # before labels: the estimate
    plain = performance_rows(task_for("binary"), days, "2026-01-03", min_coverage=0.9, max_delay_days=30, window_days=3,
                             signal_min_coverage=0.5)
    assert "realized_value" not in plain[0]  # no cost matrix: no value columns written (null in the table)


def test_regression_values_realized_only():
    from monitoring.ground_truth import DayInput, performance_rows

    y = np.array([10.0, 10.0, 10.0])
    p = np.array([12.0, 7.0, 10.0])
    out = performance_rows(task_for("regression"), [DayInput("2026-01-01", "1", p, y, p)], "2026-01-02", min_coverage=0.9,
                           max_delay_days=30, window_days=3, signal_min_coverage=0.5, value_model=RegressionValue(1, 3))
    assert out[0]["realized_value_total"] == pytest.approx(-11.0) and out[0]["estimated_value"] is None
    assert out[0]["decision_threshold"] is None


def test_crossfit_values_each_half_at_the_other_halfs_threshold_and_is_not_optimistic():
    from nightshift.value import crossfit_values

    y, _, p = _holdout(2000, 5)
    values, (t0, t1) = crossfit_values(M, y, p, seed=3)
    fold = np.random.default_rng(3).permutation(len(y)) % 2
    assert t0 == M.best_threshold(y[fold == 1], p[fold == 1])[0] and t1 == M.best_threshold(y[fold == 0], p[fold == 0])[0]
    assert np.array_equal(values[fold == 0], M.realized(y[fold == 0], p[fold == 0], p[fold == 0] >= t0))
    assert np.array_equal(crossfit_values(M, y, p, seed=3)[0], values)  # deterministic
    # Over many holdouts: the in-sample value of the picked threshold beats what it earns on fresh rows;
    # the cross-fitted one does not (it is, if anything, a little below).
    fresh_y, _, fresh_p = _holdout(200_000, 99)
    in_sample, crossfit = [], []
    for seed in range(30):
        y, _, p = _holdout(1000, 100 + seed)
        t, v = M.best_threshold(y, p)
        truth = M.realized(fresh_y, fresh_p, fresh_p >= t).mean()
        in_sample.append(v - truth)
        crossfit.append(crossfit_values(M, y, p, seed=seed)[0].mean() - truth)
    assert np.mean(in_sample) > 0.05 and np.mean(crossfit) < np.mean(in_sample) - 0.05
