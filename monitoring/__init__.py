"""Monitoring: drift on the inputs and outputs, the ground truth that arrives late, the retrain policy
that reads both, its replay, and the account of a range of nights."""
