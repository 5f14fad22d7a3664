"""The schema of a search (``+search=NAME``): trainer, space, objective, budget, searcher, scheduler."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Optional

from omegaconf import MISSING

from tuner.config.base import require
from tuner.config.space import parameters
from tuner.config.targets import builds
from tuner.result_keys import ITERATION

MODES = ("min", "max")
# Passed by the driver from the search itself (metric, mode, time_attr, max_t), never set in a scheduler node.
FROM_SEARCH = ("metric", "mode", "time_attr", "max_t")

# Selectable with search/scheduler=NAME and search/searcher=NAME (conf/config.yaml picks the defaults).
SCHEDULERS: dict[str, type] = {
    # reduction_factor 3 (Ray: 4): the platform's searches and benchmarks were tuned and measured at 3.
    "asha": builds("ray.tune.schedulers.ASHAScheduler", exclude=FROM_SEARCH, reduction_factor=3),
    "hyperband": builds("ray.tune.schedulers.HyperBandScheduler", exclude=FROM_SEARCH),
    # grace_period in time_attr units (Ray's default, 60, assumes seconds).
    "median": builds("ray.tune.schedulers.MedianStoppingRule", exclude=FROM_SEARCH, grace_period=1.0),
    "fifo": builds("ray.tune.schedulers.FIFOScheduler"),
}
SAMPLERS: dict[str, type] = {
    # seed 0 (Optuna: None): a search run twice suggests the same trials.
    "tpe": builds("optuna.samplers.TPESampler", seed=0),
    "random": builds("optuna.samplers.RandomSampler", seed=0),
    "cmaes": builds("optuna.samplers.CmaEsSampler", seed=0),
    "gp": builds("optuna.samplers.GPSampler", seed=0),
    "nsga2": builds("optuna.samplers.NSGAIISampler", seed=0),
    "qmc": builds("optuna.samplers.QMCSampler", seed=0),
}


@dataclass
class TuneSettings:
    """Keyword arguments of ``ray.tune.TuneConfig`` (metric and mode come from the search)."""

    num_samples: int = 8
    max_concurrent_trials: int = 2
    time_budget_s: Optional[float] = None  # stop every trial once the search has run this long (None: no limit)

    def __post_init__(self) -> None:
        require(self.num_samples > 0, f"search.tune.num_samples={self.num_samples}: must be > 0")
        require(self.max_concurrent_trials > 0, "search.tune.max_concurrent_trials must be > 0")
        require(
            self.time_budget_s is None or self.time_budget_s > 0,
            f"search.tune.time_budget_s={self.time_budget_s}: must be > 0 (or null for no limit)",
        )


@dataclass
class ResourcesConfig:
    """Resources per trial (per worker when ``workers`` > 1): GPU may be fractional.

    ``workers``: 1 runs the trainer in the trial's own process; N or [min, max] runs it on
    N (elastic: between min and max) Ray Train workers, each with ``cpu``/``gpu``."""

    cpu: float = 1.0
    gpu: float = 0.0
    workers: Any = 1  # an integer, or [min, max]

    def __post_init__(self) -> None:
        require(self.cpu > 0 and self.gpu >= 0, "search.resources: cpu must be > 0 and gpu >= 0")
        low, high = self.width
        require(1 <= low <= high, f"search.resources.workers={self.workers}: need 1 <= min <= max")

    @property
    def width(self) -> tuple[int, int]:
        """(min, max) workers."""
        w = self.workers
        if isinstance(w, int) and not isinstance(w, bool):
            return w, w
        if (
            isinstance(w, (list, tuple))
            and len(w) == 2
            and all(isinstance(x, int) and not isinstance(x, bool) for x in w)
        ):
            return int(w[0]), int(w[1])
        require(False, f"search.resources.workers={w!r}: write an integer or [min, max]")
        raise AssertionError  # unreachable: require raised

    @property
    def bundle(self) -> dict[str, float]:
        """One worker's (or the single trial process's) resources, as Ray names them."""
        return {"CPU": self.cpu, "GPU": self.gpu}


@dataclass
class SearchConfig:
    """One search: whose training function, over which space, optimising what, with which budget."""

    name: str = MISSING
    trainer: str = MISSING  # "module:function", called as fn(config, settings) (tuner.session inside)
    # "module:function", a define-by-run Optuna space (pure: no training), or a mapping of hyperparameters in the
    # syntax of Hydra's Optuna sweeper ({lr: "tag(log, interval(1e-3, 3e-2))", batch_size: "choice(16, 64)"})
    space: Any = MISSING
    metric: str = MISSING  # a key the trainer reports; what the searcher and scheduler optimise
    mode: str = MISSING  # min | max
    # Further objectives {key: min|max} for a multi-objective sampler (nsga2, tpe, gp, random, qmc):
    # keys the trainer reports, or the ledger's (tuner.result_keys.LEDGER_OBJECTIVES). The metric
    # stays the primary: early stopping, the best trial and the console follow it.
    objectives: dict[str, str] = field(default_factory=dict)
    time_attr: str = ITERATION  # the trainer's progress key (the scheduler's time); iteration = reports so far
    max_t: int = MISSING  # a trial's budget in time_attr units: its last report has time_attr >= max_t
    workload: Any = field(default_factory=dict)  # the trainer's settings (typed when it declares a dataclass)
    tune: TuneSettings = field(default_factory=TuneSettings)
    scheduler: Any = None  # a Tune scheduler node (_target_): search/scheduler=asha|hyperband|median|fifo
    searcher: Any = None  # an Optuna sampler node (_target_): search/searcher=tpe|random|cmaes|gp|nsga2|qmc
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)
    # How a trial's work per time_attr unit scales with its hyperparameters, {name: power}: placement
    # compares instance types on seconds per unit of work (a ResNet epoch: {depth: 1, width: 2})
    work_scaling: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        require(self.mode in MODES, f"search.mode={self.mode!r}: use min or max")
        for key, mode in self.objectives.items():
            require(mode in MODES, f"search.objectives.{key}={mode!r}: give each objective min or max")
        require(
            self.metric not in self.objectives,
            f"search.objectives repeats search.metric={self.metric!r}: drop it there",
        )
        if isinstance(self.space, Mapping):
            parameters(self.space)  # each entry parses and its bounds hold
        else:
            require(
                isinstance(self.space, str) and ":" in self.space,
                f"search.space={self.space!r}: write it as module:function, or as a mapping of hyperparameters",
            )
        require(":" in self.trainer, f"search.trainer={self.trainer!r}: write it as module:function")
        require(self.max_t > 0, f"search.max_t={self.max_t}: must be > 0")

    @property
    def metrics(self) -> list[str]:
        """Every objective, the primary metric first."""
        return [self.metric, *self.objectives]

    @property
    def modes(self) -> list[str]:
        return [self.mode, *self.objectives.values()]


def register_groups(store: Any) -> None:
    for name, node in SCHEDULERS.items():
        store.store(group="search/scheduler", name=name, node=node)
    for name, node in SAMPLERS.items():
        store.store(group="search/searcher", name=name, node=node)
