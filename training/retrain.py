"""A retrain, step by step: window -> (defer | train challenger -> evaluate -> promote | reject).

Each step is one function of the retrain flow (`training.flows.RETRAIN`): the retrain DAG
calls one per task, and `nightshift retrain` runs the same flow in-process. Each returns a
small dict of references. Intermediate tables go to `<lake>/_work/retrain/ds=D/`, invisible
to lake readers.

Before any training, `prepare_window` decides whether training can pay off:
- **power**: the holdout grows over older labelled days until the gate could resolve its
  margin (`training.evaluate.detectable_gain`); if it still cannot, the retrain defers,
  and its record names the numbers;
- **unchanged**: if the window's data and the champion are what the last retrain saw, the
  challenger would be the same one, so the retrain is skipped with a record.
"""

from __future__ import annotations

import logging
import posixpath
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from nightshift.dates import add_days
from nightshift.lake import Lake
from nightshift.registry import CHALLENGER, CHAMPION, Registry
from nightshift.spec import EVENT_DS
from nightshift.tables.decisions import latest_decision, read_decision
from nightshift.task import task_for
from training.promotion import DEFERRED, UNCHANGED
from training.window import build_window, fingerprint

if TYPE_CHECKING:
    from nightshift.settings import Settings

log = logging.getLogger("nightshift.retrain")

TRAIN, DEFER = "train", "defer"


def _work_dir(lake: Lake, ds: str) -> str:
    return posixpath.join(lake.root, "_work", "retrain", f"ds={ds}")


def model_threshold(settings: "Settings", bundle) -> float:
    """The decision threshold a version scores with: scoring.threshold, or with "value" the one recorded on it."""
    return bundle.decision_threshold(settings.scoring.threshold)


def champion_at_end_of(registry: Registry, ds: str):
    """The champion in force once day `ds`'s own decisions are taken."""
    event = registry.version_as_of(add_days(ds, 1))
    return None if event is None else registry.ref(event.version, CHAMPION)


def prepare_window(settings: "Settings", ds: str, *, trigger: str = "manual", reasons: list[str] | None = None,
                   registry: Registry | None = None) -> dict[str, Any]:
    """Build and stage the training window for `ds`, and decide whether to train on it.

    The configured architecture's builder is imported first: a path that does not import fails
    the retrain here, named, before any window is built or any run starts.
    """
    from model import architectures
    from model.bundle import load_bundle
    from nightshift.value import row_values
    from training.evaluate import (choose_holdout, detectable_gain, detectable_value_gain, effective_gate, judge_power,
                                   judgeable_by)
    from training.window import since_onset

    architectures.load_builder(architectures.builder_path(settings.model.architecture))
    registry = registry or Registry(settings, Lake.of(settings))
    lake = registry.lake
    spec, task = settings.dataset, task_for(settings.dataset.task)
    gate = effective_gate(settings.gate, task)
    champion_ref = champion_at_end_of(registry, ds)
    champion = load_bundle(registry.local_path(champion_ref.version), allow_code_drift=settings.model.allow_code_drift) if champion_ref else None

    value_model = settings.value_model()

    def power_of(holdout: pa.Table) -> dict[str, Any] | None:
        if champion is None or holdout.num_rows < 2:
            return None
        y = task.labels(holdout.column(spec.label), "holdout labels")
        if gate.metric == "value":  # the value gain decides: can these rows resolve gate.margin in value per row?
            rows = row_values(value_model, y, champion.predict(holdout), model_threshold(settings, champion))
            return detectable_value_gain(rows, confidence=gate.confidence, correlation=gate.assumed_correlation)
        return detectable_gain(y, champion.predict(holdout), confidence=gate.confidence,
                               correlation=gate.assumed_correlation, task=champion.task, seed=gate.seed)

    # After a drift the gate judges on the holdout's rows since the onset, and the power check
    # looks at the same rows (`training.evaluate.choose_holdout`).
    onset = drift_onset(lake, ds)

    def judged_by(holdout: pa.Table) -> tuple[Any, pa.Table, dict[str, Any] | None]:
        """Which of the holdout's rows the gate would judge on: the choice, those rows, and their power when checked."""
        days = sorted(set(holdout.column(EVENT_DS).to_pylist()))
        if onset is None:
            return choose_holdout(None, days, 0, (), None, gate), holdout, None
        since = since_onset(holdout, onset)
        since_too_few = task.too_few(task.labels(since.column(spec.label), "holdout labels"), gate.min_rows)
        power = None
        if gate.onset_aware and gate.power_check and not since_too_few and 0 < since.num_rows < holdout.num_rows:
            power = power_of(since)
        choice = choose_holdout(onset, days, since.num_rows, since_too_few, power, gate)
        return choice, since if choice.since_onset else holdout, power

    def enough(holdout: pa.Table) -> bool:
        # Sized as the whole holdout needs, as without an onset: the rows since it are what they are,
        # and the whole holdout is the fallback. (Stopping the growth once they could judge, so the
        # older days trained, also lowers the share of new-world rows in the `recent` candidates'
        # draws; in test_pipeline's world that challenger ended INSUFFICIENT_EVIDENCE.)
        y = task.labels(holdout.column(spec.label), "holdout labels")
        if task.too_few(y, gate.min_rows):
            return False
        power = power_of(holdout) if gate.power_check else None
        return power is None or judge_power(power, gate).enough

    window = build_window(lake, spec, ds, settings.training, holdout_enough=enough)
    summary = window.summary()
    summary.update(fingerprint=fingerprint(window, spec), trigger=trigger, reasons=list(reasons or []),
                   champion_version=champion_ref.version if champion_ref else None)
    for note in window.notes:
        log.info("window for %s: %s", ds, note)

    choice, judged, onset_power = judged_by(window.holdout)
    summary["gate_holdout"] = {"onset": onset, "since_onset": choice.since_onset, "rows": judged.num_rows,
                               "days": sorted(set(judged.column(EVENT_DS).to_pylist())),
                               "whole_rows": window.holdout.num_rows, "whole_days": len(summary["holdout_days"]),
                               "power_short": choice.power_short, "reasons": list(choice.reasons)}
    for reason in choice.reasons:
        log.info("gate holdout for %s: %s", ds, reason)

    action, verdict, why = TRAIN, None, []
    y_holdout = task.labels(judged.column(spec.label), "holdout labels")
    too_few = task.too_few(y_holdout, gate.min_rows)
    if window.train.num_rows < settings.training.min_train_rows:
        action, verdict = DEFER, DEFERRED
        why = [f"training window {summary['first_day']}..{summary['last_day']} has {window.train.num_rows} labelled rows, "
               f"fewer than training.min_train_rows={settings.training.min_train_rows}: land more days or widen training.window_days"]
    elif (one_class := _one_class(window.train, spec, task, summary)):
        action, verdict, why = DEFER, DEFERRED, [one_class]
    elif too_few:
        action, verdict = DEFER, DEFERRED
        why = [*too_few, f"even after growing over {settings.training.holdout_max_days} days (training.holdout_max_days); "
                         "a challenger could only end INSUFFICIENT_EVIDENCE"]
    elif champion is not None and gate.power_check:
        power = onset_power if choice.since_onset else power_of(judged)
        summary["power"] = power
        powered = judge_power(power, gate)
        # Rows since an onset that cannot resolve the margin still judge (choose_holdout says why and what gain it takes).
        if not powered.enough and not choice.power_short:
            action, verdict, why = DEFER, DEFERRED, list(powered.reasons)
    if action == TRAIN and champion_ref is not None and trigger != "manual":
        last = latest_decision(lake, "promotion", before=add_days(ds, 1),
                               where=lambda d: d["evidence"].get("fingerprint") is not None and d["ds"] != ds)
        if (last and last["evidence"].get("fingerprint") == summary["fingerprint"]
                and last["evidence"].get("champion_version") == champion_ref.version):
            action, verdict = DEFER, UNCHANGED
            why = [f"the window's data (fingerprint {summary['fingerprint']}) and the champion v{champion_ref.version} are "
                   f"what the retrain of {last['ds']} saw: it would train the same challenger (verdict then: {last['verdict']})"]
    if verdict == DEFERRED and (too_few or "power" in summary):  # say once what would make it judgeable
        power = summary.get("power") or {}
        summary["judgeable"] = judgeable_by(judged.num_rows, len(set(judged.column(EVENT_DS).to_pylist())),
                                            settings.training.holdout_max_days,
                                            judge_power(power, gate).required_rows if power else None, power.get("mde"), gate)
        why = [*why, f"what would make it judgeable: {summary['judgeable']['words']}"]
    summary.update(action=action, action_verdict=verdict, action_reasons=why)
    if action == DEFER:
        log.info("retrain for %s stops before training: %s (%s)", ds, verdict, "; ".join(why))

    work = _work_dir(lake, ds)
    lake.fs.create_dir(work, recursive=True)
    paths = {"train": posixpath.join(work, "train.parquet"), "holdout": posixpath.join(work, "holdout.parquet")}
    pq.write_table(window.train, paths["train"], filesystem=lake.fs)
    pq.write_table(window.holdout, paths["holdout"], filesystem=lake.fs)
    log.info("window for %s: %d train rows, %d holdout rows over %s..%s",
             ds, summary["train_rows"], summary["holdout_rows"], summary["first_day"], summary["last_day"])
    return _jsonable({**paths, **summary})


def _one_class(train: pa.Table, spec, task, summary: dict[str, Any]) -> str | None:
    """Why the training rows cannot train the task (one class only), naming the window and the counts; else None."""
    from training.train import UntrainableWindow, check_trainable

    where = f"training window {summary['first_day']}..{summary['last_day']}"
    try:
        check_trainable(task.labels(train.column(spec.label), f"{where} labels"), task, where)
    except UntrainableWindow as exc:
        return str(exc)
    return None


def ready_to_train(window: dict[str, Any]) -> bool:
    """The branch after `prepare_window`: train, or record why not."""
    return window["action"] == TRAIN


def drift_onset(lake: Lake, ds: str) -> str | None:
    """The drift onset as the nightly decision records tell it: in the newest retrain decision up to `ds`
    whose evidence flags drift, its recorded onset, else its first drifted night; None when no record flags any."""
    def flagged(d: dict[str, Any]) -> bool:
        return any(d["evidence"].get("evidence", {}).get("drift_flags") or [])

    record = latest_decision(lake, "retrain", before=add_days(ds, 1), where=flagged)
    if record is None:
        return None
    ev = record["evidence"]["evidence"]
    # A retrain that waited for labels records the onset it waited from (older than its own 5 nights of flags).
    return ev.get("onset") or next(day for day, flag in zip(ev["drift_days"], ev["drift_flags"]) if flag)


def tournament_candidates(training, trigger: str | None, reasons: list[str] | None) -> list[tuple[str, str]]:
    """The (init_from, window) pairs a retrain trains: `candidates` when set; on a drift-triggered
    retrain `drift_candidates`; else the one `init_from:window`."""
    if training.candidates:
        chosen = training.candidates
    elif trigger == "nightly" and any("drift" in r for r in reasons or []) and training.drift_candidates:
        chosen = training.drift_candidates
    else:
        return [(str(training.init_from.value if hasattr(training.init_from, "value") else training.init_from),
                 str(training.window.value if hasattr(training.window, "value") else training.window))]
    return [tuple(c.split(":", 1)) for c in chosen]  # type: ignore[misc]


def pick_best(scores: list[dict[str, Any]]) -> int | None:
    """Index of the best candidate on validation (its `score` in the metric's direction); failed ones never win.

    Ties go to the earlier candidate, so the configured order is the tie-break.
    """
    best = None
    for i, s in enumerate(scores):
        if s.get("failed") or s.get("score") is None:
            continue
        if best is None:
            best = i
            continue
        b = scores[best]["score"]
        if (s["score"] > b) if s["higher_is_better"] else (s["score"] < b):
            best = i
    if best is None and scores and all(not s.get("failed") for s in scores):
        return 0  # no validation at all: the first candidate
    return best


def _candidate_weights(kind: str, table: pa.Table, settings: "Settings", onset: str | None):
    """Sampling weights for a candidate's window kind over `table`, with notes; (None, []) for uniform."""
    from model.preprocess import Preprocessor
    from training.reweight import recent_weights, representative_weights
    from training.window import EVENT_DS

    t = settings.training
    days = table.column(EVENT_DS).to_numpy(zero_copy_only=False)
    if kind == "recent":
        w = recent_weights(days, onset, t.recent_weight)
        return w.weights, w.notes, w.info
    if kind == "representative":
        pre = Preprocessor.fit(table, settings.dataset)
        x_num, x_cat = pre.transform(table)
        w = representative_weights(x_num, x_cat, days, t.representative_days, t.representative_max_weight, t.seed)
        return w.weights, w.notes, w.info
    return None, [], {}


def _load_source(settings: "Settings", registry: Registry, champion_ref, init_from: str):
    """The bundle a warm or transfer start begins from, and its name for the lineage."""
    from model.bundle import load_bundle

    src = settings.training.transfer_from if init_from == "transfer" else None
    if src:
        name, _, version = src.rpartition(":")
        reg = Registry(settings.with_overrides({"model.name": name}), registry.lake) if name else registry
        return load_bundle(reg.local_path(version), allow_code_drift=settings.model.allow_code_drift), f"{reg.name}:{version}"
    if champion_ref is None:
        return None, None
    return load_bundle(registry.local_path(champion_ref.version), allow_code_drift=settings.model.allow_code_drift), f"{registry.name}:{champion_ref.version}"


def train_challenger(settings: "Settings", ds: str, window: dict[str, Any], *, progress: bool = False,
                     registry: Registry | None = None) -> dict[str, Any]:
    """Train the tournament's candidates on the staged window, log each to MLflow, register the best as `challenger`.

    One candidate (the default outside drift) is one MLflow run. Several are child runs of one
    parent run. Every candidate trains on the window less its validation (a hash half of the
    rows of its newest days, `training.window.split_validation`; only days since the drift
    onset when a tournament knows one and they hold `training.valid_onset_min_rows`), stops
    early on their loss, and is scored there; the winner is then refitted on the whole window
    (`training.refit_epochs`), so the validation rows are not lost to it.
    A candidate whose loss goes NaN ends FAILED in MLflow; if none is left, nothing is
    registered, no alias moves and the step fails.
    """
    import dataclasses
    import time

    from training import tracking
    from model.calibration import write_model_card
    from model.bundle import save_bundle
    from training.train import (NonFiniteLoss, UntrainableWindow, check_trainable, fit, init_model, resolve_device,
                                transplant_record)
    from training.window import split_validation

    t0 = time.perf_counter()
    registry = registry or Registry(settings, Lake.of(settings))
    lake = registry.lake
    spec, task, t = settings.dataset, task_for(settings.dataset.task), settings.training
    train = pq.read_table(window["train"], filesystem=lake.fs)
    where = f"training window {window.get('first_day')}..{window.get('last_day')}"
    check_trainable(task.labels(train.column(spec.label), f"{where} labels"), task, where, t.min_train_rows)
    champion_ref = champion_at_end_of(registry, ds)
    trigger, reasons = window.get("trigger", "manual"), window.get("reasons", [])
    candidates = tournament_candidates(t, trigger, reasons)
    staged_kind = t.window.value
    for init, kind in candidates:
        if kind in ("fixed", "expanding") and kind != staged_kind:
            raise ValueError(f"candidate {init}:{kind} needs other days than the staged {staged_kind} window: a tournament "
                             f"trains every candidate on the same window; use sliding, recent or representative candidates, "
                             f"or set training.window={kind}")
    # The onset weighs `recent` rows up, and a tournament validates on the days since it.
    onset = drift_onset(lake, ds) if len(candidates) > 1 or any(k == "recent" for _, k in candidates) else None
    device = resolve_device(t.device, t.require_gpu)
    fallback = None
    if device.type != "cuda":
        fallback = "training.device=cpu" if t.device == "cpu" else "no CUDA device found (training.device=auto)"
    # Validation on the days since the onset when they hold enough rows, else on the newest days
    # (each split hashes its validation days' ids, so the second is drawn only when needed).
    valid_since = None
    if onset is not None:
        fit_table, valid_table = split_validation(train, t.valid_share, spec.entity_id, since=onset)
        if valid_table.num_rows and not task.too_few(task.labels(valid_table.column(spec.label), "validation labels"),
                                                     t.valid_onset_min_rows):
            valid_since = onset
    if valid_since is None:
        fit_table, valid_table = split_validation(train, t.valid_share, spec.entity_id)
        if onset is not None and valid_table.num_rows:
            log.info("the validation rows since the drift onset %s are too few (training.valid_onset_min_rows=%d): "
                     "validating on the newest days", onset, t.valid_onset_min_rows)
    if valid_table.num_rows:
        check_trainable(task.labels(fit_table.column(spec.label), f"{where} less its validation rows"), task,
                        f"{where} less its validation rows")
    sources: dict[str, Any] = {}

    def train_one(init: str, kind: str, table: pa.Table, valid: pa.Table | None, epochs: int | None):
        effective = init
        if init in ("warm", "transfer") and init not in sources:
            sources[init] = _load_source(settings, registry, champion_ref, init)
        source, source_name = sources.get(init, (None, None))
        if init == "warm" and source is None:
            log.info("init_from=warm but there is no champion yet: training from scratch")
            effective = "scratch"
        weights, notes, info = _candidate_weights(kind, table, settings, onset)
        model, preprocessor = init_model(effective, table, spec, settings.model, source, t.seed)
        run_settings = t if epochs is None else t.model_copy(update={"epochs": epochs, "early_stop_patience": 0})
        result = fit(model, preprocessor, table, spec, run_settings, valid_table=valid, device=device, progress=progress,
                     sample_weight=weights, freeze_epochs=t.freeze_epochs if effective == "transfer" else 0,
                     unfreeze_lr_factor=t.unfreeze_lr_factor)
        return dict(init=effective, kind=kind, result=result, preprocessor=preprocessor, notes=notes, info=info,
                    source=source_name if effective != "scratch" else None)

    parent = None
    names = [f"{i}:{k}" for i, k in candidates]
    if len(candidates) > 1:
        parent = tracking.start_tournament(registry, ds, trigger=trigger, candidates=names, reasons=reasons, window=window)
    scores, trained = [], []
    try:
        for (init, kind), name in zip(candidates, names):
            try:
                got = train_one(init, kind, fit_table, valid_table if valid_table.num_rows else None, None)
            except (NonFiniteLoss, UntrainableWindow) as exc:
                log.error("candidate %s failed on %s: %s", name, ds, exc)
                tracking.log_failed_candidate(registry, ds, candidate=name, error=str(exc), parent_run_id=parent,
                                              device=str(device), trigger=trigger)
                scores.append({"candidate": name, "failed": True, "error": str(exc), "score": None,
                               "metric": task.primary.name, "higher_is_better": task.primary.higher_is_better})
                trained.append(None)
                continue
            best = got["result"].best
            score = best.get(f"valid_{task.primary.name}")
            scores.append({"candidate": name, "init_from": got["init"], "window": kind, "score": score,
                           "metric": task.primary.name, "higher_is_better": task.primary.higher_is_better,
                           "valid_loss": best.get("valid_loss"), "best_epoch": got["result"].best_epoch,
                           "epochs_run": len(got["result"].history), "seconds": round(got["result"].seconds, 2)})
            trained.append(got)
        winner = pick_best(scores)
        if winner is None:
            errors = "; ".join(f"{s['candidate']}: {s['error']}" for s in scores if s.get("failed"))
            raise NonFiniteLoss(f"every candidate of the retrain on {ds} failed, so nothing is registered and no alias "
                                f"moves: {errors}") if any("loss became" in s.get("error", "") for s in scores) else \
                UntrainableWindow(f"every candidate of the retrain on {ds} failed: {errors}")
        chosen = trained[winner]
        # The validation rows were only validation so far: the winner learns them too, for as many
        # epochs as served it best.
        if valid_table.num_rows:
            epochs = (chosen["result"].best_epoch or len(chosen["result"].history)) if t.refit_epochs == "best" else t.epochs
            final = train_one(candidates[winner][0], chosen["kind"], train, None, epochs)
            final["result"] = dataclasses.replace(final["result"], history=chosen["result"].history,
                                                  best_epoch=chosen["result"].best_epoch,
                                                  stopped_early=chosen["result"].stopped_early)
        else:
            final = chosen
        result, preprocessor = final["result"], final["preprocessor"]
        name = names[winner]
        lineage = {"strategy": final["init"], "window": final["kind"], "candidate": name,
                   "parent_version": final["source"], "fingerprint": window.get("fingerprint"),
                   "onset": onset if final["kind"] == "recent" else None, "tournament": ", ".join(names)}
        meta = {
            "ds": ds,
            "task": spec.task.value,
            "init_from": final["init"],
            "warm_from_version": champion_ref.version if final["init"] == "warm" and champion_ref else None,
            "lineage": lineage,
            "device": result.device,
            "cpu_fallback": fallback,
            "train_rows": result.rows,
            "train_seconds": round(result.seconds, 2),
            "window": {k: window.get(k) for k in ("first_day", "last_day", "train_rows", "holdout_rows", "holdout_days", "fingerprint")},
            "weights": {"notes": final["notes"], **final["info"]},
            "tournament": scores,
            "validation": {"rows": valid_table.num_rows, "since_onset": valid_since},
            "spec": spec.model_dump(mode="json"),
            "history": result.history,
            "architecture": str(getattr(result.model, "nightshift_architecture", {}).get("architecture", "")) or None,
            "transplant": transplant_record(result.model),
        }
        extra = {"nightshift.candidate": name, "nightshift.window_kind": final["kind"]}
        if fallback:
            extra["nightshift.cpu_fallback"] = fallback
        with tempfile.TemporaryDirectory() as tmp:
            bundle_dir = Path(tmp) / "model"
            reference, meta["drift_reference"] = _reference_sample(train, settings, lake, window)
            save_bundle(bundle_dir, result.model, preprocessor, meta, reference=reference)
            card = _model_card(settings, lake, window, bundle_dir)
            write_model_card(bundle_dir, card)
            # Losing candidates keep their child runs (metrics, no model); the winner's run holds the bundle.
            for i, got in enumerate(trained):
                if got is None or i == winner:
                    continue
                _log_loser(registry, ds, got, names[i], trigger, reasons, settings, window, parent)
            run_id = tracking.log_training_run(registry, ds, trigger=trigger, init_from=final["init"], reasons=reasons,
                                               settings=settings, window=window, result=result, bundle_dir=bundle_dir,
                                               parent_run_id=parent, extra_tags=extra,
                                               run_name=f"{name}-{ds}" if parent else None)
    except BaseException:
        if parent:
            tracking.finish_tournament(registry, parent, status="FAILED", winner=None, scores=scores,
                                       seconds=time.perf_counter() - t0)
        raise
    tags = {"ds": ds, "init_from": final["init"], "device": result.device, "task": spec.task.value}
    if card.threshold is not None:  # scoring.threshold = "value": the version's own decision threshold
        tags["threshold"] = f"{card.threshold:.6g}"
    version = registry.register(run_id, "model", tags=tags)
    if card.threshold is not None:
        registry.client.set_tag(run_id, "nightshift.threshold", tags["threshold"])
    tracking.tag_lineage(registry, run_id, version, lineage)
    seconds = time.perf_counter() - t0
    if parent:
        tracking.finish_tournament(registry, parent, status="FINISHED", winner=name, scores=scores, seconds=seconds)
    registry.move_alias(CHALLENGER, version, ds=ds, reason=f"trained on {ds} ({trigger}; {name})", decided_by="retrain")
    log.info("challenger v%s (%s) trained on %s in %.1fs (%s)", version, name, result.device, seconds, ds)
    return {"version": version, "run_id": run_id, "device": result.device, "init_from": final["init"],
            "window_kind": final["kind"], "candidate": name, "tournament": _jsonable(scores), "parent_run_id": parent,
            "cpu_fallback": fallback, "train_rows": result.rows, "train_seconds": round(seconds, 2)}


def _model_card(settings: "Settings", lake: Lake, window: dict[str, Any], bundle_dir: Path):
    """Calibrator and reference from the new model on the gate's holdout: newest labelled days it never trained on."""
    from model.calibration import fit_model_card
    from model.bundle import load_bundle
    from nightshift.value import decision_threshold

    task = task_for(settings.dataset.task)
    holdout, days = _judged_holdout(lake, window)
    if holdout.num_rows == 0:
        return fit_model_card(task, np.array([]), np.array([]))
    y = task.labels(holdout.column(settings.dataset.label), "holdout labels")
    bundle = load_bundle(bundle_dir)
    card = fit_model_card(bundle.task, y, bundle.predict(holdout), decision_threshold(settings.scoring.threshold, None),
                          days, value_model=settings.value_model(), pick_threshold=settings.scoring.threshold == "value")
    log.info("calibration on %d holdout rows: %s; reference %s", len(y), card.calibrator or card.note or "none",
             card.reference and f"{card.reference.metric} {card.reference.realized}")
    if card.threshold is not None:
        log.info("decision threshold %.4f picked for business value on %d holdout rows: %.4g per row",
                 card.threshold, len(y), card.value["per_row"])
    return card


def _judged_holdout(lake: Lake, window: dict[str, Any]) -> tuple[pa.Table, list[str]]:
    """The holdout rows the gate judges on, and their days: the rows since the drift onset when
    `prepare_window` chose them (`gate.onset_aware`), else the whole holdout.

    The calibrator and the reference are fitted on the same rows: the reference is what the
    nightly policy holds production's realized metric to, and the calibrator is what turns
    tonight's scores into an estimate, so both should describe the world production is in.
    """
    from training.window import since_onset

    holdout = pq.read_table(window["holdout"], filesystem=lake.fs)
    chosen = window.get("gate_holdout") or {}
    if chosen.get("since_onset"):
        return since_onset(holdout, chosen["onset"]), list(chosen["days"])
    return holdout, list(window.get("holdout_days") or [])


def _log_loser(registry, ds, got, name, trigger, reasons, settings, window, parent) -> None:
    """A losing candidate's child run: its params and per-epoch metrics, without a model."""
    from training import tracking

    with tempfile.TemporaryDirectory() as tmp:
        tracking.log_training_run(registry, ds, trigger=trigger, init_from=got["init"], reasons=reasons, settings=settings,
                                  window=window, result=got["result"], bundle_dir=Path(tmp), parent_run_id=parent,
                                  extra_tags={"nightshift.candidate": name, "nightshift.window_kind": got["kind"]},
                                  run_name=f"{name}-{ds}")


def evaluate_challenger(settings: "Settings", ds: str, window: dict[str, Any], version: str, *,
                        registry: Registry | None = None) -> dict[str, Any]:
    """Score champion and challenger on the same holdout and judge the challenger."""
    from model.bundle import load_bundle
    from nightshift.value import crossfit_values, row_values
    from training.evaluate import (champion_staleness, deciding, effective_gate, judge_challenger, judge_first_model,
                                   paired_bootstrap, prediction_churn, segment_deltas)

    registry = registry or Registry(settings, Lake.of(settings))
    lake = registry.lake
    spec, task = settings.dataset, task_for(settings.dataset.task)
    gate = effective_gate(settings.gate, task)
    holdout, holdout_days = _judged_holdout(lake, window)
    chosen = window.get("gate_holdout") or {}
    y = task.labels(holdout.column(spec.label), "holdout labels")
    challenger = load_bundle(registry.local_path(version), allow_code_drift=settings.model.allow_code_drift)
    p_challenger = challenger.predict(holdout)
    champion_ref = champion_at_end_of(registry, ds)
    champion = load_bundle(registry.local_path(champion_ref.version),
                           allow_code_drift=settings.model.allow_code_drift) if champion_ref else None
    # Multiclass: both models' probabilities in one vocabulary (the challenger's, then any class only the
    # champion knows); a class a model lacks scores 0 for it (a one-vs-rest AUC of 0.5).
    classes = challenger.preprocessor.classes
    if classes is not None and champion is not None and champion.preprocessor.classes is not None:
        classes = (*classes, *(c for c in champion.preprocessor.classes if c not in classes))
    task = task.bind(classes)
    p_challenger = task.align(p_challenger, challenger.preprocessor.classes)
    too_few = task.too_few(y, gate.min_rows)

    evidence: dict[str, Any] = {"ds": ds, "holdout_rows": int(len(y)), "holdout_days": holdout_days, "gate_holdout": chosen,
                                "coverage": window.get("coverage", {}), "challenger_version": version,
                                "fingerprint": window.get("fingerprint"), "trigger": window.get("trigger"),
                                "retrain_reasons": window.get("reasons", []), "notes": window.get("notes", []),
                                "task": task.name.value, "gain_unit": task.gain_unit,
                                "champion_version": champion_ref.version if champion_ref else None}
    if classes is not None:
        evidence.update(classes=list(classes), caveats=task.caveats(y))
        for caveat in evidence["caveats"]:
            log.warning("gate for challenger v%s on %s: %s", version, ds, caveat)
    value_model = settings.value_model()
    t_challenger = model_threshold(settings, challenger)
    v_challenger, crossfit = None, None
    if value_model is not None and len(y):
        if settings.scoring.threshold == "value" and challenger.card.threshold is not None:
            # Its threshold was picked on these very rows: valued there, it would look better than it will do.
            v_challenger, folds = crossfit_values(value_model, y, p_challenger, seed=gate.seed)
            crossfit = {"folds": len(folds), "thresholds": folds,
                        "words": (f"the challenger is valued cross-fitted: each half of the holdout at the threshold picked "
                                  f"on the other ({', '.join(f'{t:.4g}' for t in folds)}), since its own "
                                  f"({t_challenger:.4g}) was picked on these rows")}
        else:
            v_challenger = row_values(value_model, y, p_challenger, t_challenger)
    if champion_ref is None:
        metric = task.first_model_metric
        floor = gate.first_model_floor if gate.first_model_floor is not None else task.default_first_model_floor
        value = task.evaluate(y, p_challenger, t_challenger)[metric.name] if len(y) else None
        verdict = judge_first_model(value, metric.name, floor, metric.higher_is_better, too_few, int(len(y)))
        evidence.update({"first_model": True, "metric": metric.name, "value": value, "floor": floor,
                         "metrics": task.evaluate(y, p_challenger, t_challenger) if len(y) else {}})
        if value_model is not None and len(y):  # recorded, not judged: the first model's bar is the task's metric
            evidence["business_value"] = {"challenger": float(np.mean(v_challenger)), "n": int(len(y)),
                                          **_value_terms(value_model, None, t_challenger),
                                          **({"crossfit": crossfit} if crossfit else {})}
    else:
        p_champion = task.align(champion.predict(holdout), champion.preprocessor.classes)
        t_champion = model_threshold(settings, champion)
        values = None
        if value_model is not None:  # each model's rows valued at the decision threshold it scores with
            values = (row_values(value_model, y, p_champion, t_champion), v_challenger)
        boot = paired_bootstrap(y, p_champion, p_challenger, n_boot=gate.n_boot, confidence=gate.confidence,
                                seed=gate.seed, task=task, values=values)
        if values is not None:
            boot["business_value"].update(_value_terms(value_model, t_champion, t_challenger),
                                          **({"crossfit": crossfit} if crossfit else {}))
        segments = []
        if spec.segment:
            seg = holdout.column(spec.segment).to_numpy(zero_copy_only=False).astype(str)
            segments = segment_deltas(y, p_champion, p_challenger, seg, gate.min_segment_rows, task=task)
        churn = prediction_churn(task, p_champion, p_challenger, t_champion, t_challenger)
        stale = champion_staleness(_fired_signals(lake, ds), chosen.get("onset"), holdout_days)
        decide_on = deciding({**boot, "too_few": too_few, "churn": churn}, gate.metric)
        verdict = judge_challenger(decide_on, segments, gate, stale=stale)
        evidence.update({"first_model": False, **boot, "segments": segments, "power": window.get("power"),
                         "churn": churn, "champion_stale": stale, "decided_on": gate.metric})
    reasons = [*verdict.reasons, *chosen.get("reasons", [])]  # which rows judged, when there was a choice
    evidence.update({"verdict": verdict.verdict, "basis": verdict.basis, "reasons": reasons, "gate": gate.model_dump()})
    log.info("challenger v%s on %s: %s (%s)", version, ds, verdict.verdict, "; ".join(reasons))
    return {"ds": ds, "version": version, "verdict": verdict.verdict, "reasons": reasons, "evidence": _jsonable(evidence)}


def _value_terms(value_model, t_champion: float | None, t_challenger: float | None) -> dict[str, Any]:
    """What a value in the evidence is measured in: the cost matrix, its unit, each model's decision threshold."""
    out = {"unit": "per row", "currency": value_model.currency, "matrix": value_model.matrix(), "words": value_model.words()}
    if value_model.decides:
        out["thresholds"] = {"champion": t_champion, "challenger": t_challenger}
    return out


def _fired_signals(lake: Lake, ds: str) -> frozenset[str]:
    """The policy signals behind night `ds`'s retrain decision: those fired that night, and those of the
    WAIT it carried out (empty without a record, e.g. a retrain by hand on a night with none)."""
    record = read_decision(lake, ds, "retrain")
    if record is None:
        return frozenset()
    ev = record["evidence"]
    fired = {s["name"] for s in ev.get("signals") or () if s.get("fired")}
    return frozenset(fired | set((ev.get("evidence") or {}).get("pending_signals") or ()))


def _reference_sample(train: pa.Table, settings: "Settings", lake: Lake | None = None,
                      window: dict[str, Any] | None = None) -> tuple[pa.Table, dict[str, Any]]:
    """A fixed-size, seeded sample of the world the model answers: the drift reference saved with it, and what it is.

    Its training window, unless the gate judges it on the rows since a drift onset: then the
    window's and the holdout's rows since the onset, the world it was judged on. A promotion that
    answers the drift thus moves the reference to the new world, which closes the episode (a new
    reference resets the alarm); a training window of mostly older days would keep the alarm on
    against the new champion, and each cooldown's end would retrain again on the same drift.
    """
    from training.window import since_onset

    spec = settings.dataset
    chosen = (window or {}).get("gate_holdout") or {}
    source, what = train.select(list(spec.features)), {"kind": "training_window", "rows": train.num_rows}
    onset, days = chosen.get("onset"), chosen.get("days") or []
    if lake is not None and onset and days and min(days) >= onset:
        holdout = pq.read_table(window["holdout"], filesystem=lake.fs)
        world = pa.concat_tables([since_onset(train, onset).select(list(spec.features)),
                                  since_onset(holdout, onset).select(list(spec.features))])
        if world.num_rows >= settings.gate.min_rows:
            source, what = world, {"kind": "since_onset", "onset": onset, "rows": world.num_rows}
    n = min(settings.training.reference_size, source.num_rows)
    idx = np.sort(np.random.default_rng(settings.training.seed).choice(source.num_rows, size=n, replace=False))
    return source.take(pa.array(idx)), what


def _jsonable(obj: Any) -> Any:
    """Plain JSON types only: step results travel through XCom."""
    import json

    def default(o: Any) -> Any:
        if isinstance(o, (np.floating, np.integer, np.bool_)):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
        return str(o)

    return json.loads(json.dumps(obj, default=default))


def retrain(settings: "Settings", ds: str, *, trigger: str = "manual", reasons: list[str] | None = None,
            progress: bool = False) -> dict[str, Any]:
    """The whole retrain in-process: the retrain flow, run without a scheduler. Returns its outcome."""
    from nightshift.flow import run_flow
    from training.flows import RETRAIN

    results = run_flow(RETRAIN, settings, ds, {"trigger": trigger, "reasons": list(reasons or [])}, progress=progress)
    return outcome(results)


def outcome(results: dict[str, Any]) -> dict[str, Any]:
    """What a retrain flow's step results add up to: verdict, reasons, version (None when it did not train)."""
    window = results.get("prepare_window", {})
    final = results.get("promote") or results.get("reject") or results.get("open_trial") or results.get("defer") or {}
    trained = results.get("train_challenger") or {}
    return {"ds": window.get("ds"), "verdict": final.get("verdict"), "reasons": final.get("reasons", []),
            "version": trained.get("version"), "champion": final.get("champion"), "device": trained.get("device"),
            "trial": (results.get("open_trial") or {}).get("trial"),
            "init_from": trained.get("init_from"), "candidate": trained.get("candidate"),
            "tournament": trained.get("tournament"), "train_seconds": trained.get("train_seconds"), "window": {k: window.get(k) for k in (
                "first_day", "last_day", "train_rows", "holdout_rows", "holdout_days", "notes", "fingerprint")}}
