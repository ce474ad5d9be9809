"""Operator extra links: from a retrain's tasks to the MLflow run and model version they made or
judged, and from decision tasks to the Model health page.

Airflow 3 computes a link once, in the worker, when the task ends (`get_link` gets the running
task instance) and keeps the URL as an XCom, which the UI's button reads. The version comes
from the task's own return value; the MLflow base URL from the settings (`[ui] mlflow_url`, or
an http(s) tracking URI). Without one the button stays disabled: there is no MLflow UI to open.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from airflow.sdk import BaseOperatorLink


def mlflow_run_url(base: str | None, experiment_id: str | None, run_id: str | None) -> str:
    if not (base and run_id):
        return ""
    return f"{base}/#/experiments/{experiment_id or '0'}/runs/{run_id}"


def model_version_url(base: str | None, model: str, version: str | None) -> str:
    if not (base and version):
        return ""
    return f"{base}/#/models/{quote(model, safe='')}/versions/{version}"


def version_of(result: Any) -> str | None:
    """The model version a retrain task's return value names (trained, judged or promoted)."""
    if not isinstance(result, dict):
        return None
    v = result.get("version") or result.get("champion")
    return str(v) if v is not None else None


def _settings(ti):
    from nightshift.settings import run_settings

    params = getattr(getattr(ti, "task", None), "params", None) or {}
    try:
        params = ti.get_template_context().get("params") or params
    except Exception:  # noqa: BLE001 - outside a running task: the DAG's defaults
        params = dict(params)
    return run_settings(dict(params))


class MlflowRunLink(BaseOperatorLink):
    name = "MLflow run"

    def get_link(self, operator, *, ti_key) -> str:
        settings = _settings(ti_key)
        version = version_of(ti_key.xcom_pull(task_ids=ti_key.task_id))
        if not (settings.mlflow_url and version):
            return ""
        from nightshift.registry import Registry

        client = Registry(settings).client
        run_id = client.get_model_version(settings.model.name, version).run_id
        return mlflow_run_url(settings.mlflow_url, client.get_run(run_id).info.experiment_id, run_id)


class MlflowModelVersionLink(BaseOperatorLink):
    name = "MLflow model version"

    def get_link(self, operator, *, ti_key) -> str:
        settings = _settings(ti_key)
        return model_version_url(settings.mlflow_url, settings.model.name, version_of(ti_key.xcom_pull(task_ids=ti_key.task_id)))


class ModelHealthLink(BaseOperatorLink):
    name = "Model health"

    def get_link(self, operator, *, ti_key) -> str:
        from airflow_integration.alerts import PAGE_ROUTE

        return f"{_settings(ti_key).airflow_url}{PAGE_ROUTE}"


MLFLOW_LINKS = (MlflowRunLink(), MlflowModelVersionLink(), ModelHealthLink())
