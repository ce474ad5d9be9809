"""A thin table with a lasting shift: how often a retrain that cannot be judged is decided, deferred and alerted.

25 rows a day (the simulator's world), a sudden covariate shift on day 56 that lasts, a champion
bootstrapped on day 52 with `training.holdout_max_days = 48` (what `nightshift import` names for
this volume), then the nights 53..114 in-process, retrains included, in a temporary home.

    python benchmarks/thin_table.py

Target (issue 25): at most 2 deferral alerts (DEFERRED gate records), and the champion replaced
or the record saying why not. The last line is `RESULT key=value ...`.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

START, DAYS, ONSET, BOOT, ROWS = "2026-01-01", 115, 56, 52, 25


def main() -> None:
    home = tempfile.mkdtemp(prefix="nightshift-thin-")
    os.environ["NIGHTSHIFT_HOME"] = home
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    from batch_scoring.nightly import run_nights
    from nightshift.dates import add_days
    from nightshift.lake import DECISIONS, Lake
    from nightshift.settings import load_settings
    from nightshift.tables.decisions import read_decision
    from simulator.land import simulate
    from training.retrain import retrain

    s = load_settings(Path(__file__).resolve().parents[1] / "nightshift.toml", env={"NIGHTSHIFT_HOME": home}).with_overrides(
        {"training.epochs": 2, "gate.n_boot": 200, "training.holdout_max_days": 48, "policy.onset_min_labels": 300})
    lake = Lake(s.lake_uri)
    t0 = time.time()
    simulate(lake, s.dataset, start=START, days=DAYS, rows_per_day=ROWS, scenario="sudden-covariate", onset=ONSET,
             seed=3, progress=False)
    print("bootstrap:", retrain(s, add_days(START, BOOT), trigger="bootstrap")["reasons"][0], flush=True)
    run_nights(s, add_days(START, BOOT + 1), add_days(START, DAYS - 1), progress=False)
    days = lake.partitions(DECISIONS)
    decisions = Counter(r["verdict"] for d in days if (r := read_decision(lake, d, "retrain")))
    gates = [(d, r["verdict"], r["reasons"]) for d in days if (r := read_decision(lake, d, "promotion"))]
    print("retrain decisions:", dict(decisions))
    for d, verdict, reasons in gates:
        print(f"gate {d}: {verdict}: {' | '.join(reasons)}")
    print(f"RESULT deferral_alerts={sum(v == 'DEFERRED' for _, v, _ in gates)} retrains={decisions.get('RETRAIN', 0)} "
          f"held={decisions.get('DEFERRED', 0)} promotions={sum(v == 'PROMOTE' for _, v, _ in gates) - 1} "
          f"seconds={time.time() - t0:.0f}")


if __name__ == "__main__":
    main()
