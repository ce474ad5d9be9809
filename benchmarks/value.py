"""Business value on a simulated world: how well the estimate before labels tracks the value the labels
then realize, what the value-picked threshold earns and how optimistic its holdout figure is, and
whether the gate's paired interval on the value gain covers the true gain of a promotion.

The world (numpy only, so it runs in seconds): a row's true log-odds z ~ N(mu, 1.5), its label
y ~ Bernoulli(sigmoid(z)). A model sees z through noise and is over-confident and biased, as a
network trained with early stopping often is: its score is sigmoid(2 (z + e) + 1), e ~ N(0, s).
The champion has s = 0.9, the challenger s = 0.5 (a better model). The cost matrix is the
default below (a fraud-like one: a missed positive costs more than a false alarm).

What runs is Nightshift's own code: `fit_model_card` (Platt calibrator, threshold picked for
value on the holdout), `BinaryValue.expected` / `realized`, `paired_bootstrap` with `values`.

- est_err_*: per night, |estimated - realized| value per row, the estimate from the scores
  calibrated on the holdout (before labels) and realized on all the night's labels; mean over
  `--nights` nights of `--rows` rows, before the drift (`stable`) and after mu moves by +1 (`drift`);
  `drift_recal`: after the drift, calibrated instead on the previous night's labels, as ground
  truth's recalibration (`policy.recalibrate_days`) does.
- uncal_err: the same without calibration (raw scores as probabilities): what calibration buys.
- threshold: the value-picked threshold; value_at_picked / value_at_half: value per row on fresh
  rows at it and at 0.5 (what `scoring.threshold = "value"` earns); optimism: its value on the
  holdout it was picked on minus its value on fresh rows (in-sample optimism, per row).
- gain_true: the challenger's true value gain per row (on 1,000,000 fresh rows, each model at its
  own picked threshold); gain_judged: the gate's gain, mean over `--trials` holdouts of
  `--holdout` rows; gain_ci_cover: the share whose gate interval (95%, n_boot 500) covers the
  true gain; gain_ci_width: its mean width. The gate values the challenger cross-fitted
  (`crossfit_values`: each half at the threshold picked on the other); `*_in_sample`: the same
  with its value taken at the threshold picked on the very rows judged, for comparison.

    python benchmarks/value.py [--rows 4000] [--nights 30] [--holdout 5000] [--trials 100] [--seed 0]

The last line is `RESULT key=value ...`.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from model.calibration import fit_model_card, fit_platt  # noqa: E402
from nightshift.task import task_for  # noqa: E402
from nightshift.value import BinaryValue, crossfit_values, decide, row_values  # noqa: E402
from training.evaluate import paired_bootstrap  # noqa: E402

MATRIX = BinaryValue(tp=40.0, fp=-5.0, fn=-60.0, tn=0.0, currency="EUR")
TASK = task_for("binary")


def world(rng: np.random.Generator, n: int, mu: float, noise: float) -> tuple[np.ndarray, np.ndarray]:
    """Labels and one model's scores for `n` rows."""
    z = rng.normal(mu, 1.5, n)
    y = (rng.random(n) < 1 / (1 + np.exp(-z))).astype(np.int64)
    return y, 1 / (1 + np.exp(-(2.0 * (z + rng.normal(0, noise, n)) + 1.0)))


def pair(rng: np.random.Generator, n: int, mu: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels and the champion's and challenger's scores on the same rows (their noise shared in part)."""
    z = rng.normal(mu, 1.5, n)
    y = (rng.random(n) < 1 / (1 + np.exp(-z))).astype(np.int64)
    shared = rng.normal(0, 1, n)
    champion = 1 / (1 + np.exp(-(2.0 * (z + 0.5 * shared + rng.normal(0, 0.75, n))) - 1.0))
    challenger = 1 / (1 + np.exp(-(2.0 * (z + 0.5 * shared)) - 1.0))
    return y, champion, challenger


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=4000)
    ap.add_argument("--nights", type=int, default=30)
    ap.add_argument("--holdout", type=int, default=5000)
    ap.add_argument("--trials", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    rng = np.random.default_rng(a.seed)
    t0 = time.perf_counter()

    # The champion's card: Platt calibrator and threshold picked for value, on its holdout.
    y_h, s_h = world(rng, a.holdout, -1.0, 0.9)
    card = fit_model_card(TASK, y_h, s_h, 0.5, value_model=MATRIX, pick_threshold=True)
    t = card.threshold

    errors: dict[str, list[float]] = {"stable": [], "drift": [], "uncal": [], "recal": []}
    before = None  # the previous night's labelled rows: what ground truth's recalibration refits on
    for night in range(a.nights):
        drifted = night >= a.nights // 2
        y, s = world(rng, a.rows, 0.0 if drifted else -1.0, 0.9)
        d = decide(s, t)
        realized = MATRIX.realized(y, s, d).mean()
        estimated = MATRIX.expected(s, d, card.calibrate(s)).mean()
        errors["drift" if drifted else "stable"].append(abs(estimated - realized))
        if not drifted:
            errors["uncal"].append(abs(MATRIX.expected(s, d, None).mean() - realized))
        elif before is not None and night > a.nights // 2:  # from the second drifted night: a refit on the first
            errors["recal"].append(abs(MATRIX.expected(s, d, fit_platt(*before).apply(s)).mean() - realized))
        before = (y, s)

    y_f, s_f = world(rng, 1_000_000, -1.0, 0.9)
    at_picked = MATRIX.realized(y_f, s_f, decide(s_f, t)).mean()
    at_half = MATRIX.realized(y_f, s_f, decide(s_f, 0.5)).mean()
    optimism = card.value["per_row"] - at_picked

    # The gate: each model at the threshold picked on the holdout it is judged on, as a retrain does for a
    # challenger (and as a champion's was, on its own holdout); the true gain at the thresholds picked on
    # a huge holdout of the same world.
    y_b, c_b, h_b = pair(rng, 1_000_000, -1.0)
    tc, _ = MATRIX.best_threshold(y_b, c_b)
    th, _ = MATRIX.best_threshold(y_b, h_b)
    y_t, c_t, h_t = pair(rng, 1_000_000, -1.0)
    gain_true = row_values(MATRIX, y_t, h_t, th).mean() - row_values(MATRIX, y_t, c_t, tc).mean()
    covered, widths, gains = {"in_sample": 0, "crossfit": 0}, {"in_sample": [], "crossfit": []}, {"in_sample": [], "crossfit": []}
    for trial in range(a.trials):
        y, c, h = pair(rng, a.holdout, -1.0)
        v_champion = row_values(MATRIX, y, c, tc)  # picked on its own, earlier holdout: taken as the world's best
        t_challenger, _ = MATRIX.best_threshold(y, h)  # what a retrain records: picked on the judged rows
        ways = {"in_sample": row_values(MATRIX, y, h, t_challenger),  # optimistic: judged where it was picked
                "crossfit": crossfit_values(MATRIX, y, h, seed=trial)[0]}  # what the gate does
        for way, v_challenger in ways.items():
            boot = paired_bootstrap(y, c, h, n_boot=500, confidence=0.95, seed=trial, values=(v_champion, v_challenger))
            v = boot["business_value"]
            covered[way] += v["ci_low"] <= gain_true <= v["ci_high"]
            widths[way].append(v["ci_high"] - v["ci_low"])
            gains[way].append(v["gain"])
    seconds = time.perf_counter() - t0

    result = {"est_err_stable": np.mean(errors["stable"]), "est_err_drift": np.mean(errors["drift"]),
              "uncal_err": np.mean(errors["uncal"]), "threshold": t, "value_at_picked": at_picked,
              "value_at_half": at_half, "optimism": optimism, "gain_true": gain_true,
              "gain_judged": np.mean(gains["crossfit"]), "gain_ci_cover": covered["crossfit"] / a.trials,
              "gain_ci_width": np.mean(widths["crossfit"]), "gain_judged_in_sample": np.mean(gains["in_sample"]),
              "gain_ci_cover_in_sample": covered["in_sample"] / a.trials, "est_err_drift_recal": np.mean(errors["recal"]),
              "seconds": seconds}
    print(f"cost matrix: {MATRIX.words()}; champion card: threshold {t:.4f}, holdout value {card.value['per_row']:.3f}/row")
    print("RESULT " + " ".join(f"{k}={v:.4f}" for k, v in result.items()))


if __name__ == "__main__":
    main()
