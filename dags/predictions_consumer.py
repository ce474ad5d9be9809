"""
### Predictions consumer (an example)

Runs whenever `nightly_scoring` commits a night's final predictions: it is scheduled on the
`predictions` Asset, whose URI is the lake's real location. Each event's extra says which
night (`ds`), how many rows and which model version scored it, so a consumer reads exactly
that partition and knows its lineage without opening it.

Copy it as the starting point of a downstream job (a feature store load, a report, an
export): replace `summarize` with your own step.
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone

from airflow.sdk import Asset, dag, task

from nightshift.settings import lake_table_uri

log = logging.getLogger(__name__)

PREDICTIONS = Asset(name="predictions", uri=lake_table_uri("predictions"))


@dag(
    dag_id="predictions_consumer",
    schedule=[PREDICTIONS],
    start_date=datetime(2026, 1, 1, tzinfo=timezone.utc),
    catchup=False,
    doc_md=__doc__,
    tags=["nightshift", "example"],
    default_args={"owner": "nightshift", "retries": 0},
)
def predictions_consumer():
    @task(inlets=[PREDICTIONS])
    def summarize(triggering_asset_events=None) -> list[dict]:
        """Read each announced partition and check it holds what the event said."""
        from nightshift.consumer import summarize_partition

        out = []
        for event in triggering_asset_events[PREDICTIONS]:
            summary = summarize_partition(event.extra)
            log.info("predictions for %s: %d rows scored by v%s, mean %s %.4f", summary["ds"], summary["rows"],
                     summary["model_version"], summary["output"], summary["mean"])
            out.append(summary)
        return out

    summarize()


predictions_consumer()
