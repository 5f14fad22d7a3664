"""Search spaces for tests: one fixed configuration each (runs compare exactly), and one the workload rejects."""

from __future__ import annotations

from typing import Any

import optuna

from search_spaces.fixed import RESNET8

REGRESSION = {"lr": 3e-3, "weight_decay": 1e-4, "batch_size": 32, "layers": 2, "hidden": 32}
LIGHTNING = {"lr": 1e-2, "weight_decay": 1e-4, "batch_size": 32, "hidden": 32, "dropout": 0.2}
HUGGINGFACE = {"lr": 1e-3, "weight_decay": 1e-2, "batch_size": 16, "hidden": 16}


def _fixed(trial: optuna.Trial, values: dict[str, Any]) -> None:
    for name, value in values.items():
        trial.suggest_categorical(name, [value])


def invalid_resnet(trial: optuna.Trial) -> None:
    """Depth 10 is not 6n+2: building the model raises."""
    _fixed(trial, {**RESNET8, "depth": 10})


def resnet8_lr(trial: optuna.Trial) -> None:
    """ResNet-8 at several learning rates: distinct trials of the smallest ResNet (chaos runs key trials by config)."""
    trial.suggest_float("lr", 0.03, 0.3, log=True)
    _fixed(trial, {name: value for name, value in RESNET8.items() if name != "lr"})


def regression(trial: optuna.Trial) -> None:
    _fixed(trial, REGRESSION)


def regression_bad_lr(trial: optuna.Trial) -> None:
    """A learning rate the optimizer refuses: the trainer raises on every worker at every attempt."""
    _fixed(trial, {**REGRESSION, "lr": -1.0})


def lightning(trial: optuna.Trial) -> None:
    _fixed(trial, LIGHTNING)


def huggingface(trial: optuna.Trial) -> None:
    _fixed(trial, HUGGINGFACE)


def resnet_wide(trial: optuna.Trial) -> None:
    """ResNets wide enough that a second torch thread speeds them up (the twin's fast type, in placement runs)."""
    trial.suggest_float("lr", 0.03, 0.2, log=True)
    trial.suggest_float("momentum", 0.8, 0.95)
    trial.suggest_categorical("depth", [14, 20])
    _fixed(trial, {"weight_decay": 1e-4, "batch_size": 128, "width": 32})


def raising_space(trial: optuna.Trial) -> None:
    """A space that cannot draw: the check says so before anything starts."""
    raise KeyError("no such hyperparameter table")
