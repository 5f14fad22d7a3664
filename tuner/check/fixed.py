"""The space of a resume check's runs: the one configuration checked, as fixed choices.

The check runs the driver in its own process, so it hands the configuration over here before each run
(``PARAMS``); the driver's searcher then suggests exactly it.
"""

from __future__ import annotations

from typing import Any

import optuna

SPACE = "tuner.check.fixed:space"
PARAMS: dict[str, Any] = {}
CHOICE_TYPES = (type(None), bool, int, float, str)  # what an Optuna categorical holds


def space(trial: optuna.Trial) -> dict[str, Any]:
    """Each value a fixed choice (so the sampler suggests it, and placement sees it); others passed through."""
    for name, value in PARAMS.items():
        if isinstance(value, CHOICE_TYPES):
            trial.suggest_categorical(name, [value])
    return {name: value for name, value in PARAMS.items() if not isinstance(value, CHOICE_TYPES)}
