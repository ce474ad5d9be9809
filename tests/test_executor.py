"""The preloading LocalExecutor: which modules its workers import, and that a bad one never stops a worker."""

from __future__ import annotations

import sys

import pytest

from nightshift.executor import DEFAULT_PRELOAD, PRELOAD_ENV, preload, preload_modules

CASES = [
    ("unset: the default list", None, list(DEFAULT_PRELOAD)),
    ("empty: preloading off", "", []),
    ("a list, spaces ignored", " torch, pyarrow.dataset ,,mlflow ", ["torch", "pyarrow.dataset", "mlflow"]),
]


@pytest.mark.parametrize("name,raw,expected", CASES, ids=[c[0] for c in CASES])
def test_preload_modules_from_the_environment(monkeypatch, name, raw, expected):
    if raw is None:
        monkeypatch.delenv(PRELOAD_ENV, raising=False)
    else:
        monkeypatch.setenv(PRELOAD_ENV, raw)
    assert preload_modules() == expected


def test_a_module_that_cannot_be_imported_is_logged_and_skipped(caplog):
    took = preload(["json", "no_such_module_nightshift", "colorsys"])
    assert set(took) == {"json", "colorsys"} and "colorsys" in sys.modules
    assert "cannot import no_such_module_nightshift" in caplog.text


def test_the_default_list_imports_and_covers_every_heavy_library():
    """Every module named is real (a typo would silently cost a task its imports again)."""
    took = preload(list(DEFAULT_PRELOAD))
    assert set(took) == set(DEFAULT_PRELOAD)
    assert {"torch", "mlflow", "alibi_detect.cd", "pyarrow.dataset", "sklearn.metrics"} <= set(took)


def test_the_embedded_stack_uses_it(tmp_path):
    sys.path.insert(0, "scripts")
    import airflow_stack

    env = airflow_stack.airflow_env(tmp_path, 8080)
    assert env["AIRFLOW__CORE__EXECUTOR"] == "nightshift.executor.PreloadingLocalExecutor"
