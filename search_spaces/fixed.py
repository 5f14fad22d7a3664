"""One fixed ResNet-8 configuration as a "space": for benchmarks and fault-injection runs,
where every run must train the same model so that results compare exactly."""

from __future__ import annotations

import optuna

RESNET8 = {"lr": 0.1, "weight_decay": 1e-4, "momentum": 0.9, "batch_size": 32, "depth": 8, "width": 16}


def resnet8(trial: optuna.Trial) -> None:
    for name, value in RESNET8.items():
        trial.suggest_categorical(name, [value])
