"""Search spaces for tests: one fixed configuration, and one the model rejects."""

from __future__ import annotations

import optuna

FIXED = {"lr": 0.1, "weight_decay": 1e-4, "momentum": 0.9, "batch_size": 32, "depth": 8, "width": 16}


def fixed_resnet(trial: optuna.Trial) -> None:
    for name, value in FIXED.items():
        trial.suggest_categorical(name, [value])


def invalid_resnet(trial: optuna.Trial) -> None:
    """Depth 10 is not 6n+2: building the model raises, an application error."""
    for name, value in {**FIXED, "depth": 10}.items():
        trial.suggest_categorical(name, [value])
