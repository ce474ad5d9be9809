"""Rollback: point `champion` back at an earlier version from a logical day, and say why.

Like a promotion, a rollback takes effect from the night after its logical day `ds`, is
recorded in the alias history and in `decisions/ds=D/rollback.parquet`, and leaves the
version it replaced as `previous_champion` (so a second rollback undoes the first).
Optionally it rescores a range of nights with the restored champion.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from nightshift.dates import ds_range, parse_ds
from nightshift.decisions import write_decision
from nightshift.lake import FEATURES, Lake
from nightshift.registry import CHAMPION, PREVIOUS_CHAMPION, Registry

if TYPE_CHECKING:
    from nightshift.settings import Settings


def roll_back(settings: "Settings", ds: str, *, reason: str, version: str | None = None) -> dict:
    """Make `version` (default: `previous_champion`) the champion from the night after `ds`."""
    parse_ds(ds)
    if not reason or not reason.strip():
        raise ValueError("a rollback needs a reason: it is recorded with the decision for whoever reads it later")
    lake = Lake(settings.lake_uri)
    registry = Registry(settings, lake)
    current = registry.current(CHAMPION)
    if current is None:
        raise LookupError("there is no champion to roll back")
    if version is None:
        previous = registry.current(PREVIOUS_CHAMPION)
        if previous is None:
            raise LookupError("no previous_champion to roll back to: name a version explicitly")
        version = previous.version
    target = registry.ref(str(version))  # raises if the version does not exist
    if target.version == current.version:
        raise ValueError(f"v{target.version} is already the champion: nothing to roll back")
    registry.promote(target.version, ds=ds, reason=f"rollback: {reason}", decided_by="rollback")
    write_decision(lake, ds, "rollback", "ROLLBACK", [reason],
                   {"from_version": current.version, "to_version": target.version},
                   model_version=target.version, mlflow_run_id=target.run_id)
    return {"ds": ds, "from_version": current.version, "champion": target.version, "reason": reason}


def rescore(settings: "Settings", start: str, end: str) -> dict:
    """Rescore nights start..end with today's champion (`model=champion`)."""
    from batch_scoring.score import score_partition

    lake = Lake(settings.lake_uri)
    days = [d for d in ds_range(start, end) if lake.exists(FEATURES, d)]
    results = [score_partition(settings, d, "champion", lake=lake) for d in days]
    return {"nights": len(results), "rows": sum(r["rows"] for r in results),
            "model_version": results[0]["model_version"] if results else None}
