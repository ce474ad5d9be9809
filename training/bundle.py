"""A model bundle: a directory that describes itself, with nothing to unpickle.

    model.safetensors   the weights
    architecture.json   how to rebuild the network
    preprocessor.json   scaling stats and vocabularies
    bundle.json         metadata: spec, metrics, training window, init_from, device, versions
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch
from safetensors.torch import load_file, save_file

from training.model import TabularNet, predict_logits
from training.preprocess import Preprocessor

FORMAT = "nightshift.bundle/1"
WEIGHTS, ARCHITECTURE, PREPROCESSOR, META = "model.safetensors", "architecture.json", "preprocessor.json", "bundle.json"
CHUNK_ROWS = 65_536


@dataclass
class Bundle:
    model: TabularNet
    preprocessor: Preprocessor
    meta: dict[str, Any] = field(default_factory=dict)
    device: torch.device = torch.device("cpu")

    def predict_proba(self, batch: pa.RecordBatch | pa.Table) -> np.ndarray:
        """float64 probabilities of the positive class, one per row."""
        x_num, x_cat = self.preprocessor.transform(batch)
        x_num_t = torch.from_numpy(x_num).to(self.device)
        x_cat_t = torch.from_numpy(x_cat).to(self.device)
        logits = predict_logits(self.model, x_num_t, x_cat_t, CHUNK_ROWS)
        # Sigmoid in float64: scores near 0 or 1 keep their ranking instead of rounding to 1.0.
        return torch.sigmoid(logits.double()).cpu().numpy()


def save_bundle(path: str | os.PathLike, model: TabularNet, preprocessor: Preprocessor, meta: dict[str, Any]) -> Path:
    """Write the four files of a bundle into `path` (created if needed)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    # safetensors wants contiguous CPU tensors that share no storage.
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    save_file(tensors, str(path / WEIGHTS), metadata={"format": FORMAT})
    _write_json(path / ARCHITECTURE, model.architecture())
    _write_json(path / PREPROCESSOR, preprocessor.to_dict())
    meta = {
        **meta,
        "bundle_format": FORMAT,
        "torch_version": meta.get("torch_version", torch.__version__),
        "weights_sha256": _sha256(path / WEIGHTS),
    }
    _write_json(path / META, meta)
    return path


def load_bundle(path: str | os.PathLike, device: str | torch.device = "cpu") -> Bundle:
    """Rebuild a bundle from its JSON and safetensors files; the model comes back in eval mode."""
    path = Path(path)
    missing = [f for f in (WEIGHTS, ARCHITECTURE, PREPROCESSOR, META) if not (path / f).is_file()]
    if missing:
        raise FileNotFoundError(f"{path} is not a complete model bundle: missing {missing}")
    meta = json.loads((path / META).read_text())
    if meta.get("weights_sha256") not in (None, _sha256(path / WEIGHTS)):
        raise ValueError(f"{path / WEIGHTS} does not match the checksum in {META}: the bundle is corrupt or mixed up")
    device = torch.device(device)
    model = TabularNet.from_architecture(json.loads((path / ARCHITECTURE).read_text()))
    model.load_state_dict(load_file(str(path / WEIGHTS), device=str(device)), strict=True)
    model.to(device).eval()
    preprocessor = Preprocessor.from_dict(json.loads((path / PREPROCESSOR).read_text()))
    return Bundle(model=model, preprocessor=preprocessor, meta=meta, device=device)


def _write_json(file: Path, obj: Any) -> None:
    # Write then rename, so a crash never leaves a half-written file in a bundle.
    tmp = file.with_name(f".{file.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")
    os.replace(tmp, file)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (np.generic, np.ndarray)):
        return obj.tolist()
    if isinstance(obj, (Path, torch.device)):
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
