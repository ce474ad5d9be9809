"""Which network a retrain builds: a registry of built-ins, or a user's `package.module:build`.

The contract a module meets (docs/guide/your-model.md, "Your own model"):

- `model.architecture = "package.module:build"` and `model.params = {...}` in settings;
- `build(spec) -> nn.Module`, where `spec` has `n_numeric: int`, `cardinalities: list[int]`
  (row 0 of each table is the unknown/missing category), `n_outputs: int` and `params: dict`;
- `forward(x_num, x_cat)`: float `[n, n_numeric]` and long `[n, len(cardinalities)]` in,
  logits `[n, n_outputs]` out;
- optional attributes: `head_prefixes` (default `("head.",)`), `growable` (the state-dict names
  of embedding tables, each mapped to its categorical feature's index), `embed(x_num, x_cat)`
  (the space multivariate drift is tested in).

A module is checked when it is built (`check_module`): a 3-row forward pass must give finite
logits of the right shape, and a row must score the same alone as inside a batch (a module
that normalises over the batch at inference would make a row's score depend on its
neighbours). Every failure names the builder and the rule. User code is imported by its
dotted path from the installed environment, never from a bundle folder.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nightshift.choices import Architecture

if TYPE_CHECKING:
    from torch import nn

# A built-in is one module plus one line here (and its name in `nightshift.choices.Architecture`).
BUILTINS: dict[str, str] = {
    Architecture.TABULARNET: "model.tabularnet:build",
    Architecture.FT_TRANSFORMER: "model.ft_transformer:build",
}
DEFAULT_HEAD_PREFIXES = ("head.",)
_PATH = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_]\w*$")


class ArchitectureError(ValueError):
    """A model architecture cannot be used as it is; the message names the builder and the rule."""


class CodeDrift(ValueError):
    """A bundle's recorded model code differs from the installed code (`model.allow_code_drift` lets it through)."""


@dataclass(frozen=True)
class ModelSpec:
    """What `build(spec)` gets: the inputs' shape, the outputs, and the user's params."""

    n_numeric: int
    cardinalities: list[int]
    n_outputs: int
    params: dict[str, Any] = field(default_factory=dict)


def builder_path(architecture: str) -> str:
    """`module:function` for a built-in's name or a user's path; an ArchitectureError for anything else."""
    if architecture in BUILTINS:
        return BUILTINS[architecture]
    if not _PATH.match(architecture or ""):
        raise ArchitectureError(
            f"model.architecture {architecture!r} is neither a built-in ({', '.join(BUILTINS)}) nor an import path "
            "of the form 'package.module:build': set model.architecture (NIGHTSHIFT__MODEL__ARCHITECTURE) to one of them")
    return architecture


def load_builder(path: str):
    """The `build` function behind `path`, imported from the installed environment."""
    module_name, _, attr = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ArchitectureError(
            f"model.architecture {path!r}: module {module_name!r} does not import ({exc}). Install the package that "
            "holds it in every worker's environment (pip install -e ...), or put its folder on PYTHONPATH") from None
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise ArchitectureError(f"model.architecture {path!r}: {module_name} has no callable {attr!r}; "
                                f"it has {sorted(n for n in vars(module) if not n.startswith('_'))[:10]}")
    return fn


def build(architecture: str, spec: ModelSpec, *, check: bool = True) -> "nn.Module":
    """The module `architecture` builds for `spec`, checked (`check_module`) and in eval mode."""
    from torch import nn

    path = builder_path(architecture)
    fn = load_builder(path)
    try:
        module = fn(spec)
    except ArchitectureError:
        raise
    except Exception as exc:  # the user's code: any failure is named with the builder
        raise ArchitectureError(f"model.architecture {path!r}: build(spec) failed for {spec}: "
                                f"{type(exc).__name__}: {exc}") from exc
    if not isinstance(module, nn.Module):
        raise ArchitectureError(f"model.architecture {path!r}: build(spec) must return a torch.nn.Module, "
                                f"got {type(module).__name__}")
    if check:
        check_module(module, spec, path)
    return module.eval()


def check_module(module: "nn.Module", spec: ModelSpec, where: str) -> None:
    """Raise ArchitectureError unless 3 rows give finite logits [3, n_outputs], each the same alone as in the batch."""
    import torch

    g = torch.Generator().manual_seed(0)
    x_num = torch.randn(3, spec.n_numeric, generator=g)
    x_cat = torch.stack([torch.randint(0, c, (3,), generator=g) for c in spec.cardinalities], dim=1) \
        if spec.cardinalities else torch.zeros(3, 0, dtype=torch.long)
    was_training = module.training
    module.eval()
    try:
        with torch.inference_mode():
            try:
                out = module(x_num, x_cat)
            except Exception as exc:
                raise ArchitectureError(
                    f"{where}: forward(x_num [3, {spec.n_numeric}] float, x_cat [3, {len(spec.cardinalities)}] long) "
                    f"failed: {type(exc).__name__}: {exc}") from exc
            if not isinstance(out, torch.Tensor) or tuple(out.shape) != (3, spec.n_outputs):
                shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
                raise ArchitectureError(f"{where}: forward must return logits [n, n_outputs] = [3, {spec.n_outputs}], "
                                        f"got {shape}")
            if not torch.isfinite(out).all():
                raise ArchitectureError(f"{where}: forward gave non-finite logits on 3 random rows (NaN or inf)")
            alone = torch.cat([module(x_num[i:i + 1], x_cat[i:i + 1]) for i in range(3)])
            if not torch.allclose(alone.float(), out.float(), rtol=1e-4, atol=1e-5):
                raise ArchitectureError(
                    f"{where}: a row scores differently alone than inside a batch (largest difference "
                    f"{(alone - out).abs().max().item():.3g}): the module must not mix rows at inference, e.g. "
                    "BatchNorm left in training mode or a batch-level statistic in forward. Use LayerNorm, or "
                    "make forward row-wise in eval mode")
    finally:
        module.train(was_training)


def head_prefixes(module: "nn.Module") -> tuple[str, ...]:
    """The state-dict name prefixes of the module's head (a transfer re-initialises them)."""
    prefixes = getattr(module, "head_prefixes", DEFAULT_HEAD_PREFIXES)
    return (prefixes,) if isinstance(prefixes, str) else tuple(prefixes)


def growable(module: "nn.Module") -> dict[str, int]:
    """The module's embedding tables, by state-dict name, each with its categorical feature's index."""
    tables = getattr(module, "growable", {}) or {}
    if isinstance(tables, dict):
        return {str(k): int(v) for k, v in tables.items()}
    return {str(k): -1 for k in tables}  # names only: grown by shape


# -- the code a bundle records ---------------------------------------------------------
def code_identity(path: str, module: "nn.Module | None" = None) -> dict[str, Any]:
    """The builder's code as a bundle records it: modules, their distribution and version, a source hash.

    The modules are the builder's and, when it lives elsewhere, the returned class's. The hash
    is over their source files' bytes, found without importing them (`find_spec`), so a
    scoring process that never imports torch can still check it.
    """
    modules = [path.partition(":")[0]]
    if module is not None:
        # The class's module, and any the module names as its code (`code_modules`: a wrapped library's).
        for name in (type(module).__module__, *getattr(module, "code_modules", ())):
            if name not in modules and name != "__main__":
                modules.append(name)
    top = modules[0].split(".")[0]
    distribution, version = _distribution(top)
    return {"builder": path, "modules": modules, "distribution": distribution, "version": version,
            "source_sha256": source_hash(modules)}


def source_hash(modules: list[str]) -> str:
    """sha256 over the named modules' source files, in order; an ArchitectureError if one cannot be found."""
    h = hashlib.sha256()
    for name in modules:
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError) as exc:
            raise ArchitectureError(f"model code {name!r} cannot be found ({exc}): install the package that holds it") from None
        if spec is None or not spec.origin or not Path(spec.origin).is_file():
            raise ArchitectureError(f"model code {name!r} cannot be found in this environment: install the package "
                                    "that holds it (the bundle names its distribution)")
        h.update(name.encode() + b"\0" + Path(spec.origin).read_bytes() + b"\0")
    return h.hexdigest()


def check_code(recorded: dict[str, Any] | None, where: str, allow_drift: bool = False) -> str | None:
    """None when the installed code is the recorded code; else raise CodeDrift, or return a warning if allowed."""
    if not recorded or not recorded.get("modules"):
        return None  # a bundle from before code was recorded: built-in TabularNet, whose layout the loader checks
    installed = source_hash(list(recorded["modules"]))
    if installed == recorded.get("source_sha256"):
        return None
    message = (f"{where}: the model code differs from the code it was trained with: {recorded['builder']} "
               f"(modules {', '.join(recorded['modules'])}) has source hash {installed[:16]} installed, "
               f"{str(recorded.get('source_sha256'))[:16]} recorded in the bundle "
               f"(distribution {recorded.get('distribution')} {recorded.get('version')}).")
    if allow_drift:
        return message + " Loaded anyway: model.allow_code_drift is set"
    raise CodeDrift(message + " Install the recorded version of that code, retrain on the installed code, or set "
                    "model.allow_code_drift=true (NIGHTSHIFT__MODEL__ALLOW_CODE_DRIFT) if the change keeps the weights' meaning")


def _distribution(top_level: str) -> tuple[str | None, str | None]:
    from importlib import metadata

    names = metadata.packages_distributions().get(top_level) or []
    if not names:
        return None, None
    try:
        return names[0], metadata.version(names[0])
    except metadata.PackageNotFoundError:
        return names[0], None


# -- what architecture.json holds ------------------------------------------------------
FORMAT = "nightshift.architecture/2"
TABULARNET_V1 = "nightshift.tabularnet/1"  # bundles from before the architecture switch


def record(name: str, spec: ModelSpec, module: "nn.Module | None" = None) -> dict[str, Any]:
    """architecture.json: what rebuilds the module (builder, params, shapes) and the code it came from."""
    path = builder_path(name)
    return {"format": FORMAT, "architecture": name, "builder": path, "params": dict(spec.params),
            "n_numeric": int(spec.n_numeric), "cardinalities": [int(c) for c in spec.cardinalities],
            "n_outputs": int(spec.n_outputs), "code": code_identity(path, module)}


def build_recorded(name: str, spec: ModelSpec) -> "nn.Module":
    """`build`, with the record attached to the module (`architecture_of` reads it back)."""
    module = build(name, spec)
    module.nightshift_architecture = record(name, spec, module)
    return module


def architecture_of(module: "nn.Module") -> dict[str, Any]:
    """The record a module was built with; a TabularNet made by hand (tests, benchmarks) describes itself."""
    recorded = getattr(module, "nightshift_architecture", None)
    if recorded is not None:
        return recorded
    if hasattr(module, "architecture") and callable(module.architecture):
        return normalise(module.architecture())
    raise ArchitectureError(f"{type(module).__name__} was not built through model.architectures.build_recorded, "
                            "so nothing says how to rebuild it")


def normalise(d: dict[str, Any]) -> dict[str, Any]:
    """An architecture.json of any known format as the current one (a TabularNet record of format 1 converts)."""
    if d.get("format") == FORMAT:
        for key in ("builder", "params", "n_numeric", "cardinalities", "n_outputs"):
            if key not in d:
                raise KeyError(key)
        if not isinstance(d["params"], dict):
            raise TypeError("params must be a JSON object")
        return d
    if d.get("format") == TABULARNET_V1:
        return {"format": FORMAT, "architecture": "tabularnet", "builder": BUILTINS["tabularnet"],
                "params": {"embedding_dim": int(d["embedding_dim"]), "hidden": [int(h) for h in d["hidden"]],
                           "dropout": float(d["dropout"])},
                "n_numeric": int(d["n_numeric_inputs"]), "cardinalities": [int(c) for c in d["cardinalities"]],
                "n_outputs": int(d.get("n_outputs", 1)), "code": None}
    raise ValueError(f"not an architecture of format {FORMAT!r} (or {TABULARNET_V1!r}): got format {d.get('format')!r}")


def is_tabularnet(d: dict[str, Any]) -> bool:
    return d["builder"] == BUILTINS["tabularnet"]


def tabularnet_v1(d: dict[str, Any]) -> dict[str, Any]:
    """The record `model.folded.FoldedNet` reads, for a tabularnet architecture."""
    p = {"embedding_dim": 8, "hidden": [128, 64], "dropout": 0.1, **d["params"]}
    return {"format": TABULARNET_V1, "n_numeric_inputs": d["n_numeric"], "cardinalities": list(d["cardinalities"]),
            "embedding_dim": int(p["embedding_dim"]), "hidden": [int(h) for h in p["hidden"]], "dropout": float(p["dropout"]),
            "n_outputs": int(d["n_outputs"])}


def spec_of(d: dict[str, Any]) -> ModelSpec:
    return ModelSpec(int(d["n_numeric"]), [int(c) for c in d["cardinalities"]], int(d["n_outputs"]), dict(d["params"]))
