"""Scoring any module through torch: the same `logits`/`input_space` as the numpy fast path.

`tabularnet` scores through `model.folded.FoldedNet` (numpy, no torch import). Every other
architecture comes here: `inference_mode`, blocks of `CHUNK_ROWS` so memory stays bounded,
and float32 out. The scoring plan, its parts and the commit are the same for both.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from torch import nn

CHUNK_ROWS = 16_384
ONE_HOT_MAX = 256  # drift's input space without `embed`: categories one-hot up to this many columns in all


class TorchNet:
    """Logits of any checked module from numpy inputs, on the CPU (or the module's device)."""

    own_threads = True  # torch parallelises each batch itself: scoring gives it one batch at a time

    def __init__(self, module: "nn.Module", cardinalities: list[int]):
        self.module = module.eval()
        self.cardinalities = [int(c) for c in cardinalities]
        self.n_outputs = None
        self._lock = threading.Lock()  # torch runs its own threads: one batch at a time keeps them from fighting

    def set_threads(self, n: int) -> None:
        """torch's intra-op threads for scoring (`scoring.threads`, as the numpy path's compute threads)."""
        import torch

        if n and torch.get_num_threads() != n:
            torch.set_num_threads(n)

    def logits(self, x_num: np.ndarray, x_cat: np.ndarray) -> np.ndarray:
        """Raw outputs [n, n_outputs] float32."""
        import torch

        device = next(self.module.parameters()).device
        out = []
        with self._lock, torch.inference_mode():
            for i in range(0, x_num.shape[0], CHUNK_ROWS):
                xn = torch.from_numpy(np.ascontiguousarray(x_num[i:i + CHUNK_ROWS], dtype=np.float32)).to(device)
                xc = torch.from_numpy(np.ascontiguousarray(x_cat[i:i + CHUNK_ROWS], dtype=np.int64)).to(device)
                out.append(self.module(xn, xc).float().cpu().numpy())
        if not out:
            return np.zeros((0, self.n_outputs or 1), np.float32)
        self.n_outputs = out[0].shape[1]
        return np.concatenate(out)

    def input_space(self, x_num: np.ndarray, x_cat: np.ndarray) -> np.ndarray:
        """The module's `embed(x_num, x_cat)` where it has one; else the standardised inputs
        (and the categories one-hot while that stays small)."""
        import torch

        embed = getattr(self.module, "embed", None)
        if callable(embed):
            with self._lock, torch.inference_mode():
                return embed(torch.from_numpy(np.ascontiguousarray(x_num, np.float32)),
                             torch.from_numpy(np.ascontiguousarray(x_cat, np.int64))).float().reshape(len(x_num), -1).numpy()
        parts = [x_num.astype(np.float32, copy=False)]
        if self.cardinalities and sum(self.cardinalities) <= ONE_HOT_MAX:
            parts += [np.eye(c, dtype=np.float32)[x_cat[:, i]] for i, c in enumerate(self.cardinalities)]
        return np.concatenate(parts, axis=1)
