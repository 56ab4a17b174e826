"""Evaluators: the metrics of a model on held-out data, one module per task (ranking, rating, completion)."""
