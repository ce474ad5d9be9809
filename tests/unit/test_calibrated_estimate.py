"""The calibrated estimate, pooled ground-truth metrics and their rules: calibrator, maturity, as known on D, windows."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pyarrow as pa
import pytest

from monitoring.ground_truth import DayInput, is_matured, performance_rows, recalibrations, signal_ready
from nightshift import metrics as m
from model.calibration import (CALIBRATION, UNCALIBRATED, Calibrator, ModelCard, fit_model_card, fit_platt,
                                    method_words, read_model_card, write_model_card)
from nightshift.task import task_for

BINARY, REGRESSION = task_for("binary"), task_for("regression")


def miscalibrated(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Labels drawn from a true probability, and scores that rank well but are over-confident and too high."""
    rng = np.random.default_rng(seed)
    z = rng.normal(-1.0, 1.5, n)
    y = (rng.random(n) < 1 / (1 + np.exp(-z))).astype(np.int64)
    return y, 1 / (1 + np.exp(-(2.0 * z + 1.0)))


# -- the calibrator ----------------------------------------------------------------------
def test_calibrated_scores_bring_the_estimates_bias_near_zero():
    y_fit, p_fit = miscalibrated(100_000, seed=1)  # a large holdout: what is left is the calibrator, not its noise
    calibrator = fit_platt(y_fit, p_fit)
    assert calibrator.a == pytest.approx(0.5, abs=0.08) and calibrator.b == pytest.approx(-0.5, abs=0.15)
    bias_raw, bias_cal = {}, {}
    for name in ("auc", "log_loss", "brier", "accuracy"):
        raw, cal = [], []
        for seed in range(2, 8):  # production days
            y, p = miscalibrated(20_000, seed)
            realized = BINARY.evaluate(y, p)[name]
            raw.append(BINARY.estimate(p)[name] - realized)
            cal.append(BINARY.estimate(p, calibrated=calibrator.apply(p))[name] - realized)
        bias_raw[name], bias_cal[name] = float(np.mean(raw)), float(np.mean(cal))
    # What is left is the calibrator's own estimation error on its holdout (a perfect Platt map gives < 0.001).
    assert abs(bias_cal["auc"]) < 0.005 and abs(bias_raw["auc"]) > 0.05
    for name in ("log_loss", "brier", "accuracy"):
        assert abs(bias_cal[name]) < 0.01 and abs(bias_cal[name]) < abs(bias_raw[name]) / 3, (name, bias_raw, bias_cal)


def test_platt_keeps_the_ranking_and_survives_a_separable_holdout():
    y = np.array([0] * 30 + [1] * 30)
    p = np.r_[np.linspace(0.01, 0.4, 30), np.linspace(0.6, 0.99, 30)]  # perfectly separable
    c = fit_platt(y, p)
    assert np.isfinite(c.a) and np.isfinite(c.b) and c.a > 0  # smoothed targets keep it finite
    q = c.apply(p)
    assert np.all(np.diff(q) > 0) and m.auc(y, q) == m.auc(y, p)


def test_platt_converges_from_far_off_scores():
    # Scores twice as confident as the truth and shifted by 2.5 logits: a plain Newton step from the
    # identity overshoots here and diverged (a ~ 1e10); the line search keeps it on the way down.
    rng = np.random.default_rng(3)
    z = rng.normal(-1.0, 1.5, 2000)
    y = (rng.random(2000) < 1 / (1 + np.exp(-z))).astype(np.int64)
    c = fit_platt(y, 1 / (1 + np.exp(-(2.0 * z + 2.5))))
    assert c.a == pytest.approx(0.5, abs=0.1) and c.b == pytest.approx(-1.25, abs=0.3)


def test_platt_refuses_one_class():
    with pytest.raises(ValueError, match="both classes"):
        fit_platt(np.zeros(10), np.linspace(0.1, 0.9, 10))


def test_model_card_round_trip_and_old_bundles(tmp_path):
    y, p = miscalibrated(2000)
    card = fit_model_card(BINARY, y, p, days=("2026-01-01",))
    write_model_card(tmp_path, card)
    back = read_model_card(tmp_path)
    assert back == card and back.reference.metric == "auc" and back.reference.se > 0
    np.testing.assert_allclose(back.calibrate(p), card.calibrator.apply(p))
    assert read_model_card(tmp_path / "nowhere") is UNCALIBRATED  # older bundles
    assert "uncalibrated" in method_words(UNCALIBRATED, BINARY.estimate_method)
    assert "Platt" in method_words(back, BINARY.estimate_method)
    assert method_words(back, REGRESSION.estimate_method).startswith("not estimated")
    (tmp_path / CALIBRATION).write_text(json.dumps({"format": "model.calibration/1", "calibrator": {"a": "x"}}))
    with pytest.raises(ValueError, match="is corrupt"):
        read_model_card(tmp_path)


def test_small_holdouts_and_regression_get_no_calibrator_but_a_reference():
    y, p = miscalibrated(40)
    small = fit_model_card(BINARY, y, p)
    assert small.calibrator is None and "needs 50 rows" in small.note and small.reference.rows == 40
    rng = np.random.default_rng(0)
    t = rng.normal(50, 10, 500)
    reg = fit_model_card(REGRESSION, t, t + rng.normal(0, 5, 500))
    assert reg.calibrator is None and reg.reference.metric == "rmse" and reg.reference.estimated is None
    assert reg.reference.realized == pytest.approx(5, rel=0.1) and reg.reference.se == pytest.approx(5 / np.sqrt(1000), rel=0.3)


def test_bundle_round_trip_with_and_without_calibration(tmp_path, spec):
    from tests.unit.test_robustness import features, tiny_bundle
    from model.bundle import load_bundle

    table = features(spec)
    old = tiny_bundle(tmp_path / "old", spec, table)
    assert not (old / CALIBRATION).exists() and load_bundle(old).card is UNCALIBRATED
    card = ModelCard(calibrator=Calibrator(a=0.7, b=-0.2, rows=100, positives=30))
    new = tiny_bundle(tmp_path / "new", spec, table)
    write_model_card(new, card)
    bundle = load_bundle(new)
    assert bundle.card == card
    p = bundle.predict(table)
    np.testing.assert_allclose(bundle.card.calibrate(p), card.calibrator.apply(p))


# -- pooled statistics -------------------------------------------------------------------
def test_pooled_statistics_equal_the_metrics_of_the_pooled_rows():
    days = [miscalibrated(n, seed) for seed, n in enumerate((300, 1000, 50))]
    y, p = np.concatenate([d[0] for d in days]), np.concatenate([d[1] for d in days])
    pooled, se, n = BINARY.from_stats(m.pool([BINARY.stats(a, b) for a, b in days]))
    exact = BINARY.evaluate(y, p)
    assert n == len(y) and pooled["auc"] == pytest.approx(exact["auc"], abs=2e-4)
    for k in ("log_loss", "brier", "accuracy"):
        assert pooled[k] == pytest.approx(exact[k], rel=1e-9)
    mean_of_days = np.mean([BINARY.evaluate(a, b)["auc"] for a, b in days])
    assert abs(mean_of_days - exact["auc"]) > 1e-3  # pooling is not averaging (the check can tell)
    # Hanley-McNeil agrees with a bootstrap of the AUC.
    idx = np.random.default_rng(0).integers(0, len(y), (400, len(y)))
    boot = np.std(m.resampled_aucs(y, *m.score_groups(p), idx), ddof=1)
    assert se == pytest.approx(boot, rel=0.2)
    rng = np.random.default_rng(1)
    ys = [rng.normal(50, 10, n) for n in (100, 400)]
    ps = [t + rng.normal(0, 5, len(t)) for t in ys]
    reg, reg_se, _ = REGRESSION.from_stats(m.pool([REGRESSION.stats(a, b) for a, b in zip(ys, ps)]))
    reg_exact = REGRESSION.evaluate(np.concatenate(ys), np.concatenate(ps))
    assert reg == pytest.approx(reg_exact, rel=1e-9) and 0 < reg_se < 0.5


def test_estimate_stats_match_the_exact_estimate():
    y, p = miscalibrated(5000)
    c = fit_platt(y, p).apply(p)
    binned = BINARY.from_stats(BINARY.estimate_stats(p, calibrated=c))[0]
    exact = BINARY.estimate(p, calibrated=c)
    for k, v in exact.items():
        assert binned[k] == pytest.approx(v, abs=2e-4)
    assert REGRESSION.estimate_stats(p) is None and REGRESSION.estimate(p) is None


# -- the maturity rule and the window ----------------------------------------------------------
MATURITY = [
    # coverage, age, min_coverage, max_delay, matured
    (0.0, 0, 0.9, 30, False),
    (0.89, 29, 0.9, 30, False),
    (0.9, 1, 0.9, 30, True),
    (0.1, 30, 0.9, 30, True),
    (1.0, 0, 1.0, 30, True),
]


@pytest.mark.parametrize("coverage,age,min_coverage,max_delay,matured", MATURITY)
def test_maturity_rule(coverage, age, min_coverage, max_delay, matured):
    assert is_matured(coverage, age, min_coverage, max_delay) is matured


@pytest.mark.parametrize("coverage,matured,min_coverage,ready", [
    (0.49, False, 0.5, False), (0.5, False, 0.5, True), (0.1, True, 0.5, True), (0.0, False, 0.5, False)])
def test_signal_ready(coverage, matured, min_coverage, ready):
    assert signal_ready(coverage, matured, min_coverage) is ready


def day(ds: str, version: str, n: int, labelled: int, seed: int, calibrated: bool = False) -> DayInput:
    y, p = miscalibrated(n, seed)
    return DayInput(ds, version, p, y[:labelled], p[:labelled], fit_platt(y, p).apply(p) if calibrated else None)


def test_performance_rows_pool_the_window_of_one_version_and_record_the_estimate_error():
    days = [day("2026-01-01", "1", 400, 400, 1), day("2026-01-02", "1", 400, 400, 2, True),
            day("2026-01-03", "2", 400, 300, 3), day("2026-01-04", "2", 400, 100, 4), day("2026-01-05", "2", 400, 0, 5)]
    rows = performance_rows(BINARY, days, "2026-01-05", min_coverage=0.9, max_delay_days=30, window_days=3,
                            signal_min_coverage=0.5)
    by = {r["prediction_ds"]: r for r in rows}
    assert [r["matured"] for r in rows] == [True, True, False, False, False]
    assert [r["signal_ready"] for r in rows] == [True, True, True, False, False]
    # estimate_error only once matured; uncalibrated days estimate from the raw scores.
    assert by["2026-01-01"]["estimate_error"] == pytest.approx(by["2026-01-01"]["estimated"] - by["2026-01-01"]["realized"])
    assert by["2026-01-03"]["estimate_error"] is None and by["2026-01-05"]["realized"] is None
    assert not by["2026-01-01"]["calibrated"] and by["2026-01-02"]["calibrated"]
    assert by["2026-01-01"]["estimated"] == by["2026-01-01"]["estimated_uncalibrated"]
    assert by["2026-01-02"]["estimated"] != by["2026-01-02"]["estimated_uncalibrated"]
    # Day 4's window is days 2..4 but day 2 was scored by version 1: only days 3 and 4 pool.
    w = by["2026-01-04"]
    assert (w["rolling_first_ds"], w["rolling_days"], w["rolling_labelled"], w["rolling_rows"]) == ("2026-01-03", 2, 400, 800)
    y = np.concatenate([days[2].y, days[3].y])
    p = np.concatenate([days[2].y_pred, days[3].y_pred])
    assert w["rolling_realized"] == pytest.approx(m.auc(y, p), abs=2e-4)
    assert w["rolling_realized_metrics"]["log_loss"] == pytest.approx(BINARY.evaluate(y, p)["log_loss"])
    assert w["rolling_realized_se"] == pytest.approx(m.hanley_mcneil_se(w["rolling_realized"], y.sum(), len(y) - y.sum()))
    assert by["2026-01-05"]["rolling_labelled"] == 400 and by["2026-01-05"]["rolling_estimated"] is not None


def shifted_day(ds: str, n: int, labelled: int, seed: int, stale: Calibrator) -> DayInput:
    """A day after the scores' meaning moved: the card's calibrator (fitted before) no longer fits."""
    y, p = miscalibrated(n, seed)
    p = 1 / (1 + np.exp(-(np.log(p / (1 - p)) + 1.5)))  # the same ranking, a different calibration
    return DayInput(ds, "1", p, y[:labelled], p[:labelled], stale.apply(p))


def test_a_refit_on_the_days_before_corrects_a_stale_calibrator_out_of_sample():
    y0, p0 = miscalibrated(50_000, seed=1)
    stale = fit_platt(y0, p0)  # the holdout's calibrator, before the move
    days = [shifted_day(f"2026-03-{i:02d}", 4000, 2000, 10 + i, stale) for i in range(1, 10)]
    days[-1] = replace(days[-1], y=days[-1].y[:0], y_pred=days[-1].y_pred[:0])  # tonight: no labels yet
    kw = dict(min_coverage=0.9, max_delay_days=30, window_days=3, signal_min_coverage=0.5)
    stale_rows = performance_rows(BINARY, days, "2026-03-09", **kw)
    fresh_rows = performance_rows(BINARY, days, "2026-03-09", recalibrate_days=7, **kw)
    truth = []
    for d in days:  # the realized metric of the day's scores on all of its rows, labels drawn as the day's were
        y, _ = miscalibrated(4000, int(d.prediction_ds[-2:]) + 10)
        truth.append(BINARY.evaluate(y, d.pred)["log_loss"])
    stale_err = [abs(r["estimated_metrics"]["log_loss"] - t) for r, t in zip(stale_rows, truth)]
    fresh_err = [abs(r["estimated_metrics"]["log_loss"] - t) for r, t in zip(fresh_rows, truth)]
    # The first day has no day before it: it keeps the card's calibrator and says so.
    assert fresh_rows[0]["estimate_method"] == stale_rows[0]["estimate_method"]
    assert "recalibrated" in fresh_rows[1]["estimate_method"] and "2026-03-01..2026-03-01" in fresh_rows[1]["estimate_method"]
    # Tonight's estimate (no labels of its own) is refitted on the newest days before it that hold
    # 5,000 labelled rows: three days of 2,000.
    assert "on 6000 labelled rows of prediction days 2026-03-06..2026-03-08" in fresh_rows[-1]["estimate_method"]
    assert np.mean(fresh_err[1:]) < 0.3 * np.mean(stale_err[1:])
    # The ranking is the model's: AUC's estimate moves, the realized AUC does not.
    assert fresh_rows[4]["realized"] == stale_rows[4]["realized"]


@pytest.mark.parametrize("labelled, min_rows, versions, expect", [
    (600, 500, "1111", ["2026-03-02", "2026-03-03", "2026-03-04"]),  # every day after the first
    (300, 500, "1111", ["2026-03-03", "2026-03-04"]),  # one day before is too few; two are enough
    (600, 500, "1122", ["2026-03-02", "2026-03-04"]),  # a new version starts without: its own labels only
    (0, 500, "1111", []),  # nothing labelled
])
def test_which_days_are_recalibrated(labelled, min_rows, versions, expect):
    days = []
    for i, v in enumerate(versions):
        y, p = miscalibrated(1000, i)
        days.append(DayInput(f"2026-03-{i + 1:02d}", v, p, y[:labelled], p[:labelled]))
    got = recalibrations(days, lookback_days=7, min_rows=min_rows)
    assert sorted(got) == expect
    if "2026-03-04" in got and versions == "1122":
        assert (got["2026-03-04"].first, got["2026-03-04"].last) == ("2026-03-03", "2026-03-03")
    assert recalibrations(days, lookback_days=0, min_rows=min_rows) == {}


@pytest.mark.parametrize("target_rows, lookback, first", [
    (500, 7, "2026-03-07"),  # one day holds it: the newest only
    (1500, 7, "2026-03-06"),  # two days
    (100_000, 7, "2026-03-01"),  # never enough: as far as the lookback allows
    (100_000, 3, "2026-03-05"),
])
def test_the_refit_reaches_back_only_as_far_as_the_rows_require(target_rows, lookback, first):
    days = []
    for i in range(8):
        y, p = miscalibrated(1000, i)
        days.append(DayInput(f"2026-03-{i + 1:02d}", "1", p, y, p))
    got = recalibrations(days, lookback_days=lookback, min_rows=500, target_rows=target_rows)["2026-03-08"]
    assert (got.first, got.last) == (first, "2026-03-07")


def test_the_refit_samples_big_days_and_is_deterministic():
    days = []
    for i in range(3):
        y, p = miscalibrated(200_000, i)
        days.append(DayInput(f"2026-03-{i + 1:02d}", "1", p, y, p))
    a = recalibrations(days, lookback_days=7, min_rows=500, max_rows=10_000)
    b = recalibrations(days, lookback_days=7, min_rows=500, max_rows=10_000)
    assert a == b and a["2026-03-03"].calibrator.rows == 2 * (10_000 // 7)


def test_regression_says_not_estimated():
    rng = np.random.default_rng(0)
    t = rng.normal(50, 10, 200)
    rows = performance_rows(REGRESSION, [DayInput("2026-01-01", "1", t + 1, t, t + 1)], "2026-01-20", min_coverage=0.9,
                            max_delay_days=30, window_days=7, signal_min_coverage=0.5)
    r = rows[0]
    assert r["estimated"] is None and r["estimate_error"] is None and r["estimated_metrics"] == {}
    assert r["estimate_method"].startswith("not estimated") and r["realized"] == pytest.approx(1.0)
    assert r["rolling_realized_metrics"]["mae"] == pytest.approx(1.0)


# -- as known on D ------------------------------------------------------------------------------
AS_KNOWN = [
    # as_of, labels known for event day 2026-02-01 (arrivals: 02 -> 3 ids, 04 -> 2 ids, 09 -> 1 id)
    ("2026-02-01", 0),
    ("2026-02-02", 3),
    ("2026-02-03", 3),
    ("2026-02-04", 5),
    ("2026-02-08", 5),
    ("2026-02-09", 6),
]


@pytest.mark.parametrize("as_of,known", AS_KNOWN)
def test_only_labels_arrived_by_the_night_are_known(lake, spec, as_of, known):
    from nightshift.lake import LABELS
    from nightshift.spec import EVENT_DS
    from nightshift.tables import labels as labels_table

    ids = iter(range(100))
    for arrival, n in (("2026-02-02", 3), ("2026-02-04", 2), ("2026-02-09", 1)):
        lake.commit(LABELS, arrival, pa.table({spec.entity_id: [f"e{next(ids)}" for _ in range(n)],
                                               EVENT_DS: ["2026-02-01"] * n, spec.label: pa.array([1, 0, 1][:n], pa.int64())}))
    assert labels_table.known(lake, spec, as_of, ["2026-02-01"]).table.num_rows == known
