"""The training loop: one device-agnostic `fit`, one explicit `init_from` switch.

On CUDA the whole training set is moved to the GPU once, batches are index-selected
there, the forward pass runs under bf16 autocast, and the loss is summed on the device
and read back once per epoch, so no batch waits on a host round trip. On CPU the same
loop runs in float32 and is deterministic for a fixed seed.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import torch

from nightshift.task import Task, task_for
from training.model import TabularNet, predict_logits
from training.preprocess import Preprocessor

if TYPE_CHECKING:
    from nightshift.settings import ModelSettings, TrainingSettings
    from nightshift.spec import DatasetSpec
    from training.bundle import Bundle

log = logging.getLogger("nightshift.training")

INIT_FROM = ("scratch", "warm", "transfer")
EVAL_CHUNK_ROWS = 65_536


def resolve_device(device: str = "auto", require_gpu: bool = False) -> torch.device:
    """cuda when asked for or available, else CPU, saying which; fail if a GPU is required and absent."""
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"training.device must be auto, cpu or cuda, got {device!r}")
    if device == "cpu":
        if require_gpu:
            raise RuntimeError("training.device=cpu contradicts training.require_gpu=true: set one of them differently")
        log.info("training on CPU: training.device=cpu")
        return torch.device("cpu")
    if torch.cuda.is_available():
        log.info("training on cuda (%s)", torch.cuda.get_device_name(0))
        return torch.device("cuda")
    if require_gpu or device == "cuda":
        raise RuntimeError(
            "no CUDA device found but training needs one (training.require_gpu=true or training.device=cuda): "
            "run the training task on the gpu queue (a worker with a GPU), "
            "or set training.require_gpu=false and training.device=auto to train on CPU"
        )
    log.info("training on CPU: no CUDA device found")
    return torch.device("cpu")


def init_model(
    init_from: str,
    train_table: pa.Table,
    spec: DatasetSpec,
    model_settings: ModelSettings,
    champion: Bundle | None,
    seed: int,
) -> tuple[TabularNet, Preprocessor]:
    """The model and preprocessor a retrain starts from."""
    torch.manual_seed(seed)  # weight init is the only randomness here
    if init_from == "scratch":
        preprocessor = Preprocessor.fit(train_table, spec)
        model = TabularNet(
            preprocessor.n_numeric_inputs,
            preprocessor.cardinalities,
            model_settings.embedding_dim,
            tuple(model_settings.hidden),
            model_settings.dropout,
        )
    elif init_from == "warm":
        if champion is None:
            raise ValueError("init_from='warm' needs a champion to start from, and there is none: use init_from='scratch' for the first model")
        old = champion.preprocessor
        if old.numeric != tuple(spec.numeric) or old.categorical != tuple(spec.categorical):
            raise ValueError(
                "init_from='warm' needs the champion's features to match the dataset spec: "
                f"champion has numeric={list(old.numeric)} categorical={list(old.categorical)}, "
                f"spec has numeric={list(spec.numeric)} categorical={list(spec.categorical)}; use init_from='scratch'"
            )
        # Keep the champion's scaling and indices, and append categories first seen since.
        preprocessor = old.extend(train_table)
        model = TabularNet.from_architecture(champion.model.architecture())
        model.load_state_dict({k: v.detach().to("cpu") for k, v in champion.model.state_dict().items()})
        model.grow_embeddings(preprocessor.cardinalities)
        arch = model.architecture()
        wanted = {"embedding_dim": model_settings.embedding_dim, "hidden": list(model_settings.hidden), "dropout": model_settings.dropout}
        if any(arch[k] != v for k, v in wanted.items()):
            log.warning("warm start keeps the champion's architecture %s; model settings %s apply to the next scratch model",
                        {k: arch[k] for k in wanted}, wanted)
    elif init_from == "transfer":
        raise NotImplementedError("init_from='transfer' (champion backbone, new head) is not implemented yet: use 'warm' or 'scratch'")
    else:
        raise ValueError(f"init_from must be one of {', '.join(INIT_FROM)}, got {init_from!r}")
    log.info("init_from=%s: %s, cardinalities %s", init_from, _n_params(model), preprocessor.cardinalities)
    return model, preprocessor


@dataclass
class FitResult:
    model: TabularNet  # on CPU, in eval mode
    history: list[dict[str, Any]] = field(default_factory=list)
    device: str = "cpu"
    seconds: float = 0.0
    rows: int = 0


def fit(
    model: TabularNet,
    preprocessor: Preprocessor,
    train_table: pa.Table,
    spec: DatasetSpec,
    settings: TrainingSettings,
    *,
    valid_table: pa.Table | None = None,
    device: str | torch.device | None = None,
    progress: bool = False,
) -> FitResult:
    """Train `model` with AdamW on the task's loss; one history entry per epoch."""
    t0 = time.perf_counter()
    device = torch.device(device) if device is not None else resolve_device(settings.device, settings.require_gpu)
    cuda = device.type == "cuda"

    if train_table.num_rows == 0:
        raise ValueError("the training table has no rows")
    task, target = task_for(spec.task), preprocessor.target
    # The data goes to the device once; every batch below is an index-select there.
    x_num, x_cat, y = _tensors(preprocessor, train_table, spec.label, device, task)
    valid = _tensors(preprocessor, valid_table, spec.label, device, task) if valid_table is not None else None
    n = y.shape[0]

    torch.manual_seed(settings.seed)  # dropout
    shuffle = torch.Generator(device=device).manual_seed(settings.seed)
    model.to(device)
    # fused AdamW on CUDA: one kernel for all parameters instead of several per tensor.
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay, fused=True if cuda else None)

    history = []
    with _progress(progress, settings.epochs) as advance:
        for epoch in range(1, settings.epochs + 1):
            model.train()
            loss_sum = torch.zeros((), device=device)
            perm = torch.randperm(n, generator=shuffle, device=device)
            for start in range(0, n, settings.batch_size):
                idx = perm[start:start + settings.batch_size]
                with _autocast(cuda):
                    out = model(x_num[idx], x_cat[idx])
                loss = task.loss(out, y[idx], target)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                loss_sum += loss.detach() * idx.shape[0]  # stays on the device: no sync per batch

            row = {"epoch": epoch, "train_loss": (loss_sum / n).item()}  # the one sync of the epoch
            if valid is not None:
                row.update(_validate(model, *valid, cuda, task, target))
            history.append(row)
            log.info("epoch %d/%d %s", epoch, settings.epochs, " ".join(f"{k}={v:.4f}" for k, v in row.items() if k != "epoch"))
            advance(f"epoch {epoch}/{settings.epochs} loss {row['train_loss']:.4f}")

    model.to("cpu").eval()
    seconds = time.perf_counter() - t0
    log.info("trained on %d rows for %d epochs on %s in %.1fs", n, settings.epochs, device, seconds)
    return FitResult(model=model, history=history, device=str(device), seconds=seconds, rows=n)


def _tensors(preprocessor: Preprocessor, table: pa.Table, label: str, device: torch.device, task: Task):
    x_num, x_cat = preprocessor.transform(table)
    y = task.labels(_label_column(table, label), f"label column {label!r}")
    return (torch.from_numpy(x_num).to(device), torch.from_numpy(x_cat).to(device),
            torch.from_numpy(y.astype(np.float32)).to(device))


def labels(table: pa.Table, label: str, task: str = "binary") -> np.ndarray:
    """The label column checked by the task's rule; an error names the column and counts the bad values."""
    return task_for(task).labels(_label_column(table, label), f"label column {label!r}")


def _label_column(table: pa.Table, label: str):
    if table.schema.get_field_index(label) < 0:
        raise KeyError(f"label column {label!r} is missing; the data has {table.schema.names}")
    return table.column(label)


@torch.inference_mode()
def _validate(model: TabularNet, x_num, x_cat, y, cuda: bool, task: Task, target) -> dict[str, float]:
    model.eval()
    with _autocast(cuda):
        out = predict_logits(model, x_num, x_cat, EVAL_CHUNK_ROWS)
    row = {"valid_loss": task.loss(out, y, target).item()}
    value = task.primary_value(y.cpu().numpy(), task.link(out, target).cpu().numpy())
    if value is not None:
        row[f"valid_{task.primary.name}"] = value
    return row


def _autocast(cuda: bool):
    # bf16 on CUDA: full fp32 range, so no loss scaling; CPU stays in plain float32.
    return torch.autocast("cuda", dtype=torch.bfloat16) if cuda else contextlib.nullcontext()


@contextlib.contextmanager
def _progress(enabled: bool, epochs: int):
    """Yields advance(description): a rich bar over epochs when enabled, else a no-op."""
    if not enabled:
        yield lambda description: None
        return
    from rich.progress import Progress  # only when asked: GPU workers may run without rich

    with Progress() as bar:
        task = bar.add_task("training", total=epochs)
        yield lambda description: bar.update(task, advance=1, description=description)


def _n_params(model: torch.nn.Module) -> str:
    return f"{sum(p.numel() for p in model.parameters()):,} parameters"
