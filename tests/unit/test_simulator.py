"""The simulator: determinism, late-label routing, scenarios, and drift that really hurts a model."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from nightshift.choices import TaskName
from nightshift.dates import add_days, days_between
from nightshift.lake import FEATURES, LABELS, Lake
from nightshift.settings import load_settings
from nightshift.spec import EVENT_DS, DatasetSpec
from simulator.land import simulate
from simulator.world import ARRIVAL_DS, SCENARIOS, LabelDelay, World

START = "2024-03-01"
DAYS, ROWS, ONSET = 8, 400, 3
DRIFTING = tuple(s for s in SCENARIOS if s != "none")


@pytest.fixture(scope="module")
def spec() -> DatasetSpec:
    return load_settings(env={}).dataset


@pytest.fixture(scope="module")
def lakes(spec, tmp_path_factory) -> dict[str, Lake]:
    """One small lake per scenario, same seed and onset."""
    out = {}
    for scenario in SCENARIOS:
        lake = Lake(str(tmp_path_factory.mktemp(scenario)))
        simulate(lake, spec, start=START, days=DAYS, rows_per_day=ROWS, scenario=scenario, onset=ONSET, seed=7, progress=False)
        out[scenario] = lake
    return out


def _days(n: int = DAYS) -> list[str]:
    return [add_days(START, i) for i in range(n)]


def _fingerprints(lake: Lake, table: str) -> list[str]:
    return [lake.fingerprint(table, ds) for ds in lake.partitions(table)]


# -- determinism ------------------------------------------------------------------------
def test_same_seed_same_bytes_different_seed_different(spec, tmp_path):
    def land(name: str, seed: int) -> Lake:
        lake = Lake(str(tmp_path / name))
        summary = simulate(lake, spec, start=START, days=5, rows_per_day=300, scenario="gradual-covariate", onset=2, seed=seed, progress=False)
        assert summary == {
            "start": START, "end": add_days(START, 4), "days": 5, "rows": 1500,
            "labels_landed": summary["labels_landed"], "scenario": "gradual-covariate", "onset_ds": add_days(START, 2),
        }
        return lake

    a, b, c = land("a", 1), land("b", 1), land("c", 2)
    for table in (FEATURES, LABELS):
        assert a.partitions(table) == _days(5)
        assert _fingerprints(a, table) == _fingerprints(b, table)
    assert all(x != y for x, y in zip(_fingerprints(a, FEATURES), _fingerprints(c, FEATURES)))


def test_a_day_does_not_depend_on_other_days(spec):
    world = World(spec, seed=3, scenario="incremental", onset=1)
    assert world.features(4, "2024-01-05", 50).equals(World(spec, seed=3, scenario="incremental", onset=1).features(4, "2024-01-05", 50))


def test_days_before_onset_identical_across_scenarios_and_differ_after(lakes):
    base = lakes["none"]
    for scenario in DRIFTING:
        lake = lakes[scenario]
        for i, ds in enumerate(_days()):
            same_features = lake.fingerprint(FEATURES, ds) == base.fingerprint(FEATURES, ds)
            same_labels = lake.fingerprint(LABELS, ds) == base.fingerprint(LABELS, ds)
            if i < ONSET:
                assert same_features and same_labels, (scenario, ds)
            elif scenario == "concept":  # inputs unchanged, labels drawn from another P(y|x)
                assert same_features, ds
            else:
                assert not same_features, (scenario, ds)
        # labels that arrive after onset include drifted days' labels, so they differ too
        assert lake.fingerprint(LABELS, _days()[-1]) != base.fingerprint(LABELS, _days()[-1]), scenario


# -- schema -----------------------------------------------------------------------------
def test_feature_and_label_schema(spec, lakes):
    lake = lakes["none"]
    feats = lake.read(FEATURES, START)
    assert feats.column_names == [spec.entity_id, *spec.numeric, *spec.categorical]
    assert spec.label not in feats.column_names
    assert feats.schema.field(spec.entity_id).type == pa.string()
    assert all(feats.schema.field(c).type == pa.float64() for c in spec.numeric)
    assert all(feats.schema.field(c).type == pa.string() for c in spec.categorical)
    all_feats = pa.concat_tables([lake.read(FEATURES, ds) for ds in _days()])
    assert pc.count_distinct(all_feats[spec.entity_id]).as_py() == DAYS * ROWS
    nan_share = np.isnan(all_feats.select(list(spec.numeric)).to_pandas().to_numpy()).mean(axis=0)
    assert 0 < nan_share.max() < 0.03 and (nan_share > 0).sum() <= 4
    for c in spec.categorical:
        values = set(all_feats[c].drop_null().to_pylist())
        assert all(v.startswith(f"{c}_") for v in values)
    # day 0: nothing can have arrived yet, but the partition is there, empty, with the schema
    empty = lake.read(LABELS, START)
    assert empty.num_rows == 0
    assert empty.schema.names == [spec.entity_id, EVENT_DS, spec.label]
    assert empty.schema.field(spec.label).type == pa.int64()


def test_world_adapts_to_another_spec(tmp_path):
    spec = DatasetSpec(entity_id="id", numeric=("a", "b", "c", "d", "e"), categorical=("shop",), label="bought")
    lake = Lake(str(tmp_path))
    simulate(lake, spec, start=START, days=3, rows_per_day=100, scenario="new-categories", onset=1, progress=False)
    assert lake.read(FEATURES, START).column_names == ["id", "a", "b", "c", "d", "e", "shop"]
    assert lake.read(LABELS, add_days(START, 2)).column_names == ["id", EVENT_DS, "bought"]


@pytest.mark.parametrize(
    "spec_kwargs",
    [dict(numeric=("a", "b", "c"), categorical=("k",)), dict(numeric=("a", "b", "c", "d"), categorical=())],
)
def test_world_needs_enough_features(spec_kwargs):
    spec = DatasetSpec(entity_id="id", label="y", **spec_kwargs)
    with pytest.raises(ValueError, match="at least 4 numeric and 1 categorical"):
        World(spec, seed=0)


def test_bad_arguments_fail_clearly(spec, tmp_path):
    lake = Lake(str(tmp_path))
    with pytest.raises(ValueError, match="valid scenarios: none, sudden-covariate"):
        World(spec, seed=0, scenario="tsunami")
    with pytest.raises(ValueError, match="valid scenarios"):
        simulate(lake, spec, start=START, days=3, rows_per_day=10, scenario="tsunami", progress=False)
    with pytest.raises(ValueError, match="days must be >= 1"):
        simulate(lake, spec, start=START, days=0, rows_per_day=10, progress=False)
    with pytest.raises(ValueError, match="rows_per_day must be >= 1"):
        simulate(lake, spec, start=START, days=3, rows_per_day=0, progress=False)
    with pytest.raises(ValueError, match="onset must be a day index in 0..2"):
        simulate(lake, spec, start=START, days=3, rows_per_day=10, scenario="concept", onset=3, progress=False)
    with pytest.raises(ValueError, match="YYYY-MM-DD"):
        simulate(lake, spec, start="March 1st", days=3, rows_per_day=10, progress=False)
    with pytest.raises(ValueError, match="fast_max_days"):
        LabelDelay(fast_max_days=40)
    assert lake.partitions(FEATURES) == []  # nothing landed by a refused call
    # `none` ignores the onset
    simulate(lake, spec, start=START, days=2, rows_per_day=10, scenario="none", onset=99, progress=False)


# -- late labels ------------------------------------------------------------------------
def test_labels_arrive_late_once_and_in_the_right_partition(spec, tmp_path):
    days, rows = 36, 150  # longer than the 30-day tail, so some labels are still out at the end
    delay = LabelDelay()
    lake = Lake(str(tmp_path))
    summary = simulate(lake, spec, start=START, days=days, rows_per_day=rows, seed=5, label_delay=delay, progress=False)
    assert lake.partitions(LABELS) == _days(days)
    landed = pa.concat_tables([lake.read(LABELS, ds).append_column("arrival", pa.repeat(pa.scalar(ds), lake.read(LABELS, ds).num_rows)) for ds in _days(days)]).to_pandas()
    assert len(landed) == summary["labels_landed"]
    assert landed[spec.entity_id].is_unique  # at most one label per feature row
    lag = np.array([days_between(e, a) for e, a in zip(landed[EVENT_DS], landed["arrival"])])
    assert lag.min() >= 1 and lag.max() <= delay.max_days
    assert (landed[spec.entity_id].str[:10] == landed[EVENT_DS]).all()
    assert set(landed[spec.label]) == {0, 1}

    # each label is the world's label for that row, routed to event_ds + its delay, and
    # every row whose label is due by the last day has landed
    world = World(spec, seed=5, label_delay=delay)
    expected = pd.concat(
        [world.labels(lake.read(FEATURES, ds), i, ds).to_pandas() for i, ds in enumerate(_days(days))], ignore_index=True
    )
    due = expected[expected[ARRIVAL_DS] <= _days(days)[-1]]
    merged = due.merge(landed, on=spec.entity_id, how="outer", suffixes=("", "_landed"), indicator=True)
    assert (merged["_merge"] == "both").all()
    assert (merged[ARRIVAL_DS] == merged["arrival"]).all()
    assert (merged[spec.label] == merged[f"{spec.label}_landed"]).all()
    assert (merged[EVENT_DS] == merged[f"{EVENT_DS}_landed"]).all()
    assert len(due) < days * rows  # the tail: some labels have not arrived yet


def test_label_delay_distribution():
    delay = LabelDelay()
    d = delay.draw(np.random.default_rng(0), 200_000)
    assert d.min() == 1 and d.max() == delay.max_days
    fast = d <= delay.fast_max_days
    assert fast.mean() == pytest.approx(delay.p_fast, abs=0.01)
    assert d[fast].mean() == pytest.approx(delay.fast_mean_days, abs=0.3)  # truncation pulls the mean down a little
    assert set(np.unique(d[~fast])) == set(range(delay.fast_max_days + 1, delay.max_days + 1))
    assert (LabelDelay(p_fast=1.0, fast_mean_days=1.0).draw(np.random.default_rng(0), 100) == 1).all()


# -- the world and its scenarios ----------------------------------------------------------
def test_ground_truth_base_rate_and_bayes_auc(spec):
    from sklearn.metrics import roc_auc_score

    world = World(spec, seed=0)
    feats = world.features(0, START, 20_000)
    p = world.probability(feats, 0)
    y, _ = world.draw_labels(feats, 0)
    assert 0.20 <= p.mean() <= 0.35
    assert 0.80 <= roc_auc_score(y, p) <= 0.93


def test_sudden_covariate_shifts_means_and_a_categorical(spec):
    world = World(spec, seed=0, scenario="sudden-covariate", onset=1)
    before, after = world.features(0, START, 5000).to_pandas(), world.features(1, add_days(START, 1), 5000).to_pandas()
    shift = after[list(spec.numeric)].mean() - before[list(spec.numeric)].mean()
    assert (shift.between(1.3, 1.7)).sum() >= 2
    assert (shift.abs() < 0.15).sum() >= len(spec.numeric) - 4
    tvd = [0.5 * (before[c].value_counts(normalize=True).sub(after[c].value_counts(normalize=True), fill_value=0).abs().sum()) for c in spec.categorical]
    assert max(tvd) > 0.2 and sorted(tvd)[-2] < 0.05


def test_gradual_incremental_recurrent_seasonal_shapes(spec):
    col = spec.numeric[0]

    def mean_shift(scenario: str, day: int) -> float:
        world = World(spec, seed=0, scenario=scenario, onset=2)
        return float(np.nanmean(world.features(day, START, 4000)[col].to_numpy()) - np.nanmean(World(spec, seed=0).features(day, START, 4000)[col].to_numpy()))

    assert mean_shift("gradual-covariate", 1) == 0
    g = [mean_shift("gradual-covariate", d) for d in (2, 6, 11, 20)]
    assert 0 < g[0] < g[1] < g[2] == pytest.approx(1.5) and g[3] == pytest.approx(1.5)
    inc = [mean_shift("incremental", d) for d in (2, 6, 11, 16)]
    assert inc == pytest.approx([0.15, 0.75, 1.5, 2.25])
    rec = [mean_shift("recurrent", d) for d in (2, 8, 9, 15, 16)]
    assert rec == pytest.approx([1.5, 1.5, 0.0, 0.0, 1.5])
    seas = [mean_shift("seasonal", d) for d in range(2, 16)]
    assert seas[0] == pytest.approx(1.5) and seas[7] == pytest.approx(1.5) and min(seas) < -1.0
    assert all(abs(s) > 0.1 for s in seas)


def test_concept_changes_p_of_y_given_x_not_the_inputs(spec, lakes):
    for ds in _days():
        assert lakes["concept"].fingerprint(FEATURES, ds) == lakes["none"].fingerprint(FEATURES, ds)
    concept, none = World(spec, seed=7, scenario="concept", onset=ONSET), World(spec, seed=7)
    for i in (ONSET - 1, ONSET, ONSET + 2):
        feats = none.features(i, START, 2000)
        gap = np.abs(concept.probability(feats, i) - none.probability(feats, i))
        assert (gap.max() == 0) if i < ONSET else (gap.mean() > 0.1), i


def test_new_categories_appear_only_after_onset(spec, lakes):
    lake = lakes["new-categories"]
    seen_before: dict[str, set] = {c: set() for c in spec.categorical}
    for ds in _days()[:ONSET]:
        t = lake.read(FEATURES, ds)
        for c in spec.categorical:
            seen_before[c] |= set(t[c].drop_null().to_pylist())
    t = lake.read(FEATURES, _days()[ONSET])
    new = {c: set(t[c].drop_null().to_pylist()) - seen_before[c] for c in spec.categorical}
    changed = [c for c in spec.categorical if new[c]]
    assert len(changed) == 1
    col = changed[0]
    assert len(new[col]) == 5
    share = pc.sum(pc.is_in(t[col], value_set=pa.array(sorted(new[col])))).as_py() / t.num_rows
    assert 0.15 < share < 0.35
    # the new values carry their own effect on the label
    world = World(spec, seed=7, scenario="new-categories", onset=ONSET)
    p = world.probability(t, ONSET)
    unknown = t.set_column(t.column_names.index(col), col, pa.array(["never-seen"] * t.num_rows))
    assert np.abs(p - world.probability(unknown, ONSET)).max() > 0.05


@pytest.mark.integration  # in make test, not make check: fits gradient boosting on whole simulated worlds (about a minute)
def test_sudden_covariate_drift_hurts_an_old_model_and_retraining_helps(spec):
    """An old model loses AUC on drifted rows; one fitted on drifted rows does clearly better there."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.metrics import roc_auc_score

    rows, onset = 3000, 3
    world = World(spec, seed=0, scenario="sudden-covariate", onset=onset)

    def frame(days: range) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
        xs, ys, ps = [], [], []
        for i in days:
            t = world.features(i, add_days(START, i), rows)
            ys.append(world.draw_labels(t, i)[0])
            ps.append(world.probability(t, i))
            xs.append(t.drop([spec.entity_id]).to_pandas())
        return pd.concat(xs, ignore_index=True), np.concatenate(ys), np.concatenate(ps)

    (xa, ya, pa_), (xb, yb, pb) = frame(range(onset)), frame(range(onset, 2 * onset))
    for c in spec.categorical:
        cats = sorted(set(xa[c].dropna()) | set(xb[c].dropna()))
        xa[c], xb[c] = pd.Categorical(xa[c], categories=cats), pd.Categorical(xb[c], categories=cats)
    n_train = 2 * rows  # two days to fit, the third to evaluate

    def fit(x, y):
        return HistGradientBoostingClassifier(categorical_features="from_dtype", max_iter=150, early_stopping=False, random_state=0).fit(x, y)

    old, new = fit(xa[:n_train], ya[:n_train]), fit(xb[:n_train], yb[:n_train])
    pre = roc_auc_score(ya[n_train:], old.predict_proba(xa[n_train:])[:, 1])
    post_old = roc_auc_score(yb[n_train:], old.predict_proba(xb[n_train:])[:, 1])
    post_new = roc_auc_score(yb[n_train:], new.predict_proba(xb[n_train:])[:, 1])
    bayes_pre, bayes_post = roc_auc_score(ya[n_train:], pa_[n_train:]), roc_auc_score(yb[n_train:], pb[n_train:])
    report = f"pre {pre:.3f} post-old {post_old:.3f} post-new {post_new:.3f} bayes {bayes_pre:.3f}/{bayes_post:.3f}"
    assert 0.80 <= pre <= 0.90, report
    assert pre - post_old >= 0.04, report
    assert post_new - post_old >= 0.03, report
    assert bayes_post - post_new < 0.06, report  # retraining recovers most of what is learnable


# -- the regression world -----------------------------------------------------------------
def _digest(world: World, days: int = 3, rows: int = 500) -> str:
    """A hash of what a world draws (features, labels, delays, E[y|x]) that does not depend on file formats.

    Floats enter at 9 significant digits: their last bits depend on the CPU's vector paths
    (numpy's exp/log differ between AVX2 and AVX-512 machines), and a draw is the same draw
    whatever machine made it.
    """
    import hashlib

    def floats(values) -> bytes:
        return repr([float(f"{v:.9g}") if isinstance(v, float) else v for v in values]).encode()

    h = hashlib.sha256()
    for i in range(days):
        ds = add_days(START, i)
        t = world.features(i, ds, rows)
        for c in t.column_names:
            h.update(c.encode())
            h.update(floats(t[c].to_pylist()))
        y, d = world.draw_labels(t, i)
        h.update(floats(y.tolist()))
        h.update(d.tobytes())
        labels = world.labels(t, i, ds)
        for c in labels.column_names:
            h.update(c.encode())
            h.update(floats(labels[c].to_pylist()))
        h.update(str(labels.schema).encode())
    return h.hexdigest()[:16]


def _same(a: pa.Table, b: pa.Table) -> bool:
    """Equal tables, NaN equal to NaN (Table.equals says NaN != NaN)."""
    return a.schema == b.schema and a.to_pandas().equals(b.to_pandas())


@pytest.fixture(scope="module")
def reg_spec(spec) -> DatasetSpec:
    return spec.model_copy(update={"task": TaskName.REGRESSION})


@pytest.mark.parametrize(
    "scenario, pinned",
    # computed with the code from before the regression world existed (b54bc8c^)
    [("none", "0dbad423ff1aceb0"), ("sudden-covariate", "a154c555186dcd7a"), ("concept", "1cfa68f709593513"), ("new-categories", "87bbc99c84e7cb83")],
)
def test_binary_world_draws_what_it_drew_before_regression_existed(spec, scenario, pinned):
    """Pinned before the regression world was added: adding a task must not move a binary world's numbers."""
    assert _digest(World(spec, seed=11, scenario=scenario, onset=1)) == pinned


def test_regression_labels_are_float_deterministic_and_share_features_and_delays(spec, reg_spec):
    reg, binary = World(reg_spec, seed=4, scenario="sudden-covariate", onset=1), World(spec, seed=4, scenario="sudden-covariate", onset=1)
    assert _digest(reg) == _digest(World(reg_spec, seed=4, scenario="sudden-covariate", onset=1))
    assert _digest(reg) != _digest(World(reg_spec, seed=5, scenario="sudden-covariate", onset=1))
    for i in (0, 2):
        t = reg.features(i, add_days(START, i), 300)
        assert _same(t, binary.features(i, add_days(START, i), 300))  # the task changes the label only
        y, delay = reg.draw_labels(t, i)
        assert y.dtype == np.float64 and len(np.unique(y)) > 250
        assert np.array_equal(y, np.round(y, 2))
        assert np.array_equal(delay, binary.draw_labels(t, i)[1])  # same late-label delays
        labels = reg.labels(t, i, add_days(START, i))
        assert labels.schema.field(reg_spec.label).type == pa.float64()
        assert np.array_equal(labels[reg_spec.label].to_numpy(), y)
    with pytest.raises(ValueError, match="World.expected"):
        reg.probability(t, 0)
    t = binary.features(0, START, 100)
    assert np.array_equal(binary.expected(t, 0), binary.probability(t, 0))


def test_regression_target_scale_and_explained_variance(reg_spec):
    from sklearn.metrics import r2_score

    world = World(reg_spec, seed=0)
    feats = world.features(0, START, 20_000)
    mean, (y, _) = world.expected(feats, 0), world.draw_labels(feats, 0)
    assert y.mean() == pytest.approx(50, abs=1) and y.std() == pytest.approx(10, abs=0.7)
    assert (y - mean).std() == pytest.approx(5, abs=0.2)  # the noise
    assert 0.70 <= r2_score(y, mean) <= 0.80  # the best any model can do before drift


def test_regression_lake_has_float_labels(reg_spec, tmp_path):
    lake = Lake(str(tmp_path))
    simulate(lake, reg_spec, start=START, days=4, rows_per_day=200, scenario="concept", onset=2, seed=3, progress=False)
    assert lake.read(LABELS, START).schema.field(reg_spec.label).type == pa.float64()  # the empty day 0 too
    landed = pa.concat_tables([lake.read(LABELS, ds) for ds in _days(4)])
    assert landed.schema.field(reg_spec.label).type == pa.float64() and landed.num_rows > 300
    assert 30 < pc.mean(landed[reg_spec.label]).as_py() < 70
    again = Lake(str(tmp_path / "again"))
    simulate(again, reg_spec, start=START, days=4, rows_per_day=200, scenario="concept", onset=2, seed=3, progress=False)
    assert _fingerprints(again, LABELS) == _fingerprints(lake, LABELS)


@pytest.mark.parametrize("scenario", DRIFTING)
def test_regression_scenarios_move_the_features_as_binary_does(spec, reg_spec, scenario):
    reg, binary = World(reg_spec, seed=2, scenario=scenario, onset=1), World(spec, seed=2, scenario=scenario, onset=1)
    for i in (0, 1, 3):
        assert _same(reg.features(i, add_days(START, i), 200), binary.features(i, add_days(START, i), 200))


def test_concept_changes_expected_y_given_x_in_regression(reg_spec):
    concept, none = World(reg_spec, seed=7, scenario="concept", onset=ONSET), World(reg_spec, seed=7)
    for i in (ONSET - 1, ONSET, ONSET + 2):
        feats = none.features(i, START, 2000)
        gap = np.abs(concept.expected(feats, i) - none.expected(feats, i))
        assert (gap.max() == 0) if i < ONSET else (gap.mean() > 4), (i, gap.mean())  # minutes


@pytest.mark.integration  # in make test, not make check: fits gradient boosting on whole simulated worlds (about a minute)
def test_sudden_covariate_drift_raises_an_old_regressors_rmse_and_refitting_lowers_it(reg_spec):
    """A regressor fitted before the drift loses accuracy on drifted rows; a refit on drifted rows wins it back."""
    from sklearn.ensemble import HistGradientBoostingRegressor
    from sklearn.metrics import r2_score, root_mean_squared_error

    rows, onset = 2000, 3
    world = World(reg_spec, seed=0, scenario="sudden-covariate", onset=onset)

    def frame(days: range) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
        xs, ys, ms = [], [], []
        for i in days:
            t = world.features(i, add_days(START, i), rows)
            ys.append(world.draw_labels(t, i)[0])
            ms.append(world.expected(t, i))
            xs.append(t.drop([reg_spec.entity_id]).to_pandas())
        return pd.concat(xs, ignore_index=True), np.concatenate(ys), np.concatenate(ms)

    (xa, ya, _), (xb, yb, mb) = frame(range(onset)), frame(range(onset, 2 * onset))
    for c in reg_spec.categorical:
        cats = sorted(set(xa[c].dropna()) | set(xb[c].dropna()))
        xa[c], xb[c] = pd.Categorical(xa[c], categories=cats), pd.Categorical(xb[c], categories=cats)
    n_train = 2 * rows  # two days to fit, the third to evaluate

    def fit(x, y):
        return HistGradientBoostingRegressor(categorical_features="from_dtype", max_iter=150, early_stopping=False, random_state=0).fit(x, y)

    old, new = fit(xa[:n_train], ya[:n_train]), fit(xb[:n_train], yb[:n_train])
    r2_pre = r2_score(ya[n_train:], old.predict(xa[n_train:]))
    pre = root_mean_squared_error(ya[n_train:], old.predict(xa[n_train:]))
    post_old = root_mean_squared_error(yb[n_train:], old.predict(xb[n_train:]))
    post_new = root_mean_squared_error(yb[n_train:], new.predict(xb[n_train:]))
    bayes_post = root_mean_squared_error(yb[n_train:], mb[n_train:])
    report = f"R2 pre {r2_pre:.3f} RMSE pre {pre:.2f} post-old {post_old:.2f} post-new {post_new:.2f} bayes-post {bayes_post:.2f}"
    assert 0.60 <= r2_pre <= 0.80, report
    assert post_old >= 1.2 * pre, report
    assert post_new <= 0.85 * post_old, report
    assert post_new - bayes_post < 1.0, report  # retraining recovers most of what is learnable
