"""
### Rollback

Points `champion` back at an earlier model version, by hand, with a reason. It takes effect
from the night after the logical day `ds` (like a promotion), is recorded in the alias
history and in `decisions/ds=D/`, and the replaced version becomes `previous_champion`, so
a second rollback undoes the first.

**Params.** `ds`: the logical day of the decision. `version`: the version to restore
(default: `previous_champion`). `reason`: why, kept with the decision. `rescore_start` /
`rescore_end`: optionally rescore those nights with the restored champion.
"""

from __future__ import annotations

from datetime import datetime, timezone

from airflow.sdk import Param, dag, task

from nightshift.settings import run_settings  # pydantic only: Airflow has it loaded already


@dag(
    dag_id="rollback",
    schedule=None,
    start_date=datetime(2026, 1, 1, tzinfo=timezone.utc),
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    tags=["nightshift"],
    default_args={"owner": "nightshift", "retries": 0},
    params={
        "ds": Param(type="string", format="date", description="logical day of the rollback decision"),
        "version": Param(None, type=["null", "string"], description="version to restore (default: previous_champion)"),
        "reason": Param(type="string", minLength=3, description="why: recorded with the decision"),
        "rescore_start": Param(None, type=["null", "string"], format="date", description="first night to rescore"),
        "rescore_end": Param(None, type=["null", "string"], format="date", description="last night to rescore"),
        "settings": Param({}, type="object", description="settings overrides, 'section.key': value"),
    },
)
def rollback():
    @task
    def roll_back(params: dict | None = None) -> dict:
        from training.promotion import roll_back as run

        return run(run_settings(params), params["ds"], reason=params["reason"], version=params.get("version"))

    @task.short_circuit
    def wants_rescore(params: dict | None = None) -> bool:
        return bool(params.get("rescore_start") and params.get("rescore_end"))

    @task
    def rescore(params: dict | None = None) -> dict:
        from batch_scoring.score import rescore as run

        return run(run_settings(params), params["rescore_start"], params["rescore_end"])

    # main flow
    roll_back() >> wants_rescore() >> rescore()


rollback()
