"""The retrain policy: a pure decision over evidence gathered from the lake.

`should_retrain` is pure and typed (table-driven tests pin it down); `decide_retrain`
gathers its evidence for night D from the lake and commits the decision record
`decisions/ds=D/retrain.parquet`, reasons and evidence included. It reads earlier nights'
records, so nights must be decided in date order.

The primary metric and its direction come from the task: a floor is "worse than" in that
direction (an AUC below 0.70, an RMSE above 12). Model age and the cooldown count days that
had data (features partitions), not calendar days, so data that arrives in blocks does not
age a model through its gaps.

Every signal is evaluated every night and recorded with its value, its threshold and, where
it has one, its standard error and row count (`Signal`), fired or not:
- drift persisted (k of the last n nights);
- **drift CUSUM** (`drift_cusum_retrains_per_200_nights`): the drift alarm's own CUSUM S
  reached a second, higher interval, set by the same Siegmund approximation as the alarm's h
  so that noise alone would cross it that rarely (0.1 per 200 quiet nights: h 5.75 at k 0.5).
  A change too large to be noise (one night at p < 1e-10, or several strong nights) decides
  on the night it shows instead of waiting k of n nights; like every decision after an
  onset, the retrain then WAITs for the new regime's labels;
- the newest matured day's realized metric, and tonight's estimate, beyond the floor by more
  than `drop_z` standard errors;
- **realized drop**: the pooled realized metric of the rolling window ending at the newest
  day with enough labels (`signal_min_coverage`, or matured) is worse than the champion's own
  holdout reference (`calibration.json`) by more than `drop_margin + drop_z * SE`, SE being
  the window's and the reference's combined (Hanley-McNeil for AUC). Provisional days feed it:
  waiting for maturity (90% coverage, about two weeks in the simulator) would see a concept
  change weeks late, and a day half labelled is already evidence when arrival does not depend
  on the label;
- **estimated drop**: the realized-drop test on tonight's rolling window of calibrated estimates
  against the reference's estimate on the holdout;
- **realized change**: the realized drop, asked where the onset is unknown. For each of the
  last `change_days` prediction days with enough labels as a candidate onset s, the days
  s..newest (the champion's, pooled, each weighted by its labelled rows) against the holdout
  reference pooled with the champion's own earlier production days before s (what the
  performance table still holds). It fires when, for some s, the drop is beyond
  `max(drop_margin, change_z * SE)`: significant at a level `change_z` calibrated for the
  looks (several onsets a night, every night) and no smaller than the margin. Why: the
  realized-drop window mixes pre-change days into its mean and its 600-row holdout
  reference carries most of its error at a few hundred rows a night; the champion's own
  days shrink the reference's error, and the window that starts at the change is not
  diluted (a window-limited GLR change-point test, Lai 1995);
- the three window signals (realized drop, realized change, estimated drop) want a drop that
  **lasts** (`persist_z`): the days pooled without the worst of them must be worse too, by `persist_z` standard errors, so a day that wrecked one
  night's predictions (a feature in the wrong unit for a night) is not read as a change;
- **alarm with an estimated drop** (`alarm_drop_z`, 2 by default; None turns it off): the drift alarm is on tonight and tonight's own estimate
  is worse than the reference's estimate by more than `max(alarm_drop_margin, alarm_drop_z * SE)`.
  Two pieces of evidence that are nearly independent under no change (the alarm is
  calibrated to its own false-alarm target), so each is held to a lower bar than alone: the
  data moved, and the model is estimated to suffer for it. The margin is half the drop
  margin by default: on inputs that are still moving, a loss that is small tonight is the
  start of a larger one. It decides on the alarm's first night instead of waiting for k of
  n, before a gradual shift has cost much, and so before any post-drift label exists;
- model age (a backstop: 180 days with data by default), no champion, or by hand.

A retrain that is due while a drift onset is known WAITs (`wait_for_labels`) until the
prediction days since the onset hold `onset_min_labels` labelled rows, or `max_wait_days`
days with data: a WAIT does not start the cooldown, and a pending WAIT is a trigger of its own
on the nights after, so the retrain starts even if tonight's signals have gone quiet, unless
it was decided on drift alone (drift persisted, drift CUSUM, alarm with an estimated drop) and
the drift alarm episode has ended since: then the data is back to its reference and the wait
is withdrawn (NO_ACTION, "withdrawn: ..."). A one-night glitch that reads as overwhelming
drift (a sensor off by 2 sd for one night, `tests/integration/test_glitch.py`) thus costs an alert, not a retrain.

One drift, one answer: a champion promoted on the rows since a drift's onset (`answered_drift`,
from its promotion record) answered that drift, and its drift reference is that world. Drift
signals alone are then not new evidence: a second retrain needs a performance signal (its
realized or estimated metric below its holdout reference or the floor), its age, or a hand.

A retrain that could not be judged (DEFERRED for its holdout) is not decided again on the same
grounds (`deferral_holds`): the night's decision is DEFERRED ("held: ..."), without an alert,
until the gate's sizing settings change or the labels its holdout lacked have arrived.
"""

from __future__ import annotations

import logging

import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from nightshift.choices import Trigger
from nightshift.lake import FEATURES, Lake
from nightshift.registry import Registry
from nightshift.tables import drift as drift_table
from nightshift.tables import performance
from nightshift.tables.decisions import read_decisions, write_decision
from nightshift.task import Metric, drop_margin, metric_floor, task_for

if TYPE_CHECKING:
    from nightshift.settings import PolicySettings, Settings

log = logging.getLogger("nightshift.policy")

RETRAIN, COOLDOWN, NO_ACTION, WAIT = "RETRAIN", "COOLDOWN", "NO_ACTION", "WAIT"
DEFERRED = "DEFERRED"  # a retrain that would defer again on unchanged grounds is not re-decided (see `deferral_holds`)
DRIFT_REASON = "drift persisted"
CUSUM_REASON = "drift too strong to be noise"
ALARM_DROP_REASON = "drift alarm on tonight"
DRIFT_REASONS = (DRIFT_REASON, CUSUM_REASON, ALARM_DROP_REASON)  # how a retrain decided on drift words its reason
WITHDRAWN = "withdrawn"
# The signals that say only "the inputs moved": a wait they started is withdrawn when the alarm episode ends.
DRIFT_SIGNALS = frozenset({"drift_persisted", "drift_cusum", "alarm_estimated_drop"})


@dataclass(frozen=True)
class Signal:
    """One retrain signal as evaluated tonight: fired or not, with what it compared."""

    name: str
    fired: bool
    value: float | None = None
    threshold: float | None = None
    se: float | None = None
    n: int | None = None
    reason: str = ""


@dataclass(frozen=True)
class DayFigure:
    """One prediction day's realized primary metric on the labels arrived so far, as known on the night."""

    day: str
    value: float
    se: float
    n: int  # labelled rows


@dataclass(frozen=True)
class RetrainEvidence:
    has_champion: bool
    metric: str = "auc"
    higher_is_better: bool = True
    floor: float | None = None  # the primary metric's floor in force (in its direction)
    drift_flags: tuple[bool, ...] = ()  # day-level drift verdicts of the last n nights with data, oldest first
    drift_days: tuple[str, ...] = ()  # the nights those flags belong to
    drift_cusum: float | None = None  # the alarm's CUSUM after the newest of those nights
    drift_cusum_k: float | None = None  # its reference value k (the retrain interval is set from it)
    realized: float | None = None  # newest matured day scored by the champion in force
    realized_day: str | None = None
    estimated: float | None = None  # tonight's estimate from the predictions alone
    model_age_days: int | None = None  # days with data since the champion took effect
    days_since_last_retrain: int | None = None  # days with data since the last RETRAIN decision
    manual: bool = False
    realized_se: float | None = None  # the newest matured day's standard error
    estimated_se: float | None = None
    relative: bool = False  # drops in the task's gain unit: relative to the reference (RMSE) or in points (AUC)
    # The rolling window ending at the newest day with enough labels, pooled (the champion's rows only).
    window_realized: float | None = None
    window_realized_se: float | None = None
    window_labelled: int | None = None
    window_first: str | None = None
    window_last: str | None = None
    # Tonight's rolling window of estimates (calibrated scores).
    window_estimated: float | None = None
    window_estimated_se: float | None = None
    window_rows: int | None = None
    estimate_days: tuple[DayFigure, ...] = ()  # that window's days: each day's estimate, its SE and its rows
    # The champion's own holdout reference at training time (None: a bundle without calibration.json).
    reference: float | None = None
    reference_se: float | None = None
    reference_estimated: float | None = None
    reference_estimated_se: float | None = None
    reference_rows: int | None = None
    # The champion's prediction days with enough labels (signal_ready), oldest first: the realized-change test.
    ready_days: tuple[DayFigure, ...] = ()
    # The drift onset as known tonight (a waiting retrain's, else the first drifted night of drift_days), and the
    # labelled rows of the prediction days since it (every version's: training does not care who scored them).
    onset: str | None = None
    onset_labelled: int | None = None
    # A retrain decided earlier and waiting for labels (WAIT): its first night, the days with data since, its reasons.
    pending_since: str | None = None
    pending_days: int | None = None
    pending_reasons: tuple[str, ...] = ()
    pending_signals: tuple[str, ...] = ()  # the signals that fired on its first night
    # The newest gate record since the champion, when it DEFERRED a retrain that could not be judged: its night, what
    # would have made it judgeable (`training.evaluate.judgeable_by`), and what has changed since.
    deferred_on: str | None = None
    deferred: dict[str, Any] | None = None
    holdout_rows_since_deferral: float | None = None  # the holdout's share of the labels that arrived since
    days_since_deferral: int | None = None  # days with data since
    judge_settings: dict[str, Any] | None = None  # the gate's sizing settings tonight (`judge_settings`)
    # The onset of the drift the champion's promotion answered (judged on the rows since it), if it did.
    answered_drift: str | None = None


@dataclass(frozen=True)
class RetrainDecision:
    verdict: str  # RETRAIN | WAIT | COOLDOWN | NO_ACTION
    reasons: tuple[str, ...]
    signals: tuple[Signal, ...] = ()

    @property
    def retrain(self) -> bool:
        return self.verdict == RETRAIN


def _combined(*ses: float | None) -> float:
    return math.sqrt(sum(x * x for x in ses if x is not None))


def _drop(ev: RetrainEvidence, value: float, reference: float) -> float:
    """How much worse `value` is than `reference`, in the task's gain unit (positive: worse)."""
    if ev.higher_is_better:
        return reference - value
    return (value - reference) / reference if ev.relative and reference > 0 else value - reference


def _drop_se(ev: RetrainEvidence, reference: float, *ses: float | None) -> float:
    """The standard error of `_drop(ev, value, reference)`, from the SEs of value and reference."""
    return _combined(*ses) / (reference if ev.relative and not ev.higher_is_better and reference > 0 else 1.0)


def _floor_signal(name: str, ev: RetrainEvidence, metric: Metric, value: float | None, se: float | None, z: float,
                  where: str) -> Signal:
    if ev.floor is None or value is None:
        return Signal(name, False, value, ev.floor, se)
    slack = z * (se or 0.0)
    bound = ev.floor - slack if metric.higher_is_better else ev.floor + slack
    fired = metric.worse(value, bound)
    words = f" (floor {ev.floor} less {z:g} standard errors of {se:.4f})" if se else ""
    return Signal(name, fired, value, bound, se, None,
                  f"{where} {ev.metric} {value:.4f} is {metric.floor_words()} {bound:.4f}{words}" if fired else "")


def _drop_signal(name: str, ev: RetrainEvidence, value: float | None, se: float | None, reference: float | None,
                 ref_se: float | None, n: int | None, margin: float, z: float, where: str) -> Signal:
    if value is None or reference is None:
        return Signal(name, False, None, None, None, n)
    drop = _drop(ev, value, reference)
    se_drop = _drop_se(ev, reference, se, ref_se)
    threshold = margin + z * se_drop
    fired = drop > threshold
    reason = (f"{where} {ev.metric} {value:.4f} is {drop:.4f} worse than the champion's holdout reference "
              f"{reference:.4f}, beyond margin {margin:g} + {z:g} x SE {se_drop:.4f} = {threshold:.4f} ({n} rows)")
    return Signal(name, fired, drop, threshold, se_drop, n, reason if fired else "")


def _pooled(parts: list[tuple[float, float, int]]) -> tuple[float, float, int]:
    """(value, SE, rows) of parts weighted by their rows: sum(n x) / sum(n), SE sqrt(sum (n se)^2) / sum(n)."""
    n = sum(p[2] for p in parts)
    return (sum(v * k for v, _, k in parts) / n, math.sqrt(sum((se * k) ** 2 for _, se, k in parts)) / n, n)


def lasts(ev: RetrainEvidence, days: list[DayFigure] | tuple[DayFigure, ...], before: float,
          before_se: float | None, persist_z: float) -> tuple[bool, str]:
    """Whether a drop from `before` lasts (pure): the days pooled without the worst of them are still worse than
    `before` by more than persist_z x SE; one day alone is not yet a change. Returns (it lasts, words for the record).

    One day that wrecked a night's predictions (a feature in the wrong unit for a night, fixed the next day) shows
    in that day's labels days later; a test of the pooled days would read it as a change."""
    if len(days) < 2:
        return False, ""
    worst = max(range(len(days)), key=lambda j: _drop(ev, days[j].value, before))
    r, r_se, _ = _pooled([(d.value, d.se, d.n) for j, d in enumerate(days) if j != worst])
    r_drop, r_dse = _drop(ev, r, before), _drop_se(ev, before, r_se, before_se)
    return r_drop > persist_z * r_dse, (f", and {r_drop:.4f} worse without its worst day {days[worst].day}, beyond "
                                        f"{persist_z:g} x SE {r_dse:.4f} (a change that lasts)")


def change_signal(ev: RetrainEvidence, change_days: int, change_z: float, margin: float,
                  persist_z: float | None = None) -> Signal:
    """The realized-change test (pure): the strongest candidate onset among the last `change_days` ready days.

    For onset s: after = the ready days from s on, before = the holdout reference (when it has
    an SE and rows) and the ready days before s, each pooled by labelled rows. It fires where
    drop(before -> after) > max(margin, change_z x SE(drop)); the record holds the onset whose
    drop is largest against its threshold.

    `persist_z` (None: off): a change must last (`lasts`): the days from s on without the worst of
    them must also be worse than before by more than persist_z x their SE, so an onset needs two
    ready days.
    """
    days = ev.ready_days
    holdout = ([(ev.reference, ev.reference_se, ev.reference_rows)]
               if ev.reference is not None and ev.reference_se is not None and ev.reference_rows else [])
    best: tuple[float, Signal] | None = None
    for i in range(max(len(days) - change_days, 0), len(days)):
        before = holdout + [(d.value, d.se, d.n) for d in days[:i]]
        after = [(d.value, d.se, d.n) for d in days[i:]]
        if not before or not after:
            continue
        b, b_se, b_n = _pooled(before)
        a, a_se, a_n = _pooled(after)
        drop = _drop(ev, a, b)
        se = _drop_se(ev, b, a_se, b_se)
        threshold = max(margin, change_z * se)
        fired = drop > threshold
        held = ""
        if persist_z is not None and fired:
            fired, held = lasts(ev, days[i:], b, b_se, persist_z)
        parts = ([f"the holdout reference {ev.reference:.4f} ({ev.reference_rows} rows)"] if holdout else []) + (
            [f"{i} earlier days {days[0].day}..{days[i - 1].day}"] if i else [])
        reason = (f"realized {ev.metric} since {days[i].day} ({len(after)} days to {days[-1].day}, {a_n} labelled rows) "
                  f"{a:.4f} is {drop:.4f} worse than {b:.4f}, {' and '.join(parts)} pooled ({b_n} rows), beyond "
                  f"max(margin {margin:g}, {change_z:g} x SE {se:.4f}) = {threshold:.4f}{held}")
        signal = Signal("realized_change", fired, drop, threshold, se, a_n, reason if fired else "")
        score = drop / threshold if threshold > 0 else (math.inf if drop > 0 else 0.0)
        if best is None or score > best[0]:
            best = (score, signal)
    return best[1] if best else Signal("realized_change", False, None, None, None, None)


def alarm_drop_signal(ev: RetrainEvidence, z: float | None, margin: float) -> Signal:
    """The drift alarm tonight, corroborated by tonight's estimate being worse than the reference's estimate (pure).

    `z` None: the signal is off (recorded with its value, no threshold, never fired)."""
    alarm = bool(ev.drift_flags) and ev.drift_flags[-1]
    if ev.estimated is None or ev.reference_estimated is None:
        return Signal("alarm_estimated_drop", False, None, None, None, None)
    drop = _drop(ev, ev.estimated, ev.reference_estimated)
    se = _drop_se(ev, ev.reference_estimated, ev.estimated_se, ev.reference_estimated_se)
    if z is None:
        return Signal("alarm_estimated_drop", False, drop, None, se, None)
    threshold = max(margin, z * se)
    fired = alarm and drop > threshold
    reason = (f"{ALARM_DROP_REASON}, and tonight's estimated {ev.metric} {ev.estimated:.4f} is {drop:.4f} worse "
              f"than the holdout reference's estimate {ev.reference_estimated:.4f}, beyond max(margin {margin:g}, "
              f"{z:g} x SE {se:.4f}) = {threshold:.4f}")
    return Signal("alarm_estimated_drop", fired, drop, threshold, se, None, reason if fired else "")


def cusum_signal(ev: RetrainEvidence, retrains_per_200_nights: float | None) -> Signal:
    """The drift alarm's CUSUM against the retrain interval: the h whose in-control run length is
    200 / `retrains_per_200_nights` nights at the alarm's own k (pure). None: off, recorded without a threshold."""
    from monitoring.drift import cusum_h

    if ev.drift_cusum is None or ev.drift_cusum_k is None:
        return Signal("drift_cusum", False, None, None, None, None)
    if retrains_per_200_nights is None:
        return Signal("drift_cusum", False, ev.drift_cusum, None, None, None)
    h = cusum_h(ev.drift_cusum_k, 200.0 / retrains_per_200_nights)
    fired = bool(ev.drift_flags) and ev.drift_flags[-1] and ev.drift_cusum >= h
    reason = (f"{CUSUM_REASON}: the drift alarm's CUSUM {ev.drift_cusum:.2f} reached the retrain interval "
              f"{h:.2f} (k={ev.drift_cusum_k:g}; noise alone crosses it {retrains_per_200_nights:g} times per 200 "
              f"quiet nights)")
    return Signal("drift_cusum", fired, ev.drift_cusum, h, None, None, reason if fired else "")


def _lasting(ev: RetrainEvidence, signal: Signal, persist_z: float | None, days: list[DayFigure],
             before: float | None, before_se: float | None) -> Signal:
    """A window's drop signal (realized_drop, estimated_drop), fired only where the drop lasts (`lasts`) over the
    window's daily figures."""
    if persist_z is None or not signal.fired or before is None or not days:  # no days: a record from before them
        return signal
    held, words = lasts(ev, days, before, before_se, persist_z)
    if not held:
        return Signal(signal.name, False, signal.value, signal.threshold, signal.se, signal.n)
    return Signal(signal.name, True, signal.value, signal.threshold, signal.se, signal.n, signal.reason + words)


def evaluate_signals(ev: RetrainEvidence, policy: "PolicySettings", margin: float) -> tuple[Signal, ...]:
    """Every automatic signal of night D, fired or not (pure)."""
    metric = Metric(ev.metric, ev.higher_is_better)
    recent = ev.drift_flags[-policy.drift_n:]
    z = policy.drop_z
    drift = Signal("drift_persisted", sum(recent) >= policy.drift_k, float(sum(recent)), float(policy.drift_k), None,
                   len(recent), f"{DRIFT_REASON} on {sum(recent)} of the last {len(recent)} nights (k={policy.drift_k})")
    signals = [
        Signal("no_champion", not ev.has_champion, reason="no champion yet"),
        drift if drift.fired else Signal(drift.name, False, drift.value, drift.threshold, None, drift.n),
        cusum_signal(ev, policy.drift_cusum_retrains_per_200_nights),
        _floor_signal("realized_below_floor", ev, metric, ev.realized, ev.realized_se, z,
                      f"realized on matured day {ev.realized_day}:"),
        _floor_signal("estimated_below_floor", ev, metric, ev.estimated, ev.estimated_se, z, "estimated tonight:"),
        _lasting(ev, _drop_signal("realized_drop", ev, ev.window_realized, ev.window_realized_se, ev.reference,
                                  ev.reference_se, ev.window_labelled, margin, z,
                                  f"realized, pooled over prediction days {ev.window_first}..{ev.window_last}:"),
                 policy.persist_z, [d for d in ev.ready_days if (ev.window_first or "") <= d.day <= (ev.window_last or "")],
                 ev.reference, ev.reference_se),
        change_signal(ev, policy.change_days, policy.change_z, margin, policy.persist_z),
        alarm_drop_signal(ev, policy.alarm_drop_z,
                          margin / 2 if policy.alarm_drop_margin is None else policy.alarm_drop_margin),
        _lasting(ev, _drop_signal("estimated_drop", ev, ev.window_estimated, ev.window_estimated_se,
                                  ev.reference_estimated, ev.reference_estimated_se, ev.window_rows, margin, z,
                                  "estimated, pooled over the window ending tonight:"),
                 policy.persist_z, list(ev.estimate_days), ev.reference_estimated, ev.reference_estimated_se),
    ]
    old = ev.model_age_days is not None and ev.model_age_days >= policy.max_model_age_days
    signals.append(Signal("model_age", old, ev.model_age_days, float(policy.max_model_age_days), reason=(
        f"champion is {ev.model_age_days} days with data old (max {policy.max_model_age_days})" if old else "")))
    return tuple(signals)


def should_retrain(ev: RetrainEvidence, policy: "PolicySettings", margin: float | None = None) -> RetrainDecision:
    """Retrain on persistent drift, a poor or dropped realized or estimated metric, old age, no champion, or by hand.

    `margin`: the drop margin in the task's gain unit (default: `policy.drop_margin`, else 0.02).
    """
    margin = (policy.drop_margin if policy.drop_margin is not None else 0.02) if margin is None else margin
    signals = evaluate_signals(ev, policy, margin)
    if ev.manual:
        return RetrainDecision(RETRAIN, ("requested by hand",), signals)
    # The floor reasons keep their historical wording ("realized auc 0.6900 on matured day ... is below the floor").
    triggers = [_floor_words(ev, s) if s.name.endswith("below_floor") else s.reason for s in signals if s.fired]
    if ev.answered_drift is not None and not ev.manual and _drift_alone({s.name for s in signals if s.fired}):
        # One drift, one answer: the champion was promoted on the world since this drift's onset, and its drift
        # reference is that world. Drift signals alone on it are not new evidence; its performance would be.
        triggers = [t for s, t in zip([s for s in signals if s.fired], triggers) if s.name not in DRIFT_SIGNALS]
        if not triggers and ev.pending_since is None:
            return RetrainDecision(NO_ACTION, (
                f"answered: the champion was promoted on the rows since the drift onset {ev.answered_drift}; drift "
                f"signals alone ({', '.join(s.name for s in signals if s.fired)}) are not new evidence on it. A second "
                f"retrain needs its realized or estimated metric below its own holdout reference",), signals)
    if not triggers and ev.pending_since is not None:
        if withdrawn(ev):
            return RetrainDecision(NO_ACTION, (
                f"{WITHDRAWN}: the retrain decided on {ev.pending_since} on drift alone "
                f"({', '.join(ev.pending_signals)}) is not needed: the drift alarm episode has ended (the data is back "
                f"to its reference), and no signal fires tonight",), signals)
        triggers = [f"the retrain decided on {ev.pending_since} is still due", *ev.pending_reasons]
    if not triggers:
        return RetrainDecision(NO_ACTION, ("no trigger fired",), signals)
    if ev.days_since_last_retrain is not None and ev.days_since_last_retrain < policy.cooldown_days:
        held = (f"cooldown: last retrain was {ev.days_since_last_retrain} days with data ago "
                f"(cooldown {policy.cooldown_days})")
        return RetrainDecision(COOLDOWN, (held, *triggers), signals)
    if (held := deferral_holds(ev)) is not None:
        return RetrainDecision(DEFERRED, (held, *triggers), signals)
    verdict, why = wait_for_labels(ev, policy, frozenset(s.name for s in signals if s.fired))
    return RetrainDecision(verdict, ((why,) if why else ()) + tuple(triggers), signals)


def deferral_holds(ev: RetrainEvidence) -> str | None:
    """Why a retrain due tonight would defer again on the grounds of the last deferral, or None (pure).

    A retrain that could not be judged (too few holdout rows, or too few to resolve the margin)
    deferred with a record that said what would make it judgeable. Deciding it again every
    cooldown would train nothing and repeat that record and its alert. It is decided again when
    the gate's sizing settings change, or when enough labels have arrived for its holdout to
    hold the rows it lacked (a holdout capped at training.holdout_max_days gains only when the
    daily volume rises).
    """
    j = ev.deferred
    if ev.manual or j is None or ev.deferred_on is None:
        return None
    if ev.judge_settings is not None and ev.judge_settings != j.get("settings"):
        return None
    gained = ev.holdout_rows_since_deferral or 0.0
    if j["days"] < j["max_days"]:
        if j["rows"] + gained >= j["required_rows"]:
            return None
    elif ev.days_since_deferral and gained / ev.days_since_deferral * j["max_days"] >= j["required_rows"]:
        return None
    return (f"held: the retrain of {ev.deferred_on} could not be judged ({j['words']}), and nothing that would change "
            f"that has happened since: {gained:.0f} holdout rows' worth of labels arrived, the gate's settings are the "
            f"same. It would defer again, so it is not decided again until they change or the labels arrive")


def alarm_nights(ev: RetrainEvidence) -> int:
    """Nights in a row, ending with the newest checked one, that the drift alarm was on (pure; at most drift_n)."""
    n = 0
    for flag in reversed(ev.drift_flags):
        if not flag:
            break
        n += 1
    return n


def _drift_alone(names: set[str] | frozenset[str] | tuple[str, ...]) -> bool:
    """Whether these fired signals say only "the inputs moved" (pure)."""
    return bool(names) and set(names) <= DRIFT_SIGNALS


def withdrawn(ev: RetrainEvidence) -> bool:
    """Whether a pending WAIT is withdrawn tonight (pure): it was decided on drift signals alone, and the newest
    checked night's alarm is off (its episode ended: quiet nights, or a new reference). Asked only when no signal
    fires tonight."""
    return (ev.pending_since is not None and _drift_alone(ev.pending_signals) and bool(ev.drift_flags)
            and not ev.drift_flags[-1])


def wait_for_labels(ev: RetrainEvidence, policy: "PolicySettings", fired: frozenset[str] = frozenset()
                    ) -> tuple[str, str]:
    """WAIT or RETRAIN for a retrain that is due and not in cooldown (pure), and why it waits or waited ("": no wait).

    A retrain decided after a drift onset, before the new regime has labels, would learn the old
    world, and the gate could not judge it on the new one; the cooldown it started would then
    hold back the retrain that answers the drift. So it waits, without starting the cooldown,
    until the prediction days since the onset hold `onset_min_labels` labelled rows, or for
    `max_wait_days` days with data at most. No onset (a concept change seen in the labels), no
    champion, or `onset_min_labels` 0: no wait.

    A retrain decided on drift alone (`fired`, tonight's signals, and the pending wait's are all
    DRIFT_SIGNALS) also waits until the alarm has been on `drift_confirm_nights` nights in a row,
    or drift persisted (k of n) tonight:
    a one-night glitch (a sensor off for one night reads as overwhelming drift) ends its episode sooner,
    and its wait is then withdrawn, even where labels are plentiful at once.
    """
    if not ev.has_champion:
        return RETRAIN, ""
    on = alarm_nights(ev)
    if (_drift_alone(fired | set(ev.pending_signals)) and "drift_persisted" not in fired
            and on < policy.drift_confirm_nights):
        return WAIT, (f"waiting for the drift alarm to last: on {on} {'night' if on == 1 else 'nights'} in a row; a "
                      f"retrain decided on drift alone starts once it has lasted {policy.drift_confirm_nights} "
                      f"(drift_confirm_nights), and is withdrawn if it ends sooner")
    if ev.onset is None or not policy.onset_min_labels:
        return RETRAIN, ""
    have, want, waited = ev.onset_labelled or 0, policy.onset_min_labels, ev.pending_days or 0
    if have >= want:
        return RETRAIN, (f"waited {waited} days with data since {ev.pending_since} for labels since the drift onset "
                         f"{ev.onset}: {have:,} labelled rows, onset_min_labels {want:,}") if ev.pending_since else ""
    if waited >= policy.max_wait_days:
        return RETRAIN, (f"waited {waited} days with data since {ev.pending_since} (max_wait_days "
                         f"{policy.max_wait_days}); it trains on the {have:,} labelled rows since the drift onset "
                         f"{ev.onset} (onset_min_labels {want:,})")
    left = policy.max_wait_days - waited
    return WAIT, (f"waiting for the new regime's labels: {have:,} labelled rows since the drift onset {ev.onset}; the "
                  f"retrain starts at {want:,} (onset_min_labels) or in {left} more {'day' if left == 1 else 'days'} with "
                  f"data (max_wait_days)")


def _floor_words(ev: RetrainEvidence, s: Signal) -> str:
    metric = Metric(ev.metric, ev.higher_is_better)
    se = f", beyond {s.threshold:.4f} by the standard error {s.se:.4f}" if s.se else ""
    if s.name == "realized_below_floor":
        return (f"realized {ev.metric} {s.value:.4f} on matured day {ev.realized_day} is "
                f"{metric.floor_words()} the floor {ev.floor}{se}")
    return f"estimated {ev.metric} {s.value:.4f} is {metric.floor_words()} the floor {ev.floor}{se}"


def metric_evidence(rows: list[dict[str, Any]], version: str, ds: str, reference: Any = None) -> dict[str, Any]:
    """The metric fields of `RetrainEvidence` from night `ds`'s performance rows (pure).

    `rows`: `performance.read(lake, ds)` (or `ground_truth.performance_rows`), oldest day first;
    only the days `version` scored count. `reference`: the version's `calibration.Reference`.
    """
    mine = [r for r in rows if r["model_version"] == version]
    out: dict[str, Any] = {}
    matured = [r for r in mine if r["matured"] and r["realized"] is not None]
    if matured:
        out.update(realized=matured[-1]["realized"], realized_day=matured[-1]["prediction_ds"],
                   realized_se=matured[-1].get("realized_se"))
    ready = [r for r in mine if (r["matured"] if r.get("signal_ready") is None else r["signal_ready"])
             and r.get("rolling_realized") is not None]
    figures = tuple(DayFigure(r["prediction_ds"], r["realized"], r["realized_se"], int(r["labelled"])) for r in ready
                    if r.get("realized") is not None and r.get("realized_se") is not None and r.get("labelled"))
    if figures:
        out["ready_days"] = figures
    if ready:
        r = ready[-1]
        out.update(window_realized=r["rolling_realized"], window_realized_se=r.get("rolling_realized_se"),
                   window_labelled=r.get("rolling_labelled"), window_first=r.get("rolling_first_ds"),
                   window_last=r["prediction_ds"])
    tonight = [r for r in mine if r["prediction_ds"] == ds]
    if tonight:
        r = tonight[0]
        out.update(estimated=r["estimated"], estimated_se=r.get("estimated_se"),
                   window_estimated=r.get("rolling_estimated"), window_estimated_se=r.get("rolling_estimated_se"),
                   window_rows=r.get("rolling_rows"))
        first = r.get("rolling_first_ds") or ds
        out["estimate_days"] = tuple(
            DayFigure(x["prediction_ds"], x["estimated"], x["estimated_se"], int(x.get("rows") or 0)) for x in mine
            if first <= x["prediction_ds"] <= ds and x.get("estimated") is not None and x.get("estimated_se")
            and x.get("rows"))
    if reference is not None:
        out.update(reference=reference.realized, reference_se=reference.se, reference_estimated=reference.estimated,
                   reference_estimated_se=reference.estimated_se, reference_rows=reference.rows)
    return out


def gather_evidence(settings: "Settings", ds: str, lake: Lake, manual: bool = False,
                    history: list[dict[str, Any]] | None = None) -> RetrainEvidence:
    """What night `ds` knows: earlier drift verdicts, ground truth, champion age, last retrain.

    `history`: the earlier nights' retrain records to hold the cooldown and a waiting retrain to,
    instead of the lake's (a policy replay's own decisions, `monitoring.replay`).
    """
    policy, task = settings.policy, task_for(settings.dataset.task)
    in_force = Registry(settings, lake).version_as_of(ds)  # the champion that scored tonight
    data_days = [d for d in lake.partitions(FEATURES) if d <= ds]

    recent_days = data_days[-policy.drift_n:]
    flags = [(d, a) for d in recent_days if (a := drift_table.day_alarm(lake, d)) is not None]
    newest = drift_table.read(lake, flags[-1][0])[0] if flags else {}

    metrics: dict[str, Any] = {}
    perf = performance.read(lake, ds) if in_force is not None else []
    if in_force is not None:
        metrics = metric_evidence(perf, in_force.version, ds, _reference(settings, lake, in_force.version))

    # Only the cooldown and a waiting retrain read earlier decisions, so only the nights they span are read.
    earlier = [d for d in data_days if d < ds]
    span = earlier[-max(policy.cooldown_days, policy.max_wait_days + 1):]
    records = read_decisions(lake, span, "retrain") if history is None else [r for r in history if r["ds"] in set(span)]
    cooling = set(earlier[-policy.cooldown_days:]) if policy.cooldown_days else set()
    retrains = [d for d in records if d["verdict"] == RETRAIN and d["ds"] in cooling]
    last = retrains[-1] if retrains else None
    waiting = wait_evidence(records, flags, data_days, ds)
    deferral = deferral_evidence(settings, lake, ds, data_days, in_force.ds) if in_force is not None and not manual else {}
    answered = answered_drift(lake, in_force.ds) if in_force is not None else None
    return RetrainEvidence(
        has_champion=in_force is not None,
        metric=task.primary.name,
        higher_is_better=task.primary.higher_is_better,
        floor=metric_floor(task, policy.metric_floor),
        drift_flags=tuple(a for _, a in flags),
        drift_days=tuple(d for d, _ in flags),
        drift_cusum=newest.get("cusum"),
        drift_cusum_k=newest.get("cusum_k"),
        relative=not task.primary.higher_is_better,
        **metrics,
        model_age_days=sum(1 for d in data_days if d > in_force.ds) if in_force else None,
        days_since_last_retrain=sum(1 for d in data_days if d > last["ds"]) if last else None,
        manual=manual,
        onset_labelled=labelled_since(perf, waiting["onset"]) if waiting["onset"] else None,
        **waiting,
        **deferral,
        answered_drift=answered,
    )


def answered_drift(lake: Lake, in_force_since: str) -> str | None:
    """The onset of the drift the champion in force from `in_force_since` answered: its promotion (decided the day
    before) judged it on the rows since that onset, the champion known stale by that drift. None otherwise."""
    from nightshift.dates import add_days
    from nightshift.tables.decisions import read_decision

    day = add_days(in_force_since, -1)
    record = read_decision(lake, day, "promotion")
    if record is not None and record["verdict"] == "PROMOTE":
        ev = record["evidence"]
    else:  # promoted by a shadow trial: the offline gate's evidence, kept in the trial's record
        from nightshift.tables import trials

        promoted = [t for t in trials.on_day(lake, day) if t["state"] == trials.PROMOTED]
        if not promoted:
            return None
        ev = promoted[-1].get("offline") or {}
    onset = (ev.get("gate_holdout") or {}).get("onset")
    return onset if onset and str(ev.get("champion_stale") or "").startswith("a drift since") else None


def deferral_evidence(settings: "Settings", lake: Lake, ds: str, data_days: list[str], since: str) -> dict[str, Any]:
    """The `deferred*` fields of `RetrainEvidence`: the newest gate record before `ds` and from `since` (the day the
    champion took effect) on, when it is a deferral that said what would make the retrain judgeable, and the labels
    and days with data since it."""
    from nightshift.lake import DECISIONS, LABELS
    from nightshift.tables.decisions import history
    from training.evaluate import effective_gate, judge_settings
    from training.window import HOLDOUT_SHARE

    days = [d for d in lake.partitions(DECISIONS) if since <= d < ds]
    gate_records = history(lake, ("promotion",), days=days) if days else []  # one scan
    last = gate_records[-1] if gate_records else None
    if last is None or last["verdict"] != DEFERRED or not last["evidence"].get("judgeable"):
        return {}
    arrived = sum(lake.dataset(LABELS, d).count_rows() for d in lake.partitions(LABELS) if last["ds"] < d <= ds)
    gate = effective_gate(settings.gate, task_for(settings.dataset.task))
    return {"deferred_on": last["ds"], "deferred": last["evidence"]["judgeable"],
            "holdout_rows_since_deferral": HOLDOUT_SHARE * arrived,
            "days_since_deferral": sum(1 for d in data_days if d > last["ds"]),
            "judge_settings": judge_settings(gate, settings.training.holdout_max_days)}


def wait_evidence(records: list[dict[str, Any]], flags: list[tuple[str, bool]], data_days: list[str],
                  ds: str) -> dict[str, Any]:
    """The onset and the pending WAIT of night `ds`, as `RetrainEvidence` fields (pure).

    `records`: the earlier nights' retrain records, oldest first; `flags`: (night, alarm) of the
    recent nights; `data_days`: the days with data up to `ds`. The onset is a waiting retrain's
    (it may be older than the recent nights), else the first flagged night.
    """
    pending = pending_wait(records)
    onset = (pending["evidence"].get("evidence", {}).get("onset") if pending else None) or next(
        (d for d, flagged in flags if flagged), None)
    return {"onset": onset,
            "pending_since": pending["ds"] if pending else None,
            "pending_days": sum(1 for d in data_days if pending["ds"] < d <= ds) if pending else None,
            "pending_reasons": tuple(pending["reasons"][1:]) if pending else (),
            "pending_signals": tuple(s["name"] for s in pending["evidence"].get("signals") or () if s.get("fired"))
            if pending else ()}


def pending_wait(records: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The first WAIT of the run of WAITs that ends the earlier nights' retrain records (pure; None: no retrain waits).

    A RETRAIN, a cooldown or a night without a trigger ends a wait; `records` are oldest first."""
    first = None
    for r in reversed(records):
        if r["verdict"] != WAIT:
            break
        first = r
    return first


def labelled_since(rows: list[dict[str, Any]], onset: str) -> int:
    """Labelled rows of the prediction days from `onset` on, whoever scored them (pure; `performance.read` rows)."""
    return sum(int(r.get("labelled") or 0) for r in rows if r["prediction_ds"] >= onset)


def decide_retrain(settings: "Settings", ds: str, *, lake: Lake | None = None, manual: bool = False) -> dict:
    """Decide night `ds` and commit the record; returns the decision and, when it retrains, the retrain's conf."""
    lake = lake or Lake.of(settings)
    evidence = gather_evidence(settings, ds, lake, manual)
    task = task_for(settings.dataset.task)
    decision = should_retrain(evidence, settings.policy, drop_margin(task, settings.policy.drop_margin))
    champion = Registry(settings, lake).version_as_of(ds)
    write_decision(lake, ds, "retrain", decision.verdict, decision.reasons,
                   {"evidence": asdict(evidence), "signals": [asdict(x) for x in decision.signals],
                    "policy": settings.policy.model_dump(),
                    "counted": "model age and cooldown count days with data (features partitions)"},
                   model_version=champion.version if champion else None)
    trigger = Trigger.MANUAL if manual else (Trigger.NIGHTLY if evidence.has_champion else Trigger.BOOTSTRAP)
    return {"ds": ds, "retrain": decision.retrain, "verdict": decision.verdict, "reasons": list(decision.reasons),
            "retrain_conf": {"ds": ds, "trigger": trigger.value, "reasons": list(decision.reasons)}}



def _reference(settings: "Settings", lake: Lake, version: str):
    """The version's holdout reference from its bundle's calibration.json (None: an older bundle, or none at hand)."""
    from model.calibration import read_model_card

    try:
        return read_model_card(Registry(settings, lake).local_path(version)).reference
    except FileNotFoundError:
        return None
    except Exception as exc:  # noqa: BLE001 - without its reference the two drop signals stay silent, and say so
        log.warning("the holdout reference of model v%s could not be read (%s: %s): the realized_drop and "
                    "estimated_drop signals are silent tonight", version, type(exc).__name__, exc)
        return None
