"""A model bundle: a directory that describes itself, with nothing to unpickle.

    model.safetensors   the weights
    architecture.json   how to rebuild the network: builder, params, shapes, and the code it came from
                        (modules, distribution, version, source hash; `model.architectures`)
    preprocessor.json   scaling stats, vocabularies, the target's scale
    reference.parquet   a fixed-size sample of the training window: the drift reference
    bundle.json         metadata: task, spec, metrics, training window, init_from, device, versions
    calibration.json    optional: the calibrator and the holdout reference (`model.calibration`);
                        a bundle without it (made before it existed) loads, and is "uncalibrated"

Loading never unpickles: weights come from safetensors (a JSON header and raw tensors), the
rest from JSON. For `tabularnet`, loading and predicting need no torch: `predict` runs the
numpy forward pass of `model.folded`, and the torch network (`Bundle.model`, for warm starts
and transfer) is built from the same weights only when something asks for it. Any other
architecture is rebuilt by its recorded builder and scores through torch (`model.torchnet`).
Loading refuses a bundle whose builder's source hash differs from the installed code
(`architectures.CodeDrift`, both hashes named) unless `allow_code_drift` is set; a bundle
folder is never put on `sys.path`. A damaged or
foreign file (truncated weights, a pickle planted where weights belong, invalid JSON, tensors that do not fit the architecture) raises `BundleCorrupt`,
which names the file and what to do.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
from safetensors import SafetensorError

from model import architectures as arch
from model.calibration import ModelCard, read_model_card, write_model_card
from model.folded import FoldedNet, expected_shapes, misfit
from model.preprocess import Preprocessor
from nightshift.task import Task, task_for

if TYPE_CHECKING:
    import torch
    from torch import nn

log = logging.getLogger("nightshift.model")

FORMAT = "nightshift.bundle/2"
WEIGHTS, ARCHITECTURE, PREPROCESSOR, REFERENCE, META = (
    "model.safetensors", "architecture.json", "preprocessor.json", "reference.parquet", "bundle.json")
FILES = (WEIGHTS, ARCHITECTURE, PREPROCESSOR, REFERENCE, META)


class BundleCorrupt(ValueError):
    """A model bundle's files cannot be loaded as they are; the message names the file and the fix."""

    def __init__(self, file: Path, detail: str):
        self.file = file
        super().__init__(f"model bundle file {file} is corrupt: {detail}. Nothing was loaded from it. If this is the "
                         f"local model cache, delete {file.parent} and rerun (it is downloaded again from MLflow); "
                         f"otherwise roll back to another version or retrain")


class Bundle:
    """A loaded model: preprocessor, metadata and weights; predictions in numpy, the torch network on demand.

    Built by `load_bundle` from a bundle's files (`weights` and `architecture`), or around a
    trained module (`model`), as the benchmarks and tests do.
    """

    def __init__(self, model: "nn.Module | None" = None, preprocessor: Preprocessor | None = None,
                 meta: dict[str, Any] | None = None, device: "str | torch.device" = "cpu", path: Path | None = None, *,
                 weights: dict[str, np.ndarray] | None = None, architecture: dict[str, Any] | None = None):
        if model is None and (weights is None or architecture is None):
            raise ValueError("a Bundle needs a model, or its weights and architecture")
        if preprocessor is None:
            raise ValueError("a Bundle needs its preprocessor")
        self._model = model
        self._weights = weights
        self.architecture = arch.normalise(architecture) if architecture is not None else arch.architecture_of(model)
        self.preprocessor = preprocessor
        self.meta = dict(meta or {})
        self.device = device
        self.path = path
        self._net = None

    @property
    def task(self) -> Task:
        """The bundle's task, bound to its class vocabulary (multiclass)."""
        return task_for(self.meta.get("task", "binary"), self.preprocessor.classes)

    @property
    def model(self) -> "nn.Module":
        """The torch network, in eval mode on the bundle's device (rebuilt by its recorded builder on first use)."""
        if self._model is None:
            import torch

            model = arch.build(self.architecture["builder"], arch.spec_of(self.architecture), check=False)
            try:
                model.load_state_dict({k: torch.from_numpy(v) for k, v in self._weights.items()}, strict=True)
            except RuntimeError as exc:
                raise BundleCorrupt(Path(self.path or ".") / WEIGHTS,
                                    f"its tensors do not fit {self.architecture['builder']} ({str(exc)[:300]})") from None
            model.nightshift_architecture = self.architecture
            self._model = model.to(torch.device(self.device)).eval()
        return self._model

    @property
    def weights(self) -> dict[str, np.ndarray]:
        """The network's tensors as float numpy arrays, by state-dict name."""
        if self._weights is None:
            return {k: v.detach().float().cpu().numpy() for k, v in self._model.state_dict().items()}
        return self._weights

    @property
    def net(self):
        """What `predict` runs, built once: the numpy fast path for `tabularnet`, torch (`TorchNet`) otherwise."""
        if self._net is None:
            if arch.is_tabularnet(self.architecture):
                self._net = FoldedNet(arch.tabularnet_v1(self.architecture), self.weights)
            else:
                from model.torchnet import TorchNet

                self._net = TorchNet(self.model, self.architecture["cardinalities"])
        return self._net

    def logits(self, batch: pa.RecordBatch | pa.Table) -> np.ndarray:
        """Raw outputs [n, n_outputs] float32."""
        return self.net.logits(*self.preprocessor.transform(batch))

    def predict(self, batch: pa.RecordBatch | pa.Table) -> np.ndarray:
        """The task's prediction per row, float64: P(y=1) for binary, the value for regression, the class
        probabilities [n, K] in the vocabulary's order for multiclass."""
        return self.task.prediction(self.logits(batch), self.preprocessor.target)

    @property
    def card(self) -> ModelCard:
        """The calibrator and holdout reference (`UNCALIBRATED` for a bundle without calibration.json)."""
        return read_model_card(self.path) if self.path is not None else ModelCard()

    def decision_threshold(self, setting: "float | str") -> float:
        """The threshold this version decides at: `scoring.threshold`, or with "value" the one picked for
        business value on its holdout and recorded in its card (0.5, with a warning, for a version without one)."""
        from nightshift.value import FALLBACK_THRESHOLD, decision_threshold

        recorded = self.card.threshold if setting == "value" else None
        if setting == "value" and recorded is None:
            log.warning("scoring.threshold = \"value\" but model bundle %s records no value-picked threshold (trained "
                        "before the setting, or without a cost matrix): it decides at %g until a retrain picks one",
                        self.path, FALLBACK_THRESHOLD)
        return decision_threshold(setting, recorded)

    def reference(self) -> pa.Table:
        """The drift reference saved with the model: a fixed-size sample of its training window."""
        import pyarrow.parquet as pq

        return pq.read_table(self.path / REFERENCE)


def save_bundle(path: str | os.PathLike, model: "nn.Module", preprocessor: Preprocessor, meta: dict[str, Any],
                reference: pa.Table, card: ModelCard | None = None) -> Path:
    """Write the five files of a bundle into `path` (created if needed), and calibration.json when `card` is given."""
    import pyarrow.parquet as pq
    import torch
    from safetensors.torch import save_file

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tmp = path / f".{REFERENCE}.tmp"
    pq.write_table(reference, tmp)
    os.replace(tmp, path / REFERENCE)
    # safetensors wants contiguous CPU tensors that share no storage.
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    save_file(tensors, str(path / WEIGHTS), metadata={"format": FORMAT})
    _write_json(path / ARCHITECTURE, arch.architecture_of(model))
    _write_json(path / PREPROCESSOR, preprocessor.to_dict())
    meta = {
        **meta,
        "bundle_format": FORMAT,
        "torch_version": meta.get("torch_version", torch.__version__),
        "weights_sha256": _sha256(path / WEIGHTS),
    }
    _write_json(path / META, meta)
    if card is not None:
        write_model_card(path, card)
    return path


def load_bundle(path: str | os.PathLike, device: "str | torch.device" = "cpu", *, allow_code_drift: bool = False) -> Bundle:
    """Rebuild a bundle from its JSON and safetensors files (without torch for `tabularnet`); `Bundle.model` comes in eval mode.

    Raises `architectures.CodeDrift` when the installed model code is not the recorded code,
    unless `allow_code_drift` (`model.allow_code_drift`), which logs it instead.
    """
    from safetensors.numpy import load_file

    path = Path(path)
    missing = [f for f in FILES if not (path / f).is_file()]
    if missing:
        raise FileNotFoundError(f"{path} is not a complete model bundle: missing {missing}")
    meta = _read_json(path / META)
    if not isinstance(meta, dict):
        raise BundleCorrupt(path / META, "it is not a JSON object")
    if meta.get("weights_sha256") not in (None, _sha256(path / WEIGHTS)):
        raise BundleCorrupt(path / WEIGHTS, f"it does not match the checksum in {META} (the bundle is damaged or mixed up)")
    architecture = _read_json(path / ARCHITECTURE)
    try:
        architecture = arch.normalise(architecture)
        if arch.is_tabularnet(architecture):
            expected_shapes(arch.tabularnet_v1(architecture))  # every field there, of the right type
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise BundleCorrupt(path / ARCHITECTURE, f"it does not describe a network ({exc})") from None
    warning = arch.check_code(architecture.get("code"), f"model bundle {path}", allow_code_drift)
    if warning:
        log.warning("%s", warning)
    try:
        # safetensors parses a JSON header and copies raw bytes: a pickle here is rejected, never run.
        weights = load_file(str(path / WEIGHTS))
    except (SafetensorError, TypeError, ValueError) as exc:
        raise BundleCorrupt(path / WEIGHTS, f"it is not a safetensors file ({exc})") from None
    problem = misfit(arch.tabularnet_v1(architecture), weights) if arch.is_tabularnet(architecture) else None
    if problem:
        raise BundleCorrupt(path / WEIGHTS, f"its tensors do not fit {ARCHITECTURE} ({problem})")
    pre = _read_json(path / PREPROCESSOR)
    try:
        preprocessor = Preprocessor.from_dict(pre)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise BundleCorrupt(path / PREPROCESSOR, f"a field is missing or of the wrong type ({exc})") from None
    fits = (preprocessor.n_numeric_inputs, preprocessor.cardinalities)
    if fits != (int(architecture["n_numeric"]), [int(c) for c in architecture["cardinalities"]]):
        raise BundleCorrupt(path / PREPROCESSOR, f"it does not fit {ARCHITECTURE}: {fits[0]} numeric inputs and cardinalities "
                            f"{fits[1]}, where the network has {architecture['n_numeric']} and {architecture['cardinalities']}")
    return Bundle(preprocessor=preprocessor, meta=meta, device=device, path=path, weights=weights, architecture=architecture)


def _read_json(file: Path) -> Any:
    try:
        return json.loads(file.read_bytes())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleCorrupt(file, f"it is not valid JSON ({exc})") from None


def _write_json(file: Path, obj: Any) -> None:
    # Write then rename, so a crash never leaves a half-written file in a bundle.
    tmp = file.with_name(f".{file.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")
    os.replace(tmp, file)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (np.generic, np.ndarray)):
        return obj.tolist()
    if isinstance(obj, Path) or type(obj).__module__ == "torch":  # a torch.device
        return str(obj)
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    raise TypeError(f"bundle metadata must be JSON-safe; {type(obj).__name__} is not: {obj!r}")


def _sha256(file: Path) -> str:
    h = hashlib.sha256()
    with open(file, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()
