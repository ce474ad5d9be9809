"""The retrain policy, table-driven: every trigger, the cooldown, and their interplay."""

from __future__ import annotations

import pytest

from batch_scoring.policy import COOLDOWN, NO_ACTION, RETRAIN, RetrainEvidence, should_retrain
from nightshift.settings import PolicySettings

POLICY = PolicySettings(drift_k=3, drift_n=5, min_auc=0.7, max_model_age_days=60, cooldown_days=5)
OK = dict(has_champion=True, drift_flags=(False,) * 5, realized_auc=0.82, realized_day="2026-01-02",
          estimated_auc=0.81, model_age_days=10, days_since_last_retrain=None)

CASES = [
    # name, evidence overrides, verdict, reason fragment
    ("all quiet", {}, NO_ACTION, "no trigger"),
    ("no champion", {"has_champion": False, "realized_auc": None, "estimated_auc": None, "model_age_days": None},
     RETRAIN, "no champion"),
    ("drift 2 of 5 is not enough", {"drift_flags": (True, True, False, False, False)}, NO_ACTION, "no trigger"),
    ("drift 3 of 5 persists", {"drift_flags": (True, False, True, False, True)}, RETRAIN, "3 of the last 5"),
    ("old drift falls out of the window", {"drift_flags": (True, True, True, False, False, False, False, False)},
     NO_ACTION, "no trigger"),
    ("fewer nights than n still count", {"drift_flags": (True, True, True)}, RETRAIN, "3 of the last 3"),
    ("realized AUC below threshold", {"realized_auc": 0.69}, RETRAIN, "realized AUC 0.6900"),
    ("realized AUC at threshold is fine", {"realized_auc": 0.70}, NO_ACTION, "no trigger"),
    ("estimated AUC below threshold", {"estimated_auc": 0.6}, RETRAIN, "estimated AUC 0.6000"),
    ("model too old", {"model_age_days": 60}, RETRAIN, "60 days old"),
    ("cooldown holds a trigger", {"realized_auc": 0.5, "days_since_last_retrain": 2}, COOLDOWN, "cooldown"),
    ("cooldown over", {"realized_auc": 0.5, "days_since_last_retrain": 5}, RETRAIN, "realized AUC"),
    ("cooldown alone does nothing", {"days_since_last_retrain": 1}, NO_ACTION, "no trigger"),
    ("manual beats cooldown", {"manual": True, "days_since_last_retrain": 0}, RETRAIN, "by hand"),
]


@pytest.mark.parametrize("name,overrides,verdict,fragment", CASES, ids=[c[0] for c in CASES])
def test_should_retrain(name, overrides, verdict, fragment):
    decision = should_retrain(RetrainEvidence(**{**OK, **overrides}), POLICY)
    assert decision.verdict == verdict
    assert any(fragment in r for r in decision.reasons), decision.reasons
    assert decision.retrain == (verdict == RETRAIN)


def test_cooldown_keeps_the_held_triggers_as_reasons():
    d = should_retrain(RetrainEvidence(**{**OK, "drift_flags": (True,) * 5, "days_since_last_retrain": 1}), POLICY)
    assert d.verdict == COOLDOWN and any("drift persisted" in r for r in d.reasons)
