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
from nightshift.tables.decisions import latest_decision
from nightshift.task import task_for
from training.promotion import DEFERRED, PROMOTE, UNCHANGED
from training.window import build_window, fingerprint

if TYPE_CHECKING:
    from nightshift.settings import Settings

log = logging.getLogger("nightshift.retrain")

TRAIN, DEFER = "train", "defer"


def _work_dir(lake: Lake, ds: str) -> str:
    return posixpath.join(lake.root, "_work", "retrain", f"ds={ds}")


def champion_at_end_of(registry: Registry, ds: str):
    """The champion in force once day `ds`'s own decisions are taken."""
    event = registry.version_as_of(add_days(ds, 1))
    return None if event is None else registry.ref(event.version, CHAMPION)


def prepare_window(settings: "Settings", ds: str, *, trigger: str = "manual", reasons: list[str] | None = None) -> dict[str, Any]:
    """Build and stage the training window for `ds`, and decide whether to train on it."""
    from training.bundle import load_bundle
    from training.evaluate import detectable_gain, effective_gate, judge_power

    lake = Lake(settings.lake_uri)
    registry = Registry(settings, lake)
    spec, task = settings.dataset, task_for(settings.dataset.task)
    gate = effective_gate(settings.gate, task)
    champion_ref = champion_at_end_of(registry, ds)
    champion = load_bundle(registry.local_path(champion_ref.version)) if champion_ref else None

    def power_of(holdout: pa.Table) -> dict[str, Any] | None:
        if champion is None or holdout.num_rows < 2:
            return None
        y = task.labels(holdout.column(spec.label), "holdout labels")
        return detectable_gain(y, champion.predict(holdout), confidence=gate.confidence,
                               correlation=gate.assumed_correlation, task=task, seed=gate.seed)

    def enough(holdout: pa.Table) -> bool:
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

    action, verdict, why = TRAIN, None, []
    y_holdout = task.labels(window.holdout.column(spec.label), "holdout labels")
    too_few = task.too_few(y_holdout, gate.min_rows)
    if window.train.num_rows < settings.training.min_train_rows:
        action, verdict = DEFER, DEFERRED
        why = [f"training window {summary['first_day']}..{summary['last_day']} has {window.train.num_rows} labelled rows, "
               f"fewer than training.min_train_rows={settings.training.min_train_rows}: land more days or widen training.window_days"]
    elif too_few:
        action, verdict = DEFER, DEFERRED
        why = [*too_few, f"even after growing over {settings.training.holdout_max_days} days (training.holdout_max_days); "
                         "a challenger could only end INSUFFICIENT_EVIDENCE"]
    elif champion is not None and gate.power_check:
        power = power_of(window.holdout)
        summary["power"] = power
        judged = judge_power(power, gate)
        if not judged.enough:
            action, verdict, why = DEFER, DEFERRED, list(judged.reasons)
    if action == TRAIN and champion_ref is not None and trigger != "manual":
        last = latest_decision(lake, "promotion", before=add_days(ds, 1),
                               where=lambda d: d["evidence"].get("fingerprint") is not None and d["ds"] != ds)
        if (last and last["evidence"].get("fingerprint") == summary["fingerprint"]
                and last["evidence"].get("champion_version") == champion_ref.version):
            action, verdict = DEFER, UNCHANGED
            why = [f"the window's data (fingerprint {summary['fingerprint']}) and the champion v{champion_ref.version} are "
                   f"what the retrain of {last['ds']} saw: it would train the same challenger (verdict then: {last['verdict']})"]
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


def ready_to_train(window: dict[str, Any]) -> bool:
    """The branch after `prepare_window`: train, or record why not."""
    return window["action"] == TRAIN


def train_challenger(settings: "Settings", ds: str, window: dict[str, Any], *, progress: bool = False) -> dict[str, Any]:
    """Train on the staged window, log the run to MLflow and register it as `challenger`."""
    from training import tracking
    from training.bundle import load_bundle, save_bundle
    from training.train import fit, init_model, resolve_device

    lake = Lake(settings.lake_uri)
    registry = Registry(settings, lake)
    train = pq.read_table(window["train"], filesystem=lake.fs)
    champion_ref = champion_at_end_of(registry, ds)
    init_from = settings.training.init_from
    if init_from == "warm" and champion_ref is None:
        log.info("init_from=warm but there is no champion yet: training from scratch")
        init_from = "scratch"
    champion = load_bundle(registry.local_path(champion_ref.version)) if init_from != "scratch" else None
    device = resolve_device(settings.training.device, settings.training.require_gpu)

    model, preprocessor = init_model(init_from, train, settings.dataset, settings.model, champion, settings.training.seed)
    result = fit(model, preprocessor, train, settings.dataset, settings.training, device=device, progress=progress)

    trigger, reasons = window.get("trigger", "manual"), window.get("reasons", [])
    meta = {
        "ds": ds,
        "task": settings.dataset.task.value,
        "init_from": init_from,
        "warm_from_version": champion_ref.version if champion is not None else None,
        "device": result.device,
        "train_rows": result.rows,
        "train_seconds": round(result.seconds, 2),
        "window": {k: window.get(k) for k in ("first_day", "last_day", "train_rows", "holdout_rows", "holdout_days", "fingerprint")},
        "spec": settings.dataset.model_dump(mode="json"),
        "history": result.history,
    }
    with tempfile.TemporaryDirectory() as tmp:
        bundle_dir = Path(tmp) / "model"
        save_bundle(bundle_dir, result.model, preprocessor, meta, reference=_reference_sample(train, settings))
        run_id = tracking.log_training_run(registry, ds, trigger=trigger, init_from=init_from, reasons=reasons,
                                           settings=settings, window=window, result=result, bundle_dir=bundle_dir)
    version = registry.register(run_id, "model", tags={"ds": ds, "init_from": init_from, "device": result.device,
                                                       "task": settings.dataset.task.value})
    registry.move_alias(CHALLENGER, version, ds=ds, reason=f"trained on {ds} ({trigger})", decided_by="retrain")
    log.info("challenger v%s trained on %s in %.1fs (%s, init_from=%s)", version, result.device, result.seconds, ds, init_from)
    return {"version": version, "run_id": run_id, "device": result.device, "init_from": init_from,
            "train_rows": result.rows, "train_seconds": round(result.seconds, 2)}


def evaluate_challenger(settings: "Settings", ds: str, window: dict[str, Any], version: str) -> dict[str, Any]:
    """Score champion and challenger on the same holdout and judge the challenger."""
    from training.bundle import load_bundle
    from training.evaluate import effective_gate, judge_challenger, judge_first_model, paired_bootstrap, segment_deltas

    lake = Lake(settings.lake_uri)
    registry = Registry(settings, lake)
    spec, task = settings.dataset, task_for(settings.dataset.task)
    gate = effective_gate(settings.gate, task)
    holdout = pq.read_table(window["holdout"], filesystem=lake.fs)
    y = task.labels(holdout.column(spec.label), "holdout labels")
    p_challenger = load_bundle(registry.local_path(version)).predict(holdout)
    champion_ref = champion_at_end_of(registry, ds)
    too_few = task.too_few(y, gate.min_rows)

    evidence: dict[str, Any] = {"ds": ds, "holdout_rows": int(len(y)), "holdout_days": window.get("holdout_days", []),
                                "coverage": window.get("coverage", {}), "challenger_version": version,
                                "fingerprint": window.get("fingerprint"), "trigger": window.get("trigger"),
                                "retrain_reasons": window.get("reasons", []), "notes": window.get("notes", []),
                                "task": task.name.value, "gain_unit": task.gain_unit,
                                "champion_version": champion_ref.version if champion_ref else None}
    if champion_ref is None:
        metric = task.first_model_metric
        floor = gate.first_model_floor if gate.first_model_floor is not None else task.default_first_model_floor
        value = task.evaluate(y, p_challenger, settings.scoring.threshold)[metric.name] if len(y) else None
        verdict = judge_first_model(value, metric.name, floor, metric.higher_is_better, too_few, int(len(y)))
        evidence.update({"first_model": True, "metric": metric.name, "value": value, "floor": floor,
                         "metrics": task.evaluate(y, p_challenger, settings.scoring.threshold) if len(y) else {}})
    else:
        p_champion = load_bundle(registry.local_path(champion_ref.version)).predict(holdout)
        boot = paired_bootstrap(y, p_champion, p_challenger, n_boot=gate.n_boot, confidence=gate.confidence,
                                seed=gate.seed, task=task)
        segments = []
        if spec.segment:
            seg = holdout.column(spec.segment).to_numpy(zero_copy_only=False).astype(str)
            segments = segment_deltas(y, p_champion, p_challenger, seg, gate.min_segment_rows, task=task)
        verdict = judge_challenger({**boot, "too_few": too_few}, segments, gate)
        evidence.update({"first_model": False, **boot, "segments": segments, "power": window.get("power")})
    evidence.update({"verdict": verdict.verdict, "reasons": list(verdict.reasons), "gate": gate.model_dump()})
    log.info("challenger v%s on %s: %s (%s)", version, ds, verdict.verdict, "; ".join(verdict.reasons))
    return {"ds": ds, "version": version, "verdict": verdict.verdict, "reasons": list(verdict.reasons),
            "evidence": _jsonable(evidence)}


def judge(evaluation: dict[str, Any]) -> bool:
    """The branch after `evaluate_challenger`: promote or reject."""
    return evaluation["verdict"] == PROMOTE


def _reference_sample(train: pa.Table, settings: "Settings") -> pa.Table:
    """A fixed-size, seeded sample of the training window: the drift reference saved with the model."""
    spec = settings.dataset
    n = min(settings.training.reference_size, train.num_rows)
    idx = np.sort(np.random.default_rng(settings.training.seed).choice(train.num_rows, size=n, replace=False))
    return train.select(list(spec.features)).take(pa.array(idx))


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
    final = results.get("promote") or results.get("reject") or results.get("defer") or {}
    trained = results.get("train_challenger") or {}
    return {"ds": window.get("ds"), "verdict": final.get("verdict"), "reasons": final.get("reasons", []),
            "version": trained.get("version"), "champion": final.get("champion"), "device": trained.get("device"),
            "init_from": trained.get("init_from"), "window": {k: window.get(k) for k in (
                "first_day", "last_day", "train_rows", "holdout_rows", "holdout_days", "notes", "fingerprint")}}
