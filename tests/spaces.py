"""A search space for tests whose model the workload rejects (an application error)."""

from __future__ import annotations

import optuna

from search_spaces.fixed import RESNET8


def invalid_resnet(trial: optuna.Trial) -> None:
    """Depth 10 is not 6n+2: building the model raises."""
    for name, value in {**RESNET8, "depth": 10}.items():
        trial.suggest_categorical(name, [value])
