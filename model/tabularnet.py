"""The default network (`tabularnet`): embeddings for categorical features, an MLP backbone, a linear head.

Layers are LayerNorm, not BatchNorm, so a row's score never depends on which other rows
share its batch, and the last short batch of an epoch needs no special case.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from model.folded import FORMAT

PARAMS = ("embedding_dim", "hidden", "dropout")


def build(spec) -> TabularNet:
    """The `tabularnet` builder: `spec.params` may set embedding_dim, hidden and dropout."""
    unknown = sorted(set(spec.params) - set(PARAMS))
    if unknown:
        raise ValueError(f"tabularnet takes the params {list(PARAMS)}; unknown: {unknown}")
    p = {"embedding_dim": 8, "hidden": (128, 64), "dropout": 0.1, **spec.params}
    return TabularNet(spec.n_numeric, list(spec.cardinalities), int(p["embedding_dim"]), tuple(p["hidden"]),
                      float(p["dropout"]), n_outputs=spec.n_outputs)


class TabularNet(nn.Module):
    head_prefixes = ("head.",)

    def __init__(
        self,
        n_numeric_inputs: int,
        cardinalities: list[int],
        embedding_dim: int = 8,
        hidden: tuple[int, ...] = (128, 64),
        dropout: float = 0.1,
        n_outputs: int = 1,
    ):
        super().__init__()
        if not hidden:
            raise ValueError("hidden must list at least one layer width")
        if any(c < 1 for c in cardinalities):
            raise ValueError(f"every cardinality must be >= 1 (row 0 is OOV/null), got {list(cardinalities)}")
        self.n_numeric_inputs = int(n_numeric_inputs)
        self.cardinalities = [int(c) for c in cardinalities]
        self.embedding_dim = int(embedding_dim)
        self.hidden = tuple(int(h) for h in hidden)
        self.dropout_p = float(dropout)
        self.n_outputs = int(n_outputs)

        self.embeddings = nn.ModuleList(nn.Embedding(c, self.embedding_dim) for c in self.cardinalities)
        layers: list[nn.Module] = []
        width = self.n_numeric_inputs + len(self.cardinalities) * self.embedding_dim
        for h in self.hidden:
            layers += [nn.Linear(width, h), nn.LayerNorm(h), nn.ReLU(), nn.Dropout(self.dropout_p)]
            width = h
        self.backbone = nn.Sequential(*layers)
        self.head = nn.Linear(width, self.n_outputs)

    @property
    def growable(self) -> dict[str, int]:
        """The embedding tables by state-dict name, each with its categorical feature's index."""
        return {f"embeddings.{i}.weight": i for i in range(len(self.cardinalities))}

    def embed(self, x_num: torch.Tensor, x_cat: torch.Tensor) -> torch.Tensor:
        """The network's input rows: numeric inputs and every category's embedding (drift's MMD works here)."""
        return torch.cat([x_num, *(emb(x_cat[:, i]) for i, emb in enumerate(self.embeddings))], dim=1)

    def forward(self, x_num: torch.Tensor, x_cat: torch.Tensor) -> torch.Tensor:
        """Logits [n, n_outputs] from numeric inputs [n, n_numeric_inputs] and category indices [n, n_cat]."""
        return self.head(self.backbone(self.embed(x_num, x_cat)))

    def architecture(self) -> dict[str, Any]:
        """Everything needed to rebuild this network (the weights live in safetensors)."""
        return {
            "format": FORMAT,
            "n_numeric_inputs": self.n_numeric_inputs,
            "cardinalities": list(self.cardinalities),
            "embedding_dim": self.embedding_dim,
            "hidden": list(self.hidden),
            "dropout": self.dropout_p,
            "n_outputs": self.n_outputs,
        }

    @classmethod
    def from_architecture(cls, d: dict[str, Any]) -> TabularNet:
        if d.get("format") != FORMAT:
            raise ValueError(f"not an architecture of format {FORMAT!r}: got format {d.get('format')!r}")
        return cls(d["n_numeric_inputs"], list(d["cardinalities"]), d["embedding_dim"], tuple(d["hidden"]), d["dropout"],
                   n_outputs=int(d.get("n_outputs", 1)))

    def grow_embeddings(self, new_cardinalities: list[int]) -> TabularNet:
        """Enlarge embedding tables in place by the one growth rule (`model.transplant`): old rows kept
        exactly, a new category starting as the mean of the known ones."""
        from model.transplant import transplant

        new_cardinalities = [int(c) for c in new_cardinalities]
        if len(new_cardinalities) != len(self.cardinalities):
            raise ValueError(f"got {len(new_cardinalities)} cardinalities for {len(self.cardinalities)} categorical features")
        shrunk = [(i, old, new) for i, (old, new) in enumerate(zip(self.cardinalities, new_cardinalities)) if new < old]
        if shrunk:
            raise ValueError(f"embedding tables can only grow; these would shrink (feature, old, new): {shrunk}")
        source = {k: v.detach().clone() for k, v in self.state_dict().items()}
        weight = self.embeddings[0].weight if self.cardinalities else None
        self.embeddings = nn.ModuleList(nn.Embedding(c, self.embedding_dim, device=weight.device, dtype=weight.dtype)
                                        for c in new_cardinalities) if weight is not None else self.embeddings
        self.cardinalities = new_cardinalities
        transplant(self, source, growable=self.growable, head_prefixes=self.head_prefixes)
        return self


@torch.inference_mode()
def predict_logits(model: nn.Module, x_num: torch.Tensor, x_cat: torch.Tensor, chunk_rows: int = 65_536) -> torch.Tensor:
    """Logits [n, n_outputs] for all rows, in chunks so memory stays bounded; the model must be in eval mode."""
    out = [model(x_num[i:i + chunk_rows], x_cat[i:i + chunk_rows]).float() for i in range(0, x_num.shape[0], chunk_rows)]
    return torch.cat(out) if out else torch.empty(0, getattr(model, "n_outputs", 1), device=x_num.device)
