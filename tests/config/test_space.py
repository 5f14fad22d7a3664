"""Search spaces written in the search YAML (Hydra's Optuna sweeper syntax): parsed, checked, drawn from."""

from __future__ import annotations

import pickle

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from tuner.config import ConfigError
from tuner.config.space import parameters, space_function
from tuner.run.build import load_space

SPACE = {
    "lr": "tag(log, interval(1e-3, 3e-2))",
    "momentum": "interval(0.8, 0.95)",
    "batch_size": "choice(16, 64, 128)",
    "layers": "range(1, 4)",
    "width": "tag(int, interval(8, 64))",
    "dropout": "range(0.0, 0.5, 0.1)",
    "optimizer": "adam",
    "seed": 3,
}


def test_each_form_becomes_the_distribution_the_optuna_sweeper_makes() -> None:
    p = parameters(SPACE)
    assert p["lr"] == FloatDistribution(1e-3, 3e-2, log=True)
    assert p["momentum"] == FloatDistribution(0.8, 0.95)
    assert p["batch_size"] == CategoricalDistribution([16, 64, 128])
    assert p["layers"] == IntDistribution(1, 3)  # range's end is left out
    assert p["width"] == IntDistribution(8, 64)
    assert p["dropout"] == FloatDistribution(0.0, 0.5, step=0.1)
    assert (p["optimizer"], p["seed"]) == ("adam", 3)  # fixed


def test_drawing_suggests_every_distribution_and_returns_the_fixed_values() -> None:
    space = load_space(SPACE)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(20):
        trial = study.ask()
        fixed = space(trial)
        assert fixed == {"optimizer": "adam", "seed": 3}
        assert 1e-3 <= trial.params["lr"] <= 3e-2 and trial.params["batch_size"] in (16, 64, 128)
        assert trial.params["layers"] in (1, 2, 3) and isinstance(trial.params["width"], int)
        study.tell(trial, 0.0)
    assert set(space_function(SPACE)(optuna.trial.FixedTrial(study.best_params))) == {"optimizer", "seed"}


def test_the_space_pickles_with_the_searchers_saved_state() -> None:
    """The searcher's state, saved with the experiment whenever a trial is created, holds the space: a closure
    could not be pickled, and every search with a YAML space failed as its first trial started."""
    space = pickle.loads(pickle.dumps(space_function(SPACE)))
    trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0)).ask()
    assert space(trial) == {"optimizer": "adam", "seed": 3}
    assert set(trial.params) == {"lr", "momentum", "batch_size", "layers", "width", "dropout"}


@pytest.mark.parametrize(
    "value, message",
    [
        ("uniform(1, 2)", r"search.space.x='uniform\(1, 2\)': .*Unknown function 'uniform'"),
        ("interval(3, 1)", r"search.space.x='interval\(3, 1\)': .*low.*high"),
        ("tag(log, interval(0, 1))", r"search.space.x='tag\(log, interval\(0, 1\)\)': .*log"),
        ("choice(1, 2", r"search.space.x='choice\(1, 2': "),
    ],
)
def test_a_bad_entry_is_one_line_that_names_the_key(value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parameters({"x": value})
