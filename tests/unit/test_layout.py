"""The layout holds: the kernel depends on nothing above it, and flows name their steps directly."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGES = sorted(p.parent.name for p in REPO.glob("*/__init__.py") if p.parent.name not in {"tests"})


def _imports(path: Path) -> list[tuple[int, str]]:
    """Every module a file imports (top level or inside functions), with its line."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.append((node.lineno, node.module))
    return out


def test_the_layout_has_the_packages_the_readme_names():
    assert {"nightshift", "model", "training", "batch_scoring", "monitoring", "importer", "airflow_integration",
            "cli", "simulator"} <= set(PACKAGES)


@pytest.mark.parametrize("path", sorted((REPO / "nightshift").rglob("*.py")), ids=lambda p: str(p.relative_to(REPO)))
def test_the_kernel_imports_nothing_from_the_packages_above_it(path):
    above = set(PACKAGES) - {"nightshift"}
    bad = [f"{path.relative_to(REPO)}:{line} imports {m}" for line, m in _imports(path) if m.split(".")[0] in above]
    assert not bad, "the kernel (nightshift/) must not depend on the packages built on it:\n" + "\n".join(bad)
    assert not [m for _, m in _imports(path) if m == "importlib"], \
        f"{path.relative_to(REPO)} imports importlib: the kernel looks nothing up by name (only model/architectures.py, the plugin loader, does)"
    assert not [m for _, m in _imports(path) if m.split(".")[0] == "airflow"], \
        f"{path.relative_to(REPO)} imports Airflow: the Airflow integration lives in airflow_integration/"


def test_importlib_is_only_in_the_plugin_loader():
    users = sorted(str(p.relative_to(REPO)) for pkg in PACKAGES for p in (REPO / pkg).rglob("*.py")
                   if any(m == "importlib" or m.startswith("importlib.") for _, m in _imports(p)))
    # the two loaders of names a user configures: a model architecture `package.module:build`, and the
    # modules a worker imports before it forks tasks (NIGHTSHIFT_PRELOAD)
    assert users == ["airflow_integration/executor.py", "model/architectures.py"], users


def test_flows_name_their_step_functions_directly():
    from batch_scoring.flows import NIGHTLY
    from training.flows import RETRAIN

    for flow in (NIGHTLY, RETRAIN):
        for step in flow.steps:
            assert step.call is None or callable(step.call), (flow.id, step.id)
            assert step.choose is None or callable(step.choose), (flow.id, step.id)
            if step.call is not None:  # the grid's doc names the function and carries its docstring
                assert f"`{step.call.__module__}.{step.call.__qualname__}`" in step.doc_md, (flow.id, step.id)
    assert NIGHTLY.step("trigger_retrain").flow is RETRAIN


def test_one_context_builds_the_lake_once(settings):
    from nightshift.flow import StepContext

    built = []

    def source():
        built.append(1)
        return settings

    ctx = StepContext(source, "2026-01-01")
    assert ctx.lake is ctx.lake and len(built) == 1


# Who may import whom: the one-way direction docs/development.md draws. A package not listed imports only
# the kernel. cli/, dags/ and plugins/ sit on top and may import anything.
MAY_IMPORT = {
    "nightshift": set(),
    "model": {"nightshift"},
    "training": {"model", "nightshift"},
    "monitoring": {"training", "model", "nightshift"},
    "batch_scoring": {"monitoring", "training", "model", "nightshift"},
    "importer": {"nightshift"},
    "airflow_integration": {"nightshift"},
    "simulator": {"nightshift"},
}


@pytest.mark.parametrize("package", sorted(MAY_IMPORT))
def test_imports_flow_one_way(package):
    others = set(PACKAGES) - {package}
    bad = sorted({f"{p.relative_to(REPO)}:{line} imports {m}" for p in (REPO / package).rglob("*.py")
                  for line, m in _imports(p) if m.split(".")[0] in others - MAY_IMPORT[package]})
    assert not bad, f"{package}/ may import only {sorted(MAY_IMPORT[package]) or 'the standard and third-party libraries'}:\n" + "\n".join(bad)
