"""Search space of the ResNet workload (define-by-run, pure: no training here)."""

from __future__ import annotations

import optuna


def space(trial: optuna.Trial) -> None:
    trial.suggest_float("lr", 1e-2, 0.5, log=True)
    trial.suggest_float("weight_decay", 1e-5, 1e-2, log=True)
    trial.suggest_float("momentum", 0.8, 0.95)
    trial.suggest_categorical("batch_size", [32, 64, 128])
    trial.suggest_categorical("depth", [8, 14, 20])  # 6n + 2
    trial.suggest_categorical("width", [8, 16, 32])
    trial.suggest_float("label_smoothing", 0.0, 0.2)
