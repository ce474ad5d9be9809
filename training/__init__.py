"""Everything a retrain does: features, model, data windows, training loop, evaluation gate."""
