"""One night, step by step: validate -> score -> detect drift -> confirm champion -> ground truth -> decide.

The nightly DAG calls one of these per task; `run_night` calls them in order in-process.

Scoring may run ahead of the decisions (in a backfill, several nights score in parallel),
so it is speculative: it uses the champion in force as far as it is known. The ordered part
of the night begins with `confirm_champion`, which runs only once every earlier night is
settled (its decision taken, any retrain it started finished). If a promotion decided on
an earlier logical day landed after this night was scored, the night is rescored by the
model that was really in force, and its drift check redone. A backfill therefore commits
exactly what nightly runs in real time would have committed.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from nightshift.dates import ds_range
from nightshift.lake import DRIFT, Lake
from nightshift.registry import Registry

if TYPE_CHECKING:
    from nightshift.settings import Settings

log = logging.getLogger("nightshift.nightly")


def validate_night(settings: "Settings", ds: str) -> dict:
    from batch_scoring.contract import validate_partition

    return validate_partition(Lake(settings.lake_uri), settings.dataset, ds)


def score_night(settings: "Settings", ds: str, model: str | None = None) -> dict:
    from batch_scoring.score import score_partition

    return score_partition(settings, ds, model)


def check_drift(settings: "Settings", ds: str) -> dict:
    from batch_scoring.drift import detect_drift

    return detect_drift(settings, ds)


def confirm_champion(settings: "Settings", ds: str, model: str | None = None) -> dict:
    """Make sure night `ds` was scored (and drift-checked) by the model in force; redo it if not."""
    from batch_scoring.drift import detect_drift
    from batch_scoring.score import score_partition, scored_by

    lake = Lake(settings.lake_uri)
    mode = model or settings.scoring.model
    expected = Registry(settings, lake).resolve(ds, mode)
    actual = scored_by(lake, ds)
    rescored = actual != expected.version
    if rescored:
        log.info("night %s was scored by v%s but v%s was in force: rescoring", ds, actual, expected.version)
        score_partition(settings, ds, mode, lake=lake, ref=expected)
    drift_version = None
    if lake.exists(DRIFT, ds):
        drift_version = lake.read(DRIFT, ds, columns=["model_version"]).column(0)[0].as_py()
    if rescored or drift_version != expected.version:
        detect_drift(settings, ds, lake=lake)
    return {"ds": ds, "model_version": expected.version, "rescored": rescored, "was": actual}


def measure_night(settings: "Settings", ds: str) -> dict:
    from batch_scoring.ground_truth import measure_ground_truth

    return measure_ground_truth(settings, ds)


def decide_night(settings: "Settings", ds: str, manual: bool = False) -> dict:
    from batch_scoring.policy import decide_retrain

    return decide_retrain(settings, ds, manual=manual)


def run_night(settings: "Settings", ds: str, *, model: str | None = None, retrain: bool = True,
              progress: bool = False) -> dict:
    """Everything the nightly DAG does for `ds`, in-process, including the retrain hand-off."""
    result = {"ds": ds, "validate": validate_night(settings, ds)}
    result["score"] = score_night(settings, ds, model)
    result["drift"] = check_drift(settings, ds)
    result["confirm"] = confirm_champion(settings, ds, model)
    result["ground_truth"] = measure_night(settings, ds)
    result["decision"] = decide_night(settings, ds)
    if retrain and result["decision"]["retrain"]:
        from training.retrain import retrain as run_retrain

        result["retrain"] = run_retrain(settings, ds, trigger="nightly", reasons=result["decision"]["reasons"],
                                        progress=progress)
    return result


def run_nights(settings: "Settings", start: str, end: str, *, model: str | None = None, retrain: bool = True,
               progress: bool = True) -> list[dict]:
    """Nights start..end in date order, in one process (a quick local replay)."""
    days = ds_range(start, end)
    results = []
    if not progress:
        return [run_night(settings, d, model=model, retrain=retrain) for d in days]
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()) as bar:
        task = bar.add_task("nights", total=len(days))
        for d in days:
            bar.update(task, description=f"night {d}")
            r = run_night(settings, d, model=model, retrain=retrain)
            results.append(r)
            bar.console.print(night_line(r))
            bar.advance(task)
    return results


def night_line(r: dict) -> str:
    """A one-line account of a night, for logs and the CLI."""
    drift = r["drift"]
    parts = [f"{r['ds']}: scored {r['score']['rows']} rows with v{r['confirm']['model_version']}",
             f"drift={'YES ' + ','.join(drift['drifted_features'][:4]) if drift['drift'] else 'no'}",
             f"decision={r['decision']['verdict']}"]
    if r.get("retrain"):
        parts.append(f"retrain -> v{r['retrain']['version']} {r['retrain']['verdict']}")
    return "  ".join(parts)
