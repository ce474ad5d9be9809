"""TabularNet's forward pass in numpy: the fast path scoring runs for `tabularnet`, without importing torch.

`TabularNet` (training/model.py) is what trains. Scoring only needs its arithmetic, and
importing torch costs a scoring process about 1.5-2.5 s and 300 MB before the first row is
read. This module computes the same logits from the same safetensors weights with numpy
alone (safetensors.numpy reads them), and does less work per row than the network as
written:

- **Embeddings folded into the first layer.** `concat(x_num, E_1[c_1], ..., E_k[c_k]) @ W^T`
  equals `x_num @ W_num^T + T_1[c_1] + ... + T_k[c_k]` where `T_i = E_i @ W_i^T` is the
  embedding table already multiplied by its slice of the first layer (cardinality x width,
  computed once per model). A category costs one row lookup and add instead of
  `embedding_dim x width` multiply-adds: for the default model, 13,376 MAC per row instead
  of 18,496.
- **Neighbouring categorical features merged.** While the product of their cardinalities
  stays under `JOINT_ROWS`, features share one table of summed rows: one lookup for two.
- **LayerNorm partly folded.** Its centring is linear, so it is subtracted from the weights
  once; where every gain is positive, the gain moves into the next layer's weights
  (relu(g z + b) = g relu(z + b / g)).
- **Small chunks.** Rows go through in blocks of `BLOCK_ROWS`, so every intermediate stays
  in the CPU's cache instead of streaming hundreds of MB through memory per batch.

The result matches `TabularNet` to float32 rounding (the tests check both against each
other on every architecture the project builds). Only the layer pattern `TabularNet` has
is understood: Linear, LayerNorm, ReLU, Dropout (the identity in inference) per hidden
layer, then a linear head of `n_outputs` logits. Any other architecture scores through torch
(`model.torchnet.TorchNet`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

FORMAT = "nightshift.tabularnet/1"  # architecture.json's format (TabularNet writes it; this module reads it)
BLOCK_ROWS = 4096
JOINT_ROWS = 1024  # largest table of merged categorical features (512 KB at width 128: stays in cache)
LAYER_NORM_EPS = 1e-5  # torch.nn.LayerNorm's default, which TabularNet uses
LAYER_STRIDE = 4  # Linear, LayerNorm, ReLU, Dropout: the modules of one hidden layer in `backbone`


def expected_shapes(architecture: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    """Every tensor a `TabularNet` of this architecture has, by state-dict name, with its shape.

    Raises ValueError (or KeyError, TypeError) for anything that does not describe a network.
    """
    if architecture.get("format") != FORMAT:
        raise ValueError(f"not an architecture of format {FORMAT!r}: got format {architecture.get('format')!r}")
    if not architecture["hidden"]:
        raise ValueError("hidden must list at least one layer width")
    cards, dim = [int(c) for c in architecture["cardinalities"]], int(architecture["embedding_dim"])
    shapes: dict[str, tuple[int, ...]] = {f"embeddings.{i}.weight": (c, dim) for i, c in enumerate(cards)}
    width = int(architecture["n_numeric_inputs"]) + len(cards) * dim
    for j, h in enumerate(int(h) for h in architecture["hidden"]):
        linear, norm = f"backbone.{LAYER_STRIDE * j}", f"backbone.{LAYER_STRIDE * j + 1}"
        shapes.update({f"{linear}.weight": (h, width), f"{linear}.bias": (h,), f"{norm}.weight": (h,), f"{norm}.bias": (h,)})
        width = h
    k = int(architecture.get("n_outputs", 1))
    shapes.update({"head.weight": (k, width), "head.bias": (k,)})
    return shapes


def misfit(architecture: dict[str, Any], weights: dict[str, np.ndarray]) -> str | None:
    """Why these tensors are not the weights of this architecture, or None when they are."""
    want = expected_shapes(architecture)
    missing, unexpected = sorted(set(want) - set(weights)), sorted(set(weights) - set(want))
    if missing or unexpected:
        return f"missing tensors {missing[:5]}, unexpected tensors {unexpected[:5]}"
    wrong = [f"{k}: {tuple(weights[k].shape)} where {want[k]} is expected" for k in want if tuple(weights[k].shape) != want[k]]
    if wrong:
        return "wrong shapes: " + "; ".join(wrong[:3])
    odd = sorted(k for k, v in weights.items() if v.dtype.kind != "f")
    if odd:
        return f"tensors that are not floating point: {odd[:5]}"
    return None


class FoldedNet:
    """Logits of a `TabularNet` from numpy weights, with the embeddings folded into the first layer."""

    def __init__(self, architecture: dict[str, Any], weights: dict[str, np.ndarray]):
        problem = misfit(architecture, weights)
        if problem:
            raise ValueError(f"the weights do not fit the architecture: {problem}")
        f64 = {k: np.asarray(v, dtype=np.float64) for k, v in weights.items()}
        self.n_numeric_inputs = n = int(architecture["n_numeric_inputs"])
        self.cardinalities = [int(c) for c in architecture["cardinalities"]]
        dim, hidden = int(architecture["embedding_dim"]), [int(h) for h in architecture["hidden"]]
        self.embeddings = [weights[f"embeddings.{i}.weight"].astype(np.float32) for i in range(len(self.cardinalities))]

        # Per hidden layer: its Linear (W [out, in], b) and LayerNorm (gamma, beta), in float64 while folding.
        linears = [(f64[f"backbone.{LAYER_STRIDE * j}.weight"], f64[f"backbone.{LAYER_STRIDE * j}.bias"]) for j in range(len(hidden))]
        norms = [(f64[f"backbone.{LAYER_STRIDE * j + 1}.weight"], f64[f"backbone.{LAYER_STRIDE * j + 1}.bias"]) for j in range(len(hidden))]
        head_w, head_b = f64["head.weight"].T, f64["head.bias"]  # [width, k], [k]
        # relu(gamma * z + beta) = gamma * relu(z + beta / gamma) where every gamma > 0: gamma then
        # scales the next layer's input weights, and LayerNorm's affine step costs one add.
        self.scaled = []
        for j, (gamma, beta) in enumerate(norms):
            positive = bool((gamma > 1e-4).all())  # not near 0: beta / gamma must stay a float32 of sense
            self.scaled.append(positive)
            if positive:
                norms[j] = (gamma, beta / gamma)
                if j + 1 < len(linears):
                    linears[j + 1] = (linears[j + 1][0] * gamma[None, :], linears[j + 1][1])
                else:
                    head_w = head_w * gamma[:, None]
        # LayerNorm first subtracts each row's mean over the layer's outputs. That mean is linear
        # in the inputs, so it is subtracted from the weights once: W - mean_out(W), b - mean(b).
        linears = [(w - w.mean(axis=0, keepdims=True), b - b.mean()) for w, b in linears]

        w1, b1 = linears[0]
        self.w_num = np.ascontiguousarray(w1[:, :n].T, dtype=np.float32)
        tables = [f64[f"embeddings.{i}.weight"] @ w1[:, n + i * dim:n + (i + 1) * dim].T for i in range(len(self.cardinalities))]
        self.groups, joint = _joint_tables(self.cardinalities, tables, w1.shape[0])
        self.table = np.concatenate(joint, axis=0).astype(np.float32) if joint else np.zeros((0, w1.shape[0]), np.float32)
        self.layers = []  # (W^T or None for the first, bias, LayerNorm gamma or None where folded, beta)
        for j, ((w, b), (gamma, beta)) in enumerate(zip(linears, norms)):
            self.layers.append((None if j == 0 else np.ascontiguousarray(w.T, dtype=np.float32), b.astype(np.float32),
                                None if self.scaled[j] else gamma.astype(np.float32), beta.astype(np.float32)))
        self.head_w = np.ascontiguousarray(head_w, dtype=np.float32)
        self.head_b = head_b.astype(np.float32)
        self.n_outputs = self.head_w.shape[1]

    @property
    def macs_per_row(self) -> int:
        """Multiply-adds per row as computed here (a category lookup counts as none)."""
        widths = [self.w_num.shape[1]] + [wt.shape[1] for wt, *_ in self.layers[1:]]
        macs = self.n_numeric_inputs * widths[0] + sum(a * b for a, b in zip(widths, widths[1:]))
        return macs + widths[-1] * self.n_outputs

    def input_space(self, x_num: np.ndarray, x_cat: np.ndarray) -> np.ndarray:
        """The network's input rows, [n, n_numeric_inputs + n_cat * embedding_dim] float32 (drift's MMD works here)."""
        return np.concatenate([x_num.astype(np.float32, copy=False),
                               *(emb[x_cat[:, i]] for i, emb in enumerate(self.embeddings))], axis=1)

    def logits(self, x_num: np.ndarray, x_cat: np.ndarray) -> np.ndarray:
        """Raw outputs [n, n_outputs] float32, from numeric inputs [n, n_numeric_inputs] and category indices [n, n_cat]."""
        n = x_num.shape[0]
        if x_num.shape[1:] != (self.n_numeric_inputs,) or x_cat.shape != (n, len(self.cardinalities)):
            raise ValueError(f"inputs of shape {x_num.shape} and {x_cat.shape} do not fit a network of "
                             f"{self.n_numeric_inputs} numeric inputs and {len(self.cardinalities)} categorical features")
        if n and self.cardinalities and (x_cat.min() < 0 or (x_cat >= np.array(self.cardinalities)).any()):
            raise ValueError("a category index is outside its embedding table")
        rows = np.empty((n, len(self.groups)), dtype=np.int64)  # each group's row of the joint table
        for g, (offset, members) in enumerate(self.groups):
            rows[:, g] = offset
            for i, stride in members:
                rows[:, g] += x_cat[:, i] * stride
        out = np.empty((n, self.n_outputs), dtype=np.float32)
        gathered = np.empty((min(n, BLOCK_ROWS), self.table.shape[1]), dtype=np.float32)
        for start in range(0, n, BLOCK_ROWS):
            stop = min(start + BLOCK_ROWS, n)
            h = x_num[start:stop] @ self.w_num
            for g in range(rows.shape[1]):
                np.take(self.table, rows[start:stop, g], axis=0, out=gathered[:stop - start])
                h += gathered[:stop - start]
            for wt, b, gamma, beta in self.layers:
                if wt is not None:
                    h = h @ wt
                h += b
                _layer_norm_relu(h, gamma, beta)
            np.dot(h, self.head_w, out=out[start:stop])
        out += self.head_b
        return out


def _joint_tables(cardinalities: list[int], tables: list[np.ndarray], width: int) -> tuple[list, list[np.ndarray]]:
    """Neighbouring categorical features merged while their joint table stays small (`JOINT_ROWS`).

    A pair of features of 12 categories each becomes one table of 144 rows, each the sum of
    the two features' rows: one lookup and add per row instead of two. Returns the groups as
    (row offset in the concatenated table, [(feature, stride), ...]) and the tables.
    """
    groups: list[list[int]] = []
    for i, c in enumerate(cardinalities):
        if groups and int(np.prod([cardinalities[k] for k in groups[-1]])) * c <= JOINT_ROWS:
            groups[-1].append(i)
        else:
            groups.append([i])
    layout, joint, offset = [], [], 0
    for members in groups:
        table = np.zeros((1, width))
        strides = []
        for i in members:  # row-major over the members: the last one varies fastest
            table = (table[:, None, :] + tables[i][None, :, :]).reshape(-1, width)
        stride = 1
        for i in reversed(members):
            strides.append((i, stride))
            stride *= cardinalities[i]
        layout.append((offset, strides[::-1]))
        joint.append(table)
        offset += table.shape[0]
    return layout, joint


def _layer_norm_relu(h: np.ndarray, gamma: np.ndarray | None, beta: np.ndarray) -> None:
    """relu(LayerNorm(h)) in place, for rows already centred by their weights (biased variance, as torch).

    `gamma` None: it was folded into the next layer, and `beta` is beta / gamma.
    """
    var = np.einsum("ij,ij->i", h, h)
    var *= 1.0 / h.shape[1]
    var += LAYER_NORM_EPS
    h *= (1.0 / np.sqrt(var))[:, None]
    if gamma is not None:
        h *= gamma
    h += beta
    np.maximum(h, 0.0, out=h)

