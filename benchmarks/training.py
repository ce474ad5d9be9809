"""Training throughput of the default model: samples per second per epoch, on CPU and on CUDA.

Runs with the training core alone (torch, numpy, pyarrow, safetensors), so it runs on a GPU
host without Airflow, MLflow or pydantic. The data is synthetic, shaped like the demo's world
(20 numeric features, 5 categorical ones), and already in memory: the figure is the training
loop's, not the lake's. An epoch's wall time counts from the first batch to the epoch's one
host sync; the one-off copy of the data to the device is reported apart.

    python benchmarks/training.py --rows 1000000 --epochs 2
    python benchmarks/training.py --rows 1000000 --device cuda --batch-size 16384 --compile

Ends with: RESULT cpu_samples_per_s=... gpu_samples_per_s=... gpu_name=...
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import torch  # noqa: E402

from training.train import fit, init_model  # noqa: E402

NUMERIC = tuple(f"x{i:02d}" for i in range(20))
CATEGORICAL = (("region", 8), ("channel", 4), ("device", 3), ("plan", 5), ("merchant", 20))
# The defaults of nightshift.settings (ModelSettings, TrainingSettings), restated so this
# script needs no pydantic; the figures are for the default model.
MODEL = SimpleNamespace(hidden=(128, 64), embedding_dim=8, dropout=0.1)
TRAINING = dict(epochs=1, batch_size=512, lr=3e-3, weight_decay=1e-5, seed=0, device="auto", require_gpu=False,
                early_stop_patience=0, max_steps=None, compile=False)
SPEC = SimpleNamespace(numeric=NUMERIC, categorical=tuple(c for c, _ in CATEGORICAL), label="label", task="binary",
                       entity_id="id")


def table(rows: int, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, len(NUMERIC))).astype(np.float64)
    logit = x[:, 0] - 0.8 * x[:, 1] + 0.5 * x[:, 2] * x[:, 3] - 1.0
    cols = {name: x[:, i] for i, name in enumerate(NUMERIC)}
    for name, k in CATEGORICAL:
        codes = rng.integers(0, k, rows)
        logit += np.linspace(-0.5, 0.5, k)[codes]
        cols[name] = pa.DictionaryArray.from_arrays(pa.array(codes.astype(np.int32)), pa.array([f"{name}{j}" for j in range(k)])).cast(pa.string())
    cols["label"] = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(np.int64)
    return pa.table(cols)


def measure(data: pa.Table, device: str, epochs: int, batch_size: int, compile_: bool) -> dict:
    settings = SimpleNamespace(**{**TRAINING, "epochs": epochs, "batch_size": batch_size, "device": device,
                                  "compile": compile_})
    model, pre = init_model("scratch", data, SPEC, MODEL, None, seed=0)
    result = fit(model, pre, data, SPEC, settings, device=torch.device(device))
    return {"device": device, "epochs": len(result.history), "batch_size": batch_size, "seconds": result.seconds,
            "samples_per_s": result.samples_per_s, "loss": result.history[-1]["train_loss"]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--epochs", type=int, default=2, help="the figure is the mean over these epochs")
    p.add_argument("--batch-size", type=int, default=512, help="CPU batch (the default model's training.batch_size)")
    p.add_argument("--gpu-batch-size", type=int, default=16_384, help="CUDA batch: a GPU needs large batches to be busy")
    p.add_argument("--device", choices=["cpu", "cuda", "both"], default="both")
    p.add_argument("--compile", action="store_true", help="torch.compile on CUDA (training.compile)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    t = time.perf_counter()
    data = table(args.rows)
    print(f"{args.rows:,} rows generated in {time.perf_counter() - t:.1f}s; torch {torch.__version__}, "
          f"{torch.get_num_threads()} CPU threads")
    rows = []
    if args.device in ("cpu", "both"):
        rows.append(measure(data, "cpu", args.epochs, args.batch_size, False))
    gpu_name = "none"
    if args.device in ("cuda", "both"):
        if torch.cuda.is_available():
            gpu_name = torch.cuda.get_device_name(0)
            measure(data.slice(0, min(args.rows, 100_000)), "cuda", 1, args.gpu_batch_size, args.compile)  # warm-up
            rows.append(measure(data, "cuda", args.epochs, args.gpu_batch_size, args.compile))
        else:
            print("no CUDA device here: gpu_samples_per_s is reported as 0")
    print(f"\n{'device':<8}{'batch':>8}{'epochs':>8}{'seconds':>10}{'samples/s':>14}{'loss':>8}")
    for r in rows:
        print(f"{r['device']:<8}{r['batch_size']:>8}{r['epochs']:>8}{r['seconds']:>10.1f}{r['samples_per_s']:>14,.0f}{r['loss']:>8.4f}")
    cpu = next((r["samples_per_s"] for r in rows if r["device"] == "cpu"), 0.0)
    gpu = next((r["samples_per_s"] for r in rows if r["device"] == "cuda"), 0.0)
    print(f"RESULT cpu_samples_per_s={cpu:.0f} gpu_samples_per_s={gpu:.0f} gpu_name={gpu_name.replace(' ', '_')} "
          f"rows={args.rows} cpu_batch={args.batch_size} gpu_batch={args.gpu_batch_size}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
