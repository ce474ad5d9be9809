"""Sample weights for the `recent` and `representative` windows: pure numpy and scikit-learn.

Both windows train on the sliding window's rows; they change how often each row is drawn
(`training.train.fit` samples an epoch's rows in proportion to the weights), so the loss,
the task and the model stay as they are.

- `recent_weights`: rows of the days since the drift onset are drawn `factor` times as often.
- `representative_weights`: importance weights p(now | x) / p(history | x) from a domain
  classifier that tells the window's newest days from the rest, so the history that looks
  like current production counts more. Out-of-fold predictions, so a row's own label in the
  domain task does not leak into its weight; clipped, so a few rows cannot dominate.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

_MAX_FIT_ROWS = 200_000  # the domain classifier learns from a seeded sample of at most this many rows


@dataclass
class Weights:
    weights: np.ndarray  # one per row, mean 1
    notes: list[str] = field(default_factory=list)
    info: dict[str, float | int | str | None] = field(default_factory=dict)


def recent_weights(event_days: np.ndarray, onset: str | None, factor: float) -> Weights:
    """Rows of prediction days on or after `onset` weighted `factor` times the others; uniform without an onset."""
    event_days = np.asarray(event_days).astype(str)
    w = np.ones(len(event_days), dtype=np.float64)
    if onset is None:
        return Weights(w, ["window=recent: no drift onset in the decision record, so every day weighs the same"],
                       {"onset": None, "post_onset_rows": 0})
    post = event_days >= onset
    w[post] = factor
    note = (f"window=recent: {int(post.sum())} of {len(w)} rows are from the drift onset {onset} on, "
            f"drawn {factor:g} times as often as older rows")
    return Weights(w / w.mean() if len(w) else w, [note], {"onset": onset, "post_onset_rows": int(post.sum())})


def representative_weights(x_num: np.ndarray, x_cat: np.ndarray, event_days: np.ndarray, recent_days: int,
                           max_weight: float, seed: int = 0) -> Weights:
    """Importance weights that make the window look like its newest `recent_days` days."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold

    event_days = np.asarray(event_days).astype(str)
    days = np.unique(event_days)
    n = len(event_days)
    if len(days) <= recent_days:
        return Weights(np.ones(n), [f"window=representative: the window has {len(days)} days, not more than "
                                    f"training.representative_days={recent_days}, so every row weighs the same"], {})
    newest = days[-recent_days:]
    is_now = np.isin(event_days, newest).astype(np.int64)
    # Category codes as ordinal features: cheap, and enough to see a frequency shift.
    x = np.concatenate([x_num, x_cat.astype(np.float32)], axis=1) if x_cat.size else x_num
    rng = np.random.default_rng(seed)
    fit_idx = rng.choice(n, size=min(n, _MAX_FIT_ROWS), replace=False)
    p = np.empty(n, dtype=np.float64)
    folds = StratifiedKFold(n_splits=2, shuffle=True, random_state=seed)
    # Each half of the sample is scored by the classifier of the other half; rows outside the
    # sample get the mean of the two.
    outside = np.ones(n, dtype=bool)
    outside[fit_idx] = False
    p_out = np.zeros(int(outside.sum()))
    for train_i, test_i in folds.split(fit_idx, is_now[fit_idx]):
        clf = HistGradientBoostingClassifier(max_iter=60, learning_rate=0.1, max_leaf_nodes=15, random_state=seed)
        clf.fit(x[fit_idx[train_i]], is_now[fit_idx[train_i]])
        p[fit_idx[test_i]] = clf.predict_proba(x[fit_idx[test_i]])[:, 1]
        if p_out.size:
            p_out += clf.predict_proba(x[outside])[:, 1] / 2
    p[outside] = p_out
    p = np.clip(p, 1e-4, 1 - 1e-4)
    prior = is_now.mean()
    w = (p / (1 - p)) * ((1 - prior) / prior)  # density ratio now / history
    w = np.clip(w, 1.0 / max_weight, max_weight)
    w = w / w.mean()
    domain_auc = float(roc_auc_score(is_now, p))
    ess = float(w.sum() ** 2 / (w ** 2).sum())
    note = (f"window=representative: a domain classifier tells the newest {recent_days} days ({newest[0]}..{newest[-1]}) "
            f"from the rest with AUC {domain_auc:.3f}; importance weights clipped to {max_weight:g}, "
            f"effective sample size {ess:,.0f} of {n:,} rows")
    return Weights(w, [note], {"domain_auc": round(domain_auc, 4), "effective_rows": int(ess), "recent_first_day": str(newest[0])})
