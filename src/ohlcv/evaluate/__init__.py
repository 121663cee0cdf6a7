"""Evaluation: rolling-origin windows, baselines and metrics (GluonTS's where they exist)."""
