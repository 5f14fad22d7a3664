"""Searches built in code (no Hydra) for chaos runs, benchmarks and tests: the built-in trainer on digits."""

from __future__ import annotations

from typing import Any

from tuner.config import (
    SAMPLERS,
    SCHEDULERS,
    Config,
    ResourcesConfig,
    SearchConfig,
    StorageConfig,
    TrackingConfig,
    TuneSettings,
)


def experiment(
    name: str,
    root: str,
    epochs: int,
    space: str = "search_spaces.fixed:resnet8",
    model: str = "resnet",
    num_samples: int = 1,
    concurrency: int = 1,
    **fields: Any,
) -> Config:
    """A small search config built in code (no tracking unless given), for chaos runs and benchmarks."""
    search = SearchConfig(
        name=name,
        trainer="workloads.classify:train",
        space=space,
        metric="val_acc",
        mode="max",
        time_attr="epoch",
        max_t=epochs,
        workload={"model": model, "epochs": epochs, "seed": 0},
        tune=TuneSettings(num_samples=num_samples, max_concurrent_trials=concurrency),
        scheduler=SCHEDULERS["asha"](grace_period=epochs),  # no early stopping: runs compare epoch for epoch
        searcher=SAMPLERS["tpe"](),
        resources=ResourcesConfig(cpu=1),
    )
    fields.setdefault("tracking", TrackingConfig(enabled=False))
    fields.setdefault("storage", StorageConfig(path=root))
    return Config(name=name, search=search, **fields)
