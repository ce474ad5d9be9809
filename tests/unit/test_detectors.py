"""The drift detectors as a registry: PSI on known distributions, the families (which results enter
Benjamini-Hochberg, which are judged at their own level, which never count), a detector added in a
test with one class and one registry line, `drift.detectors`, and old partitions still readable."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from monitoring.detectors import REGISTRY, DetectorResult, Family, Night, enabled
from monitoring.detectors.psi import EPS, band, category_shares, edges, numeric_shares, psi
from monitoring.drift import test_night as night_tests
from nightshift.settings import DriftSettings

REPO = Path(__file__).resolve().parents[2]
NUMERIC, CATEGORICAL = ["a", "b", "c"], ["colour"]
CFG = DriftSettings(mmd_sample_size=0)


def _table(n: int, seed: int, shift: float = 0.0, colours=("red", "green", "blue"), p=(0.5, 0.3, 0.2)) -> pa.Table:
    rng = np.random.default_rng(seed)
    return pa.table({
        "a": rng.normal(shift, 1, n), "b": rng.normal(0, 1, n), "c": rng.exponential(1, n),
        "colour": pa.array(rng.choice(list(colours), size=n, p=list(p)), pa.string()),
    })


def _kl(p, q):  # PSI by its definition, for the expected values below
    return sum((b - a) * math.log(b / a) for a, b in zip(p, q))


# -- PSI on known distributions ------------------------------------------------------------------
@pytest.mark.parametrize("ref, day, expected", [
    ([0.5, 0.5], [0.5, 0.5], 0.0),
    ([0.5, 0.5], [0.6, 0.4], 0.1 * math.log(1.2) - 0.1 * math.log(0.8)),
    ([0.25] * 4, [0.4, 0.3, 0.2, 0.1], _kl([0.25] * 4, [0.4, 0.3, 0.2, 0.1])),
    ([0.5, 0.5, 0.0], [0.4, 0.4, 0.2], _kl([0.5, 0.5, EPS], [0.4, 0.4, 0.2])),  # a bin empty in the reference: EPS
    ([0.5, 0.5], [1.0, 0.0], _kl([0.5, 0.5], [1.0, EPS])),  # and empty on the night
])
def test_psi_of_share_vectors(ref, day, expected):
    assert psi(np.array(ref), np.array(day)) == pytest.approx(expected, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("value, expected", [
    (0.0, "stable"), (0.0999, "stable"), (0.1, "moderate"), (0.2499, "moderate"), (0.25, "significant"), (3.0, "significant"),
])
def test_the_industry_bands(value, expected):
    assert band(value) == expected


def _normal_decile_psi(shift: float) -> float:
    """PSI of N(shift, 1) against N(0, 1) over N(0, 1)'s deciles, exactly (scipy's normal cdf)."""
    from scipy.stats import norm

    e = norm.ppf(np.linspace(0, 1, 11)[1:-1])
    day = np.diff(np.concatenate([[0.0], norm.cdf(e - shift), [1.0]]))
    return _kl([0.1] * 10, day)


@pytest.mark.parametrize("shift, expected_band", [
    (0.0, "stable"), (0.25, "stable"),  # 0.06
    (0.5, "moderate"),  # 0.238
    (1.0, "significant"),  # 0.93
])
def test_numeric_psi_on_a_shifted_normal_matches_its_exact_value(shift, expected_band):
    rng = np.random.default_rng(0)
    ref, day = numeric_shares(rng.normal(0, 1, 200_000), rng.normal(shift, 1, 200_000))
    assert len(ref) == 11 and ref[:10] == pytest.approx([0.1] * 10, abs=1e-4) and ref[10] == 0  # deciles + missing
    value = psi(ref, day)
    assert value == pytest.approx(_normal_decile_psi(shift), abs=0.005)
    assert band(value) == expected_band


@pytest.mark.parametrize("case, ref, day, n_edges, expected", [
    # 60% zeros: the six deciles at 0 merge into one edge (4 in all); the same distribution reads as stable
    ("ties", lambda r: np.where(r.random(50_000) < 0.6, 0.0, r.exponential(1, 50_000)),
     lambda r: np.where(r.random(50_000) < 0.6, 0.0, r.exponential(1, 50_000)), 4, (0.0, 0.01)),
    ("constant, unchanged", lambda r: np.full(1000, 3.0), lambda r: np.full(500, 3.0), 1, (0.0, 0.0)),
    # every row leaves the reference's one bin: large and finite, through EPS
    ("constant, moved", lambda r: np.full(1000, 3.0), lambda r: np.full(500, 4.0), 1,
     (2 * (1 - EPS) * math.log(1 / EPS) - 0.01, 2 * (1 - EPS) * math.log(1 / EPS) + 0.01)),
    # 20% of the night missing where the reference had none: the missing bin alone is significant
    ("missing appears", lambda r: r.normal(0, 1, 20_000),
     lambda r: np.where(r.random(20_000) < 0.2, np.nan, r.normal(0, 1, 20_000)), 9, (1.5, 2.0)),
    ("all missing reference", lambda r: np.full(100, np.nan), lambda r: np.full(100, np.nan), 0, (0.0, 0.0)),
])
def test_numeric_psi_is_robust_to_ties_constants_and_missing_values(case, ref, day, n_edges, expected):
    r, d = ref(np.random.default_rng(1)), day(np.random.default_rng(2))
    assert len(edges(r)) == n_edges, case
    value = psi(*numeric_shares(r, d))
    assert math.isfinite(value) and expected[0] <= value <= expected[1], (case, value)


def test_categorical_psi_is_per_category_share_with_unseen_categories_at_eps():
    ref = pa.array(["a"] * 50 + ["b"] * 50)
    day = pa.array(["a"] * 50 + ["b"] * 30 + ["c"] * 20)
    r, d = category_shares(ref, day)
    assert list(r) == [0.5, 0.5, 0.0] and list(d) == [0.5, 0.3, 0.2]
    assert psi(r, d) == pytest.approx(_kl([0.5, 0.5, EPS], [0.5, 0.3, 0.2]))


def test_psi_between_two_samples_of_one_distribution_reads_about_its_chance_level():
    """The docs' rule of thumb: about (bins - 1) * (1/n + 1/m) by chance alone (0.05 at 200 rows and 2,000)."""
    rng = np.random.default_rng(3)
    values = [psi(*numeric_shares(rng.normal(0, 1, 2000), rng.normal(0, 1, 200))) for _ in range(300)]
    assert np.mean(values) == pytest.approx(9 * (1 / 200 + 1 / 2000), rel=0.2)


# -- PSI in the night: reported, never the alarm ---------------------------------------------------
def test_psi_rows_are_reported_with_their_band_and_never_drift_or_count():
    ref, day = _table(10_000, 1), _table(2000, 2, shift=1.0, colours=("red", "green", "mauve"), p=(0.4, 0.4, 0.2))
    rows = night_tests(ref, day, NUMERIC, CATEGORICAL, CFG, seed=0)
    psi_rows = {r["feature"]: r for r in rows if r["kind"] == "psi"}
    assert list(psi_rows) == [*NUMERIC, *CATEGORICAL]
    assert psi_rows["a"]["band"] == "significant" and psi_rows["b"]["band"] == "stable"
    assert psi_rows["colour"]["band"] == "significant"  # a fifth of the night in a category the reference never had
    for r in psi_rows.values():
        assert r["family"] == "report_only" and r["detector"] == "psi" and r["p_value"] is None
        assert not r["drifted"] and not r["significant"] and r["threshold"] is None
    assert rows[-len(psi_rows):] == list(psi_rows.values())  # after every test: first matches by feature are the tests
    only_psi = night_tests(ref, day, NUMERIC, CATEGORICAL, CFG.model_copy(update={"detectors": ("psi",)}), seed=0)
    assert {r["kind"] for r in only_psi} == {"psi"} and any(r["band"] == "significant" for r in only_psi)
    assert not only_psi[0]["night_drift"] and only_psi[0]["night_p"] == 1.0  # significant PSI alone: no evidence


# -- a detector added in a test: one class, one registry line -------------------------------------
class Toy:
    """A made-up test: one row, its p-value and effect set by the test."""

    def __init__(self, family: Family, p: float, effect: float = 1.0):
        self.family, self.p, self.effect = family, p, effect

    def run(self, night: Night) -> list[DetectorResult]:
        return [DetectorResult("(toy)", "multivariate", "toy", self.effect, self.p, self.effect, "toy_effect", 0.5)]


@pytest.mark.parametrize("family, p, night_drift, in_bh, threshold", [
    # in the FDR family, its p-value is one of the family's: 0.001 among five quiet p-values moves the cut
    (Family.FDR, 0.001, True, True, None),
    # judged at its own level, it leaves the FDR family's threshold as it was and still counts
    (Family.OWN_LEVEL, 0.001, True, False, 0.05),
    (Family.OWN_LEVEL, 0.2, False, False, 0.05),
    # reported only: judged for the record, never tonight's evidence
    (Family.REPORT_ONLY, 0.001, False, False, 0.05),
])
def test_a_registered_toy_detector_lands_in_the_record_in_its_family(monkeypatch, lake, family, p, night_drift, in_bh,
                                                                     threshold):
    from nightshift.tables import drift as drift_table

    ref, day = _table(10_000, 1), _table(2000, 2)
    cfg = CFG.model_copy(update={"detectors": ("tabular", "unseen", "toy")})
    without = night_tests(ref, day, NUMERIC, CATEGORICAL, cfg.model_copy(update={"detectors": ("tabular", "unseen")}),
                          seed=0)
    monkeypatch.setitem(REGISTRY, "toy", Toy(family, p))  # the one registry line
    rows = night_tests(ref, day, NUMERIC, CATEGORICAL, cfg, seed=0)

    toy = next(r for r in rows if r["detector"] == "toy")
    assert toy["family"] == family.value and toy["p_value"] == p
    assert toy["drifted"] is (p < 0.05)  # significant either way, and its effect 1.0 reaches its floor 0.5
    assert rows[0]["night_drift"] is night_drift
    fdr_threshold = next(r for r in rows if r["detector"] == "tabular")["threshold"]
    assert (fdr_threshold != without[0]["threshold"]) is in_bh
    assert toy["threshold"] == (fdr_threshold if in_bh else threshold)

    drift_table.write(lake, "2026-05-01", rows)  # the record keeps the detector and its family
    stored = next(r for r in drift_table.read(lake, "2026-05-01") if r["feature"] == "(toy)")
    assert (stored["detector"], stored["family"], stored["drifted"]) == ("toy", family.value, toy["drifted"])


def test_a_test_that_can_set_the_alarm_needs_a_p_value(monkeypatch):
    class Report(Toy):
        def run(self, night):
            return [DetectorResult("(toy)", "multivariate", "toy", 1.0, None, 1.0, "toy_effect", None)]

    monkeypatch.setitem(REGISTRY, "toy", Report(Family.OWN_LEVEL, 0.0))
    with pytest.raises(TypeError, match="'toy' is in family own_level but returned a result without a p-value"):
        night_tests(_table(500, 1), _table(100, 2), NUMERIC, CATEGORICAL, CFG, seed=0)
    monkeypatch.setitem(REGISTRY, "toy", Report(Family.REPORT_ONLY, 0.0))  # as a report it is fine
    rows = night_tests(_table(500, 1), _table(100, 2), NUMERIC, CATEGORICAL, CFG, seed=0)
    assert not next(r for r in rows if r["detector"] == "toy")["drifted"]


# -- drift.detectors ----------------------------------------------------------------------------------
def test_drift_detectors_enables_a_subset_in_registry_order():
    assert [n for n, _ in enabled(None)] == list(REGISTRY)
    assert [n for n, _ in enabled(("psi", "tabular"))] == ["tabular", "psi"]
    rows = night_tests(_table(2000, 1), _table(300, 2), NUMERIC, CATEGORICAL,
                       CFG.model_copy(update={"detectors": ("psi", "tabular")}), seed=0)
    assert [r["detector"] for r in rows] == ["tabular"] * 4 + ["psi"] * 4


@pytest.mark.parametrize("names, message", [
    (("tabular", "ks"), "drift.detectors names 'ks', which is not registered; the registered detectors are: "
                        "tabular, unseen, mean, mmd, class_mix, output, psi"),
])
def test_an_unknown_detector_name_is_refused_with_the_known_names(names, message):
    with pytest.raises(ValueError, match=message):
        enabled(names)
    with pytest.raises(ValueError, match="'ks', which is not registered"):
        night_tests(_table(500, 1), _table(100, 2), NUMERIC, CATEGORICAL, DriftSettings(detectors=names), seed=0)


@pytest.mark.parametrize("value, message", [
    ([], "drift.detectors is empty"),
    (["psi", "tabular", "psi"], "names psi more than once"),
])
def test_the_settings_refuse_an_empty_or_repeated_detector_list(value, message):
    with pytest.raises(ValueError, match=message):
        DriftSettings(detectors=value)


def test_the_settings_take_detectors_from_the_environment(home, monkeypatch):
    from nightshift.settings import load_settings

    monkeypatch.setenv("NIGHTSHIFT__DRIFT__DETECTORS", '["tabular", "psi"]')
    assert load_settings().drift.detectors == ("tabular", "psi")


# -- the record: old partitions, words, the page -------------------------------------------------------
@pytest.mark.parametrize("backend", ["posix", "delta"])
def test_a_partition_written_before_the_detector_columns_still_reads(lake_on, backend):
    from nightshift.lake import DRIFT
    from nightshift.tables import drift as drift_table

    lake = lake_on(backend)

    old_schema = pa.schema([f for f in drift_table.SCHEMA if f.name not in ("detector", "family", "band")])
    lake.commit(DRIFT, "2026-04-30", pa.Table.from_pylist(
        [{"feature": "a", "kind": "numeric", "test": "KS", "statistic": 0.2, "p_value": 0.001, "drifted": True,
          "effect_size": 0.2, "effect_metric": "ks_distance", "min_effect": 0.1, "day_drift": True}], schema=old_schema))
    drift_table.write(lake, "2026-05-01", [{"feature": "a", "kind": "psi", "test": "PSI (numeric)", "statistic": 0.3,
                                             "p_value": None, "effect_size": 0.3, "effect_metric": "psi", "drifted": False,
                                             "detector": "psi", "family": "report_only", "band": "significant"}])
    old = drift_table.read(lake, "2026-04-30")[0]
    assert old["detector"] is None and old["family"] is None and old["band"] is None and old["drifted"]
    history = drift_table.history(lake, ["feature", "kind", "band"]).to_pylist()
    assert sorted((r["ds"], r["band"]) for r in history) == [("2026-04-30", None), ("2026-05-01", "significant")]
    assert drift_table.words(drift_table.read(lake, "2026-05-01")[0]) == "a psi 0.300 (significant)"
    assert drift_table.words(old) == "a ks_distance 0.200 (floor 0.1, p=0.001)"
    drift_table.write(lake, "2026-04-30", [{**old, "detector": "tabular", "family": "fdr"}])  # rewritten: new columns
    assert drift_table.read(lake, "2026-04-30")[0]["family"] == "fdr"


def test_the_health_page_shows_psi_in_the_features_cell(lake):
    from airflow_integration import health
    from airflow_integration.page import drift_svg
    from nightshift.tables import drift as drift_table

    health.clear_cache()
    rows = night_tests(_table(5000, 1), _table(1000, 2, shift=1.0), NUMERIC, CATEGORICAL, CFG, seed=0)
    drift_table.write(lake, "2026-05-01", [{**r, "day_drift": True} for r in rows])
    m = health.drift_matrix(lake)
    assert m["features"] == ["a", "b", "c", "colour", "colour (unseen)", "(numeric means)"]  # no row of its own
    a = m["cells"]["a"][0]
    assert a["metric"] == "ks_distance" and a["band"] == "significant" and a["psi"] > 0.25 and a["drifted"]
    assert "; PSI " in drift_svg(m) and "(significant, reported only)" in drift_svg(m)
    # with PSI alone, its cells are PSI's, and never marked drifted
    health.clear_cache()
    only = night_tests(_table(5000, 1), _table(1000, 2, shift=1.0), NUMERIC, CATEGORICAL,
                       CFG.model_copy(update={"detectors": ("psi",)}), seed=0)
    drift_table.write(lake, "2026-05-01", [{**r, "day_drift": False} for r in only])
    m = health.drift_matrix(lake)
    assert m["features"] == [*NUMERIC, *CATEGORICAL] and m["cells"]["a"][0]["metric"] == "psi"
    assert not any(c[0]["drifted"] for c in m["cells"].values())
    assert 'class="cell drifted"' not in drift_svg(m)


def test_the_registry_imports_no_heavy_library():
    """Reading the registry (settings checks, the page) must not pay for alibi-detect, torch or scipy."""
    code = ("import sys; import monitoring.drift, monitoring.detectors; "
            "print(sorted(m for m in ('alibi_detect', 'torch', 'scipy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert out.stdout.strip() == "[]"
