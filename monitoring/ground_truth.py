"""Ground truth as known on night D: join the labels that have arrived to past predictions.

For every prediction day P in the last `max_delay_days` days, `monitoring/performance/ds=D/`
holds one row (see `nightshift.tables.performance`): how many predictions, how many have a
label by D (coverage), whether P has matured (`is_matured`: coverage >= `min_coverage` or age
>= `max_delay_days`), every metric of the task realized on the labels so far with the
primary metric's standard error, and the metrics estimated from the predictions alone where
the task has a sound method (binary: CBPE, the expected metrics under the model's
Platt-calibrated scores, `model.calibration`; multiclass: one-vs-rest CBPE per class on the
temperature-scaled probabilities, macro-averaged; regression: not estimated, said in
`estimate_method`). Once P has matured, `estimate_error` = estimated - realized. Multiclass
predictions are read through the night's own vocabulary (its `p__<class>` columns); labels of a
class that vocabulary lacks are counted (`unseen_labels`, `unseen_classes`, and a warning) and
left out of the metrics, and classes too rare for the macro AUC that day are named (`rare_classes`).

Each row also carries a **rolling window**: the rows of the `policy.window_days` prediction
days ending at P (scored by P's model version) pooled, every metric computed on the pooled
rows (not a mean of daily metrics), realized (labels arrived by D) and estimated. The policy
reads the window ending at the newest day with enough labels (`signal_ready`) for its
realized-drop signal, and the one ending tonight for its estimated-drop signal.

With a `[value]` cost matrix (`nightshift.value`) each row also carries the day's business value:
realized per labelled row and in total, at the decisions scoring made (the predictions'
`decision` column, binary), and expected per scored row and in total before labels (binary:
from the same calibrated scores as the metric's estimate, refits included), with the estimate's
error once matured (`day_value`). Regression is valued on its labels only.

`performance_rows` is the pure part (arrays in, rows out): the drift lab calls it on simulated
nights without a lake. Labels are checked and deduplicated by `nightshift.tables.labels` (the
latest arrival wins). Each row also counts what the labels got wrong: duplicate rows,
conflicting values, and labels for ids that day never scored. Coverage counts each scored row
once, so it can never exceed 1. Labels for a day whose predictions are not committed yet are
held (counted in the summary) and join once the day is scored.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from model.calibration import (MIN_CLASS, UNCALIBRATED, Calibrator, ModelCard, TemperatureCalibrator, fit_platt,
                               fit_temperature, method_words, read_model_card)
from nightshift.dates import add_days, days_between, ds_range
from nightshift.lake import PREDICTIONS, Lake
from nightshift.metrics import pool
from nightshift.spec import EVENT_DS
from nightshift.tables.labels import is_matured  # the maturity rule: the shadow trial uses it too
from nightshift.tables import labels as labels_table
from nightshift.tables import performance
from nightshift.task import Task, task_for
from nightshift.value import decide, decision_threshold
from nightshift.value import summary as value_summary

if TYPE_CHECKING:
    from nightshift.settings import Settings
    from nightshift.value import ValueModel

log = logging.getLogger("nightshift.ground_truth")


def signal_ready(coverage: float, matured: bool, min_coverage: float) -> bool:
    """Whether a day's labels so far may feed the realized-drop window (as known on the night)."""
    return matured or coverage >= min_coverage


@dataclass(frozen=True)
class DayInput:
    """One prediction day as known on night D: its predictions and the labels that had arrived."""

    prediction_ds: str
    version: str  # the model version(s) that scored it, comma-joined
    pred: np.ndarray  # every scored row's prediction, as the model gave it
    y: np.ndarray  # labels arrived by D, one per labelled scored row
    y_pred: np.ndarray  # those rows' predictions
    calibrated: np.ndarray | None = None  # every row's calibrated P(y=1); None: uncalibrated
    method: str = ""  # how the estimate was made (`calibration.method_words`)
    extra: dict[str, Any] | None = None  # columns passed through (label-quality counts, ...)
    classes: tuple[str, ...] | None = None  # multiclass: the vocabulary `pred`'s columns follow
    decision: np.ndarray | None = None  # binary: every scored row's decision as scoring made it (None: score >= threshold)
    y_decision: np.ndarray | None = None  # the labelled rows' decisions
    threshold: float | None = None  # the threshold the day was decided at (None: the night's `threshold`)


@dataclass(frozen=True)
class Refit:
    """A calibrator refitted on the labels that have arrived for the days before a prediction day."""

    calibrator: Calibrator | TemperatureCalibrator
    first: str
    last: str

    def words(self, task_method: str) -> str:
        c = self.calibrator
        if isinstance(c, TemperatureCalibrator):
            return (f"{task_method}; temperature recalibrated (T={c.t:.4g}) on {c.rows} labelled rows of "
                    f"prediction days {self.first}..{self.last}, as known on the night")
        return (f"{task_method}; Platt recalibrated (a={c.a:.4g}, b={c.b:.4g}) on {c.rows} labelled rows of "
                f"prediction days {self.first}..{self.last}, as known on the night")


def recalibrations(days: list[DayInput], *, lookback_days: int, min_rows: int, target_rows: int = 5_000,
                   max_rows: int = 50_000, seed: int = 0, task: Task | None = None) -> dict[str, Refit]:
    """Per prediction day P, a Platt calibrator fitted on labelled rows of the days just before P that the
    same model version scored (labels arrived by tonight): the newest such day first, reaching back a
    day at a time until `target_rows` labelled rows are in hand, never more than `lookback_days` days.
    No refit when that holds fewer than `min_rows` rows or `MIN_CLASS` of a class. Pure.

    Why: a calibrator fitted once on the holdout at training time goes stale when the data moves
    into regions the model extrapolates to; the days just before P, labelled as far as tonight
    knows, are the freshest evidence of how the model's scores map to outcomes now. Reaching back
    only as far as the rows require keeps the refit in the current regime at high volume (a day or
    two at 20,000 rows a day) and pools a week at a few hundred. P's own labels never calibrate
    P's estimate, so a matured day's estimate error is still out of sample. Each day contributes
    at most `max_rows / lookback_days` rows (a seeded sample), so the cost does not grow with the
    daily volume.

    A multiclass `task` (its `calibration` is "temperature") refits the temperature instead, on the
    rows whose class P's model knows, once they hold `min_rows` rows of at least two classes.
    """
    if lookback_days <= 0:
        return {}
    per_day = max(1, max_rows // lookback_days)
    rng = np.random.default_rng(seed)
    sample: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for d in days:
        n = min(len(d.y), len(d.y_pred))
        idx = np.sort(rng.choice(n, per_day, replace=False)) if n > per_day else np.arange(n)
        sample[d.prediction_ds] = (np.asarray(d.y)[idx], np.asarray(d.y_pred, np.float64)[idx])
    out: dict[str, Refit] = {}
    for d in days:
        first = add_days(d.prediction_ds, -lookback_days)
        usable = [p for p in days if first <= p.prediction_ds < d.prediction_ds and p.version == d.version
                  and len(sample[p.prediction_ds][0])]
        prior, rows = [], 0
        for p in reversed(usable):  # newest first, until the rows are in hand
            if rows >= target_rows:
                break
            prior.append(p)
            rows += len(sample[p.prediction_ds][0])
        prior.reverse()
        if not prior:
            continue
        score = np.concatenate([sample[p.prediction_ds][1] for p in prior])
        if task is not None and task.calibration == "temperature":
            codes = task.bind(d.classes).codes(np.concatenate([sample[p.prediction_ds][0] for p in prior]))
            known = codes >= 0
            if known.sum() >= min_rows and len(np.unique(codes[known])) >= 2:
                out[d.prediction_ds] = Refit(fit_temperature(codes[known], score[known]), prior[0].prediction_ds,
                                             prior[-1].prediction_ds)
            continue
        y = np.concatenate([sample[p.prediction_ds][0] for p in prior]).astype(np.float64)
        positives = int(y.sum())
        if len(y) < min_rows or min(positives, len(y) - positives) < MIN_CLASS:
            continue
        out[d.prediction_ds] = Refit(fit_platt(y, score), prior[0].prediction_ds, prior[-1].prediction_ds)
    return out


def performance_rows(task: Task, days: list[DayInput], ds: str, *, min_coverage: float, max_delay_days: int,
                     window_days: int, signal_min_coverage: float, threshold: float = 0.5,
                     recalibrate_days: int = 0, recalibrate_min_rows: int = 500,
                     recalibrate_rows: int = 5_000, value_model: "ValueModel | None" = None) -> list[dict[str, Any]]:
    """The performance picture as known on `ds`: one row per day (oldest first), with its rolling window.

    `recalibrate_days` > 0: where the task estimates, each day's estimate uses a calibrator refitted on
    the labels arrived for the days just before it (`recalibrations`: up to `recalibrate_rows` rows,
    at most `recalibrate_days` days back) instead of the card's, once those hold
    `recalibrate_min_rows` rows.

    `value_model` (a `[value]` cost matrix, `nightshift.value`): each day also gets its business value,
    realized on the labelled rows at the decisions scoring made, and (binary) expected over every
    scored row from the same calibrated scores as the metric's estimate; per row and in total.
    """
    primary = task.primary.name
    refits = recalibrations(days, lookback_days=recalibrate_days, min_rows=recalibrate_min_rows,
                            target_rows=recalibrate_rows, task=task) if task.calibration is not None else {}
    per_day = []
    base = task
    night_threshold = threshold
    for d in days:
        task = base.bind(d.classes)
        threshold = night_threshold if d.threshold is None else d.threshold
        if (refit := refits.get(d.prediction_ds)) is not None:
            d = replace(d, calibrated=refit.calibrator.apply(d.pred), method=refit.words(task.estimate_method))
        n_lab = min(len(d.y), len(d.pred))  # each scored row counts once
        coverage = n_lab / max(len(d.pred), 1)
        age = days_between(d.prediction_ds, ds)
        matured = is_matured(coverage, age, min_coverage, max_delay_days)
        stats = task.stats(d.y, d.y_pred, threshold) if len(d.y) else None
        realized = task.evaluate(d.y, d.y_pred, threshold) if len(d.y) else {}
        est_stats = task.estimate_stats(d.pred, threshold, d.calibrated) if len(d.pred) > 1 else None
        raw_stats = (task.estimate_stats(d.pred, threshold) if d.calibrated is not None else est_stats) if est_stats else None
        estimated, est_se, _ = task.from_stats(est_stats) if est_stats else ({}, None, 0)
        uncal = task.from_stats(raw_stats)[0].get(primary) if raw_stats else None
        realized_se = task.from_stats(stats)[1] if stats else None
        est = estimated.get(primary)
        error = est - realized[primary] if matured and est is not None and realized.get(primary) is not None else None
        value = day_value(value_model, d, threshold, matured) if value_model is not None else {}
        per_day.append((d, stats, est_stats, {
            "prediction_ds": d.prediction_ds, "age_days": age, "rows": len(d.pred), "labelled": n_lab,
            "coverage": round(coverage, 6), "matured": matured, "status": "matured" if matured else "provisional",
            "signal_ready": signal_ready(coverage, matured, signal_min_coverage),
            "metric": primary, "realized": realized.get(primary), "realized_se": realized_se,
            "estimated": est, "estimated_se": est_se, "estimated_uncalibrated": uncal,
            "calibrated": d.calibrated is not None and est is not None,
            "estimate_method": d.method or task.estimate_method, "estimate_error": error,
            "realized_metrics": realized, "estimated_metrics": {k: v for k, v in estimated.items() if v is not None},
            "label_mean": task.label_mean(d.y),
            "mean_prediction": float(np.mean(task.headline(d.pred))) if len(d.pred) else None, "model_version": d.version,
            **value, **(d.extra or {}),
        }))
    rows = []
    for d, _, _, row in per_day:
        task = base.bind(d.classes)
        first = add_days(d.prediction_ds, -(window_days - 1))
        inside = [(s, e, r) for dd, s, e, r in per_day
                  if first <= dd.prediction_ds <= d.prediction_ds and dd.version == d.version and dd.classes == d.classes]
        real, real_se, real_n = task.from_stats(pool([s for s, _, _ in inside]))
        est, est_se, est_n = task.from_stats(pool([e for _, e, _ in inside]))
        rows.append({**row, "rolling_first_ds": inside[0][2]["prediction_ds"], "rolling_days": len(inside),
                     "rolling_rows": sum(r["rows"] for _, _, r in inside), "rolling_labelled": real_n,
                     "rolling_realized": real.get(primary), "rolling_realized_se": real_se,
                     "rolling_estimated": est.get(primary), "rolling_estimated_se": est_se,
                     "rolling_realized_metrics": {k: v for k, v in real.items() if v is not None},
                     "rolling_estimated_metrics": {k: v for k, v in est.items() if v is not None}})
    return rows


def day_value(value_model: "ValueModel", d: DayInput, threshold: float, matured: bool) -> dict[str, Any]:
    """A prediction day's business value (pure): realized per labelled row and in total, expected per scored
    row and in total (where the model estimates), and the estimate's error once the day has matured."""
    def decisions(pred: np.ndarray, given: np.ndarray | None) -> np.ndarray | None:
        if not value_model.decides:
            return None
        return np.asarray(given, bool) if given is not None else decide(pred, threshold)

    n_lab = min(len(d.y), len(d.y_pred))
    realized = value_model.realized(d.y, d.y_pred, decisions(d.y_pred, d.y_decision)) if n_lab else None
    expected = value_model.expected(d.pred, decisions(d.pred, d.decision), d.calibrated) if len(d.pred) else None
    real_mean, real_total = value_summary(realized)
    est_mean, est_total = value_summary(expected)
    return {"realized_value": real_mean, "realized_value_total": real_total, "estimated_value": est_mean,
            "estimated_value_total": est_total,
            "value_estimate_error": est_mean - real_mean if matured and None not in (est_mean, real_mean) else None,
            "decision_threshold": float(threshold) if value_model.decides else None}


def model_cards(settings: "Settings", lake: Lake, versions: set[str]) -> dict[str, ModelCard]:
    """Each version's calibration card from its bundle (JSON only); uncalibrated where it has none."""
    from nightshift.registry import Registry

    registry, cards = Registry(settings, lake), {}
    for v in sorted(versions):
        try:
            cards[v] = read_model_card(registry.local_path(v))
        except FileNotFoundError:
            cards[v] = UNCALIBRATED
        except Exception as exc:  # noqa: BLE001 - the estimate must not fail the night: it goes on uncalibrated
            log.warning("the calibrator of model v%s could not be read (%s: %s); its rows are estimated uncalibrated. "
                        "Check that the version is still registered in MLflow", v, type(exc).__name__, exc)
            cards[v] = UNCALIBRATED
    return cards


def calibrate(pred: np.ndarray, versions: np.ndarray, cards: dict[str, ModelCard]) -> np.ndarray | None:
    """Each row's calibrated P(y=1) by the calibrator of the version that scored it; None if none has one."""
    if not any(cards.get(v, UNCALIBRATED).calibrator for v in set(versions.tolist())):
        return None
    out = np.asarray(pred, np.float64).copy()
    for v in set(versions.tolist()):
        mask = versions == v
        out[mask] = cards.get(v, UNCALIBRATED).calibrate(pred[mask])
    return out


def measure_ground_truth(settings: "Settings", ds: str, *, lake: Lake | None = None) -> dict:
    """Commit the performance picture as known on `ds`; returns a summary of matured days."""
    lake = lake or Lake.of(settings)
    spec, policy, task = settings.dataset, settings.dataset.label_delay, task_for(settings.dataset.task)
    value_model = settings.value_model()
    by_value = settings.scoring.threshold == "value"  # each version decides at its own threshold
    threshold = decision_threshold(settings.scoring.threshold, None)
    window = ds_range(add_days(ds, -policy.max_delay_days), ds)
    days = [d for d in window if lake.exists(PREDICTIONS, d)]
    known = labels_table.known(lake, spec, ds, window)  # arrival <= ds only
    labels = known.table
    scored = pc.is_in(labels[EVENT_DS], pa.array(days, pa.string()))
    held = labels.num_rows - (pc.sum(pc.cast(scored, pa.int64())).as_py() or 0)  # labels waiting for their predictions

    inputs, cards = [], {}
    for day in days:
        # Multiclass: the night's class vocabulary is in its column names (`p__<class>`), the scoring model's.
        names = lake.dataset(PREDICTIONS, day).schema.names
        day_task = task.from_schema(names)
        # The decisions as scoring made them (binary), for the value of each row's (decision, label) cell.
        decided = ["decision"] if value_model is not None and value_model.decides and "decision" in names else []
        preds = lake.read(PREDICTIONS, day, columns=[spec.entity_id, *day_task.prediction_columns(), *decided, "model_version"])
        pred = day_task.pred_of(preds)
        versions = np.asarray(preds.column("model_version").to_pylist(), dtype=object).astype(str)
        joined = labels_table.join(preds, labels, day, spec)
        y = task.labels(joined.column(spec.label), f"labels for predictions/ds={day}") if joined.num_rows else np.array([])
        unseen = day_task.unseen(y)
        if unseen:
            log.warning("labels for predictions/ds=%s as known on %s: %d rows of classes the scoring model has never seen "
                        "(%s); they are counted in unseen_labels and left out of the metrics. A retrain grows the "
                        "vocabulary", day, ds, sum(unseen.values()), ", ".join(f"{c!r}: {n}" for c, n in sorted(unseen.items())))
        calibrated, method = None, task.estimate_method
        if task.estimates or by_value:
            cards.update(model_cards(settings, lake, set(versions.tolist()) - set(cards)))
        if task.estimates:
            calibrated = calibrate(pred, versions, cards)
            method = method_words(cards[versions[0]] if len(versions) else UNCALIBRATED, task.estimate_method)
        # The day's threshold (accuracy, and the value where no decision column says): its first version's own.
        day_threshold = (decision_threshold("value", cards[versions[0]].threshold) if by_value and len(versions)
                         else None)
        classes = getattr(day_task, "classes", None) or None
        inputs.append(DayInput(day, ",".join(sorted(set(versions.tolist()))), pred, y,
                               day_task.pred_of(joined) if joined.num_rows else np.array([]), calibrated, method,
                               extra={"duplicate_labels": known.duplicates.get(day, 0),
                                      "conflicting_labels": known.conflicts.get(day, 0),
                                      "unknown_ids": labels_table.unknown_ids(preds, labels, day, spec),
                                      **({"unseen_labels": sum(unseen.values()),
                                          "unseen_classes": ",".join(sorted(unseen)) or None,
                                          "rare_classes": ",".join(day_task.rare_classes(y)) or None} if classes else {})},
                               classes=classes,
                               decision=preds.column("decision").to_numpy(zero_copy_only=False) if decided else None,
                               y_decision=(joined.column("decision").to_numpy(zero_copy_only=False)
                                           if decided and joined.num_rows else None),
                               threshold=day_threshold))
    rows = performance_rows(task, inputs, ds, min_coverage=policy.min_coverage, max_delay_days=policy.max_delay_days,
                            window_days=settings.policy.window_days, signal_min_coverage=settings.policy.signal_min_coverage,
                            threshold=threshold, recalibrate_days=settings.policy.recalibrate_days,
                            recalibrate_min_rows=settings.policy.recalibrate_min_rows,
                            recalibrate_rows=settings.policy.recalibrate_rows, value_model=value_model)
    performance.write(lake, ds, rows)
    counts = {"label_rows": known.rows, "duplicate_labels": sum(known.duplicates.values()),
              "conflicting_labels": sum(known.conflicts.values()), "unknown_ids": sum(r["unknown_ids"] for r in rows),
              "held_labels": held, "unseen_labels": sum(r.get("unseen_labels") or 0 for r in rows)}
    for r in rows:
        if r["duplicate_labels"] or r["conflicting_labels"] or r["unknown_ids"]:
            log.warning("labels for predictions/ds=%s as known on %s: %d duplicate rows (the latest arrival wins), "
                        "%d ids with conflicting values, %d ids that day never scored", r["prediction_ds"], ds,
                        r["duplicate_labels"], r["conflicting_labels"], r["unknown_ids"])
    if held:
        log.info("%d labels as known on %s wait for predictions that are not committed yet", held, ds)
    matured = [r for r in rows if r["matured"] and r["realized"] is not None]
    latest = matured[-1] if matured else None
    return {"ds": ds, "days": len(rows), "matured_days": len(matured), "metric": task.primary.name,
            "latest_matured_day": latest["prediction_ds"] if latest else None,
            "latest_matured": latest["realized"] if latest else None, "labels": counts}
