"""How often the promotion gate promotes a challenger that is worse, equal or better, by simulation.

Champion and challenger scores are drawn from a world where the true gain is known exactly,
and correlated as two models trained on the same data are (their errors share most of their
noise). The real `paired_bootstrap` and `judge_challenger` judge each draw, at the gate's
configured settings (`GateSettings()` with the task's defaults):

- binary: binormal scores. y ~ Bernoulli(prevalence); a model's latent score is d*y + e with
  e ~ N(0, 1), so its AUC is Phi(d / sqrt 2); champion and challenger noise correlate at rho.
  The challenger's d is set so that its AUC is the champion's plus the true gain.
- regression: y = f + eps; a model predicts f + e, so its RMSE is sqrt(var eps + var e); the
  challenger's noise scale is set so that its relative RMSE reduction (the gain) is exact.

Cells (rates over `--trials` draws each; the holdout is the smallest one the power check
(`detectable_gain` + `judge_power`) accepts in that world, i.e. the holdout a retrain grows to):

- worse: true gain = -margin. Promoted at most 2.5% (what a 95% interval promises).
- equal: true gain = 0. Promoted at most 5%.
- better: true gain = 2 x margin. Promoted at least 90%.
- small: fewer rows than gate.min_rows. INSUFFICIENT_EVIDENCE always.
- gate_s_200k: seconds for one judgement (bootstrap included) at 200,000 rows, n_boot 1000 (the faster of two;
  with --baseline, the baseline's resampling code is timed alternately under the same load).

Each draw is judged twice where the gate has two paths: with the champion not known stale
(promotion needs superiority) and known stale (non-inferiority is enough). The headline
rates are the worst of the two for `worse` (both must hold the 2.5%), and the not-stale path
for `equal` and `better` (a stale champion is meant to be replaced by an equal challenger).

    python benchmarks/gate_calibration.py [--trials 400] [--tasks binary regression] [--rows N] [--baseline COMMIT]

`--baseline COMMIT` also judges every draw with `judge_challenger` as it was at that commit (read
with `git show`; the bootstrap is today's, whose draws and values are those of any earlier
commit), and prints its rates as `baseline_*` beside the figures.

The last line is `RESULT key=value ...` (the worst over the tasks); one `RESULT task=...` line per task precedes it.
"""

from __future__ import annotations

import argparse
import inspect
import sys
import time
from pathlib import Path
from statistics import NormalDist

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from nightshift.settings import GateSettings  # noqa: E402
from nightshift.task import task_for  # noqa: E402
from training.evaluate import (  # noqa: E402
    INSUFFICIENT_EVIDENCE, PROMOTE, detectable_gain, effective_gate, judge_challenger, judge_power, paired_bootstrap,
)

PHI = NormalDist()
RHO = 0.9  # correlation of the two models' score noise
PREVALENCE = 0.2
BASE_AUC = 0.80
SIGMA_Y, SIGMA_CHAMPION = 0.6, 0.8  # regression: label noise, champion's prediction noise (champion RMSE 1.0)


def draw(task: str, n: int, gain: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(y, champion, challenger) for n rows where the challenger's true gain over the champion is `gain`."""
    z = rng.standard_normal((n, 2))
    e1, e2 = z[:, 0], RHO * z[:, 0] + np.sqrt(1 - RHO**2) * z[:, 1]
    if task == "binary":
        y = (rng.random(n) < PREVALENCE).astype(np.int64)
        d1, d2 = np.sqrt(2) * PHI.inv_cdf(BASE_AUC), np.sqrt(2) * PHI.inv_cdf(BASE_AUC + gain)
        sigmoid = lambda s: 1.0 / (1.0 + np.exp(-s))  # noqa: E731 - monotone: AUC unchanged, scores in (0, 1)
        return y, sigmoid(d1 * y + e1 - 1.5), sigmoid(d2 * y + e2 - 1.5)
    f = rng.standard_normal(n)
    y = f + SIGMA_Y * rng.standard_normal(n)
    rmse1 = np.hypot(SIGMA_Y, SIGMA_CHAMPION)
    sigma2 = np.sqrt(((1 - gain) * rmse1) ** 2 - SIGMA_Y**2)
    return y, f + SIGMA_CHAMPION * e1, f + sigma2 * e2


def powered_rows(task: str, gate: GateSettings, seed: int) -> int:
    """The holdout rows at which the power check first passes in this world (what a retrain grows to)."""
    t = task_for(task)
    y, p, _ = draw(task, 20_000, 0.0, np.random.default_rng(seed))
    power = detectable_gain(y, p, confidence=gate.confidence, correlation=gate.assumed_correlation, task=t, seed=seed)
    return max(gate.min_rows, judge_power(power, gate).required_rows or gate.min_rows)


BASELINE = None  # judge_challenger as it was at --baseline COMMIT


BASELINE_METRICS = None  # nightshift/metrics.py as it was at --baseline COMMIT (the bootstrap's resampling)


def at_commit(commit: str, path: str):
    """The module at `path` as it was at `commit`, loaded under a name of its own."""
    import subprocess
    import types

    source = subprocess.run(["git", "show", f"{commit}:{path}"], cwd=REPO, check=True, capture_output=True, text=True).stdout  # noqa: S603, S607 - git from PATH, fixed argv
    module = types.ModuleType(f"{Path(path).stem}_at_{commit}")
    sys.modules[module.__name__] = module  # its dataclasses look their module up
    exec(compile(source, f"{commit}:{path}", "exec"), module.__dict__)  # noqa: S102 - our own history
    return module


def load_baseline(commit: str):
    """`judge_challenger` from training/evaluate.py at `commit`."""
    return at_commit(commit, "training/evaluate.py").judge_challenger


def time_200k(task: str, gate: GateSettings, seed: int, metrics_module=None) -> float:
    """Seconds for one judgement at 200,000 rows and 1,000 resamples; with `metrics_module`, its resampling code."""
    from nightshift import metrics

    saved = {k: getattr(metrics, k) for k in ("resampled_aucs", "resampled_rmses", "_CELLS_PER_CHUNK")}
    if metrics_module is not None:
        for k in saved:
            setattr(metrics, k, getattr(metrics_module, k))
    try:
        y, p1, p2 = draw(task, 200_000, 0.0, np.random.default_rng(seed))
        t0 = time.perf_counter()
        judge_once(task, y, p1, p2, gate.model_copy(update={"n_boot": 1000}), seed)
        return time.perf_counter() - t0
    finally:
        for k, v in saved.items():
            setattr(metrics, k, v)


def judgements(evidence: dict, gate: GateSettings, judge=None) -> dict[str, str]:
    """The verdict on the not-stale path and, where the gate has one, on the stale-champion path."""
    judge = judge or judge_challenger
    if "stale" not in inspect.signature(judge).parameters:  # the gate before issue 25: one rule
        v = judge(evidence, [], gate).verdict
        return {"fresh": v, "stale": v}
    return {"fresh": judge(evidence, [], gate, stale=None).verdict,
            "stale": judge(evidence, [], gate, stale="bench: champion known stale").verdict}


def judge_once(task: str, y, p1, p2, gate: GateSettings, seed: int) -> dict[str, str]:
    t = task_for(task)
    boot = paired_bootstrap(y, p1, p2, n_boot=gate.n_boot, confidence=gate.confidence, seed=seed, task=t)
    evidence = {**boot, "too_few": t.too_few(y, gate.min_rows)}
    got = judgements(evidence, gate)
    if BASELINE is not None:
        got.update({f"baseline_{k}": v for k, v in judgements(evidence, gate, BASELINE).items()})
    return got


def cell(task: str, n: int, gain: float, trials: int, gate: GateSettings, seed: int) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    got: dict[str, list[str]] = {}
    for i in range(trials):
        y, p1, p2 = draw(task, n, gain, rng)
        for path, v in judge_once(task, y, p1, p2, gate, seed + i).items():
            got.setdefault(path, []).append(v)
    return {f"{path}_{what}": float(np.mean([v == verdict for v in vs]))
            for path, vs in got.items() for what, verdict in (("promoted", PROMOTE), ("insufficient", INSUFFICIENT_EVIDENCE))}


def run_task(task: str, trials: int, rows: int | None, seed: int, time_only: bool = False) -> dict[str, float]:
    gate = effective_gate(GateSettings(), task_for(task))
    if time_only:  # today's and the baseline's resampling alternately, twice: the faster of each
        runs = [(m, time_200k(task, gate, seed, m)) for _ in range(2) for m in (None, BASELINE_METRICS)]
        out = {"gate_s_200k": min(t for m, t in runs if m is None)}
        if BASELINE_METRICS is not None:
            out["baseline_gate_s_200k"] = min(t for m, t in runs if m is not None)
        return out
    n = rows or powered_rows(task, gate, seed)
    print(f"{task}: margin {gate.margin}, min_gain {gate.min_gain}, n_boot {gate.n_boot}, holdout {n} rows, {trials} trials/cell",
          flush=True)
    out: dict[str, float] = {"rows": n}
    for name, gain in (("worse", -gate.margin), ("equal", 0.0), ("better", 2 * gate.margin)):
        t0 = time.perf_counter()
        r = cell(task, n, gain, trials, gate, seed + {"worse": 1, "equal": 2, "better": 3}[name] * 100_003)
        print(f"  {name:6s} (true gain {gain:+.4f}): {r}  [{time.perf_counter() - t0:.0f} s]", flush=True)
        out[f"{name}_promoted_rate"] = max(r["fresh_promoted"], r["stale_promoted"]) if name == "worse" else r["fresh_promoted"]
        out[f"{name}_stale_promoted_rate"] = r["stale_promoted"]
        if BASELINE is not None:
            out[f"baseline_{name}_promoted_rate"] = r["baseline_fresh_promoted"]
    small = cell(task, gate.min_rows - 1, 2 * gate.margin, max(20, trials // 10), gate, seed + 7)
    out["small_insufficient_rate"] = min(small["fresh_insufficient"], small["stale_insufficient"])
    if BASELINE is not None:
        out["baseline_small_insufficient_rate"] = small["baseline_fresh_insufficient"]
    # Today's and the baseline's resampling timed back to back, twice, under the same load; the faster of each.
    times = [time_200k(task, gate, seed)] + ([time_200k(task, gate, seed, BASELINE_METRICS)]
                                            if BASELINE_METRICS is not None else [])
    times += [time_200k(task, gate, seed)] + ([time_200k(task, gate, seed, BASELINE_METRICS)]
                                             if BASELINE_METRICS is not None else [])
    out["gate_s_200k"] = min(times[0::2] if BASELINE_METRICS is not None else times)
    if BASELINE_METRICS is not None:
        out["baseline_gate_s_200k"] = min(times[1::2])
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trials", type=int, default=400)
    p.add_argument("--tasks", nargs="+", default=["binary", "regression"], choices=["binary", "regression"])
    p.add_argument("--rows", type=int, default=None, help="holdout rows (default: the smallest the power check accepts)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--baseline", metavar="COMMIT", help="also judge every draw with judge_challenger at this commit, and "
                   "time the bootstrap with nightshift/metrics.py at that commit")
    p.add_argument("--time-only", action="store_true", help="only gate_s_200k (no trials)")
    args = p.parse_args()
    global BASELINE, BASELINE_METRICS
    if args.baseline:
        BASELINE = load_baseline(args.baseline)
        BASELINE_METRICS = at_commit(args.baseline, "nightshift/metrics.py")
    per = {task: run_task(task, args.trials, args.rows, args.seed, args.time_only) for task in args.tasks}
    if args.time_only:
        for task, r in per.items():
            print(f"RESULT task={task} " + " ".join(f"{k}={v:.3f}" for k, v in r.items()))
        return
    fmt = lambda v: f"{v:.3f}" if isinstance(v, float) else str(v)  # noqa: E731
    for task, r in per.items():
        print(f"RESULT task={task} " + " ".join(f"{k}={fmt(v)}" for k, v in r.items()))
    worst = {
        "worse_promoted_rate": max(r["worse_promoted_rate"] for r in per.values()),
        "equal_promoted_rate": max(r["equal_promoted_rate"] for r in per.values()),
        "better_promoted_rate": min(r["better_promoted_rate"] for r in per.values()),
        "small_insufficient_rate": min(r["small_insufficient_rate"] for r in per.values()),
        "gate_s_200k": max(r["gate_s_200k"] for r in per.values()),
    }
    if BASELINE is not None:
        worst.update({
            "baseline_worse_promoted_rate": max(r["baseline_worse_promoted_rate"] for r in per.values()),
            "baseline_equal_promoted_rate": max(r["baseline_equal_promoted_rate"] for r in per.values()),
            "baseline_better_promoted_rate": min(r["baseline_better_promoted_rate"] for r in per.values()),
            "baseline_gate_s_200k": max(r["baseline_gate_s_200k"] for r in per.values()),
        })
    print("RESULT " + " ".join(f"{k}={fmt(v)}" for k, v in worst.items()))


if __name__ == "__main__":
    main()
