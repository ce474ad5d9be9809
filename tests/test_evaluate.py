"""The promotion gate: AUC against sklearn, the paired bootstrap, and table-driven verdicts."""

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from nightshift.settings import GateSettings
from training.evaluate import (
    INSUFFICIENT_EVIDENCE,
    PROMOTE,
    REJECT,
    Verdict,
    _resample_indices,
    auc,
    judge_challenger,
    judge_first_model,
    paired_bootstrap,
    segment_deltas,
)


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
    assert got["delta"] == pytest.approx(roc_auc_score(y, p_challenger) - roc_auc_score(y, p_champion), abs=1e-12)
    assert got["n"] == 200 and got["n_pos"] == int(y.sum())


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
    assert same["delta"] == same["ci_low"] == same["ci_high"] == 0.0


def test_segment_deltas():
    y, s = scores(3000, seed=7)
    seg = np.array(["a", "b", "c"], dtype=object)[np.arange(3000) % 3]
    seg[:10] = "tiny"
    better = s.copy()
    better[seg == "b"] += 2 * y[seg == "b"]  # the challenger only improves segment b
    out = segment_deltas(y, s, better, seg, min_rows=100)
    assert [d["segment"] for d in out] == ["a", "b", "c"]  # "tiny" is below min_rows
    by = {d["segment"]: d for d in out}
    assert by["a"]["delta"] == 0 and by["c"]["delta"] == 0 and by["b"]["delta"] > 0.1
    assert by["b"]["auc_challenger"] == pytest.approx(roc_auc_score(y[seg == "b"], better[seg == "b"]))


# -- judge_challenger (decisions, table-driven) -----------------------------------------
GATE = GateSettings(margin=0.005, min_gain=0.001, min_rows=500, segment_margin=0.03)
OK_SEGMENTS = [{"segment": "north", "n": 800, "auc_champion": 0.80, "auc_challenger": 0.79, "delta": -0.01}]
BAD_SEGMENT = [{"segment": "south", "n": 600, "auc_champion": 0.80, "auc_challenger": 0.76, "delta": -0.04}]


def ev(delta=0.01, ci_low=0.002, ci_high=0.018, n=2000, n_pos=400):
    return {"n": n, "n_pos": n_pos, "auc_champion": 0.80, "auc_challenger": 0.80 + delta,
            "delta": delta, "ci_low": ci_low, "ci_high": ci_high, "n_boot": 1000}


@pytest.mark.parametrize(
    "evidence, segments, verdict, says",
    [
        pytest.param(ev(), OK_SEGMENTS, PROMOTE, "+0.0100", id="clear-gain"),
        pytest.param(ev(n=499), OK_SEGMENTS, INSUFFICIENT_EVIDENCE, "499 rows, the gate needs 500", id="too-few-rows"),
        pytest.param(ev(n=2000, n_pos=19), [], INSUFFICIENT_EVIDENCE, "19 positives", id="too-few-positives"),
        pytest.param(ev(n=2000, n_pos=1981), [], INSUFFICIENT_EVIDENCE, "19 negatives", id="too-few-negatives"),
        pytest.param(ev(n=500, n_pos=20), [], PROMOTE, "", id="exactly-enough-rows"),
        pytest.param(ev(), BAD_SEGMENT, REJECT, "'south' loses -0.0400", id="segment-regression"),
        pytest.param(ev(delta=-0.02, ci_low=-0.03, ci_high=-0.01), [], REJECT, "entirely below 0", id="ci-below-zero"),
        pytest.param(ev(delta=0.0, ci_low=-0.008, ci_high=0.008), [], INSUFFICIENT_EVIDENCE, "-0.0080", id="ci-reaches-margin"),
        pytest.param(ev(delta=0.003, ci_low=-0.005, ci_high=0.01), [], INSUFFICIENT_EVIDENCE, "margin 0.0050", id="ci-low-equals-margin"),
        pytest.param(ev(delta=0.0005, ci_low=-0.004, ci_high=0.006), [], REJECT, "below the minimum 0.0010", id="gain-too-small"),
        pytest.param(ev(delta=0.001, ci_low=-0.004, ci_high=0.006), [], PROMOTE, "[-0.0040, +0.0060]", id="gain-equals-minimum"),
        pytest.param(ev(delta=-0.001, ci_low=-0.004, ci_high=-0.0001), [], REJECT, "below the minimum", id="worse-within-margin"),
    ],
)
def test_judge_challenger(evidence, segments, verdict, says):
    v = judge_challenger(evidence, segments, GATE)
    assert isinstance(v, Verdict) and v.verdict == verdict
    assert says in " ".join(v.reasons)
    assert v.as_dict() == {"verdict": verdict, "reasons": list(v.reasons)}


def test_too_few_rows_wins_over_a_segment_regression():
    assert judge_challenger(ev(n=100), BAD_SEGMENT, GATE).verdict == INSUFFICIENT_EVIDENCE


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
    v = judge_first_model(auc_value, n, n_pos, GateSettings())
    assert v.verdict == verdict
    assert says in " ".join(v.reasons)
