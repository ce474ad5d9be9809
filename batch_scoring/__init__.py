"""Everything the nightly run does: the input contract, scoring, drift, ground truth, the retrain policy, the report."""
