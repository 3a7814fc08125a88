"""Evaluation as pure functions over (y_true, y_prob, classes), re-runnable without retraining."""
