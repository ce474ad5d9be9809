"""Drift detection for one night, and the alarm that follows it across nights.

The tests themselves are detectors (`monitoring.detectors`): one module each, one registry
line each, each returning typed results and declaring its family. This module runs the
enabled ones and judges their results by family; it holds no test of its own. alibi-detect
is under the Business Source License 1.1 (since 0.11.5): production use needs a licence from
Seldon. Its calls live in four detectors (`tabular`, `mmd`, `output`, `class_mix`); a team
that cannot take the licence replaces those modules, and nothing here changes.

What a night is tested against (`drift.reference`):
- `training_window` (the default): the fixed-size sample of the champion's training window
  saved in its bundle (`reference.parquet`). It answers "is the model's world still the world
  it learned?". After a retrain on the new regime the alarm ends, as it should.
- `baseline`: a fixed-size sample of a fixed period (`drift.baseline_start..baseline_end`),
  drawn once and cached in the lake. It answers "has the data moved since the baseline
  period?", whatever the model has learned since: the alarm lasts as long as the change.

One night's tests (pure: `test_night`):
- The day is a fixed-size, seeded sample of its rows, read in one streaming pass, so cost and
  power do not grow with the partition.
- A feature that is all null in the day's sample, missing, or no longer numeric where the
  spec says numeric, is a data-quality failure reported with its name (a row of its own,
  judged drifted), not a crash in a detector; the detectors test the others.
- The detectors that `drift.detectors` enables (all by default) run in registry order:
  `tabular` (KS per numeric feature, chi-squared per categorical), `unseen` (the share of rows
  in categories the reference never saw), `mean` (Hotelling's T² on the numeric means
  together), `mmd` (the joint distribution in the model's input space), `class_mix` and
  `output` (the model's own output), `psi` (the population stability index, with its bands).
  Each module's docstring says what it tests and how its floor is set.
- Significance alone is not a verdict: at large samples every test fires. A result drifts
  only if it is significant AND its effect reaches a floor that depends on the sample sizes:
  the larger of the configured minimum effect and the statistic's own noise level at those
  sizes (its (1 - p_val) quantile when nothing changed). Significance depends on the family:
  - `FDR` (the per-feature tests: `tabular`, `unseen`): its p-value survives
    Benjamini-Hochberg across every FDR result of the night, and no other;
  - `OWN_LEVEL` (`mean`, `mmd`, and the data-quality rows): other questions, judged at
    `p_val` on their own;
  - `REPORT_ONLY` (`class_mix`, `output`, `psi`): recorded and judged for the record (PSI
    gets a band instead: it has no p-value), and never counted towards the night: the
    model's output moves with drift the features already show, and PSI is a report.
- The night's evidence counts the FDR and OWN_LEVEL results, less the time-index features'.

Across nights (pure: `advance`): a night's evidence is the Simes p-value of its tests (a test
below its floor counts as p = 1), as a z-score. A one-sided CUSUM accumulates it:
S = max(0, S + z - k), and an alarm episode starts when S reaches h. h is set from the target
rate of false alarm episodes (`drift.false_alarms_per_100_nights`) by Siegmund's approximation
of the CUSUM's in-control run length. An episode ends after `drift.quiet_nights_to_end`
consecutive nights without a drifted test, or when the reference changes (a new champion
under `training_window`); either resets S. A sudden change is one night of overwhelming
evidence and alarms that night; a gradual one accumulates.

Why CUSUM: it controls the rate of false alarm *episodes* (its in-control average run length)
at a stated target whatever the daily volume, because its input is a p-value, whose null
distribution does not depend on n; it alarms on the first night of a large change (no
persistence delay); and it adds up moderate evidence that no single night shows. Alpha
spending and e-values control the chance of *any* false alarm over an unbounded horizon,
which costs power forever on a monitor meant to run for years; a k-of-n persistence rule
delays every alarm by k-1 nights.

The tests run in `detect_drift` (nights may run in parallel); the sequence needs the previous
night's state, so it is settled in the night's ordered part (`settle_alarm`, called by
`confirm_champion`). Until then the night's `day_drift` is null.
"""

from __future__ import annotations

import hashlib
import logging
import math
import posixpath
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import numpy as np
import pyarrow as pa

from monitoring.detectors import DetectorResult, Family, Night, enabled
from monitoring.detectors.class_mix import OUTPUT_CLASS_FEATURE  # noqa: F401 (the drift module's names, as before)
from monitoring.detectors.mean import MEAN_FEATURE  # noqa: F401
from nightshift.dates import ds_range
from nightshift.lake import DRIFT, FEATURES, PREDICTIONS, Lake
from nightshift.registry import Registry
from nightshift.tables import drift as drift_table
from nightshift.tables.predictions import scored_by
from nightshift.task import task_for

if TYPE_CHECKING:
    from nightshift.settings import DriftSettings, Settings

log = logging.getLogger("nightshift.drift")

_Z_MIN, _Z_MAX = -4.0, 10.0  # a night's evidence, clipped: one absurd night cannot hold an alarm for weeks
TRAINING_WINDOW, BASELINE = "training_window", "baseline"
METHOD = "cusum"


# -- one night ------------------------------------------------------------------------------
def detect_drift(settings: "Settings", ds: str, *, lake: Lake | None = None, settle: bool = True) -> dict:
    """Test night `ds` against the reference; commit `monitoring/drift/ds=D/`.

    With `settle` (the default) the night's alarm is settled at once from the previous
    night's state, as the in-process replay does; the nightly DAG tests nights in parallel
    and settles them in date order in `confirm_champion`.
    """
    from model.bundle import load_bundle

    lake = lake or Lake.of(settings)
    spec, cfg = settings.dataset, settings.drift
    enabled(cfg.detectors)  # a detector name the registry lacks fails here, before any work
    version = scored_by(lake, ds)
    if version is None:
        raise RuntimeError(f"predictions/ds={ds} is missing: score the night before checking drift")
    bundle = load_bundle(Registry(settings, lake).local_path(version.split(",")[-1]),
                         allow_code_drift=settings.model.allow_code_drift)
    reference, ref_kind, ref_id = reference_for(settings, lake, bundle, version)

    n_rows = lake.dataset(FEATURES, ds).count_rows()
    if n_rows == 0:
        rows = [skip_row(f"features/ds={ds} has 0 rows: nothing to test, the alarm state carries over")]
        log.warning("drift on %s skipped: features/ds=%s is empty", ds, ds)
    else:
        idx = sample_indices(n_rows, cfg.sample_size, ds)
        sample = take_rows(lake, FEATURES, ds, idx, [*spec.features])
        task = task_for(spec.task).from_schema(lake.dataset(PREDICTIONS, ds).schema.names)
        day_out = task.pred_of(take_rows(lake, PREDICTIONS, ds, idx, task.prediction_columns()))
        ref_out = task.align(bundle.predict(reference), bundle.preprocessor.classes)
        rows = test_night(reference, sample, spec.numeric, spec.categorical, cfg, seed=_seed(ds),
                          ref_out=ref_out, day_out=day_out, embed=lambda t: embed(bundle, t),
                          time_index=spec.time_index)
    for r in rows:
        r.update(model_version=version, reference_rows=reference.num_rows, sample_rows=0 if n_rows == 0 else len(idx),
                 reference_kind=ref_kind, reference_id=ref_id)
    drift_table.write(lake, ds, rows)
    if settle:
        rows = settle_alarm(settings, ds, lake=lake) or rows
    return summary(ds, rows)


def summary(ds: str, rows: list[dict]) -> dict:
    """What the night's tests found, and its alarm, in a small dict (the step's return value)."""
    first = rows[0] if rows else {}
    drifted = [r["feature"] for r in rows
               if r["drifted"] and r.get("family") != Family.REPORT_ONLY.value and r["kind"] != "skip"]
    score = [r for r in rows if r["kind"] == "score"]
    return {"ds": ds, "drift": bool(first.get("day_drift")), "night_drift": bool(first.get("night_drift")),
            "drifted_features": drifted, "score_drift": any(r["drifted"] for r in score),
            "night_p": first.get("night_p"), "cusum": first.get("cusum"), "episode_start": first.get("episode_start"),
            "model_version": first.get("model_version"), "sample_rows": first.get("sample_rows")}


def test_night(reference: pa.Table, sample: pa.Table, numeric: list[str], categorical: list[str],
               cfg: "DriftSettings", *, seed: int, ref_out: np.ndarray | None = None,
               day_out: np.ndarray | None = None, embed: Callable[[pa.Table], np.ndarray] | None = None,
               time_index: tuple[str, ...] | list[str] = ()) -> list[dict]:
    """Every enabled detector's results on one night, judged by family (pure; no lake).

    Benjamini-Hochberg runs across the FDR family only; own-level and report-only results with a
    p-value are judged at `cfg.p_val` alone; a result drifts if significant and at its floor. The
    rows are the FDR family's, the own-level family's, the data-quality rows, then the report-only
    family's, each in registry order.

    The first row of the result carries the night: `night_p` (the Simes p-value of its tests)
    and `night_drift` (whether any test drifted tonight). `day_drift` (the alarm) is settled
    later, from the sequence of nights.

    `time_index`: features that only index time (`dataset.time_index`). Their tests are
    reported like any other, but do not count towards the night (nor enter the mean test): a
    new year is drift by construction, and alone it must not start a retrain.
    """
    quality = _quality(reference, sample, numeric, categorical)
    night = Night(reference, sample, tuple(c for c in numeric if c not in quality),
                  tuple(c for c in categorical if c not in quality), cfg, seed, tuple(time_index), ref_out, day_out, embed)
    by_family: dict[Family, list[dict]] = {f: [] for f in Family}
    for name, detector in enabled(cfg.detectors):
        results = detector.run(night)
        if detector.family is not Family.REPORT_ONLY and any(r.p_value is None for r in results):
            raise TypeError(f"drift detector {name!r} is in family {detector.family.value} but returned a result without "
                            f"a p-value: a test that can set the alarm needs one; a report (no p-value, a band) belongs "
                            f"in Family.REPORT_ONLY")
        by_family[detector.family] += [r.row(name, detector.family) for r in results]
    _fdr(by_family[Family.FDR], cfg.p_val)  # Benjamini-Hochberg across the FDR family, and only there
    for r in by_family[Family.OWN_LEVEL] + by_family[Family.REPORT_ONLY]:
        _judge_at_level(r, cfg.p_val)
    rows = [*by_family[Family.FDR], *by_family[Family.OWN_LEVEL],
            *(quality_row(c, "numeric" if c in numeric else "categorical", why) for c, why in quality.items()),
            *by_family[Family.REPORT_ONLY]]
    counted = [r for r in rows if r["family"] != Family.REPORT_ONLY.value and r["feature"] not in time_index]
    night_p = simes([r["p_value"] if r["drifted"] or r["test"] == "quality" else 1.0 for r in counted])
    verdict = {"night_p": night_p, "night_drift": any(r["drifted"] for r in counted)}
    for r in rows:
        r.update(verdict)
    return rows


def _fdr(rows: list[dict], q: float) -> None:
    """Benjamini-Hochberg across the night's tests; a test drifts if significant and at its floor."""
    p = np.array([r["p_value"] for r in rows], np.float64)
    if not len(p):
        return
    order = np.argsort(p)
    passed = p[order] <= q * np.arange(1, len(p) + 1) / len(p)
    cut = float(p[order][np.nonzero(passed)[0].max()]) if passed.any() else 0.0
    threshold = cut if passed.any() else q / len(p)
    for r, pv in zip(rows, p):
        r["threshold"] = threshold
        r["significant"] = bool(passed.any() and pv <= cut)
        r["drifted"] = bool(r["significant"] and r["effect_size"] >= r["min_effect"])


def _judge_at_level(row: dict, level: float) -> None:
    """A test judged on its own at `level`: significant if p < level, drifted if its effect also reaches its floor.

    A report without a p-value (PSI) is neither.
    """
    if row["p_value"] is None:
        return
    row["threshold"] = level
    row["significant"] = bool(row["p_value"] < level)
    row["drifted"] = bool(row["significant"] and row["effect_size"] >= row["min_effect"])


def simes(p_values: list[float]) -> float:
    """The Simes combination: the smallest p-value at which Benjamini-Hochberg rejects anything."""
    p = np.sort(np.asarray([x for x in p_values if x is not None and not math.isnan(x)], np.float64))
    if not len(p):
        return 1.0
    return float(min(1.0, np.min(p * len(p) / np.arange(1, len(p) + 1))))


def sample_indices(n_rows: int, size: int, ds: str) -> np.ndarray:
    """A seeded, sorted sample of row positions: the same day always gets the same rows."""
    if n_rows <= size:
        return np.arange(n_rows)
    return np.sort(np.random.default_rng(_seed(ds)).choice(n_rows, size=size, replace=False))


def _seed(key: str) -> int:
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big")


def take_rows(lake: Lake, table: str, ds: str, idx: np.ndarray, columns: list[str]) -> pa.Table:
    """Rows at sorted positions `idx`, in one streaming pass (memory bounded by one batch)."""
    parts, offset = [], 0
    for batch in lake.batches(table, ds, 262_144, columns=columns):
        lo, hi = np.searchsorted(idx, [offset, offset + batch.num_rows])
        if hi > lo:
            parts.append(batch.take(pa.array(idx[lo:hi] - offset)))
        offset += batch.num_rows
    return pa.Table.from_batches(parts) if parts else pa.table({c: [] for c in columns})


# -- the reference ----------------------------------------------------------------------------
def reference_for(settings: "Settings", lake: Lake, bundle, version: str) -> tuple[pa.Table, str, str]:
    """(the reference sample, its kind, its identity): the state of the alarm belongs to the identity."""
    cfg = settings.drift
    if cfg.reference == TRAINING_WINDOW:
        return bundle.reference(), TRAINING_WINDOW, f"v{version.split(',')[-1]}"
    key = f"{cfg.baseline_start}..{cfg.baseline_end}"
    return baseline_reference(settings, lake), BASELINE, key


def baseline_reference(settings: "Settings", lake: Lake) -> pa.Table:
    """A fixed-size, seeded sample of the baseline period's features, drawn once and cached in the lake."""
    import pyarrow.parquet as pq

    cfg, spec = settings.drift, settings.dataset
    size = settings.training.reference_size
    days = [d for d in ds_range(cfg.baseline_start, cfg.baseline_end) if lake.exists(FEATURES, d)]
    if not days:
        raise ValueError(f"drift.reference = 'baseline' but features has no partition in {cfg.baseline_start}.."
                         f"{cfg.baseline_end}: set drift.baseline_start/baseline_end to days that were landed, or "
                         f"use drift.reference = 'training_window'")
    key = hashlib.sha256(f"{days}|{size}|{spec.features}".encode()).hexdigest()[:16]
    path = posixpath.join(lake.root, "_work", "drift", f"baseline-{cfg.baseline_start}-{cfg.baseline_end}-{key}.parquet")
    if lake.fs.get_file_info(path).type == pa.fs.FileType.File:
        return pq.read_table(path, filesystem=lake.fs)
    per_day = max(1, size // len(days))
    parts = [take_rows(lake, FEATURES, d, sample_indices(lake.dataset(FEATURES, d).count_rows(), per_day, d),
                       [*spec.features]) for d in days]
    table = pa.concat_tables(parts, promote_options="permissive")
    lake.fs.create_dir(posixpath.dirname(path), recursive=True)
    tmp = f"{path}.tmp-{uuid.uuid4().hex}"
    pq.write_table(table, tmp, filesystem=lake.fs)
    lake.fs.move(tmp, path)  # atomic: a reader sees the whole sample or none
    return table


# -- what the detectors cannot test ---------------------------------------------------------------
def _quality(reference: pa.Table, sample: pa.Table, numeric: list[str], categorical: list[str]) -> dict[str, str]:
    """Features the detectors cannot test tonight, with why: missing, no longer numeric, all null."""
    out = {}
    for c in [*numeric, *categorical]:
        if c not in sample.column_names:
            out[c] = "missing from the day's features"
            continue
        col = sample.column(c)
        if c in numeric and not (pa.types.is_integer(col.type) or pa.types.is_floating(col.type)
                                 or pa.types.is_decimal(col.type) or pa.types.is_boolean(col.type) or pa.types.is_null(col.type)):
            out[c] = f"dtype {col.type} where the spec says numeric"
        elif sample.num_rows and col.null_count == sample.num_rows:
            out[c] = f"all {sample.num_rows} sampled rows are null"
    return out


def quality_row(feature: str, kind: str, why: str) -> dict:
    """A data-quality failure: reported as drifted, with the reason, and counted as overwhelming evidence.

    Judged on its own (family own_level): a feature the detectors cannot read is drift whatever the FDR says.
    """
    return {**DetectorResult(feature, kind, "quality", float("nan"), 0.0, float("nan"), "none", 0.0)
            .row("quality", Family.OWN_LEVEL), "drifted": True, "quality": why}


def skip_row(why: str) -> dict:
    """The one row of a night with nothing to test (no detector ran; the alarm state carries over)."""
    return {**DetectorResult("", "skip", "none", float("nan"), float("nan"), float("nan"), "none", 0.0).row("", Family.FDR),
            "detector": None, "family": None, "quality": why, "night_p": None, "night_drift": False}


def embed(bundle, table: pa.Table) -> np.ndarray:
    """Rows in the model's input space: standardised numerics, missing flags, category embeddings."""
    x_num, x_cat = bundle.preprocessor.transform(table)
    return bundle.net.input_space(x_num, x_cat)


# -- across nights -----------------------------------------------------------------------------
@dataclass(frozen=True)
class AlarmRule:
    """The CUSUM's parameters: reference value k (in z units) and decision interval h."""
    k: float
    h: float
    quiet_nights_to_end: int
    target_per_100_nights: float

    @classmethod
    def from_settings(cls, cfg: "DriftSettings") -> "AlarmRule":
        return cls(cfg.cusum_k, cusum_h(cfg.cusum_k, 100.0 / cfg.false_alarms_per_100_nights), cfg.quiet_nights_to_end,
                   cfg.false_alarms_per_100_nights)


@dataclass(frozen=True)
class AlarmState:
    """Where the alarm stands after a night: carried from night to night in the drift partition."""
    cusum: float = 0.0
    alarm: bool = False
    episode_start: str | None = None
    quiet_nights: int = 0
    reference_id: str | None = None


def cusum_h(k: float, arl0: float) -> float:
    """The decision interval whose in-control average run length is `arl0` nights, for N(0,1) increments.

    Siegmund's approximation of a one-sided CUSUM's ARL at mean 0 with reference value k:
    ARL = (exp(2kb) - 2kb - 1) / (2k^2), b = h + 1.166. Solved for h by bisection.
    """
    def arl(h: float) -> float:
        b = h + 1.166
        return (math.exp(2 * k * b) - 2 * k * b - 1) / (2 * k * k)

    lo, hi = 0.0, 50.0
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if arl(mid) < arl0 else (lo, mid)
    return round(hi, 4)


def night_z(p: float | None) -> float | None:
    """A night's evidence as a z-score (one-sided), clipped so one night cannot dominate for weeks."""
    from scipy.stats import norm

    if p is None or math.isnan(p):
        return None
    return float(min(_Z_MAX, max(_Z_MIN, norm.isf(max(p, 1e-300)))))


def advance(state: AlarmState, night_p: float | None, night_drift: bool, reference_id: str | None, ds: str,
            rule: AlarmRule) -> AlarmState:
    """The alarm after night `ds`, from the state after the previous night (pure)."""
    if reference_id != state.reference_id:  # a new reference: what was accumulated against the old one is moot
        state = AlarmState(reference_id=reference_id)
    z = night_z(night_p)
    if z is None:  # a skipped night changes nothing
        return state
    s = max(0.0, state.cusum + z - rule.k)
    quiet = 0 if night_drift else state.quiet_nights + 1
    if state.alarm:
        if quiet >= rule.quiet_nights_to_end:
            return AlarmState(0.0, False, None, quiet, reference_id)
        return AlarmState(s, True, state.episode_start, quiet, reference_id)
    if s >= rule.h:  # an episode starts; it ends after `quiet_nights_to_end` quiet nights from here
        return AlarmState(s, True, ds, 0, reference_id)
    return AlarmState(s, False, None, quiet, reference_id)


def settle_alarm(settings: "Settings", ds: str, *, lake: Lake | None = None) -> list[dict] | None:
    """Settle night `ds`'s alarm from the latest earlier checked night's state; rewrite its drift partition.

    Called in date order (the night's ordered part). If an earlier night was never settled
    (tested outside the flow), its state is replayed from the last settled one. Returns the
    rows as committed, or None when `ds` was not tested.
    """
    lake = lake or Lake.of(settings)
    rule = AlarmRule.from_settings(settings.drift)
    rows = drift_table.read(lake, ds)
    if not rows:
        return None
    state = _state_before(lake, ds, rule)
    first = rows[0]
    new = advance(state, first.get("night_p"), bool(first.get("night_drift")), first.get("reference_id"), ds, rule)
    skipped = first.get("night_p") is None
    settled = {"day_drift": None if skipped else new.alarm, "alarm_method": METHOD, "cusum": new.cusum, "cusum_k": rule.k,
               "cusum_h": rule.h, "alarm_target_per_100_nights": rule.target_per_100_nights,
               "night_z": night_z(first.get("night_p")), "episode_start": new.episode_start,
               "quiet_nights": new.quiet_nights, "alarm_reference_id": new.reference_id}
    if all(first.get(k) == v for k, v in settled.items()):
        return rows
    for r in rows:
        r.update(settled)
    drift_table.write(lake, ds, rows)
    if new.alarm and new.episode_start == ds:
        log.warning("drift alarm starts on %s: CUSUM %.2f reached h=%.2f (k=%.2f, target %.2g false alarms per 100 "
                    "nights); night p=%.3g", ds, new.cusum, rule.h, rule.k, rule.target_per_100_nights, first["night_p"])
    return rows


def _state_before(lake: Lake, ds: str, rule: AlarmRule) -> AlarmState:
    earlier = [d for d in lake.partitions(DRIFT) if d < ds]
    pending: list[dict] = []
    state = AlarmState()
    for d in reversed(earlier):
        rows = drift_table.read(lake, d)
        if not rows:
            continue
        first = rows[0]
        if first.get("alarm_method") == METHOD and first.get("cusum") is not None:
            state = AlarmState(first["cusum"], bool(first["day_drift"]) if first["day_drift"] is not None else
                               bool(first.get("episode_start")), first.get("episode_start"),
                               int(first.get("quiet_nights") or 0), first.get("alarm_reference_id"))
            break
        pending.append({"ds": d, **first})
    for p in reversed(pending):  # nights tested but never settled: replay them in date order
        state = advance(state, p.get("night_p"), bool(p.get("night_drift")), p.get("reference_id"), p["ds"], rule)
    return state

