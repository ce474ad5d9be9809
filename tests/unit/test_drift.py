"""The drift module itself: known shifted and unshifted samples, the size-dependent floors, unseen
categories, data-quality failures, MMD, and the alarm sequence across nights (CUSUM)."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest

from monitoring.drift import (
    MEAN_FEATURE,
    AlarmRule,
    AlarmState,
    advance,
    cusum_h,
    night_z,
    settle_alarm,
    simes,
    test_night as night_tests,
)
from monitoring.detectors.common import ks_floor as _ks_floor
from monitoring.detectors.common import tvd_floor as _tvd_floor
from nightshift.settings import DriftSettings

NUMERIC, CATEGORICAL = ["a", "b", "c"], ["colour"]
CFG = DriftSettings()
RULE = AlarmRule(k=0.5, h=3.5, quiet_nights_to_end=2, target_per_100_nights=0.5)


def _table(n: int, seed: int, shift: float = 0.0, colours=("red", "green", "blue"), p=(0.5, 0.3, 0.2)) -> pa.Table:
    rng = np.random.default_rng(seed)
    return pa.table({
        "a": rng.normal(shift, 1, n), "b": rng.normal(0, 1, n), "c": rng.exponential(1, n),
        "colour": pa.array(rng.choice(list(colours), size=n, p=list(p)), pa.string()),
    })


def _by(rows: list[dict], feature: str, kind: str | None = None) -> dict:
    return next(r for r in rows if r["feature"] == feature and (kind is None or r["kind"] == kind))


# -- one night: verdicts that match the statistics ---------------------------------------------
def test_unshifted_samples_drift_nowhere():
    rows = night_tests(_table(10_000, 1), _table(2000, 2), NUMERIC, CATEGORICAL, CFG, seed=0)
    assert not any(r["drifted"] for r in rows)
    assert rows[0]["night_p"] > 0.05 and not rows[0]["night_drift"]


def test_a_shifted_feature_drifts_alone_and_its_ks_distance_is_scipys():
    from scipy.stats import ks_2samp

    ref, day = _table(10_000, 1), _table(2000, 2, shift=0.5)
    rows = night_tests(ref, day, NUMERIC, CATEGORICAL, CFG, seed=0)
    a = _by(rows, "a", "numeric")
    assert a["drifted"] and a["significant"]
    assert a["statistic"] == pytest.approx(ks_2samp(ref.column("a").to_numpy(), day.column("a").to_numpy()).statistic)
    assert [r["feature"] for r in rows if r["drifted"] and r["kind"] != "multivariate"] == ["a"]
    assert _by(rows, MEAN_FEATURE)["drifted"]  # the means moved too: by 0.5 sd along 'a'
    assert rows[0]["night_drift"] and rows[0]["night_p"] < 1e-10


def test_a_categorical_frequency_change_drifts_by_total_variation():
    rows = night_tests(_table(10_000, 1), _table(2000, 2, p=(0.2, 0.3, 0.5)), NUMERIC, CATEGORICAL, CFG, seed=0)
    c = _by(rows, "colour", "categorical")
    assert c["drifted"] and c["effect_metric"] == "total_variation"
    assert c["effect_size"] == pytest.approx(0.3, abs=0.04)


def test_significant_but_below_the_floor_is_not_drift():
    """At large samples a tiny shift is significant; it must not drift unless its effect reaches the floor."""
    ref, day = _table(200_000, 1), _table(200_000, 2, shift=0.05)
    rows = night_tests(ref, day, NUMERIC, CATEGORICAL, CFG.model_copy(update={"mmd_sample_size": 0}), seed=0)
    a = _by(rows, "a", "numeric")
    assert a["significant"] and a["effect_size"] < a["min_effect"] == 0.1 and not a["drifted"]
    assert not rows[0]["night_drift"]


@pytest.mark.parametrize("n, m, expected", [
    (100, 10_000, 1.3581 * math.sqrt(10_100 / 1_000_000)),  # noise above the configured 0.1: the floor follows it
    (2000, 10_000, 0.1),  # noise below 0.1: the configured floor holds
    (50, 50, 1.3581 * math.sqrt(2 / 50)),
])
def test_the_ks_floor_is_never_below_the_noise_level_at_that_sample_size(n, m, expected):
    assert _ks_floor(n, m, 0.05, 0.1) == pytest.approx(expected, rel=1e-3)


def test_the_tvd_floor_is_the_null_quantile_of_total_variation():
    ref = np.repeat(np.arange(20), 500)  # 20 equally common categories, 10,000 rows
    small, large = _tvd_floor(ref, 200, 0.05, 0.1, 0), _tvd_floor(ref, 5000, 0.05, 0.1, 0)
    assert small > 0.15  # at 200 rows, 20 categories' sampling noise alone reaches a TVD above 0.15
    assert large == 0.1
    rng = np.random.default_rng(1)  # the quantile is right: about 5% of null draws exceed it
    draws = [0.5 * np.abs(np.bincount(rng.integers(0, 20, 200), minlength=20) / 200
                          - np.bincount(rng.integers(0, 20, 10_000), minlength=20) / 10_000).sum() for _ in range(2000)]
    assert np.mean(np.array(draws) >= small) == pytest.approx(0.05, abs=0.02)


def test_unseen_categories_are_counted_per_feature_and_named():
    ref = _table(10_000, 1)
    day = _table(2000, 2, colours=("red", "green", "mauve"), p=(0.5, 0.4, 0.1))
    rows = night_tests(ref, day, NUMERIC, CATEGORICAL, CFG, seed=0)
    u = _by(rows, "colour", "unseen")
    assert u["unseen_rows"] == int((day.column("colour").to_numpy(zero_copy_only=False) == "mauve").sum())
    assert u["unseen_values"] == "mauve" and u["drifted"] and u["p_value"] < 1e-10
    quiet = _by(night_tests(ref, _table(2000, 3), NUMERIC, CATEGORICAL, CFG, seed=0), "colour", "unseen")
    assert quiet["unseen_rows"] == 0 and not quiet["drifted"] and quiet["p_value"] == 1.0


@pytest.mark.parametrize("column, why", [
    (pa.nulls(2000, pa.float64()), "all 2000 sampled rows are null"),
    (pa.array(["1.5"] * 2000), "dtype string where the spec says numeric"),
])
def test_a_broken_feature_is_a_data_quality_failure_not_a_crash(column, why):
    day = _table(2000, 2).set_column(1, "b", column)
    rows = night_tests(_table(10_000, 1), day, NUMERIC, CATEGORICAL, CFG, seed=0)
    b = _by(rows, "b")
    assert b["test"] == "quality" and b["quality"] == why and b["drifted"]
    assert not _by(rows, "a")["drifted"]  # the others are still tested
    assert rows[0]["night_p"] == 0.0  # a data-quality failure is overwhelming evidence


def test_mmd_sees_a_joint_change_the_marginals_hide():
    """Two features whose correlation flips: each marginal is unchanged, the joint distribution is not."""
    def correlated(n, rho, seed):
        r = np.random.default_rng(seed)
        z = r.multivariate_normal([0, 0], [[1, rho], [rho, 1]], n)
        return pa.table({"a": z[:, 0], "b": z[:, 1], "c": r.exponential(1, n),
                         "colour": pa.array(r.choice(["red", "green"], n), pa.string())})

    def embed(t):
        return np.column_stack([t.column(c).to_numpy() for c in ("a", "b")]).astype(np.float32)

    cfg = CFG.model_copy(update={"mmd_sample_size": 400, "mmd_permutations": 200})
    moved = night_tests(correlated(5000, 0.9, 1), correlated(2000, -0.9, 2), NUMERIC, CATEGORICAL, cfg, seed=0, embed=embed)
    mmd = _by(moved, "(all features)")
    assert mmd["test"] == "MMD" and mmd["drifted"] and mmd["p_value"] <= 0.02
    assert not _by(moved, "a", "numeric")["drifted"] and not _by(moved, "b", "numeric")["drifted"]
    same = _by(night_tests(correlated(5000, 0.9, 1), correlated(2000, 0.9, 3), NUMERIC, CATEGORICAL, cfg, seed=0,
                           embed=embed), "(all features)")
    assert not same["drifted"] and same["p_value"] > 0.05


def _gaussian(n: int, seed: int, shift=(0.0,) * 6, rho: float = 0.3) -> pa.Table:
    cov = np.full((6, 6), rho) + np.eye(6) * (1 - rho)
    z = np.random.default_rng(seed).multivariate_normal(np.asarray(shift, float), cov, n)
    return pa.table({f"x{j}": z[:, j] for j in range(6)})


SIX = [f"x{j}" for j in range(6)]


def test_the_mean_test_is_hotellings_t2_with_its_f_p_value():
    """The statistic and p-value against a direct computation of the two-sample T² and its F distribution."""
    from scipy.stats import f as f_dist

    ref, day = _gaussian(4000, 1), _gaussian(300, 2, shift=(0.3, 0.3, 0, 0, 0, 0))
    row = _by(night_tests(ref, day, SIX, [], CFG, seed=0), MEAN_FEATURE)
    r = np.column_stack([ref.column(c).to_numpy() for c in SIX])
    x = np.column_stack([day.column(c).to_numpy() for c in SIX])
    z_r, z_x = (r - r.mean(0)) / r.std(0), (x - r.mean(0)) / r.std(0)
    n, m, p = 300, 4000, 6
    pooled = ((m - 1) * np.cov(z_r.T) + (n - 1) * np.cov(z_x.T)) / (n + m - 2)
    d = z_x.mean(0) - z_r.mean(0)
    t2 = d @ np.linalg.solve(pooled, d) / (1 / n + 1 / m)
    assert row["test"] == "Hotelling T2" and row["kind"] == "multivariate"
    assert row["statistic"] == pytest.approx(t2, rel=1e-6)
    assert row["p_value"] == pytest.approx(f_dist.sf(t2 * (n + m - p - 1) / (p * (n + m - 2)), p, n + m - p - 1), rel=1e-6)
    assert row["effect_size"] == pytest.approx(math.sqrt(d @ np.linalg.solve(pooled, d)), rel=1e-6)
    assert row["drifted"]


@pytest.mark.parametrize("case, ref, day, rho, drifted", [
    ("unshifted", (4000, 1, (0,) * 6), (300, 2, (0,) * 6), 0.3, False),
    # two strongly correlated features moving apart by 0.06 sd each: each KS distance is about 0.024, far
    # below its floor of 0.1, but in their own correlation the means are about 0.27 sd apart
    ("a small shift against the correlation", (4000, 1, (0,) * 6), (2000, 3, (0.06, -0.06, 0, 0, 0, 0)), 0.9, True),
    ("the same shift on 30 rows: below the noise level", (4000, 1, (0,) * 6), (30, 3, (0.06, -0.06, 0, 0, 0, 0)), 0.9,
     False),
    # at 20,000 rows 0.05 sd is significant, but below min_effect_mean (0.2): not drift
    ("significant but below the floor", (20000, 1, (0,) * 6), (20000, 4, (0.05,) * 6), 0.3, False),
])
def test_the_mean_test_verdicts(case, ref, day, rho, drifted):
    rows = night_tests(_gaussian(*ref, rho=rho), _gaussian(*day, rho=rho), SIX, [], CFG, seed=0)
    row = _by(rows, MEAN_FEATURE)
    assert row["drifted"] is drifted, case
    assert row["drifted"] == (row["p_value"] < CFG.p_val and row["effect_size"] >= row["min_effect"])
    if case == "a small shift against the correlation":
        assert not any(r["drifted"] for r in rows if r["kind"] == "numeric")
    if case == "significant but below the floor":
        assert row["significant"] and row["min_effect"] == CFG.min_effect_mean


def test_the_mean_tests_floor_is_its_noise_level_and_its_level_holds_on_skewed_data_with_missing_values():
    """Under no change the test drifts at about its level (exponential, 20% missing), and the floor is the
    distance that level allows at those sizes: wider at 200 rows than at 2,000."""
    def skewed(n, seed):
        r = np.random.default_rng(seed)
        cols = {f"x{j}": r.exponential(1, n) + 0.5 * r.normal(0, 1, n) for j in range(6)}
        cols["x0"] = np.where(r.random(n) < 0.2, np.nan, cols["x0"])
        return pa.table(cols)

    ref = skewed(10_000, 0)
    rows = [_by(night_tests(ref, skewed(200, s), SIX, [], CFG, seed=0), MEAN_FEATURE) for s in range(1, 401)]
    assert 0.025 <= np.mean([r["significant"] for r in rows]) <= 0.08
    big = _by(night_tests(ref, skewed(2000, 999), SIX, [], CFG.model_copy(update={"min_effect_mean": 0}), seed=0),
              MEAN_FEATURE)
    assert rows[0]["min_effect"] > 2.5 * big["min_effect"] > 0


def test_the_mean_test_skips_what_it_cannot_test():
    """A constant reference column leaves the test; one row, no numeric feature, or the test off: no row."""
    ref, day = _gaussian(2000, 1), _gaussian(300, 2)
    ref = ref.set_column(0, "x0", pa.array(np.ones(2000)))
    assert _by(night_tests(ref, day, SIX, [], CFG, seed=0), MEAN_FEATURE)["p_value"] > 0.01
    assert not [r for r in night_tests(_gaussian(2000, 1), _gaussian(1, 2), SIX, [], CFG, seed=0)
                if r["feature"] == MEAN_FEATURE]
    assert not [r for r in night_tests(_table(2000, 1), _table(300, 2), [], CATEGORICAL, CFG, seed=0)
                if r["feature"] == MEAN_FEATURE]
    off = CFG.model_copy(update={"mean_test": False})
    assert not [r for r in night_tests(_gaussian(2000, 1), _gaussian(300, 2), SIX, [], off, seed=0)
                if r["feature"] == MEAN_FEATURE]


def test_the_model_output_is_reported_but_does_not_raise_the_nights_evidence():
    ref = _table(10_000, 1)
    rows = night_tests(ref, _table(2000, 2), NUMERIC, CATEGORICAL, CFG, seed=0,
                       ref_out=np.random.default_rng(0).random(10_000), day_out=np.random.default_rng(1).random(2000) ** 3)
    assert _by(rows, "__score__")["drifted"]
    assert not rows[0]["night_drift"]


def test_a_kept_time_index_is_reported_but_does_not_raise_the_nights_evidence():
    ref, day = _table(10_000, 1), _table(2000, 2)
    ref = ref.append_column("year", pa.array(np.full(10_000, 2019)))
    day = day.append_column("year", pa.array(np.full(2000, 2020)))  # a new year: every value unseen
    counted = night_tests(ref, day, [*NUMERIC, "year"], CATEGORICAL, CFG, seed=0)
    assert _by(counted, "year")["drifted"] and counted[0]["night_drift"]  # as any feature, it would alarm
    rows = night_tests(ref, day, [*NUMERIC, "year"], CATEGORICAL, CFG, seed=0, time_index=("year",))
    assert _by(rows, "year")["drifted"]  # reported
    assert not rows[0]["night_drift"] and rows[0]["night_p"] > 0.05  # but not tonight's evidence
    assert not _by(rows, MEAN_FEATURE)["drifted"]
    shifted = night_tests(ref, _table(2000, 2, shift=0.5).append_column("year", pa.array(np.full(2000, 2020))),
                          [*NUMERIC, "year"], CATEGORICAL, CFG, seed=0, time_index=("year",))
    assert shifted[0]["night_drift"]  # other features' drift still counts


@pytest.mark.parametrize("p, expected", [
    ([0.01, 0.5, 0.9], 0.03),
    ([0.01, 0.02, 0.9], 0.03),
    ([1.0, 1.0], 1.0),
    ([], 1.0),
    ([0.0, 0.5], 0.0),
])
def test_simes(p, expected):
    assert simes(p) == pytest.approx(expected)


# -- across nights -----------------------------------------------------------------------------
Q, D = 0.6, 1e-12  # a quiet night's p-value; an overwhelming night's


@pytest.mark.parametrize("nights, alarms, starts", [
    # (p, any test drifted tonight) per night -> the alarm after each night, and where episodes start
    ([(Q, False)] * 6, "......", []),
    ([(Q, False), (D, True), (D, True), (Q, False), (Q, False), (Q, False)], ".AAA..", [1]),  # ends after 2 quiet nights
    ([(D, True), (Q, False), (D, True), (Q, False), (Q, False)], "AAAA.", [0]),  # one quiet night does not end it
    ([(0.004, True)] * 4, ".AAA", [1]),  # moderate evidence accumulates: z=2.65 a night, h=3.5
    ([(0.5, False)] * 30, "." * 30, []),  # no evidence: z=0 - k drains the sum
    ([(0.2, False)] * 13, "." * 10 + "AA.", [10]),  # weak evidence that persists adds up, then the quiet nights end it
    ([(None, False), (D, True)], ".A", [1]),  # a skipped night changes nothing
])
def test_the_alarm_sequence(nights, alarms, starts):
    state, seen, begun = AlarmState(), [], []
    for i, (p, drifted) in enumerate(nights):
        before = state.alarm
        state = advance(state, p, drifted, "v1", f"d{i}", RULE)
        seen.append("A" if state.alarm else ".")
        if state.alarm and not before:
            begun.append(i)
            assert state.episode_start == f"d{i}"
    assert "".join(seen) == alarms and begun == starts


def test_a_new_reference_ends_the_episode_and_resets_the_sum():
    state = advance(AlarmState(), D, True, "v1", "d0", RULE)
    assert state.alarm and state.cusum > RULE.h
    state = advance(state, Q, False, "v2", "d1", RULE)
    assert not state.alarm and state.cusum == 0 and state.reference_id == "v2"


def test_weak_evidence_drains_the_sum():
    state = AlarmState(cusum=3.0, reference_id="v1")
    state = advance(state, 0.5, False, "v1", "d", RULE)  # z = 0: loses k
    assert state.cusum == pytest.approx(2.5)


def test_night_z_is_clipped():
    assert night_z(1e-300) == 10.0 and night_z(1.0) == -4.0 and night_z(0.5) == pytest.approx(0.0) and night_z(None) is None


@pytest.mark.parametrize("k, arl0", [(0.5, 200), (0.5, 1000), (1.0, 200)])
def test_cusum_h_gives_the_in_control_run_length_asked_for(k, arl0):
    """Simulated N(0,1) increments: the mean run length to a false alarm is the target (Siegmund is within ~10%)."""
    h = cusum_h(k, arl0)
    rng = np.random.default_rng(0)
    runs, sims = [], 400
    s = np.zeros(sims)
    t = np.zeros(sims, int)
    done = np.full(sims, -1)
    while (done < 0).any():
        live = done < 0
        s[live] = np.maximum(0, s[live] + rng.standard_normal(live.sum()) - k)
        t[live] += 1
        done[live & (s >= h)] = t[live & (s >= h)]
    runs = done
    assert np.mean(runs) == pytest.approx(arl0, rel=0.2)


def test_cusum_h_grows_with_the_target_run_length():
    assert cusum_h(0.5, 100) < cusum_h(0.5, 200) < cusum_h(0.5, 1000)


# -- settled in date order from the lake ---------------------------------------------------------
def _night(lake, ds: str, p: float | None, drifted: bool, reference: str = "v1") -> None:
    from nightshift.tables import drift as drift_table

    drift_table.write(lake, ds, [{"feature": "a", "kind": "numeric", "test": "KS", "statistic": 0.1, "p_value": p,
                                  "drifted": drifted, "night_p": p, "night_drift": drifted, "reference_id": reference,
                                  "model_version": reference[1:]}])


def test_settling_in_order_carries_the_state_and_replays_nights_never_settled(settings, lake):
    from nightshift.tables import drift as drift_table

    days = ["2026-05-01", "2026-05-02", "2026-05-03", "2026-05-04", "2026-05-05"]
    for ds, p, hit in zip(days, [Q, D, Q, Q, Q], [False, True, False, False, False]):
        _night(lake, ds, p, hit)
    # nights 1-3 are tested but only night 4 is settled: its state replays 1-3 first
    rows = settle_alarm(settings, days[3], lake=lake)
    assert rows[0]["day_drift"] is False and rows[0]["quiet_nights"] == 2 and rows[0]["episode_start"] is None
    assert drift_table.day_alarm(lake, days[1]) is None  # never settled itself
    for ds in days[:3]:
        settle_alarm(settings, ds, lake=lake)
    assert [drift_table.day_alarm(lake, d) for d in days[:4]] == [False, True, True, False]
    r = drift_table.read(lake, days[1])[0]
    assert r["episode_start"] == days[1] and r["alarm_method"] == "cusum" and r["cusum"] > r["cusum_h"] > 0
    assert r["alarm_target_per_100_nights"] == settings.drift.false_alarms_per_100_nights
    again = settle_alarm(settings, days[3], lake=lake)  # settling twice changes nothing
    assert again[0]["cusum"] == rows[0]["cusum"]


def test_a_skipped_night_has_no_alarm_and_carries_the_state(settings, lake):
    from monitoring.drift import skip_row
    from nightshift.tables import drift as drift_table

    _night(lake, "2026-05-01", D, True)
    settle_alarm(settings, "2026-05-01", lake=lake)
    drift_table.write(lake, "2026-05-02", [{**skip_row("features/ds=2026-05-02 has 0 rows"), "reference_id": "v1"}])
    settle_alarm(settings, "2026-05-02", lake=lake)
    assert drift_table.day_alarm(lake, "2026-05-02") is None
    assert "0 rows" in drift_table.read(lake, "2026-05-02")[0]["quality"]
    _night(lake, "2026-05-03", D, True)
    settle_alarm(settings, "2026-05-03", lake=lake)
    r = drift_table.read(lake, "2026-05-03")[0]
    assert r["day_drift"] and r["episode_start"] == "2026-05-01"  # the same episode, across the skipped night


# -- the reference -------------------------------------------------------------------------------
def test_a_baseline_reference_needs_its_period():
    with pytest.raises(ValueError, match="needs drift.baseline_start and drift.baseline_end"):
        DriftSettings(reference="baseline")
    with pytest.raises(ValueError, match="is after"):
        DriftSettings(reference="baseline", baseline_start="2026-02-01", baseline_end="2026-01-01")


def test_the_baseline_reference_is_drawn_once_from_its_period(settings, lake):
    from monitoring.drift import baseline_reference
    from nightshift.lake import FEATURES
    from simulator.world import World

    world = World(settings.dataset, seed=0)
    for i, ds in enumerate(["2026-01-01", "2026-01-02", "2026-01-03"]):
        lake.commit(FEATURES, ds, world.features(i, ds, 3000))
    s = settings.with_overrides({"drift.reference": "baseline", "drift.baseline_start": "2026-01-01",
                                 "drift.baseline_end": "2026-01-02", "training.reference_size": 1000})
    ref = baseline_reference(s, lake)
    assert ref.num_rows == 1000 and set(settings.dataset.features) <= set(ref.column_names)
    assert baseline_reference(s, lake).to_pandas().equals(ref.to_pandas())  # cached: the same rows every night
    with pytest.raises(ValueError, match="has no partition in 2025-01-01..2025-01-31"):
        baseline_reference(s.with_overrides({"drift.baseline_start": "2025-01-01", "drift.baseline_end": "2025-01-31"}),
                           lake)
