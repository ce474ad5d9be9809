"""Every MLflow write of Nightshift but the registry's own (versions and aliases): training runs,
their params and metrics, and the tags and descriptions that verdicts leave on runs and versions.

Promotion, rejection, deferral and rollback all record themselves through `tag_decision`, so
each leaves the same tags: `nightshift.<kind>` = the verdict, `nightshift.<kind>.ds`, and
`nightshift.<kind>.reasons`, on both the MLflow run and the model version.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nightshift.registry import Registry
    from nightshift.settings import Settings

_MAX_TAG = 4000


def log_training_run(registry: "Registry", ds: str, *, trigger: str, init_from: str, reasons: list[str] | None,
                     settings: "Settings", window: dict[str, Any], result, bundle_dir: Path,
                     parent_run_id: str | None = None, extra_tags: dict[str, str] | None = None,
                     run_name: str | None = None) -> str:
    """One MLflow run per training: params, per-epoch metrics, window coverage, the bundle.

    Under a tournament, `parent_run_id` makes it a child run of the tournament's run.
    """
    from mlflow.entities import Metric, Param, RunTag

    client = registry.client
    tags = {"nightshift.ds": ds, "nightshift.trigger": trigger, "nightshift.init_from": init_from,
            "nightshift.task": settings.dataset.task.value, "nightshift.device": result.device,
            "nightshift.window_fingerprint": window.get("fingerprint", ""),
            "nightshift.reasons": "; ".join(reasons or [])[:_MAX_TAG], **(extra_tags or {})}
    if parent_run_id:
        tags["mlflow.parentRunId"] = parent_run_id
    run = client.create_run(registry.experiment_id(), run_name=run_name or f"retrain-{ds}", tags=tags)
    run_id = run.info.run_id
    try:
        params = {**{k: str(v)[:500] for k, v in settings.resolved().items()}, "ds": ds, "init_from_effective": init_from,
                  "train_rows": str(result.rows), "window_first_day": str(window["first_day"]),
                  "window_last_day": str(window["last_day"])}
        stamp = int(time.time() * 1000)  # MLflow's bookkeeping time, not a logical date
        metrics = [Metric(k, float(v), stamp, h["epoch"]) for h in result.history
                   for k, v in h.items() if k != "epoch" and v is not None]
        metrics.append(Metric("train_seconds", float(result.seconds), stamp, 0))
        metrics.append(Metric("samples_per_s", float(getattr(result, "samples_per_s", 0.0)), stamp, 0))
        if getattr(result, "best_epoch", None) is not None:
            metrics.append(Metric("best_epoch", float(result.best_epoch), stamp, 0))
        items = [Param(k, v) for k, v in params.items()]
        for i in range(0, len(items), 100):  # MLflow takes at most 100 params per batch
            client.log_batch(run_id, params=items[i:i + 100])
        client.log_batch(run_id, metrics=metrics, tags=[RunTag("mlflow.source.name", "nightshift retrain")])
        client.log_dict(run_id, {"coverage": window.get("coverage", {}), "notes": window.get("notes", [])}, "window.json")
        transplanted = getattr(result.model, "transplant_report", None)
        if transplanted is not None:  # a warm start or transfer: which tensors it copied, grew and initialised
            client.log_dict(run_id, transplanted.as_dict(), "transplant.json")
            client.set_tag(run_id, "nightshift.transplant", transplanted.summary())
        recorded = getattr(result.model, "nightshift_architecture", None)
        if recorded is not None:
            client.set_tag(run_id, "nightshift.architecture", str(recorded.get("architecture") or recorded["builder"]))
            client.set_tag(run_id, "nightshift.code_sha256", str((recorded.get("code") or {}).get("source_sha256")))
        write_signature(bundle_dir, settings, run_id)
        client.log_artifacts(run_id, str(bundle_dir), artifact_path="model")
    except BaseException:
        client.set_terminated(run_id, "FAILED")
        raise
    client.set_terminated(run_id, "FINISHED")
    return run_id


def write_signature(bundle_dir: Path, settings: "Settings", run_id: str) -> None:
    """An `MLmodel` file beside the bundle, holding only the model's signature (no flavor: nothing
    loads it through MLflow), so the model version's page shows its input and output schema."""
    from mlflow.models import Model, ModelSignature
    from mlflow.types import ColSpec, Schema

    import json

    from model.bundle import PREPROCESSOR
    from nightshift.task import task_for

    spec = settings.dataset
    inputs = [ColSpec("double", c) for c in spec.numeric] + [ColSpec("string", c) for c in spec.categorical]
    arrow_to_mlflow = {"double": "double", "int64": "long", "bool": "boolean", "int8": "long", "float": "float",
                       "string": "string"}
    pre = Path(bundle_dir) / PREPROCESSOR
    classes = json.loads(pre.read_text()).get("classes") if pre.is_file() else None  # multiclass: the output columns
    try:
        fields = task_for(spec.task, classes).output_fields()
    except ValueError:  # a losing candidate's run holds no bundle: a multiclass one has no vocabulary to name columns by
        return
    outputs = [ColSpec(arrow_to_mlflow.get(str(t), "double"), name) for name, t in fields]
    Model(artifact_path="model", run_id=run_id,
          signature=ModelSignature(Schema(inputs), Schema(outputs))).save(str(Path(bundle_dir) / "MLmodel"))


def tag_decision(registry: "Registry", version: str, kind: str, verdict: str, ds: str, reasons: list[str],
                 evidence: dict[str, Any] | None = None) -> str | None:
    """Leave a verdict on the model version and its run, the same way for every kind; returns the run id."""
    client = registry.client
    mv = client.get_model_version(registry.name, str(version))
    tags = {f"nightshift.{kind}": verdict, f"nightshift.{kind}.ds": ds,
            f"nightshift.{kind}.reasons": "; ".join(reasons)[:_MAX_TAG]}
    for key, value in tags.items():
        client.set_model_version_tag(registry.name, str(version), key, value)
        if mv.run_id:
            client.set_tag(mv.run_id, key, value)
    if evidence and (chosen := evidence.get("gate_holdout")) and chosen.get("onset"):
        # which rows the gate judged on after a drift: the days since the onset, or the whole holdout
        where = f"since {chosen['onset']}" if chosen.get("since_onset") else "whole"
        client.set_model_version_tag(registry.name, str(version), f"nightshift.{kind}.holdout",
                                     f"{where}: {chosen.get('rows')} rows")
    if evidence and mv.run_id:
        for key in ("champion", "challenger", "gain", "ci_low", "ci_high"):
            if isinstance(evidence.get(key), (int, float)):
                client.log_metric(mv.run_id, f"gate_{key}", float(evidence[key]))
            if isinstance((evidence.get("business_value") or {}).get(key), (int, float)):
                client.log_metric(mv.run_id, f"gate_value_{key}", float(evidence["business_value"][key]))
    if kind == "promotion" and evidence is not None:
        client.update_model_version(registry.name, str(version), description=describe_gate(verdict, reasons, evidence))
    return mv.run_id


def describe_gate(verdict: str, reasons: list[str], evidence: dict[str, Any]) -> str:
    """The model version's description: the gate's verdict and its evidence, in words."""
    lines = [f"**{verdict}** on {evidence.get('ds', '?')}: " + "; ".join(reasons)]
    if evidence.get("first_model"):
        lines.append(f"First model: holdout {evidence.get('metric')} = {evidence.get('value')} on {evidence.get('holdout_rows')} rows.")
    elif "gain" in evidence:
        lines.append(f"{evidence.get('metric')}: champion v{evidence.get('champion_version')} {evidence.get('champion'):.4f} -> "
                     f"challenger {evidence.get('challenger'):.4f}; gain {evidence['gain']:+.4f} ({evidence.get('gain_unit')}), "
                     f"{evidence.get('confidence', 0):.0%} CI [{evidence['ci_low']:+.4f}, {evidence['ci_high']:+.4f}] "
                     f"on {evidence.get('n')} paired holdout rows.")
    if (v := evidence.get("business_value")) and "gain" in v:
        decides = " (it decided: gate.metric = \"value\")" if evidence.get("decided_on") == "value" else ""
        lines.append(f"Business value per row{' in ' + v['currency'] if v.get('currency') else ''} ({v.get('words')}): "
                     f"champion {v['champion']:.4g} -> challenger {v['challenger']:.4g}; gain {v['gain']:+.4g}, "
                     f"{v.get('confidence', 0):.0%} CI [{v['ci_low']:+.4g}, {v['ci_high']:+.4g}]{decides}.")
    for s in evidence.get("segments", []):
        lines.append(f"- segment {s['segment']}: gain {s['gain']:+.4f} on {s['n']} rows")
    lines.append("Evidence: " + json.dumps({k: evidence[k] for k in ("holdout_days", "coverage", "gate_holdout") if k in evidence},
                                           default=str))
    return "\n\n".join(lines)[:5000]


# -- the strategy tournament: one parent run, one child run per candidate ---------------------

def start_tournament(registry: "Registry", ds: str, *, trigger: str, candidates: list[str], reasons: list[str] | None,
                     window: dict[str, Any]) -> str:
    """The parent run of a tournament; each candidate's run is its child."""
    client = registry.client
    tags = {"nightshift.ds": ds, "nightshift.trigger": trigger, "nightshift.tournament": "parent",
            "nightshift.candidates": ", ".join(candidates), "nightshift.window_fingerprint": window.get("fingerprint", ""),
            "nightshift.reasons": "; ".join(reasons or [])[:_MAX_TAG], "mlflow.source.name": "nightshift retrain"}
    return client.create_run(registry.experiment_id(), run_name=f"tournament-{ds}", tags=tags).info.run_id


def log_failed_candidate(registry: "Registry", ds: str, *, candidate: str, error: str, parent_run_id: str | None,
                         device: str, trigger: str) -> str:
    """A training that stopped (NaN loss, untrainable window): its run ends FAILED and nothing is registered."""
    client = registry.client
    tags = {"nightshift.ds": ds, "nightshift.trigger": trigger, "nightshift.candidate": candidate,
            "nightshift.device": device, "nightshift.error": error[:_MAX_TAG]}
    if parent_run_id:
        tags["mlflow.parentRunId"] = parent_run_id
    run_id = client.create_run(registry.experiment_id(), run_name=f"{candidate}-{ds}", tags=tags).info.run_id
    client.set_terminated(run_id, "FAILED")
    return run_id


def finish_tournament(registry: "Registry", run_id: str, *, status: str, winner: str | None,
                      scores: list[dict[str, Any]], seconds: float) -> None:
    """Close the parent run: the winner, every candidate's validation score, the wall time."""
    client = registry.client
    client.set_tag(run_id, "nightshift.winner", winner or "")
    client.log_metric(run_id, "tournament_seconds", float(seconds))
    for s in scores:
        if isinstance(s.get("score"), (int, float)):
            client.log_metric(run_id, f"valid_{s['metric']}.{s['candidate'].replace(':', '.')}", float(s["score"]))
    client.log_dict(run_id, {"candidates": scores, "winner": winner}, "tournament.json")
    client.set_terminated(run_id, status)


def tag_lineage(registry: "Registry", run_id: str, version: str, lineage: dict[str, Any]) -> None:
    """The challenger's lineage (strategy, window, parent version, data fingerprint) on its run and version."""
    client = registry.client
    for key, value in lineage.items():
        text = "" if value is None else str(value)[:_MAX_TAG]
        client.set_tag(run_id, f"nightshift.lineage.{key}", text)
        client.set_model_version_tag(registry.name, str(version), f"nightshift.lineage.{key}", text)
