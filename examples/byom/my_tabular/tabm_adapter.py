"""TabM (Gorishniy et al., ICLR 2025; the `tabm` package) behind Nightshift's small model contract.

Nightshift asks for `build(spec) -> nn.Module` whose `forward(x_num, x_cat)` returns logits
`[n, n_outputs]`. TabM returns `[n, k, d_out]`, one prediction per ensemble member, and
one-hot encodes categories. This adapter:

- embeds each categorical feature in its own table (`growable`), so a warm start keeps
  every known category's row and adds rows for categories first seen since;
- feeds TabM the numeric inputs and those embeddings as its numeric features;
- averages the k members' logits (the ensemble's prediction).

Settings (nightshift.toml):

    [model]
    architecture = "my_tabular.tabm_adapter:build"
    params = { k = 8, n_blocks = 2, d_block = 128, embedding_dim = 8 }
"""

from __future__ import annotations

import torch
from torch import nn

DEFAULTS = {"k": 8, "n_blocks": 2, "d_block": 128, "dropout": 0.1, "embedding_dim": 8}


class TabMAdapter(nn.Module):
    head_prefixes = ("tabm.output.",)
    code_modules = ("tabm",)  # the bundle's code hash covers the library too

    def __init__(self, n_numeric: int, cardinalities: list[int], n_outputs: int, **params):
        super().__init__()
        import tabm

        p = {**DEFAULTS, **params}
        self.embeddings = nn.ModuleList(nn.Embedding(c, p["embedding_dim"]) for c in cardinalities)
        width = n_numeric + len(cardinalities) * p["embedding_dim"]
        self.tabm = tabm.TabM.make(n_num_features=width, d_out=n_outputs, k=p["k"], n_blocks=p["n_blocks"],
                                   d_block=p["d_block"], dropout=p["dropout"])

    @property
    def growable(self) -> dict[str, int]:
        return {f"embeddings.{i}.weight": i for i in range(len(self.embeddings))}

    def embed(self, x_num: torch.Tensor, x_cat: torch.Tensor) -> torch.Tensor:
        """What TabM reads: the numeric inputs and each category's embedding (drift's MMD works here)."""
        return torch.cat([x_num, *(e(x_cat[:, i]) for i, e in enumerate(self.embeddings))], dim=1)

    def forward(self, x_num: torch.Tensor, x_cat: torch.Tensor) -> torch.Tensor:
        return self.tabm(self.embed(x_num, x_cat)).mean(dim=1)  # [n, k, d_out] -> [n, d_out]


def build(spec) -> TabMAdapter:
    return TabMAdapter(spec.n_numeric, list(spec.cardinalities), spec.n_outputs, **spec.params)
