"""A retrain, step by step: window -> train challenger -> evaluate against champion -> promote | reject.

Each step is one function that the retrain DAG calls from one task and that returns a
small dict of references. `retrain()` runs them in order in-process (the CLI and tests).
Intermediate tables go to `<lake>/_work/retrain/ds=D/`, invisible to lake readers.
"""

from __future__ import annotations

import json
import logging
import posixpath
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from nightshift.dates import add_days
from nightshift.decisions import write_decision
from nightshift.lake import Lake
from nightshift.registry import CHALLENGER, CHAMPION, Registry
from training.window import build_window

if TYPE_CHECKING:
    from nightshift.settings import Settings

log = logging.getLogger("nightshift.retrain")

PROMOTE, REJECT, INSUFFICIENT = "PROMOTE", "REJECT", "INSUFFICIENT_EVIDENCE"


def _work_dir(lake: Lake, ds: str) -> str:
    return posixpath.join(lake.root, "_work", "retrain", f"ds={ds}")


def prepare_window(settings: "Settings", ds: str) -> dict[str, Any]:
    """Build the training window for `ds` and stage it; returns its paths and summary."""
    lake = Lake(settings.lake_uri)
    window = build_window(lake, settings.dataset, ds, settings.training)
    if window.train.num_rows < settings.training.min_train_rows:
        raise ValueError(
            f"training window for {ds} has {window.train.num_rows} labelled rows, fewer than "
            f"training.min_train_rows={settings.training.min_train_rows}: land more days or widen training.window_days"
        )
    work = _work_dir(lake, ds)
    lake.fs.create_dir(work, recursive=True)
    paths = {"train": posixpath.join(work, "train.parquet"), "holdout": posixpath.join(work, "holdout.parquet")}
    pq.write_table(window.train, paths["train"], filesystem=lake.fs)
    pq.write_table(window.holdout, paths["holdout"], filesystem=lake.fs)
    summary = window.summary()
    log.info("window for %s: %d train rows, %d holdout rows over %s..%s",
             ds, summary["train_rows"], summary["holdout_rows"], summary["first_day"], summary["last_day"])
    return {**paths, **summary}


def champion_at_end_of(registry: Registry, ds: str):
    """The champion in force once day `ds`'s own decisions are taken."""
    event = registry.version_as_of(add_days(ds, 1))
    return None if event is None else registry.ref(event.version, CHAMPION)


def train_challenger(settings: "Settings", ds: str, window: dict[str, Any], *, trigger: str = "manual",
                     reasons: list[str] | None = None, progress: bool = False) -> dict[str, Any]:
    """Train on the staged window, log the run to MLflow and register it as `challenger`."""
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

    meta = {
        "ds": ds,
        "init_from": init_from,
        "warm_from_version": champion_ref.version if champion is not None else None,
        "device": result.device,
        "train_rows": result.rows,
        "train_seconds": round(result.seconds, 2),
        "window": {k: window[k] for k in ("first_day", "last_day", "train_rows", "holdout_rows", "holdout_days")},
        "spec": settings.dataset.model_dump(),
        "history": result.history,
    }
    with tempfile.TemporaryDirectory() as tmp:
        bundle_dir = Path(tmp) / "model"
        save_bundle(bundle_dir, result.model, preprocessor, meta)
        pq.write_table(_reference_sample(train, settings), bundle_dir / "reference.parquet")

        run_id = _log_run(registry, ds, trigger, init_from, reasons, settings, window, result, bundle_dir)
    version = registry.register(run_id, "model", tags={"ds": ds, "init_from": init_from, "device": result.device})
    registry.move_alias(CHALLENGER, version, ds=ds, reason=f"trained on {ds} ({trigger})", decided_by="retrain")
    log.info("challenger v%s trained on %s in %.1fs (%s, init_from=%s)", version, result.device, result.seconds, ds, init_from)
    return {"version": version, "run_id": run_id, "device": result.device, "init_from": init_from,
            "train_rows": result.rows, "train_seconds": round(result.seconds, 2)}


def evaluate_challenger(settings: "Settings", ds: str, window: dict[str, Any], version: str) -> dict[str, Any]:
    """Score champion and challenger on the same holdout and judge the challenger."""
    from training.bundle import load_bundle
    from training.evaluate import auc, judge_challenger, judge_first_model, paired_bootstrap, segment_deltas

    lake = Lake(settings.lake_uri)
    registry = Registry(settings, lake)
    spec, gate = settings.dataset, settings.gate
    holdout = pq.read_table(window["holdout"], filesystem=lake.fs)
    y = holdout.column(spec.label).to_numpy(zero_copy_only=False).astype(np.int64)
    p_challenger = load_bundle(registry.local_path(version)).predict_proba(holdout)
    champion_ref = champion_at_end_of(registry, ds)

    evidence: dict[str, Any] = {"holdout_rows": int(len(y)), "holdout_days": window.get("holdout_days", []),
                                "coverage": window.get("coverage", {}), "challenger_version": version}
    if champion_ref is None:
        n_pos = int(y.sum())
        a = auc(y, p_challenger) if 0 < n_pos < len(y) else float("nan")
        verdict = judge_first_model(a, int(len(y)), n_pos, gate)
        evidence.update({"first_model": True, "auc_challenger": a, "n_pos": n_pos})
    else:
        p_champion = load_bundle(registry.local_path(champion_ref.version)).predict_proba(holdout)
        boot = paired_bootstrap(y, p_champion, p_challenger, n_boot=gate.n_boot, confidence=gate.confidence, seed=gate.seed)
        segments = []
        if spec.segment:
            seg = holdout.column(spec.segment).to_numpy(zero_copy_only=False).astype(str)
            segments = segment_deltas(y, p_champion, p_challenger, seg, gate.min_segment_rows)
        verdict = judge_challenger(boot, segments, gate)
        evidence.update({"first_model": False, "champion_version": champion_ref.version, **boot, "segments": segments})
    evidence.update({"verdict": verdict.verdict, "reasons": list(verdict.reasons), "gate": gate.model_dump()})
    log.info("challenger v%s on %s: %s (%s)", version, ds, verdict.verdict, "; ".join(verdict.reasons))
    return {"ds": ds, "version": version, "verdict": verdict.verdict, "reasons": list(verdict.reasons),
            "evidence": json.loads(json.dumps(evidence, default=_json_default))}


def promote_challenger(settings: "Settings", ds: str, evaluation: dict[str, Any], decided_by: str = "retrain") -> dict[str, Any]:
    """Move `champion` to the challenger (the old one becomes `previous_champion`) and record it."""
    lake = Lake(settings.lake_uri)
    registry = Registry(settings, lake)
    version = evaluation["version"]
    reason = "; ".join(evaluation["reasons"]) or "promoted"
    registry.promote(version, ds=ds, reason=reason, decided_by=decided_by)
    _record_verdict(lake, registry, ds, evaluation)
    return {"ds": ds, "champion": version, "verdict": evaluation["verdict"]}


def reject_challenger(settings: "Settings", ds: str, evaluation: dict[str, Any]) -> dict[str, Any]:
    """Keep the champion; record why the challenger was not promoted."""
    lake = Lake(settings.lake_uri)
    registry = Registry(settings, lake)
    _record_verdict(lake, registry, ds, evaluation)
    current = registry.current(CHAMPION)
    return {"ds": ds, "champion": current.version if current else None, "verdict": evaluation["verdict"]}


def retrain(settings: "Settings", ds: str, *, trigger: str = "manual", reasons: list[str] | None = None,
            progress: bool = False) -> dict[str, Any]:
    """The whole retrain in-process: what the retrain DAG does, without a scheduler."""
    started = time.perf_counter()
    window = prepare_window(settings, ds)
    trained = train_challenger(settings, ds, window, trigger=trigger, reasons=reasons, progress=progress)
    evaluation = evaluate_challenger(settings, ds, window, trained["version"])
    if evaluation["verdict"] == PROMOTE:
        promote_challenger(settings, ds, evaluation)
    else:
        reject_challenger(settings, ds, evaluation)
    return {**trained, "verdict": evaluation["verdict"], "reasons": evaluation["reasons"],
            "seconds": round(time.perf_counter() - started, 2)}


def _log_run(registry: Registry, ds: str, trigger: str, init_from: str, reasons: list[str] | None,
             settings: "Settings", window: dict[str, Any], result, bundle_dir: Path) -> str:
    """One MLflow run per training: params, per-epoch metrics, window coverage, the bundle."""
    from mlflow.entities import Metric, Param, RunTag

    client = registry.client
    tags = {"nightshift.ds": ds, "nightshift.trigger": trigger, "nightshift.init_from": init_from,
            "nightshift.device": result.device, "nightshift.reasons": "; ".join(reasons or [])[:4000]}
    run = client.create_run(registry.experiment_id(), run_name=f"retrain-{ds}", tags=tags)
    run_id = run.info.run_id
    try:
        params = {**_loggable(settings.resolved()), "ds": ds, "init_from_effective": init_from,
                  "train_rows": str(result.rows), "window_first_day": str(window["first_day"]),
                  "window_last_day": str(window["last_day"])}
        stamp = int(time.time() * 1000)  # MLflow's bookkeeping time, not a logical date
        metrics = [Metric(k, float(v), stamp, h["epoch"]) for h in result.history
                   for k, v in h.items() if k != "epoch" and v is not None]
        metrics.append(Metric("train_seconds", float(result.seconds), stamp, 0))
        items = [Param(k, v) for k, v in params.items()]
        for i in range(0, len(items), 100):  # MLflow takes at most 100 params per batch
            client.log_batch(run_id, params=items[i:i + 100])
        client.log_batch(run_id, metrics=metrics, tags=[RunTag("mlflow.source.name", "nightshift retrain")])
        client.log_dict(run_id, window.get("coverage", {}), "window_coverage.json")
        client.log_artifacts(run_id, str(bundle_dir), artifact_path="model")
    except BaseException:
        client.set_terminated(run_id, "FAILED")
        raise
    client.set_terminated(run_id, "FINISHED")
    return run_id


def _record_verdict(lake: Lake, registry: Registry, ds: str, evaluation: dict[str, Any]) -> None:
    run_id = registry.client.get_model_version(registry.name, evaluation["version"]).run_id
    write_decision(lake, ds, "promotion", evaluation["verdict"], evaluation["reasons"], evaluation["evidence"],
                   model_version=evaluation["version"], mlflow_run_id=run_id)
    client = registry.client
    client.set_tag(run_id, "nightshift.verdict", evaluation["verdict"])
    ev = evaluation["evidence"]
    for key in ("auc_champion", "auc_challenger", "delta", "ci_low", "ci_high"):
        if isinstance(ev.get(key), (int, float)):
            client.log_metric(run_id, f"gate_{key}", float(ev[key]))


def _reference_sample(train: pa.Table, settings: "Settings") -> pa.Table:
    """A fixed-size, seeded sample of the training window: the drift reference saved with the model."""
    spec = settings.dataset
    n = min(settings.training.reference_size, train.num_rows)
    idx = np.sort(np.random.default_rng(settings.training.seed).choice(train.num_rows, size=n, replace=False))
    return train.select(list(spec.features)).take(pa.array(idx))


def _loggable(params: dict[str, Any]) -> dict[str, str]:
    return {k: str(v)[:500] for k, v in params.items()}


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)

