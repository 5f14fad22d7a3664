"""The Hugging Face example's search space."""

from __future__ import annotations

import optuna


def space(trial: optuna.Trial) -> None:
    trial.suggest_float("lr", 1e-4, 3e-3, log=True)
    trial.suggest_float("weight_decay", 1e-5, 1e-1, log=True)
    trial.suggest_categorical("batch_size", [16, 32])
    trial.suggest_categorical("hidden", [16, 32])
