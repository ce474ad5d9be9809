"""Your own model through the loop: `byom_loop_ok=1` when a module named only in settings does every step.

The module is examples/byom/my_tabular/tabm_adapter.py (TabM behind a short adapter), on
PYTHONPATH as a team's package is on its workers. On a simulated world with a sudden drift:
`nightshift import` of the exported table, a bootstrap, the nights (the same flow the nightly
DAG runs), the drift retrain they decide (its tournament warm-starts the user's module), the
gate, the promotion, and a night scored by the new champion through torch. Each step is
checked and printed; the RESULT line says which failed.

    .venv/bin/python benchmarks/byom_loop.py [--rows-per-day 1500] [--architecture my_tabular.tabm_adapter:build]
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
EXAMPLE = REPO / "examples" / "byom"
sys.path[:0] = [str(REPO), str(EXAMPLE)]
START, HISTORY, ONSET_NIGHT, NIGHTS = "2026-06-01", 14, 1, 6


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows-per-day", type=int, default=1500)
    p.add_argument("--architecture", default="my_tabular.tabm_adapter:build")
    p.add_argument("--params", default='{"k": 4, "n_blocks": 2, "d_block": 64}')
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    checks: dict[str, bool] = {}

    def check(name: str, ok: bool, detail: str = "") -> None:
        checks[name] = bool(ok)
        print(f"  {'ok  ' if ok else 'FAIL'} {name}{': ' + detail if detail else ''}", flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        os.environ.update({"NIGHTSHIFT_HOME": str(home), "NIGHTSHIFT__MODEL__ARCHITECTURE": args.architecture,
                           "NIGHTSHIFT__MODEL__PARAMS": args.params, "NIGHTSHIFT__TRAINING__EPOCHS": "4",
                           "NIGHTSHIFT__GATE__N_BOOT": "300", "NIGHTSHIFT__POLICY__ONSET_MIN_LABELS": "1000"})
        for var in ("NIGHTSHIFT_CONFIG", "MLFLOW_TRACKING_URI", "NIGHTSHIFT_LAKE"):
            os.environ.pop(var, None)
        from batch_scoring.nightly import run_nights
        from cli.import_command import main as import_main
        from nightshift.dates import add_days
        from nightshift.lake import PREDICTIONS, Lake
        from nightshift.registry import CHAMPION, Registry
        from nightshift.settings import load_settings
        from nightshift.tables.decisions import read_decision
        from simulator.export import world_csv
        from training.retrain import retrain

        spec = load_settings(REPO / "nightshift.toml", env={}).dataset
        csv = Path(tmp) / "world.csv"
        world_csv(csv, spec, start=START, days=HISTORY + ONSET_NIGHT + NIGHTS + 1, rows_per_day=args.rows_per_day,
                  scenario="sudden-covariate", onset=HISTORY + ONSET_NIGHT, seed=5, task="binary")
        code = import_main([str(csv), "--no-progress", "--timestamp-col", "timestamp", "--label-col", "label",
                            "--id-col", "entity_id", "--label-time-col", "label_time"])
        check("import", code == 0)
        s = load_settings()
        check("the architecture comes from settings alone", s.model.architecture == args.architecture, s.model.architecture)
        lake, registry = Lake(s.lake_uri), Registry(s, Lake(s.lake_uri))
        boot = retrain(s, add_days(START, HISTORY - 1), trigger="bootstrap")
        check("bootstrap promoted", boot["verdict"] == "PROMOTE", "; ".join(boot["reasons"])[:160])
        recorded = json.loads((registry.local_path("1") / "architecture.json").read_text())
        check("the bundle records the user's builder and code", recorded["builder"] == args.architecture
              and len(recorded["code"]["source_sha256"]) == 64, f"{recorded['builder']} {recorded['code']['modules']}")
        nights = run_nights(s, add_days(START, HISTORY), add_days(START, HISTORY + ONSET_NIGHT + NIGHTS - 1), progress=False)
        retrained = [n for n in nights if "retrain" in n]
        check("a drift retrain was decided and ran", bool(retrained),
              retrained[0]["ds"] if retrained else "no retrain in the nights")
        if retrained:
            verdict = read_decision(lake, retrained[0]["ds"], "promotion")
            ev = verdict["evidence"]
            check("the gate promoted the challenger", verdict["verdict"] == "PROMOTE",
                  f"{ev.get('metric')} {ev.get('champion')} -> {ev.get('challenger')}, CI [{ev.get('ci_low')}, {ev.get('ci_high')}]")
            version = retrained[0]["retrain"]["version"]
            meta = json.loads((registry.local_path(version) / "bundle.json").read_text())
            warm = [c for c in meta["tournament"] if c.get("init_from") == "warm" and c.get("score") is not None]
            check("the tournament warm-started the user's module", bool(warm),
                  ", ".join(f"{c['candidate']} {c['score']:.4f}" for c in meta["tournament"] if c.get("score") is not None))
            check("the champion is the new version", registry.current(CHAMPION).version == version, f"v{version}")
            after = [n for n in nights if n["ds"] > retrained[0]["ds"]]
            if after:
                preds = lake.read(PREDICTIONS, after[-1]["ds"])
                check("a later night was scored by it", set(preds.column("model_version").to_pylist()) == {version},
                      f"{preds.num_rows:,} rows on {after[-1]['ds']}")
            else:
                check("a later night was scored by it", False, "the retrain came on the last night")
    ok = all(checks.values())
    print(f"\n{time.perf_counter() - t0:.0f}s; {sum(checks.values())}/{len(checks)} steps ok")
    failed = ",".join(k.replace(" ", "_") for k, v in checks.items() if not v)
    print(f"RESULT byom_loop_ok={int(ok)}" + (f" failed={failed}" if failed else ""))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
