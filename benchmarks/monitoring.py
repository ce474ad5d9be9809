"""What the nightly drift check costs, and whether it stays flat as the day grows.

A champion is bootstrapped on a few small simulated days; then one day per size is landed and
scored (not timed). The timed job is the nightly flow's drift step as its own process (start
and imports included): `detect_drift` on the day (a fixed-size sample in one streaming pass;
the feature tests, unseen categories, the mean test, MMD and the score test) and the alarm settled from the
previous night.

    .venv/bin/python benchmarks/monitoring.py [--rows 100000 1000000 5000000]

Targets (issue 8): at most 20 s at 1,000,000 rows on 2 cores, imports included; the time at
5,000,000 rows under 1.5x the time at 100,000.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from scoring import ds_for, prepare, run_job  # noqa: E402  (the same days as the scoring benchmark)


def job_score(n: int) -> dict:
    from cli.main import main

    if main(["score", "--ds", ds_for(n)]) != 0:
        raise SystemExit("nightshift score failed")
    return {}


def job_monitor(n: int) -> dict:
    t0 = time.perf_counter()
    from monitoring.drift import detect_drift
    from nightshift.settings import load_settings

    imported = time.perf_counter() - t0
    out = detect_drift(load_settings(), ds_for(n))
    return {"import_s": imported, "check_s": time.perf_counter() - t0 - imported, "night_p": out["night_p"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000, 5_000_000])
    p.add_argument("--_job", nargs=3, help=argparse.SUPPRESS)
    p.add_argument("--_prepare", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args._job:
        name, n, out = args._job
        from scoring import _peak_rss_mib

        Path(out).write_text(json.dumps({**{"score": job_score, "monitor": job_monitor}[name](int(n)),
                                         "hwm_mib": _peak_rss_mib()}))
        return
    if args._prepare:
        prepare(Path(os.environ["NIGHTSHIFT_HOME"]), args.rows)
        return

    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "NIGHTSHIFT_HOME": tmp, "NIGHTSHIFT_CONFIG": str(REPO / "nightshift.toml"), "PYTHONPATH": str(REPO)}
        env.pop("MLFLOW_TRACKING_URI", None)
        t = time.perf_counter()
        print(f"preparing and scoring days of {', '.join(f'{n:,}' for n in args.rows)} rows ...", flush=True)
        subprocess.run([sys.executable, __file__, "--_prepare", "--rows", *map(str, args.rows)], env=env, cwd=REPO,  # noqa: S603 - this script
                       check=True, stdout=subprocess.DEVNULL)
        for n in args.rows:
            run_job("score", n, env, __file__)
        print(f"prepared in {time.perf_counter() - t:.0f} s", flush=True)
        results = {}
        print(f"\n{'rows':>11} {'wall s':>8} {'cpu s':>8} {'imports s':>10} {'check s':>8} {'peak MiB':>9}")
        for n in args.rows:
            r = run_job("monitor", n, env, __file__)
            results[n] = r
            print(f"{n:>11,} {r['wall_s']:>8.2f} {r['cpu_s']:>8.2f} {r['import_s']:>10.2f} {r['check_s']:>8.2f} {r['rss_mib']:>9.0f}",
                  flush=True)
    small, big = min(args.rows), max(args.rows)
    facts = {f"monitor_s_{_tag(n)}": r["wall_s"] for n, r in results.items()}
    facts[f"monitor_cost_ratio_{_tag(big)}_vs_{_tag(small)}"] = results[big]["wall_s"] / results[small]["wall_s"]
    facts["monitor_import_s"] = results[small]["import_s"]
    facts["cores"] = os.cpu_count()
    print("\nRESULT " + " ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in facts.items()))


def _tag(n: int) -> str:
    return f"{n // 1_000_000}m" if n >= 1_000_000 and n % 1_000_000 == 0 else f"{n // 1000}k"


if __name__ == "__main__":
    main()
