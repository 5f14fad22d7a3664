"""Elastic hyperparameter tuning on spot GPUs: Optuna + Ray Tune, checkpoints, MLflow."""

__version__ = "0.1.0"
