"""Search space of the MLP workload (define-by-run, pure: no training here)."""

from __future__ import annotations

import optuna


def space(trial: optuna.Trial) -> None:
    trial.suggest_float("lr", 1e-2, 0.5, log=True)
    trial.suggest_float("weight_decay", 1e-6, 1e-3, log=True)
    trial.suggest_float("momentum", 0.8, 0.95)
    trial.suggest_categorical("batch_size", [32, 64])
    trial.suggest_int("layers", 1, 2)
    trial.suggest_categorical("hidden", [64, 128])
    trial.suggest_float("dropout", 0.0, 0.3)
    trial.suggest_float("label_smoothing", 0.0, 0.1)
