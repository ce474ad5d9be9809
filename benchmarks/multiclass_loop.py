"""The multiclass loop, end to end and in-process: a three-class world with a sudden covariate drift.

Bootstrap a champion, run the nights, and check each step: the first model is promoted on
its macro AUC, predictions carry `class`, `probability` and a `p__<class>` column per class,
monitoring/performance holds the macro AUC (realized and estimated), the drift alarm rises
after the onset, the policy hands off to a retrain, the gate judges on the macro AUC and
promotes, and the nights after score with the new champion. Prints one `RESULT` line per
check and `RESULT multiclass_loop_ok=1` when every one held (0 otherwise).

    .venv/bin/python benchmarks/multiclass_loop.py [--rows 1500] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

START, HISTORY, NIGHTS, ONSET_NIGHT = "2026-06-01", 14, 7, 1
CLASSES = ["basic", "gold", "platinum"]
OVERRIDES = {"dataset.task": "multiclass", "dataset.label": "segment", "training.epochs": 4, "gate.n_boot": 300,
             "policy.onset_min_labels": 1000}


def run(home: Path, rows: int) -> dict:
    os.environ["NIGHTSHIFT_HOME"] = str(home)
    os.environ.setdefault("NIGHTSHIFT_CONFIG", str(REPO / "nightshift.toml"))
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    from batch_scoring.nightly import run_nights
    from nightshift.dates import add_days
    from nightshift.lake import PREDICTIONS, Lake
    from nightshift.registry import CHAMPION, Registry
    from nightshift.settings import load_settings
    from nightshift.tables import performance
    from nightshift.tables.decisions import read_decision
    from simulator.land import simulate
    from training.retrain import retrain

    s = load_settings().with_overrides(OVERRIDES)
    lake = Lake(s.lake_uri)
    t0 = time.perf_counter()
    simulate(lake, s.dataset, start=START, days=HISTORY + NIGHTS, rows_per_day=rows, scenario="sudden-covariate",
             onset=HISTORY + ONSET_NIGHT, seed=7, progress=False)
    boot = retrain(s, add_days(START, HISTORY - 1), trigger="bootstrap")
    nights = run_nights(s, add_days(START, HISTORY), add_days(START, HISTORY + NIGHTS - 1), progress=False)
    seconds = time.perf_counter() - t0

    onset = add_days(START, HISTORY + ONSET_NIGHT)
    retrained = [n for n in nights if "retrain" in n]
    verdict = read_decision(lake, retrained[0]["ds"], "promotion") if retrained else None
    preds = lake.read(PREDICTIONS, nights[-1]["ds"])
    rows_perf = performance.read(lake, nights[-1]["ds"])
    matured = [r for r in rows_perf if r["realized"] is not None]
    champion = Registry(s, lake).current(CHAMPION).version
    checks = {
        "bootstrap_promoted": boot["verdict"] == "PROMOTE" and "macro_auc" in boot["reasons"][0],
        "prediction_columns": preds.column_names[:5] == [s.dataset.entity_id, "class", "probability",
                                                           *[f"p__{c}" for c in CLASSES[:2]]]
                              and f"p__{CLASSES[2]}" in preds.column_names
                              and set(preds.column("class").to_pylist()) <= set(CLASSES),
        "performance_macro_auc": bool(rows_perf) and {r["metric"] for r in rows_perf} == {"macro_auc"} and bool(matured)
                                 and {"macro_auc", "log_loss", "accuracy", "macro_f1"} <= set(matured[0]["realized_metrics"])
                                 and all(r["estimated"] is not None for r in rows_perf),
        "no_alarm_before_onset": not any(n["confirm_champion"]["drift_alarm"] for n in nights if n["ds"] < onset),
        "drift_alarm": any(n["confirm_champion"]["drift_alarm"] for n in nights if n["ds"] >= onset),
        "retrain_handed_off": bool(retrained),
        "gate_on_macro_auc": bool(verdict) and verdict["evidence"].get("metric") == "macro_auc",
        "promoted": bool(verdict) and verdict["verdict"] == "PROMOTE",
        "new_champion_scores": bool(retrained) and champion == retrained[0]["retrain"]["version"]
                               and preds.column("model_version")[0].as_py() == champion,
    }
    return {"checks": checks, "seconds": round(seconds, 1), "nights": len(nights),
            "retrain_ds": retrained[0]["ds"] if retrained else None,
            "verdict": verdict and {k: verdict["evidence"].get(k) for k in ("metric", "champion", "challenger", "gain",
                                                                               "ci_low", "ci_high", "caveats")},
            "verdict_reasons": verdict and verdict["reasons"],
            "latest_matured": matured[-1]["realized_metrics"] if matured else None,
            "latest_estimated": rows_perf[-1]["estimated_metrics"] if rows_perf else None}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1500, help="rows per simulated day")
    ap.add_argument("--keep", type=Path, help="run in this folder and keep it (default: a temporary one)")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        home = args.keep or Path(tmp) / "home"
        home.mkdir(parents=True, exist_ok=True)
        out = run(home, args.rows)
    for name, ok in out["checks"].items():
        print(f"RESULT {name}={int(ok)}")
    print("RESULT detail " + json.dumps({k: v for k, v in out.items() if k != "checks"}, default=str))
    ok = all(out["checks"].values())
    print(f"RESULT multiclass_loop_ok={int(ok)}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
