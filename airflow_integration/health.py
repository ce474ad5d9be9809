"""Model health: the data behind the Airflow "Model health" page, read through the tables' readers.

Five questions, each answered from the lake alone (no MLflow, no Airflow DB, nothing heavy):
why did it retrain, what did the gate decide and on what evidence, how is the model doing
(and, with a cost matrix, what it earned and what each drift episode cost), which model
scored which night, and how is a shadow trial going. Every function returns plain JSON-able data; the plugin
(`plugins/model_health.py`) renders it.

Each table's partitions are read once and kept: every call lists the table's root (partition
names and modification times) and re-reads only the partitions that are new or changed since,
so a page load on an unchanged lake reads no Parquet at all, and one after a new night reads
that night's partitions only.
"""

from __future__ import annotations

import posixpath
import threading
from collections.abc import Callable
from typing import Any

import pyarrow.fs as pafs

from nightshift.lake import DECISIONS, DRIFT, PERFORMANCE, PREDICTIONS, Lake
from nightshift.tables import aliases, decisions, drift, performance, predictions
from nightshift.tables.aliases import CHAMPION

_derived: dict[tuple[str, str], tuple[tuple, Any]] = {}  # (lake, what) -> (signature, value)
_parts: dict[tuple[str, str], dict[str, tuple[int | None, list]]] = {}  # (lake, table) -> ds -> (mtime, rows)
_lock = threading.Lock()


def _listing(lake: Lake, base: str) -> dict[str, int | None]:
    """name -> modification time of each entry under `base` (one listing; {} if it does not exist)."""
    if lake.fs.get_file_info(base).type != pafs.FileType.Directory:
        return {}
    return {posixpath.basename(i.path): i.mtime_ns for i in lake.fs.get_file_info(pafs.FileSelector(base))
            if not posixpath.basename(i.path).startswith(("_", "."))}


def _signature(listing: dict[str, int | None]) -> tuple:
    return tuple(sorted(listing.items()))


def _partition_rows(lake: Lake, table: str, read: Callable[[list[str] | None], dict[str, list]]) -> tuple[tuple, list]:
    """Every partition's rows, re-reading only partitions that are new or changed since the last call
    (a commit replaces a partition's folder or renames a file into it: either changes its mtime).
    Where the filesystem keeps no folder times (object stores), every call reads everything."""
    listing = lake.partition_stamps(table)
    key = (lake.uri, table)
    with _lock:
        known = dict(_parts.get(key, {}))
    stale = sorted(d for d, m in listing.items() if m is None or d not in known or known[d][0] != m)
    if stale:
        fresh = read(stale if len(stale) < len(listing) else None)  # None: everything, one unfiltered scan
        for d in stale:
            known[d] = (listing[d], fresh.get(d, []))
    known = {d: v for d, v in known.items() if d in listing}
    with _lock:
        _parts[key] = known
    return _signature(listing), [row for d in sorted(known) for row in known[d][1]]


def _by_ds(rows: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for r in rows:
        out.setdefault(r["ds"], []).append(r)
    return out


def _derive(lake: Lake, what: str, signature: tuple, build: Callable[[], Any]) -> Any:
    """`build()`, kept until the signature of what it was built from changes."""
    key = (lake.uri, what)
    with _lock:
        hit = _derived.get(key)
    if hit is not None and hit[0] == signature:
        return hit[1]
    value = build()
    with _lock:
        _derived[key] = (signature, value)
    return value


def clear_cache() -> None:
    with _lock:
        _derived.clear()
        _parts.clear()


# -- the champion timeline ------------------------------------------------------------------

def champion_timeline(lake: Lake) -> list[dict[str, Any]]:
    """Every move of `champion`, oldest first: version, from which night, who decided and why, and
    the gate's (or the rollback's) evidence."""
    verdicts = {(d["ds"], d["model_version"]): d for d in decision_history(lake) if d["kind"] in ("promotion", "rollback")}
    verdicts.update({(d["ds"], d["model_version"]): d for d in trial_verdicts(lake) if d["verdict"] == "PROMOTE"})
    out = []
    moves = posixpath.join(lake.root, "registry", "aliases")
    for e in _derive(lake, "aliases", _signature(_listing(lake, moves)), lambda: aliases.history(lake)):
        if e.alias != CHAMPION:
            continue
        record = verdicts.get((e.ds, e.version))
        out.append({"ds": e.ds, "version": e.version, "previous": e.previous, "decided_by": e.decided_by,
                    "reason": e.reason, "run_id": e.run_id,
                    "verdict": record["verdict"] if record else None,
                    "reasons": record["reasons"] if record else [],
                    "evidence": record["evidence"] if record else {}})
    return out


def champion_now(lake: Lake) -> dict[str, Any] | None:
    timeline = champion_timeline(lake)
    return timeline[-1] if timeline and timeline[-1]["version"] is not None else None


def champions_in_words(lake: Lake) -> str:
    """'champion v3 (from the night after 2026-02-11), previous_champion v2; earlier: v1', for errors and forms."""
    timeline = [e for e in champion_timeline(lake) if e["version"] is not None]
    if not timeline:
        return "no champion yet"
    now = timeline[-1]
    earlier = list(dict.fromkeys(e["version"] for e in reversed(timeline[:-1]) if e["version"] != now["version"]))
    words = f"champion v{now['version']} (from the night after {now['ds']})"
    if now["previous"]:
        words += f", previous_champion v{now['previous']}"
    return words + (f"; earlier champions: {', '.join('v' + v for v in earlier)}" if earlier else "")


# -- decisions ------------------------------------------------------------------------------

def decision_history(lake: Lake) -> list[dict[str, Any]]:
    return _partition_rows(lake, DECISIONS, lambda days: _by_ds(decisions.history(lake, days=days)))[1]


def retrain_decisions(lake: Lake, include_no_action: bool = False) -> list[dict[str, Any]]:
    """The nightly policy's decisions that fired (RETRAIN, WAIT, or held by the COOLDOWN) and the withdrawal of a
    waiting one (a NO_ACTION that ends a wait), newest first, each with its reasons, its evidence and the thresholds
    it was held to."""
    rows = []
    for d in decision_history(lake):
        ev = d["evidence"].get("evidence", {})
        if d["kind"] != "retrain" or (d["verdict"] == "NO_ACTION" and not include_no_action and not ev.get("pending_since")):
            continue
        rows.append({"ds": d["ds"], "verdict": d["verdict"], "reasons": d["reasons"], "model_version": d["model_version"],
                     "evidence": ev, "policy": d["evidence"].get("policy", {}),
                     "signals": d["evidence"].get("signals", [])})
    return rows[::-1]


def verdicts(lake: Lake) -> list[dict[str, Any]]:
    """Every retrain's verdict, every rollback and every shadow trial's end, newest first."""
    rows = [d for d in decision_history(lake) if d["kind"] in ("promotion", "rollback")] + trial_verdicts(lake)
    return sorted(rows, key=lambda d: d["ds"])[::-1]


# -- shadow trials ---------------------------------------------------------------------------

def trial_states(lake: Lake) -> list[dict[str, Any]]:
    """Every shadow trial record (a trial's state as known on its `ds`), oldest first."""
    from nightshift.tables.trials import order

    return sorted(({**d["evidence"], "ds": d["ds"]} for d in decision_history(lake) if d["kind"] == "trial"), key=order)


def trial_verdicts(lake: Lake) -> list[dict[str, Any]]:
    """Each trial that ended, as a verdict row: its state, and the gate's verdict and evidence when it was judged."""
    from nightshift.tables.trials import OPEN

    out = []
    for t in trial_states(lake):
        if t["state"] == OPEN:
            continue
        c = t.get("conclusion") or {}
        out.append({"ds": t["ds"], "kind": "trial", "verdict": c.get("verdict") or t["state"], "state": t["state"],
                    "model_version": str(t["candidate"]), "reasons": t.get("reasons") or [], "evidence": c,
                    "trial": t["trial"]})
    return out


def shadow_trial(lake: Lake) -> dict[str, Any]:
    """The open trial (its nights, coverage so far and running gain, as the newest night knew them), and every
    trial's latest state, newest first."""
    from nightshift.tables.trials import OPEN, latest

    states = sorted(latest(trial_states(lake)).values(), key=lambda t: (t["opened_ds"], int(t["candidate"])))
    now = [t for t in states if t["state"] == OPEN]
    return {"open": now[-1] if now else None, "trials": states[::-1]}


# -- performance ----------------------------------------------------------------------------

def performance_series(lake: Lake) -> dict[str, Any]:
    """Per prediction day, what the newest night knows: realized metric, coverage, matured or
    provisional; and the estimate made on the day itself (before any label)."""
    cols = ["prediction_ds", "age_days", "rows", "labelled", "coverage", "matured", "metric", "realized", "estimated",
            "model_version", "realized_value", "estimated_value", "realized_value_total"]
    sig, rows = _partition_rows(lake, PERFORMANCE, lambda days: _by_ds(performance.history(lake, cols, days).to_pylist()))
    return _derive(lake, "performance", sig, lambda: _performance(rows))


def _performance(rows: list[dict]) -> dict[str, Any]:
    rows = sorted(rows, key=lambda r: (r["prediction_ds"], r["ds"]))
    latest: dict[str, dict] = {}
    estimate: dict[str, tuple[float | None, float | None]] = {}
    metric = None
    for r in rows:
        metric = metric or r["metric"]
        latest[r["prediction_ds"]] = r  # rows are in night order: the last one is the newest knowledge
        if r["age_days"] == 0 or r["prediction_ds"] not in estimate:  # the estimate made before any label
            estimate[r["prediction_ds"]] = (r["estimated"], r.get("estimated_value"))
    days = []
    for p in sorted(latest):
        r = latest[p]
        est, est_value = estimate.get(p, (None, None))
        days.append({"ds": p, "realized": r["realized"], "coverage": r["coverage"], "labelled": r["labelled"],
                     "rows": r["rows"], "matured": bool(r["matured"]), "as_of": r["ds"], "estimated": est,
                     "model_version": r["model_version"], "realized_value": r.get("realized_value"),
                     "estimated_value": est_value, "realized_value_total": r.get("realized_value_total")})
    has_value = any(d["realized_value"] is not None or d["estimated_value"] is not None for d in days)
    return {"metric": metric, "days": days, "value": has_value}


# -- business value -------------------------------------------------------------------------

def value_episodes(lake: Lake) -> dict[str, Any]:
    """Each drift alarm episode and the business value it cost before it was answered (a cost matrix set).

    An episode is a run of nights with the drift alarm on. It is *answered* by the first champion move a
    retrain made during it; its cost counts the prediction days from its first alarm night through the
    night of that promotion (the old champion still scored it), or through its last alarm night when it
    ended without one, or through the newest night while it is still on. Each day loses
    `rows x (reference - value per row)` (`nightshift.value.episode_cost`), the day's value realized on
    the labels known by the newest night, else estimated before labels. The reference is the value per
    row the scoring champion showed on its gate holdout (its promotion's evidence), else its realized
    value per row over its labelled days before the episode.

    The value per row also moves with the world (a drift that raises the base rate can raise it while
    the model gets worse), so an answered episode also says what answering at once would have earned:
    `forgone`, the answering challenger's value gain per row as its gate measured it (with the
    interval's ends, `forgone_low` / `forgone_high`) times the rows the old champion scored meanwhile.
    """
    perf = performance_series(lake)
    if not perf.get("value"):
        return {"episodes": [], "currency": ""}
    matrix = drift_matrix(lake)  # each read is cached; the sums below are a few hundred additions
    return episodes_cost(matrix["nights"], matrix["alarm"], perf["days"], champion_timeline(lake))


def episodes_cost(nights: list[str], alarm: list[bool | None], days: list[dict[str, Any]],
                  timeline: list[dict[str, Any]]) -> dict[str, Any]:
    """`value_episodes` on plain data (pure): alarm per night, the performance days, the champion timeline."""
    from nightshift.value import episode_cost

    checked = [(n, bool(a)) for n, a in zip(nights, alarm) if a is not None]  # a skipped night neither starts nor ends one
    runs, start, last_on = [], None, None
    for night, on in checked:
        if on:
            start, last_on = start or night, night
        elif start is not None:
            runs.append((start, last_on, False))
            start = None
    if start is not None:
        runs.append((start, last_on, True))
    moves = [e for e in timeline if e.get("decided_by") == "retrain" and e.get("version") is not None]
    holdout_value = {e["version"]: (e.get("evidence") or {}).get("business_value", {}).get("challenger") for e in moves}
    currency = next((e["evidence"]["business_value"].get("currency") or "" for e in reversed(moves)
                     if (e.get("evidence") or {}).get("business_value")), "")
    out = []
    for first, last, still_on in runs:
        answer = next((e for e in moves if first <= e["ds"] <= last), None)
        stop = answer["ds"] if answer else last
        span = [d for d in days if first <= d["ds"] <= stop]
        version = span[0]["model_version"] if span else None
        reference, source = holdout_value.get(version), "its gate holdout"
        if reference is None and version is not None:
            before = [d for d in days if d["ds"] < first and d["model_version"] == version and d["realized_value"] is not None]
            rows = sum(d["labelled"] or 0 for d in before)
            reference = sum(d["realized_value"] * (d["labelled"] or 0) for d in before) / rows if rows else None
            source = f"its realized value over {len(before)} labelled days before the episode" if rows else "none"
        status = "answered" if answer else ("open" if still_on else "ended")
        cost = episode_cost(span, reference)
        # What answering at once would have earned: the answer's value gain per row, as its gate measured it
        # (on the rows since the onset, where it judged there), over the rows the old champion scored meanwhile.
        gain = ((answer or {}).get("evidence") or {}).get("business_value") or {}
        rows = sum(int(d.get("rows") or 0) for d in span)
        forgone = ({k: rows * gain[g] for k, g in (("forgone", "gain"), ("forgone_low", "ci_low"), ("forgone_high", "ci_high"))}
                   if "gain" in gain else {"forgone": None, "forgone_low": None, "forgone_high": None})
        out.append({"start": first, "last_alarm": last, "through": stop, "status": status,
                    "answered_by": answer["version"] if answer else None, "champion": version,
                    "reference_from": source, **cost, **forgone})
    return {"episodes": out, "currency": currency}


# -- drift ----------------------------------------------------------------------------------

def drift_matrix(lake: Lake, last: int | None = None) -> dict[str, Any]:
    """Features x nights: effect size, its floor, significance after FDR, verdict; plus the
    model's own score drift per night and the night's verdict."""
    cols = ["feature", "kind", "effect_size", "min_effect", "significant", "drifted", "p_value", "day_drift",
            "effect_metric", "cusum", "cusum_h", "band"]
    sig, rows = _partition_rows(lake, DRIFT, lambda days: _by_ds(drift.history(lake, cols, days).to_pylist()))
    full = _derive(lake, "drift", sig, lambda: _drift(rows))
    if last is None or len(full["nights"]) <= last:
        return full
    keep = full["nights"][-last:]
    return {**full, "nights": keep, "cells": {f: v[-last:] for f, v in full["cells"].items()},
            "score": full["score"][-last:], "alarm": full["alarm"][-last:], "cusum": full["cusum"][-last:]}


def _drift(rows: list[dict]) -> dict[str, Any]:
    nights = sorted({r["ds"] for r in rows})
    index = {d: i for i, d in enumerate(nights)}
    features: list[str] = []
    cells: dict[str, list] = {}
    score: list = [None] * len(nights)
    alarm: list = [None] * len(nights)
    cusum: list = [None] * len(nights)
    h = None
    for r in rows:
        i = index[r["ds"]]
        alarm[i] = None if r["day_drift"] is None else bool(r["day_drift"])
        cusum[i], h = r.get("cusum"), r.get("cusum_h") or h
        cell = {"effect": r["effect_size"], "floor": r["min_effect"], "significant": bool(r["significant"]),
                "drifted": bool(r["drifted"]), "p": r["p_value"], "metric": r["effect_metric"]}
        if r["feature"] == drift.OUTPUT_FEATURE:
            score[i] = cell
            continue
        if r.get("kind") == "skip":
            continue
        if r.get("kind") == "psi":  # a report beside the feature's test: it goes into that cell, not a row of its own
            _psi_into(cells, features, r["feature"], i, len(nights), r["effect_size"], r.get("band"))
            continue
        name = f"{r['feature']} (unseen)" if r.get("kind") == "unseen" else r["feature"]
        if name not in cells:
            features.append(name)
            cells[name] = [None] * len(nights)
        cells[name][i] = cell
    return {"nights": nights, "features": features, "cells": cells, "score": score, "alarm": alarm,
            "cusum": cusum, "cusum_h": h}


def _psi_into(cells: dict[str, list], features: list[str], feature: str, i: int, n: int, value: float,
              band: str | None) -> None:
    """A feature's PSI and band on night i, in its cell (rows are written tests first, so the cell is there);
    a feature with PSI alone (`drift.detectors` without its test) gets a cell coloured by PSI against the
    significant band's edge, which never marks it drifted."""
    if feature not in cells:
        features.append(feature)
        cells[feature] = [None] * n
    if cells[feature][i] is None:
        cells[feature][i] = {"effect": value, "floor": drift.PSI_SIGNIFICANT, "significant": False, "drifted": False, "p": None,
                             "metric": "psi"}
    cells[feature][i].update(psi=value, band=band)


# -- nights ---------------------------------------------------------------------------------

def nights(lake: Lake) -> list[dict[str, Any]]:
    """Per scored night: rows, the model version and how it was chosen, and the drift verdict."""
    scored = _partition_rows(lake, PREDICTIONS, lambda days: _by_ds(predictions.nights(lake, days)))[1]
    matrix = drift_matrix(lake)
    alarm = dict(zip(matrix["nights"], matrix["alarm"]))
    return [{**n, "drift": alarm.get(n["ds"])} for n in scored]


def warm(lake: Lake) -> None:
    """Read every table once, so that the first page request finds them in memory."""
    page(lake, "")


def page(lake: Lake, model: str, last_nights: int | None = None) -> dict[str, Any]:
    """Everything the page shows, in one dict (the tables are read side by side: Parquet reads release the GIL)."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(4) as pool:
        for f in [pool.submit(fn, lake) for fn in (decision_history, performance_series, drift_matrix, nights)]:
            f.result()
    return {"model": model, "champion": champion_now(lake), "timeline": champion_timeline(lake),
            "performance": performance_series(lake), "value": value_episodes(lake), "drift": drift_matrix(lake, last_nights),
            "retrains": retrain_decisions(lake), "verdicts": verdicts(lake), "nights": nights(lake),
            "trial": shadow_trial(lake)}
