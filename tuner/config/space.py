"""A search space written in the search YAML, in the syntax of Hydra's Optuna sweeper.

    space:
      lr: tag(log, interval(1e-3, 3e-2))   # a float on a log scale
      batch_size: choice(16, 64, 128)      # one of these
      layers: range(1, 4)                  # an int from 1 to 3 (the end is left out, as in Python)
      width: tag(int, interval(8, 64))     # an int from 8 to 64
      optimizer: adam                      # fixed

Parsed with Hydra's own override grammar and turned into Optuna distributions as the Hydra Optuna
sweeper does, when the config is composed: an unknown function or bad bounds fail with one line that
names the key. A space whose parameters depend on each other stays a Python function.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import optuna
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, RangeSweep
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from tuner.config.base import ConfigError

Parameter = Any  # an Optuna distribution to draw from, or a fixed value


def _bound(value: float | None) -> float:
    if value is None:
        raise ValueError("both bounds are needed")
    return float(value)


def parameter(name: str, value: Any) -> Parameter:
    """One entry of a YAML space as an Optuna distribution (or the fixed value it is)."""
    if not isinstance(value, str):
        return value
    try:
        parsed = OverridesParser.create().parse_override(f"{name}={value}").value()
    except Exception as exc:  # Hydra's grammar errors: an unknown function, a syntax error
        raise ConfigError(f"search.space.{name}={value!r}: {str(exc).splitlines()[0]}") from exc
    try:
        if isinstance(parsed, ChoiceSweep):
            return CategoricalDistribution(list(parsed.list))
        if isinstance(parsed, RangeSweep):
            start, stop, step = _bound(parsed.start), _bound(parsed.stop), _bound(parsed.step)
            if any(isinstance(v, float) for v in (parsed.start, parsed.stop, parsed.step)):
                return FloatDistribution(start, stop, step=step)
            return IntDistribution(int(start), int(stop) - 1, step=int(step))
        if isinstance(parsed, IntervalSweep):
            low, high, log = _bound(parsed.start), _bound(parsed.end), "log" in parsed.tags
            if "int" in parsed.tags:
                return IntDistribution(int(low), int(high), log=log)
            return FloatDistribution(low, high, log=log)
    except (ValueError, TypeError) as exc:  # Optuna's checks: low > high, log with low <= 0, ...
        raise ConfigError(f"search.space.{name}={value!r}: {exc}") from exc
    return parsed  # a plain value: fixed


def parameters(space: Mapping[str, Any]) -> dict[str, Parameter]:
    """Every entry of a YAML space, checked (``ConfigError`` on the first bad one)."""
    if not space:
        raise ConfigError("search.space is empty: give module:function, or a mapping of hyperparameters")
    return {str(name): parameter(str(name), value) for name, value in space.items()}


class YamlSpace:
    """A define-by-run space for the searcher: suggests each distribution, returns the fixed values. A class, not
    a closure: the searcher's state, saved with the experiment, holds it (a closure cannot be pickled)."""

    def __init__(self, params: dict[str, Parameter]) -> None:
        self.params = params

    def __call__(self, trial: optuna.Trial) -> dict[str, Any]:
        fixed = {}
        for name, p in self.params.items():
            if isinstance(p, CategoricalDistribution):
                trial.suggest_categorical(name, p.choices)
            elif isinstance(p, IntDistribution):
                trial.suggest_int(name, p.low, p.high, step=p.step, log=p.log)
            elif isinstance(p, FloatDistribution):
                trial.suggest_float(name, p.low, p.high, step=p.step, log=p.log)
            else:
                fixed[name] = p
        return fixed


def space_function(space: Mapping[str, Any]) -> Callable[[optuna.Trial], dict[str, Any]]:
    """The searcher's space for a YAML space (checked: ``ConfigError`` on the first bad entry)."""
    return YamlSpace(parameters(space))
