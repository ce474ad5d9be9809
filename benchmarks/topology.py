"""The deployment topology's figures: a 5-night backfill with one retrain, Celery vs LocalExecutor.

Each executor runs the same world in a fresh topology (scripts/celery_stack.py): Postgres
metadata DB, an MLflow server over HTTP, the REST API driving it; `celery` adds Redis and the
`default` and `gpu` workers, `local` runs tasks as the scheduler's children. Both use
parallelism 3. Reported per executor:
- the backfill's wall time (5 nights, including the retrain the drift starts);
- the bootstrap retrain's wall time;
- the median seconds from `queued` to `running` over every task instance (the executor's
  hand-off), beside the median from `scheduled` to `queued` (the scheduler's) and the
  median task duration.

    .venv/bin/python benchmarks/topology.py [--executors celery local] [--nights 5]

Needs PostgreSQL and Redis on 127.0.0.1 (NIGHTSHIFT_TOPOLOGY_PG / NIGHTSHIFT_TOPOLOGY_REDIS).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

import celery_stack  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--executors", nargs="+", default=["celery", "local"], choices=["celery", "local"])
    parser.add_argument("--nights", type=int, default=5)
    args = parser.parse_args()
    celery_stack.check_services()

    results = {}
    for executor in args.executors:
        with tempfile.TemporaryDirectory(prefix=f"nightshift-topology-{executor}-") as tmp:
            topo = celery_stack.Topology(Path(tmp) / "home", executor=executor)
            topo.up(celery_stack.FAST)
            try:
                r = celery_stack.run_world(topo, nights=args.nights)
            finally:
                topo.down()
        ok = all(s == "success" for s in [*r["nightly"].values(), *r["retrain"].values()])
        results[executor] = r
        print(f"{executor:7s} backfill {r['backfill_s']:6.1f} s ({args.nights} nights, "
              f"{len(r['retrain']) - 1} retrain(s)), bootstrap {r['bootstrap_s']:5.1f} s, "
              f"queued->running median {r['queued_to_running_median_s']:.3f} s over {r['queued_to_running_n']} tasks, "
              f"scheduled->queued median {r['scheduled_to_queued_median_s']} s, task median {r['task_duration_median_s']} s"
              f"{'' if ok else '  (SOME RUNS FAILED)'}", flush=True)

    fields = []
    for executor, r in results.items():
        fields += [f"{executor}_backfill_s={r['backfill_s']}", f"{executor}_bootstrap_s={r['bootstrap_s']}",
                   f"{executor}_queued_to_running_median_s={r['queued_to_running_median_s']}",
                   f"{executor}_scheduled_to_queued_median_s={r['scheduled_to_queued_median_s']}",
                   f"{executor}_task_median_s={r['task_duration_median_s']}",
                   f"{executor}_retrains={len(r['retrain']) - 1}"]
    print("RESULT nights=%d %s" % (args.nights, " ".join(fields)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
