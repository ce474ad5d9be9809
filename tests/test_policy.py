"""The retrain policy, table-driven: every trigger in both metric directions, the cooldown, and their interplay."""

from __future__ import annotations

import pytest

from batch_scoring.policy import COOLDOWN, NO_ACTION, RETRAIN, RetrainEvidence, should_retrain
from nightshift.settings import PolicySettings

POLICY = PolicySettings(drift_k=3, drift_n=5, max_model_age_days=60, cooldown_days=5)
OK = dict(has_champion=True, metric="auc", higher_is_better=True, floor=0.7, drift_flags=(False,) * 5, realized=0.82,
          realized_day="2026-01-02", estimated=0.81, model_age_days=10, days_since_last_retrain=None)
# Regression: RMSE, lower is better, with a floor of 12 (minutes, say).
RMSE = dict(OK, metric="rmse", higher_is_better=False, floor=12.0, realized=10.0, estimated=None)

CASES = [
    # name, evidence overrides, verdict, reason fragment
    ("all quiet", {}, NO_ACTION, "no trigger"),
    ("no champion", {"has_champion": False, "realized": None, "estimated": None, "model_age_days": None},
     RETRAIN, "no champion"),
    ("drift 2 of 5 is not enough", {"drift_flags": (True, True, False, False, False)}, NO_ACTION, "no trigger"),
    ("drift 3 of 5 persists", {"drift_flags": (True, False, True, False, True)}, RETRAIN, "3 of the last 5"),
    ("old drift falls out of the window", {"drift_flags": (True, True, True, False, False, False, False, False)},
     NO_ACTION, "no trigger"),
    ("fewer nights than n still count", {"drift_flags": (True, True, True)}, RETRAIN, "3 of the last 3"),
    ("realized AUC below threshold", {"realized": 0.69}, RETRAIN, "realized auc 0.6900"),
    ("realized AUC at threshold is fine", {"realized": 0.70}, NO_ACTION, "no trigger"),
    ("no floor, no metric trigger", {"realized": 0.1, "floor": None}, NO_ACTION, "no trigger"),
    ("estimated AUC below threshold", {"estimated": 0.6}, RETRAIN, "estimated auc 0.6000"),
    ("model too old", {"model_age_days": 60}, RETRAIN, "60 days with data old"),
    ("cooldown holds a trigger", {"realized": 0.5, "days_since_last_retrain": 2}, COOLDOWN, "cooldown"),
    ("cooldown over", {"realized": 0.5, "days_since_last_retrain": 5}, RETRAIN, "realized auc"),
    ("cooldown alone does nothing", {"days_since_last_retrain": 1}, NO_ACTION, "no trigger"),
    ("manual beats cooldown", {"manual": True, "days_since_last_retrain": 0}, RETRAIN, "by hand"),
]


RMSE_CASES = [
    ("rmse quiet", {}, NO_ACTION, "no trigger"),
    ("rmse above its floor", {"realized": 12.5}, RETRAIN, "realized rmse 12.5000 on matured day 2026-01-02 is above the floor 12.0"),
    ("rmse at its floor is fine", {"realized": 12.0}, NO_ACTION, "no trigger"),
    ("rmse below its floor is good", {"realized": 3.0}, NO_ACTION, "no trigger"),
    ("rmse not estimated, drift still counts", {"drift_flags": (True,) * 3}, RETRAIN, "drift persisted"),
]


@pytest.mark.parametrize("name,overrides,verdict,fragment", RMSE_CASES, ids=[c[0] for c in RMSE_CASES])
def test_should_retrain_in_the_metrics_direction(name, overrides, verdict, fragment):
    decision = should_retrain(RetrainEvidence(**{**RMSE, **overrides}), POLICY)
    assert decision.verdict == verdict
    assert any(fragment in r for r in decision.reasons), decision.reasons


@pytest.mark.parametrize("name,overrides,verdict,fragment", CASES, ids=[c[0] for c in CASES])
def test_should_retrain(name, overrides, verdict, fragment):
    decision = should_retrain(RetrainEvidence(**{**OK, **overrides}), POLICY)
    assert decision.verdict == verdict
    assert any(fragment in r for r in decision.reasons), decision.reasons
    assert decision.retrain == (verdict == RETRAIN)


def test_cooldown_keeps_the_held_triggers_as_reasons():
    d = should_retrain(RetrainEvidence(**{**OK, "drift_flags": (True,) * 5, "days_since_last_retrain": 1}), POLICY)
    assert d.verdict == COOLDOWN and any("drift persisted" in r for r in d.reasons)
