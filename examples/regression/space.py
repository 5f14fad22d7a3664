"""The regression example's search space (define-by-run, pure: no training here)."""

from __future__ import annotations

import optuna


def space(trial: optuna.Trial) -> None:
    trial.suggest_float("lr", 1e-4, 3e-2, log=True)
    trial.suggest_float("weight_decay", 1e-6, 1e-1, log=True)
    trial.suggest_categorical("batch_size", [32, 64])
    trial.suggest_int("layers", 1, 3)
    trial.suggest_categorical("hidden", [16, 32, 64])
