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
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import torch

from torch import nn

from model import architectures as arch
from model.preprocess import Preprocessor
from model.tabularnet import predict_logits
from model.transplant import TransplantReport, is_head, transplant
from nightshift.task import Task, task_for

if TYPE_CHECKING:
    from model.bundle import Bundle
    from nightshift.settings import ModelSettings, TrainingSettings
    from nightshift.spec import DatasetSpec

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


def _with_target(preprocessor: Preprocessor, table: pa.Table, spec) -> Preprocessor:
    """The same features, with the target's scale fitted on `table`'s labels (None for binary)."""
    task = task_for(spec.task)
    d = preprocessor.to_dict()
    y = task.labels(_label_column(table, spec.label), f"label column {spec.label!r}")
    stats = task.target_stats(y)
    d["target"] = None if stats is None else {"mean": stats[0], "std": stats[1]}
    classes = task.vocabulary(y)
    d.pop("classes", None)
    if classes is not None:
        d["classes"] = list(classes)
    return Preprocessor.from_dict(d)


def model_spec(preprocessor: Preprocessor, spec: DatasetSpec, params: dict[str, Any]) -> arch.ModelSpec:
    """What the builder gets: the preprocessor's input shape, the task's outputs, the params."""
    return arch.ModelSpec(preprocessor.n_numeric_inputs, preprocessor.cardinalities,
                          task_for(spec.task).n_outputs(preprocessor), dict(params))


def init_model(
    init_from: str,
    train_table: pa.Table,
    spec: DatasetSpec,
    model_settings: ModelSettings,
    champion: Bundle | None,
    seed: int,
) -> tuple[nn.Module, Preprocessor]:
    """The model and preprocessor a retrain starts from.

    `scratch` builds `model.architecture` with `model.params`. `warm` and `transfer` rebuild
    the source's own architecture (builder and params, recorded in its bundle) for today's
    vocabularies, and copy its tensors by name and shape (`model.transplant`): embedding
    tables grow for categories first seen since, and transfer starts a fresh head. What was
    copied, grown and initialised is on the module (`transplant_report`) for the run's record.
    """
    torch.manual_seed(seed)  # weight init is the only randomness here
    if init_from == "scratch":
        preprocessor = Preprocessor.fit(train_table, spec)
        model = arch.build_recorded(model_settings.architecture,
                                    model_spec(preprocessor, spec, model_settings.effective_params))
    elif init_from in ("warm", "transfer"):
        if champion is None:
            raise ValueError(f"init_from={init_from!r} needs a champion (or, for transfer, training.transfer_from) "
                             "to start from, and there is none: use init_from='scratch' for the first model")
        old = champion.preprocessor
        if old.numeric != tuple(spec.numeric) or old.categorical != tuple(spec.categorical):
            raise ValueError(
                f"init_from={init_from!r} needs the source model's features to match the dataset spec: "
                f"source has numeric={list(old.numeric)} categorical={list(old.categorical)}, "
                f"spec has numeric={list(spec.numeric)} categorical={list(spec.categorical)}; use init_from='scratch'"
            )
        # Keep the source's scaling and indices, and append categories first seen since.
        preprocessor = old.extend(train_table)
        task = task_for(spec.task)
        if init_from == "warm" and old.classes is not None:
            # Classes first seen since are appended after the old ones, so the old head rows keep their meaning.
            y = task.labels(_label_column(train_table, spec.label), f"label column {spec.label!r}")
            preprocessor = preprocessor.with_classes(task.grown(old.classes, y))
        if init_from == "transfer":
            # A new target (another label, or a regression head on a binary source): the
            # target's scale comes from this window's labels, and the head starts afresh.
            preprocessor = _with_target(preprocessor, train_table, spec)
        source = champion.architecture
        model = arch.build_recorded(source["architecture"] if source.get("architecture") else source["builder"],
                                    model_spec(preprocessor, spec, source["params"]))
        source_state = {k: v.detach().to("cpu") for k, v in champion.model.state_dict().items()}
        report = transplant(model, source_state, growable=arch.growable(model), head_prefixes=arch.head_prefixes(model),
                            keep_head=init_from == "warm", mode=init_from)
        if init_from == "warm" and old.classes is not None and preprocessor.classes != old.classes:
            _grow_head(model, source_state, arch.head_prefixes(model), len(old.classes), len(preprocessor.classes), report)
            log.info("warm start: the head grew from %d to %d classes (new: %s); the old classes' rows are copied",
                     len(old.classes), len(preprocessor.classes), list(preprocessor.classes[len(old.classes):]))
        model.transplant_report = report
        log.info("%s start from %s: %s", init_from, source["builder"], report.summary())
        if init_from == "transfer":
            log.info("transfer: embeddings and backbone from the source (task %s), a new head for %s label %r",
                     champion.meta.get("task", "?"), spec.task, spec.label)
        wanted = (arch.builder_path(model_settings.architecture), model_settings.effective_params)
        if (source["builder"], source["params"]) != (wanted[0], json_params(wanted[1])):
            log.warning("%s start keeps the source's architecture %s %s; model settings %s %s apply to the next scratch model",
                        init_from, source["builder"], source["params"], wanted[0], wanted[1])
    else:
        raise ValueError(f"init_from must be one of {', '.join(INIT_FROM)}, got {init_from!r}")
    log.info("init_from=%s: %s, cardinalities %s", init_from, _n_params(model), preprocessor.cardinalities)
    return model, preprocessor


def _grow_head(model: nn.Module, source: dict[str, torch.Tensor], prefixes: tuple[str, ...], k_old: int, k_new: int,
               report: TransplantReport) -> None:
    """Copy the old head's per-class rows into a head grown from `k_old` to `k_new` classes.

    `transplant` copies by exact shape, so the head's output tensors (first dimension the class
    count) were left freshly initialised; their first `k_old` rows are the old classes', in the
    same order (the vocabulary only appends), and are copied here. The new classes' rows keep the
    fresh initialisation. Moved from `initialised` to `grown` in the report.
    """
    state = model.state_dict()
    grown = {}
    with torch.no_grad():
        for name, fresh in state.items():
            old = source.get(name)
            if old is None or not is_head(name, prefixes) or fresh.ndim == 0:
                continue
            if old.shape[0] == k_old and fresh.shape[0] == k_new and tuple(old.shape[1:]) == tuple(fresh.shape[1:]):
                t = fresh.clone()
                t[:k_old] = old.to(fresh.dtype)
                grown[name] = t
    if not grown:
        raise ValueError(f"the head grew from {k_old} to {k_new} classes but no head tensor has {k_old} rows to copy: "
                         "use init_from='scratch'")
    model.load_state_dict({**state, **grown}, strict=True)
    for name in grown:
        if name in report.initialised:
            report.initialised.remove(name)
        report.grown.append(name)


def json_params(params: dict[str, Any]) -> dict[str, Any]:
    """Params as they read back from JSON (tuples become lists), for comparison with a recorded record."""
    import json

    return json.loads(json.dumps(params))


def transplant_record(model: nn.Module) -> dict[str, list[str]] | None:
    """What a warm start or transfer copied, grew and initialised (None for a scratch model)."""
    report: TransplantReport | None = getattr(model, "transplant_report", None)
    return report.as_dict() if report is not None else None


class ModelTooLarge(MemoryError):
    """A training step ran out of memory: the message names the model's size, the batch and the settings to change."""


def _too_large(exc: BaseException, model: nn.Module, batch_size: int, device: torch.device) -> ModelTooLarge | None:
    """A named ModelTooLarge for an out-of-memory error from a training step; None for any other error."""
    text = str(exc)
    if not (isinstance(exc, torch.OutOfMemoryError) or any(s in text for s in ("out of memory", "not enough memory", "can't allocate memory"))):
        return None
    recorded = getattr(model, "nightshift_architecture", None) or {}
    return ModelTooLarge(
        f"the model ran out of memory on {device} training batches of {batch_size} rows: "
        f"{recorded.get('architecture') or type(model).__name__} with params {recorded.get('params', {})} has "
        f"{sum(p.numel() for p in model.parameters()):,} parameters. Lower training.batch_size "
        f"(NIGHTSHIFT__TRAINING__BATCH_SIZE, now {batch_size}), or make the model smaller in model.params "
        f"(for ft_transformer: d_block, n_blocks), or train on a device with more memory ({text.splitlines()[0][:200]})")


class NonFiniteLoss(FloatingPointError):
    """The training loss became NaN or infinite: the run stops, and nothing is registered."""


class UntrainableWindow(ValueError):
    """The rows to train on cannot train a model: too few, or a binary label with one class only."""


@dataclass
class FitResult:
    model: nn.Module  # on CPU, in eval mode
    history: list[dict[str, Any]] = field(default_factory=list)
    device: str = "cpu"
    seconds: float = 0.0
    rows: int = 0
    steps: int = 0
    best_epoch: int | None = None  # the epoch whose weights were kept (early stopping); None without validation
    stopped_early: bool = False
    samples_per_s: float = 0.0  # training samples per second, epochs' wall time only (no data transfer)

    @property
    def best(self) -> dict[str, Any]:
        """The history entry of the kept weights."""
        if self.best_epoch is None:
            return self.history[-1] if self.history else {}
        return next(h for h in self.history if h["epoch"] == self.best_epoch)


def check_trainable(y: np.ndarray, task: Task, where: str, min_rows: int = 1) -> None:
    """Raise `UntrainableWindow` naming `where` and the counts when `y` cannot train a model."""
    if len(y) < min_rows:
        raise UntrainableWindow(f"{where} holds {len(y)} labelled rows, fewer than the {min_rows} needed to train "
                                "(training.min_train_rows): land more labelled days or widen the window")
    problem = task.untrainable(y)
    if problem is not None:
        raise UntrainableWindow(f"{where} holds {len(y)} labelled rows of one class only ({problem}): a classifier needs "
                                "two or more; widen the window or check the label column upstream")


def fit(
    model: nn.Module,
    preprocessor: Preprocessor,
    train_table: pa.Table,
    spec: DatasetSpec,
    settings: TrainingSettings,
    *,
    valid_table: pa.Table | None = None,
    device: str | torch.device | None = None,
    progress: bool = False,
    sample_weight: np.ndarray | None = None,
    freeze_epochs: int = 0,
    unfreeze_lr_factor: float = 1.0,
    on_epoch: Callable[[dict[str, Any]], bool] | None = None,
) -> FitResult:
    """Train `model` with AdamW on the task's loss; one history entry per epoch.

    - `sample_weight`: an epoch draws n rows with replacement in proportion to the weights
      (the `recent` and `representative` windows); without it, a plain permutation.
    - `freeze_epochs`: epochs that train only the head (transfer); then the embeddings and
      backbone join at `lr * unfreeze_lr_factor`, or stay frozen if that is 0.
    - With `valid_table`, early stopping on its loss (`early_stop_patience`) keeps the best
      epoch's weights.
    - A NaN or infinite loss raises `NonFiniteLoss`; `max_steps` caps optimizer steps.
    - `on_epoch(row)` sees each epoch's history entry (with `seconds` since the start); True stops.
    """
    t0 = time.perf_counter()
    device = torch.device(device) if device is not None else resolve_device(settings.device, settings.require_gpu)
    cuda = device.type == "cuda"

    if train_table.num_rows == 0:
        raise UntrainableWindow("the training table has no rows")
    task, target = task_for(spec.task, preprocessor.classes), preprocessor.target
    # The data goes to the device once; every batch below is an index-select there.
    x_num, x_cat, y = _tensors(preprocessor, train_table, spec.label, device, task)
    valid = _tensors(preprocessor, valid_table, spec.label, device, task) if valid_table is not None and valid_table.num_rows else None
    n = y.shape[0]
    weights = None
    if sample_weight is not None:
        sample_weight = np.asarray(sample_weight, dtype=np.float64)
        if sample_weight.shape != (n,) or not np.all(np.isfinite(sample_weight)) or np.any(sample_weight < 0) or sample_weight.sum() <= 0:
            raise ValueError(f"sample_weight must hold {n} finite, non-negative weights with a positive sum")
        weights = torch.from_numpy(sample_weight).float().to(device)

    torch.manual_seed(settings.seed)  # dropout
    shuffle = torch.Generator(device=device).manual_seed(settings.seed)
    model.to(device)
    prefixes = arch.head_prefixes(model)
    head = [p for name, p in model.named_parameters() if is_head(name, prefixes)]
    body = [p for name, p in model.named_parameters() if not is_head(name, prefixes)]
    frozen = freeze_epochs > 0
    for p in body:
        p.requires_grad_(not frozen)
    # Two groups so that transfer can freeze, then unfreeze at a lower rate. fused AdamW on
    # CUDA: one kernel for all parameters instead of several per tensor.
    optimizer = torch.optim.AdamW(
        [{"params": head, "lr": settings.lr}, {"params": body, "lr": 0.0 if frozen else settings.lr}],
        lr=settings.lr, weight_decay=settings.weight_decay, fused=True if cuda else None)
    step_model = torch.compile(model) if (cuda and getattr(settings, "compile", False)) else model
    patience = getattr(settings, "early_stop_patience", 0) if valid is not None else 0
    max_steps = getattr(settings, "max_steps", None)

    history: list[dict[str, Any]] = []
    best_loss, best_epoch, best_state, stale, steps, stopped_early, train_s = float("inf"), None, None, 0, 0, False, 0.0
    total_seen = 0
    with _progress(progress, settings.epochs) as advance:
        for epoch in range(1, settings.epochs + 1):
            if frozen and epoch == freeze_epochs + 1:
                frozen = False
                if unfreeze_lr_factor > 0:
                    for p in body:
                        p.requires_grad_(True)
                    optimizer.param_groups[1]["lr"] = settings.lr * unfreeze_lr_factor
                    log.info("epoch %d: backbone and embeddings unfrozen at lr %.2g", epoch, settings.lr * unfreeze_lr_factor)
            model.train()
            t_epoch = time.perf_counter()
            loss_sum = torch.zeros((), device=device)
            if weights is None:
                order = torch.randperm(n, generator=shuffle, device=device)
            else:
                order = torch.multinomial(weights, n, replacement=True, generator=shuffle)
            seen = 0
            for start in range(0, n, settings.batch_size):
                idx = order[start:start + settings.batch_size]
                try:
                    with _autocast(cuda):
                        out = step_model(x_num[idx], x_cat[idx])
                    loss = task.loss(out, y[idx], target)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                except (torch.OutOfMemoryError, RuntimeError) as exc:
                    named = _too_large(exc, model, settings.batch_size, device)
                    if named is None:
                        raise
                    raise named from None
                optimizer.step()
                loss_sum += loss.detach() * idx.shape[0]  # stays on the device: no sync per batch
                seen += idx.shape[0]
                steps += 1
                if max_steps is not None and steps >= max_steps:
                    break
            train_loss = (loss_sum / seen).item()  # the one sync of the epoch
            total_seen += seen
            train_s += time.perf_counter() - t_epoch
            if not np.isfinite(train_loss):
                raise NonFiniteLoss(
                    f"the training loss became {train_loss} in epoch {epoch} (step {steps}) on {n} rows: "
                    f"lower training.lr (now {settings.lr:g}), or look for extreme or broken feature values in the window")
            row: dict[str, Any] = {"epoch": epoch, "train_loss": train_loss}
            if valid is not None:
                row.update(_validate(model, *valid, cuda, task, target))
                if row["valid_loss"] < best_loss - 1e-6:
                    best_loss, best_epoch, stale = row["valid_loss"], epoch, 0
                    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                else:
                    stale += 1
            history.append(row)
            if on_epoch is not None and on_epoch({**row, "seconds": time.perf_counter() - t0}):
                break
            log.info("epoch %d/%d %s", epoch, settings.epochs, " ".join(f"{k}={v:.4f}" for k, v in row.items() if k != "epoch"))
            advance(f"epoch {epoch}/{settings.epochs} loss {row['train_loss']:.4f}")
            if patience and stale >= patience:
                stopped_early = True
                log.info("early stop after epoch %d: no better validation loss for %d epochs; keeping epoch %d",
                         epoch, patience, best_epoch)
                break
            if max_steps is not None and steps >= max_steps:
                log.info("stopped at training.max_steps=%d after epoch %d", max_steps, epoch)
                break

    if best_state is not None:
        model.load_state_dict(best_state)
    for p in model.parameters():
        p.requires_grad_(True)
    model.to("cpu").eval()
    seconds = time.perf_counter() - t0
    log.info("trained on %d rows for %d epochs (%d steps) on %s in %.1fs", n, len(history), steps, device, seconds)
    return FitResult(model=model, history=history, device=str(device), seconds=seconds, rows=n, steps=steps,
                     best_epoch=best_epoch, stopped_early=stopped_early,
                     samples_per_s=total_seen / train_s if train_s > 0 else 0.0)


def _tensors(preprocessor: Preprocessor, table: pa.Table, label: str, device: torch.device, task: Task):
    x_num, x_cat = preprocessor.transform(table)
    y = task.targets(task.labels(_label_column(table, label), f"label column {label!r}"))
    return (torch.from_numpy(x_num).to(device), torch.from_numpy(x_cat).to(device), torch.from_numpy(y).to(device))


def labels(table: pa.Table, label: str, task: str = "binary") -> np.ndarray:
    """The label column checked by the task's rule; an error names the column and counts the bad values."""
    return task_for(task).labels(_label_column(table, label), f"label column {label!r}")


def _label_column(table: pa.Table, label: str):
    if table.schema.get_field_index(label) < 0:
        raise KeyError(f"label column {label!r} is missing; the data has {table.schema.names}")
    return table.column(label)


@torch.inference_mode()
def _validate(model: nn.Module, x_num, x_cat, y, cuda: bool, task: Task, target) -> dict[str, float]:
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
