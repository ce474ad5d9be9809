"""Scoring throughput and peak memory: Nightshift's streaming scorer against load-it-all.

For each partition size, in one run, each method scores the same simulated day in a
fresh process (so peak RSS is its own):
- `streaming`: `lake.batches` -> `Bundle.predict` -> atomic `lake.writer` (what
  `batch_scoring.score` does), memory bounded by `scoring.batch_rows`;
- `load-all` (baseline): read the whole partition, predict once, write once.

    .venv/bin/python benchmarks/bench_scoring.py [--rows 250000 1000000] [--batch-rows 65536]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DS = "2026-01-01"


def prepare(root: Path, rows: list[int]) -> None:
    """One features partition per size and a small trained bundle."""
    import pyarrow as pa

    from nightshift.lake import FEATURES, Lake
    from nightshift.settings import load_settings
    from simulator.world import World
    from training.bundle import save_bundle
    from training.train import fit, init_model

    s = load_settings().with_overrides({"training.epochs": 1})
    world = World(s.dataset, seed=0)
    train = world.features(0, DS, 20_000)
    labels = world.labels(train, 0, DS)
    train = train.append_column(s.dataset.label, labels.column(s.dataset.label).cast(pa.int64()))
    model, pre = init_model("scratch", train, s.dataset, s.model, None, 0)
    save_bundle(root / "bundle", fit(model, pre, train, s.dataset, s.training).model, pre, {"bench": True},
                reference=train.select(list(s.dataset.features)).slice(0, 1000))
    for n in rows:
        Lake(str(root / f"lake-{n}")).commit(FEATURES, DS, world.features(1, DS, n))


def run_one(root: Path, n: int, method: str, batch_rows: int) -> dict:
    """Score one partition in this process; report seconds and peak RSS."""
    import numpy as np
    import pyarrow as pa

    from nightshift.lake import FEATURES, PREDICTIONS, Lake
    from nightshift.settings import load_settings
    from training.bundle import load_bundle

    spec = load_settings().dataset
    bundle = load_bundle(root / "bundle")
    lake = Lake(str(root / f"lake-{n}"))
    schema = pa.schema([(spec.entity_id, pa.string()), ("score", pa.float64())])
    base_rss = _reset_peak_rss()
    t = time.perf_counter()
    if method == "streaming":
        with lake.writer(PREDICTIONS, DS, schema) as w:
            for batch in lake.batches(FEATURES, DS, batch_rows, columns=[spec.entity_id, *spec.features]):
                w.write_batch(pa.record_batch([batch.column(0), pa.array(bundle.predict(batch))], schema=schema))
    else:
        table = lake.read(FEATURES, DS)
        scores = bundle.predict(table)
        lake.commit(PREDICTIONS, DS, pa.table([table.column(spec.entity_id), pa.array(np.asarray(scores))], schema=schema))
    seconds = time.perf_counter() - t
    peak = _peak_rss_kb()
    return {"rows": n, "method": method, "seconds": seconds, "rows_per_s": n / seconds,
            "peak_rss_mb": peak / 1024, "growth_mb": (peak - base_rss) / 1024}


def _peak_rss_kb() -> int:
    """This address space's high-water mark (VmHWM). Unlike ru_maxrss, it is not inherited across exec."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError("no VmHWM in /proc/self/status (Linux only)")


def _reset_peak_rss() -> int:
    """Reset VmHWM to the current RSS, so the peak measured next is the scoring's own."""
    Path("/proc/self/clear_refs").write_text("5")
    return _peak_rss_kb()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, nargs="+", default=[250_000, 1_000_000])
    p.add_argument("--batch-rows", type=int, default=65_536)
    p.add_argument("--_worker", nargs=3, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args._worker:
        root, n, method = args._worker
        print(json.dumps(run_one(Path(root), int(n), method, args.batch_rows)))
        return

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        print(f"preparing {args.rows} row partitions ...", flush=True)
        prepare(root, args.rows)
        results = []
        for n in args.rows:
            for method in ("streaming", "load-all"):
                out = subprocess.run([sys.executable, __file__, "--batch-rows", str(args.batch_rows), "--_worker", tmp, str(n), method],  # noqa: S603 - this script re-run as a worker, fixed argv
                                     capture_output=True, text=True, check=True)
                results.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(f"\n{'rows':>10} {'method':<10} {'seconds':>8} {'rows/s':>10} {'peak RSS MB':>12} {'growth MB':>10}")
        for r in results:
            print(f"{r['rows']:>10} {r['method']:<10} {r['seconds']:>8.2f} {r['rows_per_s']:>10.0f} {r['peak_rss_mb']:>12.0f} {r['growth_mb']:>10.0f}")
        for n in args.rows:
            s, b = [r for r in results if r["rows"] == n]
            print(f"{n} rows: streaming uses {s['growth_mb']:.0f} MB over baseline process vs {b['growth_mb']:.0f} MB "
                  f"({b['growth_mb'] / max(s['growth_mb'], 1):.1f}x less), time ratio {s['seconds'] / b['seconds']:.2f}")


if __name__ == "__main__":
    main()
