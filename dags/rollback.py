"""
### Rollback

Points `champion` back at an earlier model version, by hand, with a reason. It takes effect
from the night after the logical day `ds` (like a promotion), is recorded in the alias
history and in `decisions/ds=D/`, and the replaced version becomes `previous_champion`, so
a second rollback undoes the first.

**Params.** `ds`: the logical day of the decision. `version`: the version number to restore
(default: `previous_champion`); the "Model health" page's champion timeline lists the
champion and every earlier one. A version that does not exist, or that is already the
champion, fails the run at once with an error that names the champion, the previous
champion and the versions there are. `reason`: why, kept with the decision. `rescore_start` /
`rescore_end`: optionally rescore those nights with the restored champion.
"""

from __future__ import annotations

from datetime import datetime, timezone

from airflow.sdk import Param, dag, task

from airflow_integration.alerts import NightshiftNotifier
from nightshift.settings import (
    run_settings,  # pydantic only: Airflow has it loaded already
)

DATE_PATTERN = r"^\d{4}-\d{2}-\d{2}$"


@dag(
    dag_id="rollback",
    schedule=None,
    start_date=datetime(2026, 1, 1, tzinfo=timezone.utc),
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    tags=["nightshift"],
    default_args={"owner": "nightshift", "retries": 0, "on_failure_callback": NightshiftNotifier("failure")},
    params={
        "ds": Param(type="string", format="date", pattern=DATE_PATTERN, description="YYYY-MM-DD: logical day of the "
                    "rollback decision; the restored champion scores from the night after it"),
        "version": Param(None, type=["null", "string"], pattern=r"^[0-9]+$",
                         description="the model version number to restore, e.g. 3 (empty: previous_champion); see "
                                     "Browse > Model health > Champion timeline for the champion and earlier ones"),
        "reason": Param(type="string", minLength=3, description="why: recorded with the decision"),
        "rescore_start": Param(None, type=["null", "string"], format="date", description="first night to rescore"),
        "rescore_end": Param(None, type=["null", "string"], format="date", description="last night to rescore"),
        "settings": Param({}, type="object", description="settings overrides, 'section.key': value"),
    },
)
def rollback():
    @task(on_success_callback=NightshiftNotifier("rollback"))
    def roll_back(params: dict | None = None) -> dict:
        from airflow_integration.health import champions_in_words
        from nightshift.lake import Lake
        from training.promotion import roll_back as run

        settings = run_settings(params)
        try:
            return run(settings, params["ds"], reason=params["reason"], version=params.get("version"))
        except (LookupError, ValueError) as exc:  # say which versions there are to choose from
            raise type(exc)(f"{exc}. Now: {champions_in_words(Lake.of(settings))}") from None

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
