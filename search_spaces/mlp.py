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


def wide(trial: optuna.Trial) -> None:
    """The ranges a first search starts from, before anyone knows where the good region is: most
    random draws here under-train or diverge in 20 epochs, which is where a searcher earns its keep."""
    trial.suggest_float("lr", 1e-3, 1.0, log=True)
    trial.suggest_float("weight_decay", 1e-6, 1e-2, log=True)
    trial.suggest_float("momentum", 0.0, 0.99)
    trial.suggest_categorical("batch_size", [16, 32, 64, 128, 256])
    trial.suggest_int("layers", 1, 3)
    trial.suggest_categorical("hidden", [16, 32, 64, 128, 256])
    trial.suggest_float("dropout", 0.0, 0.5)
    trial.suggest_float("label_smoothing", 0.0, 0.2)
