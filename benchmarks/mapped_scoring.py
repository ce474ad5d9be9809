"""Mapped scoring against single-task scoring, on one day that lands as several files.

The nightly DAG maps `score` over a day's file groups (one task per group, on whatever
workers the executor has) and `commit_scores` commits the parts at once. This compares, as
whole processes, in one run, on the same day:
- `single`: `nightshift score --ds D` (one process scores every group in turn, the
  contract checked on the same batches, then commits);
- `mapped`: one process per group (what each mapped task runs), `--workers` at a time, then
  the commit process (what `commit_scores` runs). The contract pass that `validate` makes
  before the fan-out is timed on its own (`validate`), as the DAG runs it in both designs.

Both write the same bytes (checked). Airflow's own per-task overhead (queued -> running) is
not included here: see `benchmarks/topology.py` for it.

    .venv/bin/python benchmarks/mapped_scoring.py [--rows 2000000] [--files 4] [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
START, HISTORY = "2026-01-01", 4


def prepare(home: Path, rows: int, files: int) -> tuple[str, dict]:
    """A champion (bootstrapped on a few small days) and one big day landed as `files` files."""
    import numpy as np

    from nightshift.dates import add_days
    from nightshift.lake import FEATURES, Lake
    from nightshift.settings import load_settings
    from simulator.land import simulate
    from simulator.world import World
    from training.retrain import retrain

    s = load_settings().with_overrides({"training.epochs": 1, "gate.n_boot": 200})
    lake = Lake.of(s)
    simulate(lake, s.dataset, start=START, days=HISTORY, rows_per_day=3000, seed=0, progress=False)
    retrain(s, add_days(START, HISTORY - 1), trigger="bootstrap")
    ds = add_days(START, HISTORY + 1)
    day = World(s.dataset, seed=0).features(HISTORY + 1, ds, rows)
    bounds = np.linspace(0, rows, files + 1).astype(int)
    parts = {}
    for i in range(files):
        with lake.write_part(FEATURES, ds, "bench", f"part-{i}", day.schema) as w:
            w.write_table(day.slice(bounds[i], bounds[i + 1] - bounds[i]), row_group_size=131_072)
        parts[f"part-{i}"] = int(bounds[i + 1] - bounds[i])
    lake.commit_parts(FEATURES, ds, "bench", parts)
    size = sum(n for _, n in lake.files(FEATURES, ds))
    return ds, {"bytes": size, "group_mb": size / files / 2**20 * 1.01}


def _python(code: str, env: dict) -> tuple[float, str]:
    t = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=REPO)  # noqa: S603 - this benchmark's own code
    if out.returncode:
        raise RuntimeError(out.stderr[-3000:])
    return time.perf_counter() - t, out.stdout.strip().splitlines()[-1] if out.stdout.strip() else ""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=2_000_000)
    p.add_argument("--files", type=int, default=4)
    p.add_argument("--workers", type=int, default=os.cpu_count() or 2, help="mapped groups scored at once")
    args = p.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "NIGHTSHIFT_HOME": tmp, "NIGHTSHIFT_CONFIG": str(REPO / "nightshift.toml"),
               "PYTHONPATH": str(REPO)}
        env.pop("MLFLOW_TRACKING_URI", None)
        os.environ.update({k: env[k] for k in ("NIGHTSHIFT_HOME", "NIGHTSHIFT_CONFIG")})
        print(f"preparing a {args.rows:,}-row day as {args.files} files ...", flush=True)
        ds, info = prepare(Path(tmp), args.rows, args.files)
        env["NIGHTSHIFT__SCORING__GROUP_MB"] = f"{info['group_mb']:.4f}"
        print(f"day {ds}: {info['bytes'] / 2**20:.0f} MiB in {args.files} files; {args.workers} workers", flush=True)
        fp = "from nightshift.lake import Lake, PREDICTIONS; from nightshift.settings import load_settings; " \
             f"print(Lake.of(load_settings()).fingerprint(PREDICTIONS, {ds!r}))"

        # single task: the whole day in one process
        single_s, _ = _python(f"import sys; from cli.main import main; sys.exit(main(['score', '--ds', {ds!r}]))", env)
        single_fp = _python(fp, env)[1]

        # the DAG's validate (contract + plan), then one process per group, then the commit
        validate_s, plan_json = _python(
            "import json; from nightshift.flow import StepContext; from nightshift.settings import load_settings; "
            f"from batch_scoring.nightly import validate; print(json.dumps(validate(StepContext(load_settings(), {ds!r}))))", env)
        plan = json.loads(plan_json)
        if len(plan) != args.files:
            raise SystemExit(f"planned {len(plan)} groups, expected {args.files}")

        def group(item: dict) -> tuple[float, str]:
            return _python("import json, sys; from batch_scoring.score import score_group; from nightshift.settings import "
                           f"load_settings; print(json.dumps(score_group(load_settings(), json.loads(sys.argv[1] if len(sys.argv) > 1 else {json.dumps(json.dumps(item))}), run_id='bench')))", env)

        t = time.perf_counter()
        with ThreadPoolExecutor(args.workers) as pool:
            done = list(pool.map(group, plan))
        fan_s = time.perf_counter() - t
        groups = [json.loads(out) for _, out in done]
        commit_s, _ = _python("import json, sys; from batch_scoring.score import commit_scores; from nightshift.settings import "
                              f"load_settings; commit_scores(load_settings(), {ds!r}, json.loads({json.dumps(json.dumps(groups))}))", env)
        mapped_fp = _python(fp, env)[1]
        mapped_s = fan_s + commit_s
        same = single_fp == mapped_fp
        # the lineage names the model and the input, not the run: the two ways must agree byte for byte
        if not same:
            raise SystemExit(f"mapped and single-task scoring wrote different partitions ({mapped_fp} != {single_fp})")

        rows = [("single task (nightshift score)", single_s), ("mapped: groups + commit", mapped_s),
                ("  groups, fanned out", fan_s), ("  commit", commit_s), ("validate (contract + plan; both designs)", validate_s)]
        print(f"\n{'job':<42} {'wall s':>8}")
        for name, sec in rows:
            print(f"{name:<42} {sec:>8.2f}")
        for i, (sec, _) in enumerate(done):
            print(f"  group {i}: {groups[i]['rows']:,} rows in {sec:.2f} s (process start and imports included)")
        print(f"\nidentical partitions: {same}; speedup of mapped over single: {single_s / mapped_s:.2f}x")
        print(f"RESULT rows={args.rows} files={args.files} workers={args.workers} single_s={single_s:.2f} "
              f"mapped_s={mapped_s:.2f} mapped_speedup={single_s / mapped_s:.2f} validate_s={validate_s:.2f} identical={int(same)}")


if __name__ == "__main__":
    main()
