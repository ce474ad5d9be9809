"""The lake in an S3 bucket (moto's S3 server on 127.0.0.1) and the Delta backend on a local disk.

Prints `RESULT key=value` lines:
- `s3_kill_partial`, `s3_kill_mixed`: over `--kills` SIGKILLs of a writer that commits
  predictions/ds=D again and again (3 parts a commit, each row tagged with its generation),
  the reads (the lake's reader, deltalake's, pandas through deltalake) that saw part of a
  partition, or rows of two generations; `s3_kill_reads`, `s3_kill_next_commit_ok` beside them;
  `s3_rerun_identical`: 1 if committing the same rows again reproduces the fingerprint;
- `s3_commit_s_1m`: committing a 1M-row predictions partition to the bucket on the delta backend,
  against `s3_plain_write_s_1m`, a plain `pyarrow.parquet.write_table` of the same table to the
  same endpoint (same compression and row groups); `s3_commit_ratio` = the first over the second;
- `delta_local_score_ratio`: `nightshift score` (a whole process, via benchmarks/scoring.py's job)
  on the delta backend on local disk over the same on the posix backend, at `--score-rows`.

The moto server runs in its own process, so its request handling does not share the
benchmark's GIL. Measured on 2 busy shared cores (docs/benchmarks.md): 50 kills, partial 0,
mixed 0, rerun identical 1; commit ratio 1.12 at 1M rows; score ratio 1.08 at 10M rows
(`--score-rows 10000000`; the default 2M, ratio 0.98, runs in about 3 minutes).

    .venv/bin/python benchmarks/object_store.py [--kills 50] [--part-rows 20000] [--repeat 3] [--score-rows 2000000]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SERVER = """
import sys, time, logging
from moto.server import ThreadedMotoServer
logging.getLogger("werkzeug").setLevel(logging.WARNING)
s = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
s.start()
print("%s:%d" % s.get_host_and_port(), flush=True)
sys.stdin.read()
"""


def start_moto() -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-c", SERVER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,  # noqa: S603 - our own server script
                            text=True)
    endpoint = f"http://{proc.stdout.readline().strip()}"
    os.environ.update({"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
                       "AWS_REGION": "us-east-1", "AWS_DEFAULT_REGION": "us-east-1", "AWS_ALLOW_HTTP": "true",
                       "AWS_EC2_METADATA_DISABLED": "true"})
    return proc, endpoint


def new_bucket(name: str) -> str:
    import boto3

    boto3.client("s3").create_bucket(Bucket=name)
    return f"s3://{name}"


def kills(args) -> None:
    from tests.test_object_store import kill_loop

    t = time.perf_counter()
    seen = kill_loop(new_bucket("bench-kills") + "/lake", kills=args.kills, rows=args.part_rows, seed=args.seed)
    print(f"RESULT s3_kills={args.kills}")
    print(f"RESULT s3_kill_reads={seen['reads']}")
    print(f"RESULT s3_kill_reads_none={seen['none']}")
    print(f"RESULT s3_kill_generations_seen={len(seen['gens'])}")
    print(f"RESULT s3_kill_reader_errors={len(seen['errors'])}")
    print(f"RESULT s3_kill_partial={seen['partial']}")
    print(f"RESULT s3_kill_mixed={seen['mixed']}")
    print(f"RESULT s3_kill_next_commit_ok={seen['after_kill_ok']}")
    print(f"RESULT s3_kill_orphan_part_files={seen['orphan_files']}")  # parts killed writers wrote, never committed
    print(f"RESULT s3_rerun_identical={seen['rerun_identical']}")
    print(f"RESULT s3_kill_wall_s={time.perf_counter() - t:.1f}")
    for e in seen["errors"][:5]:
        print("reader error:", e)


def predictions_table(n: int):
    import numpy as np
    import pyarrow as pa

    rng = np.random.default_rng(0)
    score = rng.random(n)
    return pa.table({"entity_id": pa.array([f"e{i:09d}" for i in range(n)]), "score": score,
                     "decision": (score >= 0.5).astype("int8"), "model_name": pa.repeat("nightshift-model", n),
                     "model_version": pa.repeat("3", n), "model_alias": pa.repeat("champion", n),
                     "mlflow_run_id": pa.repeat("0123456789abcdef", n), "input_fingerprint": pa.repeat("fedcba9876543210", n),
                     "code_version": pa.repeat("0.1.0", n), "model_selection": pa.repeat("as_of", n)})


def commit_speed(args) -> None:
    import pyarrow.parquet as pq

    from nightshift.lake import PREDICTIONS, ROW_GROUP_ROWS, Lake

    table = predictions_table(1_000_000)
    lake = Lake(new_bucket("bench-commit") + "/lake", "delta")
    lake.check_store()  # the once-per-process probe is not part of a commit's cost
    plain_root = "bench-commit/plain"
    commit, plain = [], []
    for k in range(args.repeat):  # alternated, so a slow spell of the shared cores hits both alike
        t = time.perf_counter()
        lake.commit(PREDICTIONS, "2026-01-01", table)
        commit.append(time.perf_counter() - t)
        t = time.perf_counter()
        pq.write_table(table, f"{plain_root}/ds=2026-01-01/part-{k}.parquet", filesystem=lake.fs, compression="zstd",
                       row_group_size=ROW_GROUP_ROWS)
        plain.append(time.perf_counter() - t)
    if lake.read(PREDICTIONS, "2026-01-01").num_rows != table.num_rows:
        raise SystemExit("the committed partition does not hold the table")
    c, p = statistics.median(commit), statistics.median(plain)
    print(f"RESULT s3_commit_s_1m={c:.3f}")
    print(f"RESULT s3_plain_write_s_1m={p:.3f}")
    print(f"RESULT s3_commit_ratio={c / p:.3f}")
    print(f"# commit runs {[round(x, 3) for x in commit]}, plain runs {[round(x, 3) for x in plain]}")


def score_ratio(args) -> None:
    from benchmarks.scoring import _median_run, run_job

    n = args.score_rows
    walls = {}
    with tempfile.TemporaryDirectory(prefix="nightshift-bench-") as tmp:
        envs = {}
        for backend in ("posix", "delta"):
            home = Path(tmp) / backend
            home.mkdir()
            env = {**os.environ, "NIGHTSHIFT_HOME": str(home), "NIGHTSHIFT_CONFIG": str(REPO / "nightshift.toml"),
                   "PYTHONPATH": str(REPO), "NIGHTSHIFT__PATHS__LAKE_BACKEND": backend}
            env.pop("MLFLOW_TRACKING_URI", None)
            env.pop("NIGHTSHIFT_LAKE", None)
            subprocess.run([sys.executable, str(REPO / "benchmarks" / "scoring.py"), "--_prepare", "--rows", str(n)],  # noqa: S603
                           env=env, cwd=REPO, check=True, stdout=subprocess.DEVNULL)
            envs[backend] = env
        runs = {b: [] for b in envs}
        for _ in range(args.repeat):
            for backend, env in envs.items():  # alternated rounds
                runs[backend].append(run_job("score", n, env, script=str(REPO / "benchmarks" / "scoring.py")))
        for backend in envs:
            walls[backend] = _median_run(runs[backend])["wall_s"]
            print(f"# score {backend} at {n} rows: " + ", ".join(f"{r['wall_s']:.2f}s" for r in runs[backend]))
    print(f"RESULT score_rows={n}")
    print(f"RESULT posix_score_s={walls['posix']:.2f}")
    print(f"RESULT delta_local_score_s={walls['delta']:.2f}")
    print(f"RESULT delta_local_score_ratio={walls['delta'] / walls['posix']:.3f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kills", type=int, default=50)
    p.add_argument("--part-rows", type=int, default=20_000, help="rows of each of a commit's 3 parts in the kill test")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--score-rows", type=int, default=2_000_000, help="rows of the scored day (10M takes too long "
                   "on a shared 2-core box)")
    p.add_argument("--only", choices=["kills", "commit", "score"], nargs="+", default=["kills", "commit", "score"])
    args = p.parse_args()
    server, endpoint = start_moto()
    print(f"# moto S3 at {endpoint}")
    try:
        if "commit" in args.only:
            commit_speed(args)
        if "kills" in args.only:
            kills(args)
        if "score" in args.only:
            score_ratio(args)
    finally:
        server.stdin.close()
        server.terminate()
        server.wait(30)


if __name__ == "__main__":
    main()
