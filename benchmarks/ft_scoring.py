"""The second built-in at scoring time: `nightshift score` with `ft_transformer` against its bare torch forward.

A champion of `model.architecture = "ft_transformer"` (its default size) is bootstrapped on a
few small simulated days; then one day of `--rows` rows is scored, each job a whole process,
in rounds (as benchmarks/scoring.py does):
- `score`: `nightshift score --ds D`, the real command (contract, preprocessing, the model
  through torch, lineage, the atomic commit);
- `forward`: the same module's forward pass alone, on the same rows already preprocessed and
  in memory as tensors, in the scorer's blocks and threads (its compute time is what counts).

The limit ratio is score / forward: what scoring costs beyond the network's own arithmetic.

    .venv/bin/python benchmarks/ft_scoring.py [--rows 1000000] [--repeat 3]
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

from scoring import _median_run, _peak_rss_mib, ds_for, prepare, run_job  # noqa: E402

# prepare() trains one epoch: the speed of scoring, not the quality of the model, is measured here.
ARCHITECTURE = {"NIGHTSHIFT__MODEL__ARCHITECTURE": "ft_transformer", "NIGHTSHIFT__GATE__FIRST_MODEL_FLOOR": "0.5"}


def job_score(n: int) -> dict:
    from cli.main import main

    if main(["score", "--ds", ds_for(n)]) != 0:
        raise SystemExit("nightshift score failed")
    return {}


def job_forward(n: int) -> dict:
    import numpy as np
    import torch

    from batch_scoring.score import compute_threads
    from model.bundle import load_bundle
    from model.torchnet import CHUNK_ROWS
    from nightshift.lake import FEATURES, Lake
    from nightshift.registry import Registry
    from nightshift.settings import load_settings

    s = load_settings()
    lake = Lake(s.lake_uri)
    registry = Registry(s, lake)
    bundle = load_bundle(registry.local_path(registry.resolve(ds_for(n), "champion").version))
    table = lake.read(FEATURES, ds_for(n), columns=list(s.dataset.features))
    x_num, x_cat = (torch.from_numpy(np.ascontiguousarray(a)) for a in bundle.preprocessor.transform(table))
    module = bundle.model
    torch.set_num_threads(compute_threads(s.scoring.threads))
    t = time.perf_counter()
    with torch.inference_mode():
        for i in range(0, n, CHUNK_ROWS):
            module(x_num[i:i + CHUNK_ROWS], x_cat[i:i + CHUNK_ROWS])
    return {"compute_s": time.perf_counter() - t, "threads": torch.get_num_threads(),
            "parameters": sum(p.numel() for p in module.parameters())}


JOBS = {"score": job_score, "forward": job_forward}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--_job", nargs=3, help=argparse.SUPPRESS)
    p.add_argument("--_prepare", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args._job:
        name, n, out = args._job
        Path(out).write_text(json.dumps({**JOBS[name](int(n)), "hwm_mib": _peak_rss_mib()}))
        return
    if args._prepare:
        prepare(Path(os.environ["NIGHTSHIFT_HOME"]), [args.rows])
        return
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, **ARCHITECTURE, "NIGHTSHIFT_HOME": tmp, "NIGHTSHIFT_CONFIG": str(REPO / "nightshift.toml"),
               "PYTHONPATH": str(REPO)}
        env.pop("MLFLOW_TRACKING_URI", None)
        os.environ.update({k: env[k] for k in ("NIGHTSHIFT_HOME", "NIGHTSHIFT_CONFIG")})
        t = time.perf_counter()
        print(f"preparing an ft_transformer champion and a day of {args.rows:,} rows ...", flush=True)
        subprocess.run([sys.executable, __file__, "--_prepare", "--rows", str(args.rows)], env=env, cwd=REPO,  # noqa: S603 - this script
                       check=True, stdout=subprocess.DEVNULL)
        print(f"prepared in {time.perf_counter() - t:.0f} s", flush=True)
        runs: dict[str, list[dict]] = {name: [] for name in JOBS}
        for _ in range(args.repeat):
            for name in JOBS:
                r = run_job(name, args.rows, env, script=__file__)
                runs[name].append(r)
                print(f"  {name:<8} {args.rows:>11,} rows  {r['wall_s']:7.2f} s wall  {r['cpu_s']:7.2f} s cpu  "
                      f"{r['rss_mib']:6.0f} MiB" + (f"  (forward compute {r['compute_s']:.2f} s)" if "compute_s" in r else ""),
                      flush=True)
        sc, fw = _median_run(runs["score"]), _median_run(runs["forward"])
    tag = f"{args.rows // 1_000_000}m" if args.rows >= 1_000_000 else str(args.rows)
    facts = {f"ft_score_s_{tag}": sc["wall_s"], f"ft_forward_s_{tag}": fw["compute_s"],
             "ft_limit_ratio": sc["wall_s"] / fw["compute_s"], "ft_parameters": fw["parameters"],
             "ft_rss_gib": sc["rss_mib"] / 1024, "threads": fw["threads"], "cores": os.cpu_count()}
    print(f"\n{args.rows:,} rows: score {sc['wall_s']:.2f} s = {facts['ft_limit_ratio']:.2f} x the bare forward "
          f"{fw['compute_s']:.2f} s ({fw['parameters']:,} parameters, {fw['threads']} threads)")
    print("\nRESULT " + " ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in facts.items()))


if __name__ == "__main__":
    main()
