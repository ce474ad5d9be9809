"""What moves (or keeps) the champion: promote, reject, defer and roll back, side by side.

Each one records itself the same two ways: a decision record in `decisions/ds=D/` (with its
reasons and evidence) and the same MLflow tags on the model version and its run
(`training.tracking.tag_decision`). Alias moves take effect from the night after their
logical day `ds` and are appended to the alias history.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from nightshift.dates import parse_ds
from nightshift.lake import Lake
from nightshift.registry import CHAMPION, PREVIOUS_CHAMPION, Registry, RegistryError
from nightshift.tables.decisions import write_decision
from training import tracking

if TYPE_CHECKING:
    from nightshift.settings import Settings

PROMOTE, REJECT, INSUFFICIENT = "PROMOTE", "REJECT", "INSUFFICIENT_EVIDENCE"
DEFERRED, UNCHANGED = "DEFERRED", "UNCHANGED"  # the retrain stopped before training, and why
ROLLBACK = "ROLLBACK"
ON_TRIAL = "ON_TRIAL"  # the offline gate passed it, and gate.mode = "shadow:N" puts it on trial (`training.shadow`)


class NoChampion(RuntimeError):
    """A retrain ended and there is still no champion: nothing can score. Says which setting to change."""


def promote_challenger(settings: "Settings", ds: str, evaluation: dict[str, Any], decided_by: str = "retrain", *,
                       registry: Registry | None = None) -> dict[str, Any]:
    """Move `champion` to the challenger (the old one becomes `previous_champion`) and record it."""
    registry = registry or Registry(settings)
    version = evaluation["version"]
    registry.promote(version, ds=ds, reason="; ".join(evaluation["reasons"]) or "promoted", decided_by=decided_by)
    _record(registry, ds, "promotion", evaluation["verdict"], evaluation["reasons"], evaluation["evidence"], version)
    return {"ds": ds, "champion": version, "verdict": evaluation["verdict"], "reasons": evaluation["reasons"]}


def reject_challenger(settings: "Settings", ds: str, evaluation: dict[str, Any], *, registry: Registry | None = None) -> dict[str, Any]:
    """Keep the champion; record why the challenger was not promoted. Fails if there is no champion at all."""
    registry = registry or Registry(settings)
    _record(registry, ds, "promotion", evaluation["verdict"], evaluation["reasons"], evaluation["evidence"],
            evaluation["version"])
    current = registry.current(CHAMPION)
    if current is None:
        raise NoChampion(_no_champion_message(evaluation["verdict"], evaluation["reasons"], settings))
    return {"ds": ds, "champion": current.version, "verdict": evaluation["verdict"], "reasons": evaluation["reasons"]}


def record_deferral(settings: "Settings", ds: str, window: dict[str, Any], *, registry: Registry | None = None) -> dict[str, Any]:
    """The retrain stopped before training (holdout too weak, or nothing changed): say so, with the numbers."""
    registry = registry or Registry(settings)
    verdict, reasons = window["action_verdict"], window["action_reasons"]
    evidence = {k: window.get(k) for k in ("first_day", "last_day", "train_rows", "holdout_rows", "holdout_days",
                                           "coverage", "notes", "fingerprint", "power", "gate_holdout", "champion_version",
                                           "trigger", "judgeable")}
    from nightshift.task import task_for
    from training.evaluate import effective_gate

    evidence["gate"] = effective_gate(settings.gate, task_for(settings.dataset.task)).model_dump()
    _record(registry, ds, "promotion", verdict, reasons, evidence, None)
    current = registry.current(CHAMPION)
    if current is None:
        raise NoChampion(_no_champion_message(verdict, reasons, settings))
    return {"ds": ds, "champion": current.version, "verdict": verdict, "reasons": reasons}


def roll_back(settings: "Settings", ds: str, *, reason: str, version: str | None = None) -> dict:
    """Make `version` (default: `previous_champion`) the champion from the night after `ds`."""
    parse_ds(ds)
    if not reason or not reason.strip():
        raise ValueError("a rollback needs a reason: it is recorded with the decision for whoever reads it later")
    registry = Registry(settings)
    with registry.moving():  # what it reads and what it moves, with no promotion in between
        current = registry.current(CHAMPION)
        if current is None:
            raise LookupError("there is no champion to roll back")
        previous = registry.current(PREVIOUS_CHAMPION)
        if version is None:
            if previous is None:
                raise LookupError(f"no previous_champion to roll back to (champion is v{current.version}): name a version explicitly")
            version = previous.version
        known = registry.versions()
        if str(version) not in known:
            raise LookupError(f"model version {version!r} does not exist; versions are {', '.join(known) or 'none'} "
                              f"(champion v{current.version}, previous_champion {'v' + previous.version if previous else 'none'})")
        target = registry.ref(str(version))
        if target.version == current.version:
            raise ValueError(f"v{target.version} is already the champion: nothing to roll back")
        registry.promote(target.version, ds=ds, reason=f"rollback: {reason}", decided_by="rollback")
    evidence = {"from_version": current.version, "to_version": target.version}
    _record(registry, ds, "rollback", ROLLBACK, [reason], evidence, target.version)
    return {"ds": ds, "from_version": current.version, "champion": target.version, "reason": reason}


def _record(registry: Registry, ds: str, kind: str, verdict: str, reasons: list[str], evidence: dict[str, Any],
            version: str | None) -> None:
    """The decision record in the lake, and the same verdict as MLflow tags. The record is written even
    when MLflow fails to take the tags (a move already made must not go unrecorded); the fault is then raised."""
    run_id, fault = None, None
    if version:
        try:
            run_id = tracking.tag_decision(registry, version, kind, verdict, ds, reasons, evidence)
        except RegistryError as exc:
            fault = exc
    write_decision(Lake.of(registry.settings), ds, kind, verdict, reasons, evidence,
                   model_version=version, mlflow_run_id=run_id)
    if fault is not None:
        raise RegistryError(f"the {kind} of v{version} on {ds} is made and recorded in decisions/ds={ds}, but MLflow "
                            f"did not take its tags: {fault}") from fault


record = _record  # what `training.shadow` records the verdict ON_TRIAL with


def _no_champion_message(verdict: str, reasons: list[str], settings: "Settings") -> str:
    from nightshift.task import task_for

    gate, training, task = settings.gate, settings.training, task_for(settings.dataset.task)
    floor = gate.first_model_floor if gate.first_model_floor is not None else task.default_first_model_floor
    return (f"the retrain ended {verdict} and there is still no champion, so nothing can be scored: {'; '.join(reasons)}. "
            f"To bootstrap on this data, land more labelled days, or lower gate.min_rows (now {gate.min_rows}), or raise "
            f"training.holdout_max_days (now {training.holdout_max_days}); for a first model below its bar, "
            f"gate.first_model_floor (now {task.first_model_metric.name} {floor}) sets it")
