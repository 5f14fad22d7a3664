"""Entry point: ``python -m tuner.run +search=NAME [cluster=...] [storage=...] [tracking=...]``.

Validates the composed config, builds (or resumes) the Tune experiment, runs it,
and prints the best trials and where to look next. Bad input exits with status 2
and one line that says what to fix.
"""

from __future__ import annotations

import functools
import importlib
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, NoReturn, Optional, Sequence

import hydra
from omegaconf import DictConfig, OmegaConf

from tuner import config as config_mod
from tuner.config import Config, ConfigError

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"
EXIT_BAD_INPUT = 2
EXIT_TRIALS_FAILED = 1
TABLE_ROWS = 5


def available_searches() -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / "search").glob("*.yaml"))


def fail(message: str) -> NoReturn:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(EXIT_BAD_INPUT)


def load_space(spec: str) -> Callable[..., Any]:
    """Import ``module:function``; the function is the define-by-run Optuna space."""
    module_name, _, attr = spec.partition(":")
    try:
        fn = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"search.space={spec!r} cannot be imported ({exc})") from exc
    if not callable(fn):
        raise ConfigError(f"search.space={spec!r} is not a function")
    check_space(fn, spec)
    return fn


def check_space(space: Callable[..., Any], spec: str) -> None:
    """Refuse a space that suggests nothing: Optuna would tune an empty config."""
    import optuna

    trial = optuna.trial.FixedTrial({})
    suggested: list[str] = []
    try:
        space(trial)
    except ValueError as exc:  # FixedTrial raises on the first suggest_* call
        suggested.append(str(exc))
    if not suggested:
        raise ConfigError(f"search.space={spec!r} suggests no hyperparameters: add trial.suggest_* calls")


def search_params(settings: Config) -> dict[str, Any]:
    """Flat, secret-free description of the search for the MLflow parent run."""
    from ray.tune.utils import flatten_dict

    search = OmegaConf.to_container(OmegaConf.structured(settings.search))
    flat = flatten_dict({"search": search}, delimiter=".")
    flat.update({"cluster": settings.cluster.name, "storage": settings.storage.kind})
    return flat


def trial_dirname(trial: Any) -> str:
    """Short trial directories (Tune's default embeds every hyperparameter)."""
    return f"trial_{trial.trial_id}"


def build_tuner(settings: Config, resume: bool, callbacks: list[Any], stopper: Any = None):
    """A new Tuner, or the one saved at the experiment path (errored trials resumed)."""
    from optuna.samplers import TPESampler
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    from tuner import price_guard, storage
    from tuner.trainable import train, trainable_class

    search = settings.search
    assert search is not None
    bundle = {"CPU": search.resources.cpu, "GPU": search.resources.gpu}
    guarded = settings.price_guard.enabled and settings.price_guard.enforce
    trainable = tune.with_resources(
        trainable_class(tune.with_parameters(train, workload=search.workload, checkpoint_cfg=settings.checkpoint)),
        functools.partial(price_guard.trial_resources, bundle) if guarded else bundle,
    )
    path = storage.experiment_path(settings.storage, settings.name)
    if resume:
        tuner = tune.Tuner.restore(path, trainable=trainable, resume_errored=True)
        # RunConfig is restored from the bucket; callbacks and the stopper are this process's own.
        run_config = tuner._local_tuner.get_run_config()
        run_config.callbacks, run_config.stop = callbacks, stopper
        return tuner
    searcher = OptunaSearch(
        space=load_space(search.space),
        metric=search.metric,
        mode=search.mode,
        sampler=TPESampler(seed=search.searcher.seed, n_startup_trials=search.searcher.n_startup_trials),
    )
    scheduler = ASHAScheduler(
        time_attr="epoch",
        max_t=search.workload.epochs,
        grace_period=search.scheduler.grace_period,
        reduction_factor=search.scheduler.reduction_factor,
        brackets=search.scheduler.brackets,
    )
    run = settings.run
    return tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            metric=search.metric,
            mode=search.mode,
            search_alg=searcher,
            scheduler=scheduler,
            num_samples=search.tune.num_samples,
            max_concurrent_trials=search.tune.max_concurrent_trials,
            trial_dirname_creator=trial_dirname,
        ),
        run_config=tune.RunConfig(
            name=settings.name,
            storage_path=storage.storage_path(settings.storage),
            failure_config=tune.FailureConfig(max_failures=run.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=run.num_to_keep),
            callbacks=callbacks,
            stop=stopper,
            verbose=run.verbose,
        ),
    )


def summarize(
    results: Any,
    settings: Config,
    ledger: Any,
    totals: dict[str, float],
    dashboard_url: Optional[str],
    tracking_cmd: Optional[str],
) -> int:
    """Print the best trials with their cost, the best config and where to look; return the exit status."""
    from tuner.console import cost_columns, cost_summary, format_params, results_table

    search = settings.search
    assert search is not None
    best_key = f"best_{search.metric}" if search.mode == "max" else search.metric
    done = [r for r in results if r.error is None and search.metric in (r.metrics or {})]
    errors = [r for r in results if r.error is not None]
    ranked = sorted(done, key=lambda r: r.metrics.get(best_key, r.metrics[search.metric]), reverse=search.mode == "max")
    rows = [
        {
            "trial": r.metrics.get("trial_id", "?"),
            best_key: r.metrics.get(best_key, r.metrics[search.metric]),
            "epochs": r.metrics.get("epoch"),
            "train_s": r.metrics.get("train_time_s"),
            **cost_columns(ledger, r.metrics.get("trial_id", "")),
            **{k: v for k, v in r.config.items()},
        }
        for r in ranked[:TABLE_ROWS]
    ]
    print(f"\n{len(done)} of {len(results)} trials finished, {len(errors)} failed.")
    if rows:
        print(results_table(rows, list(rows[0])))
        best = ranked[0]
        print(f"\nbest trial {best.metrics.get('trial_id')}: {best_key} {best.metrics.get(best_key):.4f}  config: {format_params(best.config)}")
        print(f"best checkpoint: {best.checkpoint.path if best.checkpoint else '(none)'}")
    print(cost_summary(ledger, totals))
    if tracking_cmd:
        print(f"MLflow:         {tracking_cmd}")
    if dashboard_url:
        print(f"Ray dashboard:  http://{dashboard_url}  (while this process runs)")
    for r in errors[:3]:
        print(f"failed trial {r.path}: {str(r.error).splitlines()[0][:200]}", file=sys.stderr)
    return 0 if done else EXIT_TRIALS_FAILED


def make_price_guard(settings: Config, tracker: Any) -> Any:
    """The guard watches the limited types, else the given ones, else the cluster config's worker types."""
    from tuner import pricing
    from tuner.cluster import load_launcher_config, worker_types
    from tuner.price_guard import PriceGuard

    cfg = settings.price_guard
    watched = cfg.instance_types or sorted(cfg.max_usd_per_hour or {})
    if not watched and settings.cluster.launcher_config:
        launcher = load_launcher_config(settings.cluster.launcher_config)
        watched = sorted({t["node_config"]["InstanceType"] for t in worker_types(launcher).values()})
    if not watched:
        raise ConfigError("price_guard: nothing to watch: set price_guard.instance_types or price_guard.max_usd_per_hour")
    cache = Path(settings.output_dir) / "price_cache"
    prices = pricing.make_source(settings.pricing.source, cache, min(settings.pricing.cache_ttl_s, cfg.interval_s))
    print(f"price guard: watching {', '.join(watched)} every {cfg.interval_s:g} s" + (" (enforced)" if cfg.enforce else ""))
    return PriceGuard(cfg, prices, watched, notify=tracker.record_event if tracker else None)


def execute(settings: Config, observers: Sequence[Any] = ()) -> int:
    """Start Ray, run (or resume) the search, report. Raises ConfigError on bad input.

    ``observers``: extra Tune callbacks (fault injection and benchmarks watch results through them).
    """
    import ray
    from ray import tune

    from tuner import policy, pricing, storage
    from tuner.cluster import connect
    from tuner.cost import BudgetStopper, CostLedger
    from tuner.console import ProgressPrinter
    from tuner.tracking import MLflowTracker, ui_command

    search = settings.search
    assert search is not None
    load_space(search.space)
    storage.check(settings.storage)
    if settings.checkpoint.observed_rates:
        settings.checkpoint.observed_rates_per_h = policy.load_observed_rates(
            settings.checkpoint.observed_rates, settings.checkpoint.min_observed_node_hours
        )
    storage.keep_credentials_out_of_ray()
    storage.shorten_ray_storage_errors()
    path = storage.experiment_path(settings.storage, settings.name)
    resume = tune.Tuner.can_restore(path)

    context, twin = connect(settings.cluster, search.resources)
    dashboard_url = context.dashboard_url or None
    prices = pricing.make_source(settings.pricing.source, Path(settings.output_dir) / "price_cache", settings.pricing.cache_ttl_s)
    ledger = CostLedger(settings.cost, search.resources, prices, settings.cluster.head_instance_type)
    stopper = BudgetStopper(ledger, settings.budget.max_usd, search.workload.epochs) if settings.budget.max_usd else None
    callbacks: list[Any] = [ProgressPrinter(search.metric, search.workload.epochs, search.tune.num_samples), ledger]
    callbacks += observers
    tracker: Optional[MLflowTracker] = None
    if settings.tracking.enabled:
        tracker = MLflowTracker(settings.tracking, path, search_params(settings), resume=resume, ledger=ledger)
        if tracker.connect():
            callbacks.append(tracker)
        else:
            tracker = None
    if settings.price_guard.enabled:
        callbacks.append(make_price_guard(settings, tracker))
    print(
        f"{'Resuming' if resume else 'Starting'} search {settings.name!r}: {search.tune.num_samples} trials, "
        f"<= {search.workload.epochs} epochs each, {search.tune.max_concurrent_trials} at a time"
    )
    print(f"experiment: {path}")
    if dashboard_url:
        print(f"Ray dashboard: http://{dashboard_url}")
    started = time.time()
    try:
        results = build_tuner(settings, resume, callbacks, stopper).fit()
        totals = ledger.totals(time.time() - started)
        tracking_cmd = ui_command(settings.tracking.tracking_uri) if tracker else None
        status = summarize(results, settings, ledger, totals, dashboard_url, tracking_cmd)
        if stopper is not None and stopper.tripped:
            print(f"budget: stopped at ${ledger.committed_usd():.4f} of budget.max_usd={settings.budget.max_usd}: "
                  "no new trials were started; running trials stopped after their checkpoint")  # fmt: skip
        if tracker is not None:
            best = results.get_best_result() if status == 0 else None
            summary = {"trials": len(results), "errors": len(results.errors), **totals}
            if best is not None:
                summary[f"best_{search.metric}"] = best.metrics.get(f"best_{search.metric}", best.metrics[search.metric])
            tracker.close(summary, "FINISHED" if status == 0 else "FAILED")
            if tracker.unsent:
                counts = {what: tracker.unsent.count(what) for what in dict.fromkeys(tracker.unsent)}
                missing = ", ".join(f"{n} x {what}" for what, n in counts.items())
                print(f"warning: MLflow unreachable at the end; not logged: {missing}")
        return status
    finally:
        ray.shutdown()
        if twin is not None:
            twin.stop()


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> None:
    if cfg.get("search") is None:
        fail(f"no search chosen: add +search=NAME, one of: {', '.join(available_searches())}")
    try:
        settings = config_mod.to_settings(cfg)
        status = execute(settings)
    except ConfigError as exc:  # includes StorageError
        fail(str(exc))
    sys.exit(status)


config_mod.register()
# Our progress lines replace Tune's console output and its snapshot-frequency warning.
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")

if __name__ == "__main__":
    main()
