"""Warm start and transfer for any module: copy what matches by tensor name and shape.

- A tensor whose name and shape match the source's is copied.
- A growable table (an embedding, `architectures.growable`) keeps its old rows exactly, and
  its new rows (categories first seen since) start as the mean of the old known rows, so a
  new category starts out like an average known one rather than like "unknown".
- Everything else keeps the fresh initialisation the builder gave it; so does the head when
  `keep_head` is False (transfer: a new target).

`load_state_dict(strict=False)` would not do this: it skips missing and unexpected names but
still fails on a shape mismatch (pytorch#40859), so shapes are matched here, tensor by tensor.
A warm start that copied nothing of the body is an error, never a silent scratch start.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch
    from torch import nn


class NothingTransplanted(ValueError):
    """A warm start or transfer that would copy none of the source's body."""


@dataclass
class TransplantReport:
    copied: list[str] = field(default_factory=list)
    grown: list[str] = field(default_factory=list)
    initialised: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, list[str]]:
        return {"copied": self.copied, "grown": self.grown, "initialised": self.initialised}

    def summary(self) -> str:
        return f"{len(self.copied)} tensors copied, {len(self.grown)} grown, {len(self.initialised)} initialised"


def is_head(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name.startswith(p) for p in prefixes)


def transplant(module: "nn.Module", source: dict[str, "torch.Tensor"], *, growable: dict[str, int] | set[str],
               head_prefixes: tuple[str, ...], keep_head: bool = True, mode: str = "warm") -> TransplantReport:
    """Copy `source`'s tensors into `module` where names and shapes allow; grow growable tables; report each tensor."""
    import torch

    report = TransplantReport()
    state = module.state_dict()
    new_state = {}
    with torch.no_grad():
        for name, fresh in state.items():
            old = source.get(name)
            if old is None or (not keep_head and is_head(name, head_prefixes)):
                report.initialised.append(name)
                continue
            old = old.detach().to(fresh.device, fresh.dtype)
            if tuple(old.shape) == tuple(fresh.shape):
                new_state[name] = old.clone()
                report.copied.append(name)
            elif name in growable and old.ndim == fresh.ndim and old.shape[1:] == fresh.shape[1:] \
                    and fresh.shape[0] > old.shape[0]:
                known = old[1:] if old.shape[0] > 1 else old  # row 0 is unknown/missing
                fill = known.mean(dim=0, keepdim=True).expand(fresh.shape[0] - old.shape[0], *old.shape[1:])
                new_state[name] = torch.cat([old, fill], dim=0)
                report.grown.append(name)
            else:
                report.initialised.append(name)
    body_moved = [n for n in report.copied + report.grown if not is_head(n, head_prefixes)]
    if not body_moved:
        raise NothingTransplanted(
            f"init_from={mode!r} copied none of the source model's body: no tensor of the new module matches the "
            f"source's by name and shape (new module: {sorted(state)[:6]}...; source: {sorted(source)[:6]}...). The "
            "architecture or its params changed since the source was trained; use init_from='scratch', or "
            "keep model.architecture and model.params as the source had them")
    module.load_state_dict({**state, **new_state}, strict=True)
    return report
