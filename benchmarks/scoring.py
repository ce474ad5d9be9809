"""Scoring at the hardware's limit: `nightshift score` against the I/O floor, the forward pass and a naive job.

For each size, four jobs score the same simulated day, each as a whole process (start and
imports included), one after another in one run:
- `score`: `nightshift score --ds D`, the real command (contract, model, lineage, atomic commit);
- `floor`: pyarrow reads the same columns in record batches and writes the id plus one float:
  the I/O any scorer must do;
- `forward`: the default model's forward pass alone, on tensors already in memory (its own
  compute time is what counts; the process figures are shown too);
- `naive` (smaller sizes only): pandas `read_parquet`, `get_dummies`, one tensor, `to_parquet`.

Wall and CPU seconds and peak RSS come from each child's own rusage (wait4). The limit ratio
is score / (floor + forward compute): 1.0 would mean scoring costs nothing beyond reading,
writing and the arithmetic of the model.

    .venv/bin/python benchmarks/scoring.py [--rows 1000000 10000000] [--naive-max 1000000] [--repeat 3]

Each job runs `--repeat` times, in rounds of all four (a slow spell of shared cores hits every
job alike); the figures come from each job's run of median wall time.
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
START, HISTORY = "2026-01-01", 4
CHUNK = 1_000_000


def ds_for(n: int) -> str:
    from nightshift.dates import add_days

    return add_days(START, HISTORY + 1 + len(str(n)))  # one day per size


def prepare(home: Path, sizes: list[int]) -> None:
    """A champion bootstrapped on a few small simulated days, then one big day per size."""
    import pyarrow.parquet as pq

    from nightshift.dates import add_days
    from nightshift.lake import FEATURES, Lake
    from nightshift.settings import load_settings
    from simulator.land import simulate
    from simulator.world import World
    from training.retrain import retrain

    s = load_settings().with_overrides({"training.epochs": 1, "gate.n_boot": 200})
    lake = Lake.of(s)
    simulate(lake, s.dataset, start=START, days=HISTORY, rows_per_day=5000, seed=0, progress=False)
    retrain(s, add_days(START, HISTORY - 1), trigger="bootstrap")
    world = World(s.dataset, seed=0)
    for n in sizes:
        ds = ds_for(n)
        schema = world.features(0, ds, 10).schema
        with lake.writer(FEATURES, ds, schema) as w:
            for i, start in enumerate(range(0, n, CHUNK)):
                part = world.features(HISTORY + 1, add_days(ds, 1000 + i), min(CHUNK, n - start))  # unique ids per chunk
                w.write_table(part, row_group_size=131_072)
        rows = sum(pq.ParquetFile(f"{lake.path(FEATURES, ds)}/{f}").metadata.num_rows for f, _ in lake.files(FEATURES, ds))
        if rows != n:
            raise SystemExit(f"prepared {rows} rows, expected {n}")


# -- the jobs, each run in its own process ------------------------------------------------------
def job_score(n: int) -> dict:
    from cli.main import main

    code = main(["score", "--ds", ds_for(n)])
    if code != 0:
        raise SystemExit(f"nightshift score exited {code}")
    return {}


def job_floor(n: int) -> dict:
    import pyarrow as pa

    from nightshift.lake import FEATURES, PREDICTIONS, Lake
    from nightshift.settings import load_settings

    s = load_settings()
    spec, lake, ds = s.dataset, Lake.of(s), ds_for(n)
    schema = pa.schema([(spec.entity_id, pa.string()), ("value", pa.float64())])
    with lake.writer(PREDICTIONS, ds, schema) as w:
        for batch in lake.batches(FEATURES, ds, s.scoring.batch_rows, columns=[spec.entity_id, *spec.features]):
            w.write_batch(pa.record_batch([batch.column(0), batch.column(1).cast(pa.float64())], schema=schema))
    return {}


def job_forward(n: int) -> dict:
    import torch

    from nightshift.settings import load_settings
    from model.tabularnet import TabularNet, predict_logits

    s = load_settings()
    spec = s.dataset
    model = TabularNet(2 * len(spec.numeric), [12] * len(spec.categorical), s.model.embedding_dim, tuple(s.model.hidden)).eval()
    chunk = s.scoring.batch_rows  # one batch of inputs, reused: the arithmetic alone, not memory traffic of n rows
    x_num = torch.randn(chunk, 2 * len(spec.numeric))
    x_cat = torch.randint(0, 12, (chunk, len(spec.categorical)))
    t = time.perf_counter()
    done = 0
    while done < n:
        k = min(chunk, n - done)
        predict_logits(model, x_num[:k], x_cat[:k], chunk)
        done += k
    width = model.n_numeric_inputs + len(spec.categorical) * model.embedding_dim
    macs, w = 0, width
    for h in model.hidden:
        macs, w = macs + w * h, h
    elapsed = time.perf_counter() - t
    try:  # what `nightshift score` computes instead (embeddings folded into the first layer)
        from model.folded import FoldedNet

        folded = FoldedNet(model.architecture(), {k: v.numpy() for k, v in model.state_dict().items()}).macs_per_row
    except ImportError:  # an older checkout, measured for comparison
        folded = macs + w
    return {"compute_s": elapsed, "macs_per_row": macs + w, "scorer_macs_per_row": folded, "threads": torch.get_num_threads()}


def job_naive(n: int) -> dict:
    import numpy as np
    import pandas as pd
    import torch

    from nightshift.lake import FEATURES, Lake
    from nightshift.settings import load_settings

    s = load_settings()
    spec, lake, ds = s.dataset, Lake.of(s), ds_for(n)
    df = pd.read_parquet(lake.path(FEATURES, ds))
    x = pd.get_dummies(df[list(spec.features)], columns=list(spec.categorical), dtype=np.float32).fillna(0.0)
    t = torch.from_numpy(x.to_numpy(dtype=np.float32))
    layers, width = [], t.shape[1]
    for h in s.model.hidden:
        layers += [torch.nn.Linear(width, h), torch.nn.ReLU()]
        width = h
    net = torch.nn.Sequential(*layers, torch.nn.Linear(width, 1)).eval()
    with torch.inference_mode():
        scores = torch.sigmoid(net(t)).squeeze(-1).numpy()
    out = Path(lake.root) / "naive" / f"ds={ds}"
    out.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({spec.entity_id: df[spec.entity_id], "score": scores}).to_parquet(out / "part-0.parquet")
    return {}


JOBS = {"score": job_score, "floor": job_floor, "forward": job_forward, "naive": job_naive}


def run_job(name: str, n: int, env: dict, script: str = __file__) -> dict:
    """One job of `script` (this file by default) in a fresh process: wall, CPU and peak RSS from its own rusage."""
    out_file = Path(env["NIGHTSHIFT_HOME"]) / f"job-{name}-{n}.json"
    t = time.perf_counter()
    proc = subprocess.Popen([sys.executable, script, "--_job", name, str(n), str(out_file)], env=env, cwd=REPO,  # noqa: S603 - this script as a job
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t
    err = proc.stderr.read().decode(errors="replace")
    proc.stderr.close()
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"job {name} at {n} rows failed:\n{err[-3000:]}")
    inner = json.loads(out_file.read_text()) if out_file.exists() else {}
    inner.setdefault("hwm_mib", usage.ru_maxrss / 1024)
    return {"job": name, "rows": n, "wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime,
            "rss_mib": max(inner.pop("hwm_mib"), 0) or usage.ru_maxrss / 1024, **inner}


def _median_run(runs: list[dict]) -> dict:
    """The run of median wall time (its own CPU and memory with it): one figure that noise moves least."""
    return sorted(runs, key=lambda r: r["wall_s"])[len(runs) // 2]


def _peak_rss_mib() -> float:
    """This process's high-water mark (VmHWM; unlike ru_maxrss it is not inherited across exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 10_000_000])
    p.add_argument("--naive-max", type=int, default=1_000_000, help="the naive job runs only up to this size (it loads it all)")
    p.add_argument("--repeat", type=int, default=3, help="runs of each job; the table shows each, the figures use the median")
    p.add_argument("--_job", nargs=3, help=argparse.SUPPRESS)
    p.add_argument("--_prepare", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args._job:
        name, n, out = args._job
        Path(out).write_text(json.dumps({**JOBS[name](int(n)), "hwm_mib": _peak_rss_mib()}))
        return
    if args._prepare:
        prepare(Path(os.environ["NIGHTSHIFT_HOME"]), args.rows)
        return

    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "NIGHTSHIFT_HOME": tmp, "NIGHTSHIFT_CONFIG": str(REPO / "nightshift.toml"), "PYTHONPATH": str(REPO)}
        env.pop("MLFLOW_TRACKING_URI", None)
        os.environ.update({k: env[k] for k in ("NIGHTSHIFT_HOME", "NIGHTSHIFT_CONFIG")})
        t = time.perf_counter()
        print(f"preparing days of {', '.join(f'{n:,}' for n in args.rows)} rows ...", flush=True)
        # in a child: this process stays small, so the jobs' rusage is theirs alone
        subprocess.run([sys.executable, __file__, "--_prepare", "--rows", *map(str, args.rows)], env=env, cwd=REPO,  # noqa: S603 - this script
                       check=True, stdout=subprocess.DEVNULL)
        print(f"prepared in {time.perf_counter() - t:.0f} s", flush=True)
        results = []
        for n in args.rows:
            jobs = [name for name in ("score", "floor", "forward", "naive") if name != "naive" or n <= args.naive_max]
            runs: dict[str, list[dict]] = {name: [] for name in jobs}
            for _ in range(args.repeat):  # rounds of every job, so a slow spell of the shared cores hits them all alike
                for name in jobs:
                    r = run_job(name, n, env)
                    runs[name].append(r)
                    print(f"  {name:<8} {n:>11,} rows  {r['wall_s']:7.2f} s wall  {r['cpu_s']:7.2f} s cpu  {r['rss_mib']:6.0f} MiB"
                          + (f"  (forward compute {r['compute_s']:.2f} s)" if "compute_s" in r else ""), flush=True)
            results.extend(_median_run(runs[name]) for name in jobs)
    report(results, args.rows)


def report(results: list[dict], sizes: list[int]) -> None:
    by = {(r["job"], r["rows"]): r for r in results}
    print(f"\n{'job':<8} {'rows':>11} {'wall s':>8} {'cpu s':>8} {'peak MiB':>9} {'rows/s':>12}")
    for r in results:
        print(f"{r['job']:<8} {r['rows']:>11,} {r['wall_s']:>8.2f} {r['cpu_s']:>8.2f} {r['rss_mib']:>9.0f} {r['rows'] / r['wall_s']:>12,.0f}")
    small, big = min(sizes), max(sizes)
    facts = {}
    for n in sizes:
        sc, fl, fw = by[("score", n)], by[("floor", n)], by[("forward", n)]
        limit = sc["wall_s"] / (fl["wall_s"] + fw["compute_s"])
        print(f"\n{n:,} rows: score {sc['wall_s']:.2f} s = {limit:.2f} x (floor {fl['wall_s']:.2f} s + forward {fw['compute_s']:.2f} s)")
        if ("naive", n) in by:
            nv = by[("naive", n)]
            print(f"  vs naive: {nv['wall_s'] / sc['wall_s']:.2f}x faster, {sc['rss_mib'] / nv['rss_mib']:.2f} of its peak memory")
    sc_big, sc_small = by[("score", big)], by[("score", small)]
    tag = f"{big // 1_000_000}m" if big >= 1_000_000 else str(big)
    stag = f"{small // 1_000_000}m" if small >= 1_000_000 else str(small)
    facts[f"score_s_{tag}"] = sc_big["wall_s"]
    facts[f"floor_s_{tag}"] = by[("floor", big)]["wall_s"]
    facts[f"forward_s_{tag}"] = by[("forward", big)]["compute_s"]
    facts["limit_ratio"] = sc_big["wall_s"] / (by[("floor", big)]["wall_s"] + by[("forward", big)]["compute_s"])
    facts[f"rss_gib_{tag}"] = sc_big["rss_mib"] / 1024
    facts[f"rss_growth_{tag}_vs_{stag}"] = sc_big["rss_mib"] / sc_small["rss_mib"] - 1
    if ("naive", small) in by:
        facts[f"speedup_vs_naive_{stag}"] = by[("naive", small)]["wall_s"] / sc_small["wall_s"]
        facts[f"mem_ratio_vs_naive_{stag}"] = sc_small["rss_mib"] / by[("naive", small)]["rss_mib"]
    facts["macs_per_row"] = by[("forward", big)]["macs_per_row"]
    facts["scorer_macs_per_row"] = by[("forward", big)].get("scorer_macs_per_row", facts["macs_per_row"])
    facts["cores"] = os.cpu_count()
    print("\nRESULT " + " ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in facts.items()))


if __name__ == "__main__":
    main()
