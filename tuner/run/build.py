"""From a composed search to a Tune experiment: trainable, searcher, scheduler, run config."""

from __future__ import annotations

import functools
import importlib
import inspect
import os
from collections.abc import Callable, Mapping
from typing import Any

import optuna
from hydra.utils import get_object, instantiate
from omegaconf import OmegaConf
from ray import tune
from ray.tune import PlacementGroupFactory
from ray.tune.utils import flatten_dict

from tuner import _ray
from tuner.config import Config, ConfigError, SearchConfig
from tuner.config.space import space_function
from tuner.cost import placement
from tuner.cost.replacement import MoveOnNotice
from tuner.result_keys import LEDGER_OBJECTIVES, PLATFORM_KEYS
from tuner.run import storage
from tuner.run.search import ConsistentSearch, OptunaSearcher
from tuner.spot.labels import MARKET
from tuner.trial.attempt import TrialSpec
from tuner.trial.runtime import Objective
from tuner.trial.trainable import run, trainable_class

SPOT = {MARKET: "spot"}  # a multi-worker trial's workers: on spot capacity
NOT_SPOT = {MARKET: "!in(spot)"}  # its coordinator: the head or an on-demand worker
COORDINATOR_BUNDLE = {"memory": 64 * 2**20}  # no CPU or GPU: it only drives Ray Train and forwards results
# A stalled upload of the experiment state holds the driver's loop (Tune waits for it before the next
# one, and before a new trial starts: tuner._ray.save_state_before_new_trials_start); Tune's default is 30 min.
STATE_UPLOAD_TIMEOUT_S = 120
MAX_PENDING_ENV = "TUNE_MAX_PENDING_TRIALS_PG"  # Tune's documented knob: trials waiting for resources at once
USER_MAX_PENDING = os.environ.get(MAX_PENDING_ENV)  # a value the user set wins over the search's concurrency


def load_space(spec: str | Mapping[str, Any]) -> Callable[..., Any]:
    """Import ``module:function``, the define-by-run Optuna space; or build it from the YAML's mapping."""
    if isinstance(spec, Mapping):
        return space_function(spec)
    module_name, _, attr = spec.partition(":")
    try:
        fn = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"search.space={spec!r} cannot be imported ({exc})") from exc
    if not callable(fn):
        raise ConfigError(f"search.space={spec!r} is not a function")
    check_space(fn, spec)
    return fn  # type: ignore[no-any-return]


def check_space(space: Callable[..., Any], spec: str) -> None:
    """Refuse a space that suggests nothing: Optuna would tune an empty config."""

    try:
        space(optuna.trial.FixedTrial({}))
    except ValueError:  # FixedTrial raises on the first suggest_* call: the space suggests something
        return
    except Exception as exc:  # the space's own bug, before it suggests anything
        raise ConfigError(
            f"search.space={spec!r} cannot draw a configuration ({type(exc).__name__}: {exc}): fix the space"
        ) from exc
    raise ConfigError(f"search.space={spec!r} suggests no hyperparameters: add trial.suggest_* calls")


def objective(search: SearchConfig) -> Objective:
    reported = tuple(k for k in search.objectives if k not in LEDGER_OBJECTIVES)
    return Objective(search.metric, search.mode, search.time_attr, search.max_t, reported)


def trial_spec(settings: Config, trainer_settings: Any) -> TrialSpec:
    search = settings.search
    assert search is not None
    return TrialSpec(
        trainer=search.trainer,
        settings=trainer_settings,
        objective=objective(search),
        checkpoint=settings.checkpoint,
        assumed_instance_type=settings.cost.assumed_instance_type,
        assumed_region=settings.pricing.region,
        workers=search.resources.width,
        worker_resources=search.resources.bundle,
        worker_label_selector=SPOT if settings.cluster.launcher_config else None,
        storage_path=storage.experiment_path(settings.storage, settings.name),
        num_to_keep=settings.run.num_to_keep,
    )


def trial_resources(settings: Config, spec: TrialSpec) -> Any:
    """What the trial's own process asks for: its bundle (on the type the placement chooses, off types an
    enforcing price guard blocks), or, for a multi-worker trial, a coordinator's: no CPU or GPU, never
    on spot capacity."""

    search = settings.search
    assert search is not None
    if spec.elastic:
        selector = [NOT_SPOT] if settings.cluster.launcher_config else None
        return PlacementGroupFactory([COORDINATOR_BUNDLE], bundle_label_selector=selector)
    placed = settings.placement.enabled and settings.cluster.launcher_config
    if placed or (settings.price_guard.enabled and settings.price_guard.enforce):
        return functools.partial(placement.trial_resources, search.resources.bundle)
    return search.resources.bundle


def search_alg(search: SearchConfig) -> Any:
    """Optuna (the configured sampler) over the search's space, ``max_concurrent_trials`` at a time."""

    if search.searcher is None:
        raise ConfigError("search.searcher is not set: choose one with search/searcher=tpe (or random, cmaes, gp, ...)")
    sampler, space = instantiate(search.searcher), load_space(search.space)
    check_work_scaling(space, search)
    if search.objectives:
        check_multi_objective(space, search)
        platforms = [k for k in search.objectives if k in PLATFORM_KEYS and k not in LEDGER_OBJECTIVES]
        if platforms:
            raise ConfigError(
                f"search.objectives: {', '.join(platforms)} is the platform's bookkeeping, not an objective: "
                f"use {' or '.join(LEDGER_OBJECTIVES)}, or a key the trainer reports"
            )
    searcher = OptunaSearcher(
        space, search.metrics, search.modes, sampler, search.tune.max_concurrent_trials, search.time_attr, search.max_t
    )
    return ConsistentSearch(searcher)


def check_work_scaling(space: Callable[..., Any], search: SearchConfig) -> None:
    """Placement weighs a trial's units by ``search.work_scaling``: each must be a positive number the
    space suggests."""

    if not search.work_scaling:
        return
    study = optuna.create_study()
    for _ in range(8):  # define-by-run: a parameter may be suggested on some branches only
        trial = study.ask()
        space(trial)
        for name in search.work_scaling:
            value = trial.params.get(name)
            if value is None:
                raise ConfigError(
                    f"search.work_scaling: {name!r} is not a hyperparameter of {search.space}: "
                    "name ones the space suggests (e.g. depth, width)"
                )
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ConfigError(
                    f"search.work_scaling: {name!r} takes the value {value!r}: name only positive numeric ones"
                )
        study.tell(trial, 0.0)


def check_multi_objective(space: Callable[..., Any], search: SearchConfig) -> None:
    """Refuse, before the search starts, a sampler that cannot optimise several objectives (CMA-ES):
    Optuna would raise on the first suggestion of every trial. Asked of a sampler of its own (a sampler
    keeps state, and Optuna 5's cannot be copied)."""

    sampler = instantiate(search.searcher)
    study = optuna.create_study(sampler=sampler, directions=["minimize"] * len(search.metrics))
    try:
        space(study.ask())
    except ValueError as exc:
        raise ConfigError(
            f"search.searcher={type(sampler).__name__} cannot optimise several objectives "
            f"(search.objectives): choose nsga2, tpe, gp, random or qmc ({exc})"
        ) from exc


def scheduler(search: SearchConfig) -> Any:
    """The configured Tune scheduler, given the search's time attribute and budget where it takes them, and
    pausing a trial that checkpointed to move off a node with a notice (:class:`MoveOnNotice`)."""

    if search.scheduler is None:
        raise ConfigError("search.scheduler is not set: choose one with search/scheduler=asha (or hyperband, ...)")
    accepts = inspect.signature(get_object(search.scheduler._target_)).parameters
    given = {"time_attr": search.time_attr, "max_t": search.max_t}
    return MoveOnNotice(instantiate(search.scheduler, **{k: v for k, v in given.items() if k in accepts}))


def trial_dirname(trial: Any) -> str:
    """Short trial directories (Tune's default embeds every hyperparameter)."""
    return f"trial_{trial.trial_id}"


def build_tuner(settings: Config, spec: TrialSpec, resume: bool, callbacks: list[Any], stopper: Any = None) -> Any:
    """A new Tuner, or the one saved at the experiment path (errored trials resumed)."""

    search = settings.search
    assert search is not None
    callbacks = [*callbacks, *_ray.result_loggers()]  # a restarted trial's result.json keeps what came before
    # Tune lets one trial at a time wait for its resources unless the searcher is wrapped in its
    # ConcurrencyLimiter (ours limits itself: see tuner.run.search); without this, each trial's
    # process start (seconds) would queue behind the previous one's, and an autoscaler would see
    # one trial's demand at a time.
    os.environ[MAX_PENDING_ENV] = USER_MAX_PENDING or str(search.tune.max_concurrent_trials)
    trainable = tune.with_resources(
        trainable_class(tune.with_parameters(run, spec=spec)), trial_resources(settings, spec)
    )
    path = storage.experiment_path(settings.storage, settings.name)
    _ray.save_state_before_new_trials_start()  # a killed driver's storage knows every trial that ran
    if resume:
        tuner = tune.Tuner.restore(path, trainable=trainable, resume_errored=True)
        run_config = _ray.restored_run_config(tuner)  # this process's callbacks, not the pickled ones
        run_config.callbacks, run_config.stop = callbacks, stopper
        return tuner
    run_settings = settings.run
    return tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            metric=search.metric,
            mode=search.mode,
            search_alg=search_alg(search),
            scheduler=scheduler(search),
            num_samples=search.tune.num_samples,
            time_budget_s=search.tune.time_budget_s,
            trial_dirname_creator=trial_dirname,
        ),
        run_config=tune.RunConfig(
            name=settings.name,
            storage_path=storage.storage_path(settings.storage),
            failure_config=tune.FailureConfig(max_failures=run_settings.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=run_settings.num_to_keep),
            sync_config=tune.SyncConfig(sync_timeout=STATE_UPLOAD_TIMEOUT_S),
            callbacks=callbacks,
            stop=stopper,
            verbose=run_settings.verbose,
        ),
    )


def search_params(settings: Config) -> dict[str, Any]:
    """Flat, secret-free description of the search for the MLflow parent run."""

    search = OmegaConf.to_container(OmegaConf.structured(settings.search))
    flat: dict[str, Any] = flatten_dict({"search": search}, delimiter=".")
    flat.update({"cluster": settings.cluster.name, "storage": settings.storage.kind})
    return flat
