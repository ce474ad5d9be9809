"""The second built-in (`ft_transformer`): FT-Transformer (Gorishniy et al., 2021), from `rtdl_revisiting_models`.

The published implementation (Apache-2.0, torch only) already takes `(x_cont, x_cat)`. This
adapter gives it Nightshift's contract: logits `[n, n_outputs]`, the head's prefix, the
growable embedding tables, and `embed` for drift (the [CLS] token's final representation).

The default size is small (one block of width 32, 4 heads), so a night of scoring stays
useful on CPUs; `model.params` sets any of `n_blocks`, `d_block`, `attention_n_heads`,
`attention_dropout`, `ffn_d_hidden_multiplier`, `ffn_dropout`, `residual_dropout`.
"""

from __future__ import annotations

import torch
from torch import nn

DEFAULTS = {"n_blocks": 1, "d_block": 32, "attention_n_heads": 4, "attention_dropout": 0.1,
            "ffn_d_hidden_multiplier": 4 / 3, "ffn_dropout": 0.05, "residual_dropout": 0.0}


class FTTransformer(nn.Module):
    head_prefixes = ("net.backbone.output.",)
    code_modules = ("rtdl_revisiting_models",)  # the bundle's code hash covers the published implementation too

    def __init__(self, n_numeric: int, cardinalities: list[int], n_outputs: int, **params):
        super().__init__()
        from rtdl_revisiting_models import FTTransformer as _FT

        unknown = sorted(set(params) - set(DEFAULTS))
        if unknown:
            raise ValueError(f"ft_transformer takes the params {sorted(DEFAULTS)}; unknown: {unknown}")
        p = {**DEFAULTS, **params}
        if p["d_block"] % p["attention_n_heads"]:
            raise ValueError(f"ft_transformer: d_block {p['d_block']} must be a multiple of attention_n_heads "
                             f"{p['attention_n_heads']}")
        self.n_numeric, self.cardinalities, self.n_outputs = int(n_numeric), [int(c) for c in cardinalities], int(n_outputs)
        self.net = _FT(n_cont_features=self.n_numeric, cat_cardinalities=self.cardinalities, d_out=self.n_outputs,
                       ffn_d_hidden=None, **p)

    @property
    def growable(self) -> dict[str, int]:
        return {f"net.cat_embeddings.embeddings.{i}.weight": i for i in range(len(self.cardinalities))}

    def _inputs(self, x_num: torch.Tensor, x_cat: torch.Tensor):
        return (x_num if self.n_numeric else None), (x_cat if self.cardinalities else None)

    def forward(self, x_num: torch.Tensor, x_cat: torch.Tensor) -> torch.Tensor:
        return self.net(*self._inputs(x_num, x_cat))

    def embed(self, x_num: torch.Tensor, x_cat: torch.Tensor) -> torch.Tensor:
        """The [CLS] token after the blocks: what the head reads."""
        output, self.net.backbone.output = self.net.backbone.output, None
        try:
            return self.net(*self._inputs(x_num, x_cat))
        finally:
            self.net.backbone.output = output


def build(spec) -> FTTransformer:
    return FTTransformer(spec.n_numeric, list(spec.cardinalities), spec.n_outputs, **spec.params)
