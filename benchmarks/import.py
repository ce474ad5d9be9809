"""`nightshift import` throughput and peak memory on a large CSV, as a whole process.

Generates a CSV shaped like the simulator's data (an entity id, an event time over 30 days,
20 numeric and 5 categorical features, a 0/1 label) into a temp dir, runs
`python -m cli.import_command ...` on it with NIGHTSHIFT_HOME in a temp dir, and reports rows
per second and the child's peak resident memory (getrusage(RUSAGE_CHILDREN).ru_maxrss; the
CSV is generated in this process, so only the import counts).

    .venv/bin/python benchmarks/import.py [--rows 5000000] [--ids given|derived] [--keep DIR]

The last line is machine-readable:
    RESULT import_rows_per_s=... import_peak_rss_mib=... csv_mib=... rows=...
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
NUMERIC = [f"x{j:02d}" for j in range(20)]
CATEGORICAL = {"region": 8, "channel": 4, "device": 3, "plan": 5, "merchant": 20}
DAYS = 30
CHUNK_ROWS = 250_000


def generate(path: Path, rows: int, seed: int = 0) -> None:
    """Write `rows` rows in time order, a chunk at a time (vectorised; the generator's memory stays small)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.csv as pacsv

    rng = np.random.default_rng(seed)
    start = np.datetime64("2026-01-01T00:00:00", "s")
    span = DAYS * 86_400
    schema = None
    writer = None
    for first in range(0, rows, CHUNK_ROWS):
        n = min(CHUNK_ROWS, rows - first)
        # evenly spread, sorted times: row i sits at i/rows of the 30 days, plus jitter within its slot
        slot = (np.arange(first, first + n) * (span / rows)).astype(np.int64)
        secs = slot + rng.integers(0, max(1, span // rows), n)
        cols = {
            "entity_id": pa.array(np.char.add("e", np.arange(first, first + n).astype(str))),
            "event_time": pa.array((start + secs.astype("timedelta64[s]")).astype("datetime64[s]")).cast(pa.string()),
        }
        x = rng.normal(size=(n, len(NUMERIC))).round(4)
        for j, name in enumerate(NUMERIC):
            cols[name] = x[:, j]
        for name, k in CATEGORICAL.items():
            cols[name] = pa.array(np.char.add(f"{name[:2]}", rng.integers(0, k, n).astype(str)))
        logit = x[:, 0] - 0.5 * x[:, 1] + 0.3 * x[:, 2] * x[:, 3] - 1.0
        cols["label"] = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.int64)
        table = pa.table(cols)
        if writer is None:
            schema = table.schema
            writer = pacsv.CSVWriter(str(path), schema, write_options=pacsv.WriteOptions(quoting_style="needed"))
        writer.write_table(table.cast(schema))
    writer.close()


def run_import(csv_path: Path, home: Path, ids: str) -> tuple[float, float, str]:
    cmd = [sys.executable, "-m", "cli.import_command", str(csv_path), "--timestamp-col", "event_time",
           "--label-col", "label", "--no-progress"]
    if ids == "given":
        cmd += ["--id-col", "entity_id"]
    else:
        cmd += ["--ignore", "entity_id"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("NIGHTSHIFT")}
    env.update(NIGHTSHIFT_HOME=str(home), PYTHONPATH=str(REPO), COLUMNS="120")
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)  # noqa: S603 - the benchmark's own fixed commands
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"import failed ({proc.returncode}):\n{proc.stderr}\n{proc.stdout[-3000:]}")
    peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # KiB on Linux
    return seconds, peak_mib, proc.stdout


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=5_000_000)
    ap.add_argument("--ids", choices=["given", "derived"], default="given",
                    help="import with --id-col, or derive ids from each row's content")
    ap.add_argument("--keep", type=Path, help="generate into (and keep) this folder instead of a temp dir")
    args = ap.parse_args()

    from rich.console import Console
    from rich.table import Table

    root = args.keep or Path(tempfile.mkdtemp(prefix="nightshift-import-bench-"))
    root.mkdir(parents=True, exist_ok=True)
    csv_path = root / f"rows-{args.rows}.csv"
    try:
        if not csv_path.exists():
            t0 = time.perf_counter()
            generate(csv_path, args.rows)
            print(f"generated {csv_path} in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
        csv_mib = csv_path.stat().st_size / 2**20
        home = root / f"home-{args.ids}"
        shutil.rmtree(home, ignore_errors=True)
        seconds, peak_mib, _ = run_import(csv_path, home, args.ids)

        sys.path.insert(0, str(REPO))
        from nightshift.lake import FEATURES, LABELS, Lake

        lake = Lake(str(home / "lake"))
        landed = sum(lake.dataset(FEATURES, d).count_rows() for d in lake.partitions(FEATURES))
        labels = sum(lake.dataset(LABELS, d).count_rows() for d in lake.partitions(LABELS))
        if landed != args.rows:
            sys.exit(f"landed {landed:,} feature rows, expected {args.rows:,}")

        table = Table(title=f"nightshift import of a {csv_mib:,.0f} MiB CSV ({args.rows:,} rows, ids {args.ids})",
                      title_justify="left")
        for name in ("measure", "value"):
            table.add_column(name, justify="right" if name == "value" else "left")
        table.add_row("wall time (whole process)", f"{seconds:,.1f} s")
        table.add_row("rows per second", f"{args.rows / seconds:,.0f}")
        table.add_row("MiB per second", f"{csv_mib / seconds:,.1f}")
        table.add_row("peak RSS of the import process", f"{peak_mib:,.0f} MiB")
        table.add_row("peak RSS / CSV size", f"{peak_mib / csv_mib:.2f}")
        table.add_row("feature rows landed", f"{landed:,} in {len(lake.partitions(FEATURES))} days")
        table.add_row("label rows landed", f"{labels:,}")
        table.add_row("CPU cores", str(os.cpu_count()))
        Console().print(table)
        print(f"RESULT import_rows_per_s={args.rows / seconds:.0f} import_peak_rss_mib={peak_mib:.0f} "
              f"csv_mib={csv_mib:.0f} rows={args.rows}")
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
