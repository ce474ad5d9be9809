"""DAG parse hygiene: how long each DAG file and the whole DagBag take to parse, and what they import.

Each measurement runs in a fresh process with Airflow already imported (as in the
dag-processor), so the figure is the DAG files' own cost. A heavy module (torch, pandas,
pyarrow, mlflow, alibi_detect, sklearn) imported at parse time is named; there should be none.

    .venv/bin/python benchmarks/parse.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "pandas", "pyarrow", "mlflow", "alibi_detect", "sklearn", "scipy", "matplotlib")

PROBE = """
import json, sys, time
from airflow.dag_processing.dagbag import DagBag
before = set(sys.modules)
t = time.perf_counter()
bag = DagBag(dag_folder=sys.argv[1])
seconds = time.perf_counter() - t
heavy = sorted({m.split('.')[0] for m in set(sys.modules) - before} & set(json.loads(sys.argv[2])))
print(json.dumps({"seconds": seconds, "dags": sorted(bag.dag_ids), "errors": {k: v[-300:] for k, v in bag.import_errors.items()},
                  "heavy": heavy}))
"""


def parse(target: Path, env: dict) -> dict:
    out = subprocess.run([sys.executable, "-c", PROBE, str(target), json.dumps(HEAVY)], env=env, cwd=REPO,  # noqa: S603 - fixed probe
                         capture_output=True, text=True, timeout=300)
    if out.returncode:
        raise RuntimeError(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeat", type=int, default=3, help="parses per target; the median is reported")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "AIRFLOW_HOME": tmp, "AIRFLOW__CORE__LOAD_EXAMPLES": "False", "PYTHONPATH": str(REPO),
               "NIGHTSHIFT_HOME": tmp, "AIRFLOW__CORE__UNIT_TEST_MODE": "True"}
        targets = [*sorted((REPO / "dags").glob("*.py")), REPO / "dags"]
        rows, heavy, errors = [], set(), {}
        for target in targets:
            runs = [parse(target, env) for _ in range(args.repeat)]
            heavy.update(*(r["heavy"] for r in runs))
            errors.update(runs[0]["errors"])
            name = "DagBag (dags/)" if target.is_dir() else target.name
            rows.append((name, statistics.median(r["seconds"] for r in runs), runs[0]["dags"], runs[0]["heavy"]))
    print(f"{'target':<24} {'parse s':>8}  dags / heavy modules imported at parse")
    for name, sec, dags, hv in rows:
        print(f"{name:<24} {sec:>8.3f}  {', '.join(dags)}{'  HEAVY: ' + ', '.join(hv) if hv else ''}")
    if errors:
        print(f"import errors: {errors}")
    print(f"RESULT parse_s={rows[-1][1]:.3f} heavy_modules={len(heavy)} heavy={','.join(sorted(heavy)) or 'none'} "
          f"import_errors={len(errors)}")
    sys.exit(1 if errors else 0)


if __name__ == "__main__":
    main()
