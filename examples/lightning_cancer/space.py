"""The Lightning example's search space."""

from __future__ import annotations

import optuna


def space(trial: optuna.Trial) -> None:
    trial.suggest_float("lr", 1e-4, 1e-1, log=True)
    trial.suggest_float("weight_decay", 1e-6, 1e-2, log=True)
    trial.suggest_categorical("batch_size", [16, 32, 64])
    trial.suggest_categorical("hidden", [8, 32, 64])
    trial.suggest_float("dropout", 0.0, 0.5)
