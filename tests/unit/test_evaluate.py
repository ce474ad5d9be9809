"""The promotion gate: AUC against sklearn, the paired bootstrap for both tasks, the power check, and table-driven verdicts."""

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from nightshift.settings import GateSettings
from training.evaluate import (
    DRIFT_SIGNALS,
    INSUFFICIENT_EVIDENCE,
    PROMOTE,
    REJECT,
    STALE,
    SUPERIOR,
    Verdict,
    _resample_indices,
    auc,
    champion_staleness,
    choose_holdout,
    detectable_gain,
    judge_challenger,
    judge_first_model,
    judge_power,
    paired_bootstrap,
    prediction_churn,
    segment_deltas,
)
from nightshift.task import task_for

BINARY, REGRESSION = task_for("binary"), task_for("regression")


def scores(n, seed, signal=1.0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    return y, y * signal + rng.normal(size=n)


# -- auc (code) -----------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(5))
def test_auc_equals_sklearn_with_ties(seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 500)
    p = np.round(rng.random(500) + 0.3 * y, 1)  # few distinct values: many ties
    assert auc(y, p) == pytest.approx(roc_auc_score(y, p), abs=1e-12)


def test_auc_extremes():
    assert auc([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4]) == 1.0
    assert auc([0, 0, 1, 1], [0.4, 0.3, 0.2, 0.1]) == 0.0
    assert auc([0, 1, 0, 1], [0.5, 0.5, 0.5, 0.5]) == 0.5
    with pytest.raises(ValueError, match="one class"):
        auc([1, 1], [0.1, 0.2])


def test_weighted_auc_equals_auc_on_expanded_rows():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    p = np.round(rng.random(300) + 0.3 * y, 2)
    w = rng.integers(0, 4, 300)
    expanded = np.repeat(np.arange(300), w)
    assert auc(y, p, w) == pytest.approx(auc(y[expanded], p[expanded]), abs=1e-12)
    assert auc(y, p, w) == pytest.approx(roc_auc_score(y, p, sample_weight=w), abs=1e-12)


# -- paired bootstrap (code) ----------------------------------------------------------
def test_bootstrap_matches_a_naive_sklearn_loop_on_the_same_resamples():
    y, s = scores(200, seed=1)
    p_champion, p_challenger = np.round(s, 1), s + np.random.default_rng(2).normal(size=200)
    got = paired_bootstrap(y, p_champion, p_challenger, n_boot=200, confidence=0.9, seed=3)
    naive = []
    for idx in np.concatenate(list(_resample_indices(200, 200, 3))):
        if 0 < y[idx].sum() < len(idx):
            naive.append(roc_auc_score(y[idx], p_challenger[idx]) - roc_auc_score(y[idx], p_champion[idx]))
    assert got["n_boot"] == len(naive)
    assert got["ci_low"] == pytest.approx(np.quantile(naive, 0.05), abs=1e-12)
    assert got["ci_high"] == pytest.approx(np.quantile(naive, 0.95), abs=1e-12)
    assert got["gain"] == pytest.approx(roc_auc_score(y, p_challenger) - roc_auc_score(y, p_champion), abs=1e-12)
    assert got["n"] == 200 and got["metric"] == "auc"


def test_bootstrap_ci_contains_the_true_delta():
    # the challenger sees the signal more clearly; on a big sample the delta is near the truth
    rng = np.random.default_rng(0)
    n = 4000
    y = rng.integers(0, 2, n)
    noise = rng.normal(size=n)
    p_champion = y + 1.5 * noise
    p_challenger = y + 1.0 * noise
    big = 400_000
    yb, nb = rng.integers(0, 2, big), rng.normal(size=big)
    true_delta = auc(yb, yb + 1.0 * nb) - auc(yb, yb + 1.5 * nb)
    r = paired_bootstrap(y, p_champion, p_challenger, n_boot=500, confidence=0.95, seed=0)
    assert r["ci_low"] < true_delta < r["ci_high"]
    assert r["ci_low"] > 0  # and it is clearly a gain


def test_bootstrap_is_deterministic_and_equal_models_give_zero():
    y, s = scores(1000, seed=5)
    a = paired_bootstrap(y, s, s + 0.1 * np.random.default_rng(1).normal(size=1000), n_boot=300, confidence=0.95, seed=9)
    b = paired_bootstrap(y, s, s + 0.1 * np.random.default_rng(1).normal(size=1000), n_boot=300, confidence=0.95, seed=9)
    assert a == b
    same = paired_bootstrap(y, s, s.copy(), n_boot=300, confidence=0.95, seed=9)
    assert same["gain"] == same["ci_low"] == same["ci_high"] == 0.0


def test_regression_bootstrap_is_the_relative_rmse_reduction_on_the_same_resamples():
    rng = np.random.default_rng(4)
    y = rng.normal(50, 10, 400)
    p_champion, p_challenger = y + rng.normal(0, 6, 400), y + rng.normal(0, 4, 400)
    got = paired_bootstrap(y, p_champion, p_challenger, n_boot=200, confidence=0.9, seed=3, task=REGRESSION)
    rmse = lambda a, b: np.sqrt(np.mean((a - b) ** 2))  # noqa: E731
    naive = [1 - rmse(y[i], p_challenger[i]) / rmse(y[i], p_champion[i]) for i in np.concatenate(list(_resample_indices(400, 200, 3)))]
    assert got["metric"] == "rmse" and got["gain_unit"] == "relative RMSE reduction"
    assert got["gain"] == pytest.approx(1 - rmse(y, p_challenger) / rmse(y, p_champion), abs=1e-12)
    assert got["ci_low"] == pytest.approx(np.quantile(naive, 0.05), abs=1e-12)
    assert got["ci_high"] == pytest.approx(np.quantile(naive, 0.95), abs=1e-12)
    assert got["ci_low"] > 0.2  # 6 -> 4 is about a third less error


# -- power check (code and decisions) -----------------------------------------------------
def test_minimum_detectable_gain_shrinks_with_the_square_root_of_n():
    small, big = scores(600, seed=11), scores(24_000, seed=11)
    a = detectable_gain(*small, confidence=0.95, correlation=0.9, seed=0)
    b = detectable_gain(*big, confidence=0.95, correlation=0.9, seed=0)
    assert a["mde"] / b["mde"] == pytest.approx(np.sqrt(24_000 / 600), rel=0.25)
    # pairing: a higher correlation between the two models' estimates shrinks it
    c = detectable_gain(*small, confidence=0.95, correlation=0.99, seed=0)
    assert c["mde"] == pytest.approx(a["mde"] * np.sqrt(0.01 / 0.1), rel=1e-9)


def test_a_detectable_gain_for_regression_is_relative():
    rng = np.random.default_rng(0)
    y = rng.normal(50, 10, 5000)
    p = y + rng.normal(0, 5, 5000)
    r1 = detectable_gain(y, p, confidence=0.95, correlation=0.9, task=REGRESSION)
    r2 = detectable_gain(y * 100, p * 100, confidence=0.95, correlation=0.9, task=REGRESSION)  # same data, other unit
    assert r1["mde"] == pytest.approx(r2["mde"], rel=1e-9) and 0 < r1["mde"] < 0.05


@pytest.mark.parametrize(
    "n, mde, margin, enough, says, required",
    [
        (580, 0.0183, 0.005, False, "the holdout's 580 rows cannot resolve the margin: the minimum detectable gain is 0.0183", 7770),
        (12000, 0.0040, 0.005, True, "resolve a gain of 0.0040", 7680),
        (5000, 0.005, 0.005, True, "within the margin", 5000),
        (100, float("inf"), 0.005, False, "no defined", None),
    ],
)
def test_judge_power(n, mde, margin, enough, says, required):
    power = {"n": n, "mde": mde, "se_gain": mde / 1.96, "confidence": 0.95, "correlation": 0.9, "metric": "auc"}
    v = judge_power(power, GateSettings(margin=margin))
    assert v.enough is enough and says in " ".join(v.reasons)
    assert v.required_rows == required


def test_segment_deltas():
    y, s = scores(3000, seed=7)
    seg = np.array(["a", "b", "c"], dtype=object)[np.arange(3000) % 3]
    seg[:10] = "tiny"
    better = s.copy()
    better[seg == "b"] += 2 * y[seg == "b"]  # the challenger only improves segment b
    out = segment_deltas(y, s, better, seg, min_rows=100)
    assert [d["segment"] for d in out] == ["a", "b", "c"]  # "tiny" is below min_rows
    by = {d["segment"]: d for d in out}
    assert by["a"]["gain"] == 0 and by["c"]["gain"] == 0 and by["b"]["gain"] > 0.1
    assert by["b"]["challenger"] == pytest.approx(roc_auc_score(y[seg == "b"], better[seg == "b"]))


# -- judge_challenger (decisions, table-driven) -----------------------------------------
GATE = GateSettings(margin=0.005, min_gain=0.001, min_rows=500, segment_margin=0.03)
OK_SEGMENTS = [{"segment": "north", "n": 800, "champion": 0.80, "challenger": 0.79, "gain": -0.01}]
BAD_SEGMENT = [{"segment": "south", "n": 600, "champion": 0.80, "challenger": 0.76, "gain": -0.04}]
CHURN = {"n": 2000, "kind": "decision_flips", "value": 0.06, "threshold": 0.5, "mean_abs_change": 0.02}


# -- choose_holdout (decisions, table-driven) ------------------------------------------
DAYS = ["2026-02-01", "2026-02-02", "2026-02-03", "2026-02-04", "2026-02-05"]
ONSET = "2026-02-04"  # the holdout's newest two days are since it


def power(mde, n=900):
    return {"n": n, "mde": mde, "se_gain": mde / 1.96, "confidence": 0.95, "correlation": 0.9, "metric": "auc"}


@pytest.mark.parametrize(
    "onset, too_few, pow_, settings, since_onset, short, says",
    [
        pytest.param(None, (), None, {}, False, False, "", id="no-onset-on-record"),
        pytest.param(ONSET, (), power(0.004), {}, True, False, "900 rows of the 2 of 5 holdout days since the drift onset",
                     id="powered-rows-since-the-onset"),
        pytest.param(ONSET, (), power(0.011), {}, True, True, "promoted more often than not only with a gain above about +0.0060",
                     id="underpowered-still-judges-and-says-what-gain-it-takes"),
        pytest.param(ONSET, (), None, {"power_check": False}, True, False, "since the drift onset 2026-02-04",
                     id="no-power-check"),
        pytest.param(ONSET, (), power(0.011), {"onset_needs_power": True}, False, False,
                     "whole holdout: the 900 rows of the 2 of 5 holdout days since the drift onset 2026-02-04 cannot resolve",
                     id="needs-power-falls-back"),
        pytest.param(ONSET, (), power(0.004), {"onset_needs_power": True}, True, False, "since the drift onset",
                     id="needs-power-and-has-it"),
        pytest.param(ONSET, ("holdout has 300 rows, the gate needs 500",), None, {}, False, False,
                     "whole holdout: the 900 rows of the 2 of 5 holdout days since the drift onset 2026-02-04 are too few "
                     "(holdout has 300 rows", id="too-few-falls-back"),
        pytest.param(ONSET, (), power(0.004), {"onset_aware": False}, False, False, "gate.onset_aware is off", id="turned-off"),
        pytest.param("2026-02-06", (), None, {}, False, False, "none of its days is on or after the drift onset 2026-02-06",
                     id="onset-after-the-holdout"),
        pytest.param("2026-01-20", (), power(0.011), {}, False, False, "", id="onset-before-the-holdout-is-the-whole"),
        pytest.param("2026-02-01", (), power(0.011), {}, False, False, "", id="onset-on-the-first-holdout-day"),
    ],
)
def test_choose_holdout(onset, too_few, pow_, settings, since_onset, short, says):
    gate = GateSettings(margin=0.005, **settings)
    c = choose_holdout(onset, DAYS, 900, too_few, pow_, gate)
    assert (c.since_onset, c.power_short) == (since_onset, short)
    assert says in " ".join(c.reasons)
    if onset is None or not says:
        assert c.reasons == ()


def labels_with(n, n_pos):
    return np.r_[np.ones(n_pos, np.int64), np.zeros(n - n_pos, np.int64)]


def ev(delta=0.01, ci_low=0.002, ci_high=0.018, n=2000, n_pos=400):
    return {"n": n, "metric": "auc", "champion": 0.80, "challenger": 0.80 + delta, "gain": delta,
            "ci_low": ci_low, "ci_high": ci_high, "n_boot": 1000, "too_few": BINARY.too_few(labels_with(n, n_pos), 500)}


STALE_WHY = "a drift since 2026-02-04 (drift_persisted) and the challenger was judged on the rows since the onset (3 days)"


@pytest.mark.parametrize(
    "evidence, segments, stale, gate, verdict, basis, says",
    [
        pytest.param(ev(), OK_SEGMENTS, None, {}, PROMOTE, SUPERIOR, "+0.0100", id="clear-gain"),
        pytest.param(ev(), OK_SEGMENTS, STALE_WHY, {}, PROMOTE, SUPERIOR, "also known stale", id="clear-gain-stale-champion"),
        pytest.param(ev(n=499), OK_SEGMENTS, None, {}, INSUFFICIENT_EVIDENCE, None, "499 rows, the gate needs 500", id="too-few-rows"),
        pytest.param(ev(n=2000, n_pos=19), [], None, {}, INSUFFICIENT_EVIDENCE, None, "19 positives", id="too-few-positives"),
        pytest.param(ev(n=2000, n_pos=1981), [], None, {}, INSUFFICIENT_EVIDENCE, None, "19 negatives", id="too-few-negatives"),
        pytest.param(ev(n=500, n_pos=20), [], None, {}, PROMOTE, SUPERIOR, "", id="exactly-enough-rows"),
        pytest.param(ev(), BAD_SEGMENT, STALE_WHY, {}, REJECT, None, "'south' loses -0.0400", id="segment-regression"),
        pytest.param(ev(delta=-0.02, ci_low=-0.03, ci_high=-0.01), [], STALE_WHY, {}, REJECT, None, "entirely below 0",
                     id="ci-below-zero"),
        pytest.param(ev(delta=0.0, ci_low=-0.008, ci_high=0.008), [], STALE_WHY, {}, INSUFFICIENT_EVIDENCE, None, "-0.0080",
                     id="ci-reaches-margin"),
        pytest.param(ev(delta=0.003, ci_low=-0.005, ci_high=0.01), [], STALE_WHY, {}, INSUFFICIENT_EVIDENCE, None,
                     "margin 0.0050", id="ci-low-equals-margin"),
        # Non-inferior, not superior: only a stale champion is a reason to swap.
        pytest.param(ev(delta=0.0005, ci_low=-0.004, ci_high=0.006), [], None, {}, REJECT, None,
                     "no reason to swap: non-inferior within the margin 0.0050 but not shown superior", id="equal-fresh-champion"),
        pytest.param(ev(delta=0.0005, ci_low=-0.004, ci_high=0.006), [], STALE_WHY, {}, PROMOTE, STALE,
                     "known stale: a drift since 2026-02-04", id="equal-stale-champion"),
        pytest.param(ev(delta=0.004, ci_low=0.001, ci_high=0.007), [], None, {}, REJECT, None, "not above gate.min_gain 0.0010",
                     id="ci-low-equals-min-gain"),
        pytest.param(ev(delta=0.004, ci_low=0.0011, ci_high=0.007), [], None, {}, PROMOTE, SUPERIOR, "superior",
                     id="ci-low-just-above-min-gain"),
        pytest.param(ev(delta=0.002, ci_low=0.0005, ci_high=0.004), [], None, {"min_gain": 0.0}, PROMOTE, SUPERIOR,
                     "above gate.min_gain 0.0000", id="default-min-gain-is-zero"),
        pytest.param(ev(delta=-0.001, ci_low=-0.004, ci_high=-0.0001), [], None, {}, REJECT, None, "no reason to swap",
                     id="worse-within-margin"),
        pytest.param(ev(delta=-0.001, ci_low=-0.004, ci_high=-0.0001), [], STALE_WHY, {}, REJECT, None,
                     "shown worse on the rows judged", id="worse-within-margin-stale-champion"),
        # The churn a swap causes: recorded always, capped when gate.max_churn is set.
        pytest.param({**ev(), "churn": CHURN}, [], None, {}, PROMOTE, SUPERIOR, "flips 6.00% of the holdout's decisions",
                     id="churn-recorded"),
        pytest.param({**ev(), "churn": CHURN}, [], None, {"max_churn": 0.05}, REJECT, None, "more than gate.max_churn 0.05",
                     id="churn-over-the-cap"),
        pytest.param({**ev(), "churn": CHURN}, [], None, {"max_churn": 0.06}, PROMOTE, SUPERIOR, "flips 6.00%",
                     id="churn-at-the-cap"),
        pytest.param({**ev(delta=0.0005, ci_low=-0.004, ci_high=0.006), "churn": CHURN}, [], STALE_WHY, {"max_churn": 0.05},
                     REJECT, None, "raise gate.max_churn", id="churn-cap-holds-on-a-stale-champion-too"),
    ],
)
def test_judge_challenger(evidence, segments, stale, gate, verdict, basis, says):
    v = judge_challenger(evidence, segments, GATE.model_copy(update=gate), stale=stale)
    assert isinstance(v, Verdict) and (v.verdict, v.basis) == (verdict, basis)
    assert says in " ".join(v.reasons)
    assert v.as_dict() == {"verdict": verdict, "reasons": list(v.reasons), "basis": basis}


@pytest.mark.parametrize(
    "fired, onset, days, says",
    [
        pytest.param(set(), "2026-02-04", ["2026-02-04"], None, id="nothing-fired"),
        pytest.param({"drift_persisted"}, None, ["2026-02-04"], None, id="drift-without-an-onset"),
        pytest.param({"drift_persisted"}, "2026-02-04", ["2026-02-03", "2026-02-04"], None, id="judged-on-older-rows-too"),
        pytest.param({"drift_cusum"}, "2026-02-04", ["2026-02-04", "2026-02-05"], "a drift since 2026-02-04 (drift_cusum)",
                     id="drift-judged-since-the-onset"),
        pytest.param({"alarm_estimated_drop"}, "2026-02-04", [], None, id="no-judged-days"),
        pytest.param({"realized_change"}, None, ["2026-02-01"], "below its own holdout reference beyond noise (realized_change)",
                     id="realized-drop-needs-no-onset"),
        pytest.param({"model_age", "realized_below_floor"}, "2026-02-04", ["2026-02-04"], None, id="age-and-floor-are-not-staleness"),
    ],
)
def test_champion_staleness(fired, onset, days, says):
    got = champion_staleness(frozenset(fired), onset, days)
    assert got is None if says is None else says in got


def test_staleness_signals_are_the_policys():
    from monitoring import policy

    assert DRIFT_SIGNALS == policy.DRIFT_SIGNALS


@pytest.mark.parametrize("task, a, b, kind, value", [
    (BINARY, [0.1, 0.6, 0.7, 0.2], [0.1, 0.4, 0.8, 0.6], "decision_flips", 0.5),
    (task_for("regression"), [1.0, 2.0, 3.0], [1.5, 2.0, 2.0], "mean_abs_change", 0.5),
])
def test_prediction_churn(task, a, b, kind, value):
    got = prediction_churn(task, np.array(a), np.array(b), 0.5)
    assert (got["kind"], got["value"]) == (kind, pytest.approx(value))
    assert got["n"] == len(a)


def test_too_few_rows_wins_over_a_segment_regression():
    assert judge_challenger(ev(n=100, n_pos=40), BAD_SEGMENT, GATE).verdict == INSUFFICIENT_EVIDENCE


# -- judge_first_model (decisions, table-driven) ---------------------------------------
@pytest.mark.parametrize(
    "auc_value, n, n_pos, verdict, says",
    [
        (0.80, 1000, 200, PROMOTE, "0.8000 meets the bar 0.6500"),
        (0.65, 500, 20, PROMOTE, "0.6500"),
        (0.6499, 1000, 200, REJECT, "0.6499 is below the bar 0.6500"),
        (0.90, 499, 200, INSUFFICIENT_EVIDENCE, "499 rows, the gate needs 500"),
        (0.90, 1000, 19, INSUFFICIENT_EVIDENCE, "19 positives"),
        (0.90, 1000, 981, INSUFFICIENT_EVIDENCE, "19 negatives"),
    ],
)
def test_judge_first_model(auc_value, n, n_pos, verdict, says):
    v = judge_first_model(auc_value, "auc", 0.65, True, BINARY.too_few(labels_with(n, n_pos), 500), n)
    assert v.verdict == verdict
    assert says in " ".join(v.reasons)


@pytest.mark.parametrize(
    "r2, n, verdict, says",
    [(0.4, 800, PROMOTE, "r2 0.4000 meets the bar 0.0000"), (-0.1, 800, REJECT, "-0.1000 is below the bar 0.0000"),
     (0.4, 499, INSUFFICIENT_EVIDENCE, "499 rows"), (None, 800, INSUFFICIENT_EVIDENCE, "undefined")],
)
def test_judge_first_regression_model(r2, n, verdict, says):
    v = judge_first_model(r2, "r2", 0.0, True, REGRESSION.too_few(np.zeros(n), 500), n)
    assert v.verdict == verdict and says in " ".join(v.reasons)


@pytest.mark.parametrize("rows, days, required, mde, says, days_needed", [
    pytest.param(175, 14, None, None, "set training.holdout_max_days to at least 40 (now 14)", 40, id="too-few-rows"),
    pytest.param(900, 14, 8700, 0.0156, "or gate.margin to 0.0156, the gain these 900 rows can resolve (now 0.0050)", 136,
                 id="too-few-to-resolve-the-margin"),
    pytest.param(0, 0, None, None, "holds 0 rows over 0 labelled days", None, id="nothing-labelled"),
])
def test_judgeable_by_says_what_would_judge(rows, days, required, mde, says, days_needed):
    from training.evaluate import judge_settings, judgeable_by

    gate = GateSettings(margin=0.005)
    got = judgeable_by(rows, days, 14, required, mde, gate)
    assert says in got["words"] and got["days_needed"] == days_needed
    assert got["required_rows"] == max(required or 0, 500) and got["settings"] == judge_settings(gate, 14)
