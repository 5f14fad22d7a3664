"""The driver: check the search, start Ray, run (or resume) the experiment, say how it went.

Bad input raises :class:`~tuner.config.ConfigError` before anything starts. While the
search runs, the console gets a line per trial result, MLflow a run per trial and the
cost ledger every stay on a node. Afterwards: the best trials with their cost, where to
look next, and an exit status (0 done, 1 trials failed, 2 an error every trial would repeat, 3 stalled,
130 interrupted).
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Optional

import ray
from ray import tune
from ray.tune.stopper import CombinedStopper

from tuner import _ray, pareto
from tuner.cluster.connect import JOB_ENV, connect
from tuner.cluster.launcher import check_fits, load_launcher_config, worker_types
from tuner.cluster.twin import twin_config
from tuner.config import Config, ConfigError
from tuner.cost import price_guard, pricing
from tuner.cost.budget import BudgetStopper
from tuner.cost.fallback import gate_for, worker_types_by_market
from tuner.cost.ledger import CostLedger
from tuner.cost.placement import placement_for
from tuner.cost.price_guard import PriceGuard
from tuner.cost.replacement import Replacement
from tuner.result_keys import COST_USD, TRAIN_TIME_S
from tuner.run import storage
from tuner.run.build import build_tuner, search_alg, search_params, trial_spec
from tuner.run.console import ProgressPrinter, cost_columns, cost_summary, error_summary
from tuner.run.liveness import SearchStalled, Watchdog
from tuner.run.liveness import check_capacity as check_live_nodes
from tuner.run.search import full_budget_values
from tuner.run.stop import FailFast, StopFile
from tuner.run.tracking import MLflowTracker, open_store_early
from tuner.spot.labels import INSTANCE_TYPE
from tuner.text import fmt, params, table, usd
from tuner.trial import heartbeat, policy, trainer

EXIT_TRIALS_FAILED = 1  # unless run.allow_failed_trials (as legacy tune.run's raise_on_failed_trial=False)
EXIT_FAIL_FAST = 2  # as for bad input: an error every attempt of every trial would repeat
EXIT_STALLED = 3
EXIT_INTERRUPTED = 130
TABLE_ROWS = 5
TUNE_ENV = {
    # Our progress lines replace Tune's console output and its snapshot-frequency warning.
    "RAY_AIR_NEW_OUTPUT": "0",
    "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0",
    # A checkpoint taken before a trial's first report carries no metric yet; the trial session
    # itself refuses a report without the search's metric (one line, naming what was reported).
    "TUNE_DISABLE_STRICT_METRIC_CHECKING": "1",
}


def resume_command() -> str:
    """The command that resumes this search: the one that started it."""
    return "python -m tuner.run " + shlex.join(sys.argv[1:])


def pareto_front(results: Any, settings: Config) -> tuple[dict[str, dict[str, float]], list[str]]:
    """A multi-objective search's objective values per trial that trained its whole budget (its last
    result: what the searcher was told; an early-stopped trial's are not comparable) and the trials on
    their Pareto front; both empty for a single-objective search."""

    search = settings.search
    assert search is not None
    if not search.objectives:
        return {}, []
    told = {}
    for r in results:
        values = full_budget_values(
            r.metrics if r.error is None else None, search.metrics, search.time_attr, search.max_t
        )
        if values is not None:
            told[r.metrics["trial_id"]] = dict(zip(search.metrics, values))
    return told, pareto.front({t: list(v.values()) for t, v in told.items()}, search.modes)


def summarize(
    results: Any,
    settings: Config,
    ledger: Any,
    totals: dict[str, float],
    told: dict[str, dict[str, float]],
    front: Sequence[str],
    dashboard_url: Optional[str],
    tracking_links: Sequence[str],
) -> int:
    """Print the best trials (a multi-objective search's front first: ``told``, ``front`` as
    :func:`pareto_front` gives them) with their cost, the best config and where to look; return the exit
    status."""

    search = settings.search
    assert search is not None
    done = [r for r in results if r.error is None and search.metric in (r.metrics or {})]
    errors = [r for r in results if r.error is not None]
    best_key = f"best {search.metric}"

    def best(r: Any) -> float:
        return float(ledger.best(r.metrics["trial_id"], r.metrics[search.metric]))

    sign = -1.0 if search.mode == "max" else 1.0
    ranked = sorted(done, key=lambda r: (r.metrics["trial_id"] not in front, sign * best(r)))
    rows = [
        {
            "trial": r.metrics["trial_id"],
            **({"pareto": "*" if r.metrics["trial_id"] in front else ""} if front else {}),
            best_key: best(r),
            **{k: r.metrics.get(k) for k in search.objectives if k != COST_USD},  # cost: its own columns
            search.time_attr: r.metrics.get(search.time_attr),
            "train_s": r.metrics.get(TRAIN_TIME_S),
            **cost_columns(ledger, r.metrics["trial_id"]),
            **r.config,
        }
        for r in ranked[: max(TABLE_ROWS, len(front))]
    ]
    print(f"\n{len(done)} of {len(results)} trials finished, {len(errors)} failed.")
    if rows:
        print(table(rows, list(rows[0])))
        if front:
            goals = ", ".join(f"{k} ({m})" for k, m in zip(search.metrics, search.modes))
            print(
                f"\nPareto front of {goals}, last reported values: {len(front)} of the {len(told)} trials that trained "
                f"their whole budget (marked *; those stopped early are not compared)"
            )
        top = min(done, key=lambda r: sign * best(r))
        print(f"\nbest trial {top.metrics['trial_id']}: {best_key} {fmt(best(top))}  config: {params(top.config)}")
        where = storage.checkpoint_uri(
            top.checkpoint, top.metrics, storage.experiment_path(settings.storage, settings.name)
        )
        print(f"best checkpoint: {where or '(none)'}")
    print(cost_summary(ledger, totals))
    for line in tracking_links:
        print(line)
    if dashboard_url:
        print(f"Ray dashboard:  http://{dashboard_url}  (while this process runs)")
    if not errors:
        return 0
    print(
        f"error: {len(errors)} of {len(results)} trials failed; the first: {failure_line(errors[0])}"
        + (" (run.allow_failed_trials=true: exit 0 all the same)" if settings.run.allow_failed_trials and done else ""),
        file=sys.stderr,
    )
    return 0 if settings.run.allow_failed_trials and done else EXIT_TRIALS_FAILED


def failure_line(result: Any) -> str:
    """A failed trial's error as one line, as its console line says it (from its error file, else the error)."""
    try:
        text = (Path(result.path) / "error.txt").read_text()
    except (OSError, TypeError):  # in S3, or no file
        text = str(result.error)
    return error_summary(text)


def make_price_guard(settings: Config, tracker: Any) -> Any:
    """The guard watches the limited types, else the given ones, else the cluster config's worker types."""

    cfg = settings.price_guard
    watched = cfg.instance_types or sorted(cfg.max_usd_per_hour or {})
    if not watched and settings.cluster.launcher_config:
        launcher = load_launcher_config(settings.cluster.launcher_config)
        watched = sorted({t["labels"][INSTANCE_TYPE] for t in worker_types(launcher).values()})
    if not watched:
        raise ConfigError(
            "price_guard: nothing to watch: set price_guard.instance_types or price_guard.max_usd_per_hour"
        )
    cache = Path(settings.output_dir) / "price_cache"
    prices = pricing.make_source(settings.pricing.source, cache, min(settings.pricing.cache_ttl_s, cfg.interval_s))
    print(
        f"price guard: watching {', '.join(watched)} every {cfg.interval_s:g} s"
        + (" (enforced)" if cfg.enforce else "")
    )
    return PriceGuard(cfg, settings.pricing.region, prices, watched, notify=tracker.record_event if tracker else None)


def capacity_gate(settings: Config, autoscaler_config: Optional[str]) -> Any:
    """Spot first, on-demand for a trial whose deadline needs it: on a cluster that has both and whose
    autoscaler config the driver can steer (the twin's; the head's on ``cluster=aws``)."""

    if not (settings.fallback.enabled and settings.cluster.launcher_config):
        return None
    if not autoscaler_config:  # cluster=k8s: KubeRay's autoscaler reads the RayCluster, not a file
        print("capacity: no autoscaler config to steer: on-demand types stay open, ranked below spot by the cluster")
        return None
    if not Path(autoscaler_config).expanduser().is_file():
        print(f"capacity: {autoscaler_config} not found: no on-demand fallback steering (cluster.autoscaler_config)")
        return None
    launcher = load_launcher_config(settings.cluster.launcher_config)
    caps = (
        {name: settings.cluster.max_workers_per_type for name in worker_types(launcher)}
        if settings.cluster.name == "local_spot"
        else {}
    )
    assert settings.search is not None
    return gate_for(settings.fallback, settings.search, launcher, autoscaler_config, caps)


def make_placement(settings: Config, autoscaler_config: Optional[str], gated: bool, prices: Any, tracker: Any) -> Any:
    """Price-performance placement on a cluster with a launcher config (its spot worker types). Its on-demand
    types carry every spot type's resource: only with the capacity gate capping them (``gated``) may trials
    be placed, or Ray's autoscaler would launch an on-demand node for a placed trial."""

    path = settings.cluster.launcher_config
    launcher = load_launcher_config(path) if settings.placement.enabled and path else None
    on_demand = worker_types_by_market(launcher, {})[1] if launcher is not None else {}
    steered = autoscaler_config if gated or not on_demand else None
    return placement_for(
        settings.placement,
        settings.search,
        launcher,
        steered,
        prices,
        settings.pricing.region,
        tag=tracker.tag_trial if tracker is not None else None,
    )


def check_priced(launcher: dict[str, Any], path: str) -> None:
    """Every worker type names an instance type the catalog prices: the cost ledger and placement need it."""
    catalog = pricing.Catalog()
    for name, node_type in sorted(worker_types(launcher).items()):
        itype = node_type.get("labels", {}).get(INSTANCE_TYPE)
        if itype is None or catalog.shape(itype) is None:
            raise ConfigError(
                f"cluster.launcher_config={path}: worker type {name}: instance type {itype} is not in the catalog "
                f"(tuner/catalog/prices.csv): use a priced type, or label it {INSTANCE_TYPE}"
            )


def check_capacity(settings: Config, connected: bool) -> None:
    """Refuse, before anything starts, a trial no node the cluster can ever provide would hold: an autoscaled
    cluster's node types (before connecting: the twin is not even started), else the nodes there are."""

    search = settings.search
    assert search is not None
    resources = search.resources
    if settings.cluster.launcher_config and not connected:
        launcher = load_launcher_config(settings.cluster.launcher_config)
        check_priced(launcher, settings.cluster.launcher_config)
        if settings.cluster.name == "local_spot":  # the twin's types, capped for this machine
            launcher = twin_config(launcher, settings.cluster)
        check_fits(launcher, resources.bundle, resources.width[0])
    elif not settings.cluster.launcher_config and connected:
        where = "this machine" if settings.cluster.address is None else f"the cluster at {settings.cluster.address}"
        check_live_nodes(resources.bundle, resources.width[0], ray.nodes(), where)


def anchor_paths(settings: Config) -> None:
    """The config's relative paths, made absolute from where the command started, which a Ray job then
    leaves: Ray 2.60 re-extracts a job's working directory whenever a worker of the job starts with it,
    so the driver's own working directory can vanish under it (its code is already imported)."""

    settings.output_dir = os.path.abspath(settings.output_dir)
    settings.storage.path = os.path.abspath(settings.storage.path)
    settings.tracking.artifact_location = os.path.abspath(settings.tracking.artifact_location)
    uri = settings.tracking.tracking_uri
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        settings.tracking.tracking_uri = "sqlite:///" + os.path.abspath(uri.removeprefix("sqlite:///"))
    if settings.checkpoint.observed_rates:
        settings.checkpoint.observed_rates = os.path.abspath(settings.checkpoint.observed_rates)
    if JOB_ENV in os.environ:
        os.makedirs(settings.output_dir, exist_ok=True)
        os.chdir(settings.output_dir)


def execute(settings: Config, observers: Sequence[Any] = ()) -> int:
    """Check the search, start Ray, run (or resume) the search, report. Raises ConfigError on bad input.

    ``observers``: extra Tune callbacks (fault injection and benchmarks watch results through them).
    """

    search = settings.search
    assert search is not None
    for key, value in TUNE_ENV.items():
        os.environ.setdefault(key, value)
    anchor_paths(settings)
    trainer_settings = trainer.settings_for(trainer.load(search.trainer), search.workload)
    search_alg(search)  # the space, the sampler and its objectives, checked before Ray starts
    storage.check(settings.storage)
    if settings.checkpoint.observed_rates:
        settings.checkpoint.observed_rates_per_h = policy.load_observed_rates(
            settings.checkpoint.observed_rates, settings.checkpoint.min_observed_node_hours
        )
    storage.keep_credentials_out_of_ray()
    storage.shorten_ray_storage_errors()
    _ray.quiet_trial_failures()  # the console's line per failed attempt says it, without Ray's traceback
    resume = tune.Tuner.can_restore(storage.experiment_path(settings.storage, settings.name))

    check_capacity(settings, connected=False)
    open_store_early(settings.tracking)  # while Ray starts
    code = [spec for spec in (search.trainer, search.space) if isinstance(spec, str)]  # a YAML space is no code
    context, twin = connect(settings.cluster, code=code)
    with stop_at_once_on_a_second_interrupt():
        try:
            check_capacity(settings, connected=True)
            steering = str(twin.config_path) if twin is not None else settings.cluster.autoscaler_config
            return run_search(settings, trainer_settings, resume, context.dashboard_url or None, steering, observers)
        finally:
            ray.shutdown()
            if twin is not None:
                twin.stop()


def run_search(
    settings: Config,
    trainer_settings: Any,
    resume: bool,
    dashboard_url: Optional[str],
    autoscaler_config: Optional[str],
    observers: Sequence[Any],
) -> int:
    """The search on the connected cluster, watched by the callbacks; its outcome on the console and in MLflow.
    ``autoscaler_config``: the file the cluster's autoscaler reads, which the capacity rule steers."""

    search = settings.search
    assert search is not None
    path = storage.experiment_path(settings.storage, settings.name)
    heartbeat.start_store()
    if search.resources.width != (1, 1) and not _ray.drain_aware_train_coordinator():
        print(
            "elastic trials: Ray Train's autoscaling coordinator on this cluster was started by another job; a trial "
            "shrinking after a notice first waits out a worker-group start timeout (restart the cluster to avoid it)"
        )
    cache = Path(settings.output_dir) / "price_cache"
    prices = pricing.make_source(settings.pricing.source, cache, settings.pricing.cache_ttl_s)
    ledger = CostLedger(settings.cost, settings.pricing.region, search, prices, settings.cluster.head_instance_type)
    budget = (
        BudgetStopper(ledger, settings.budget.max_usd, search.time_attr, search.max_t)
        if settings.budget.max_usd
        else None
    )
    stop_file = StopFile(settings.run.stop_file) if settings.run.stop_file else None
    fail_fast = FailFast()
    stoppers: list[Any] = [s for s in (budget, stop_file, fail_fast.stopper) if s is not None]
    stopper = CombinedStopper(*stoppers)
    watchdog = Watchdog(settings.liveness, search.tune.num_samples, ray.available_resources)
    callbacks: list[Any] = [ProgressPrinter(search, ledger), ledger, watchdog, fail_fast, *observers]
    tracker: Optional[MLflowTracker] = None
    if settings.tracking.enabled:
        tracker = MLflowTracker(settings.tracking, path, search_params(settings), resume, search.time_attr, ledger)
        if tracker.connect():
            callbacks.append(tracker)
        else:
            tracker = None
    if settings.price_guard.enabled:
        callbacks.append(make_price_guard(settings, tracker))
    gate = capacity_gate(settings, autoscaler_config)
    if gate is not None:
        callbacks.append(gate)
    placed = make_placement(settings, autoscaler_config, gate is not None, prices, tracker)
    if placed is not None:
        callbacks.append(placed)
    # Multi-worker trials: Ray Train sizes their worker groups from the nodes there are (not asked for yet).
    replacement = (
        Replacement(search.resources.bundle, placed, lead_s=settings.replacement.lead_s)
        if settings.replacement.enabled and settings.cluster.launcher_config and search.resources.width == (1, 1)
        else None
    )
    if replacement is not None:
        callbacks.append(replacement)
    print(
        f"{'Resuming' if resume else 'Starting'} search {settings.name!r}: {search.tune.num_samples} trials, "
        f"{search.time_attr} <= {search.max_t:g} each, {search.tune.max_concurrent_trials} at a time"
    )
    print(f"experiment: {path}")
    if dashboard_url:
        print(f"Ray dashboard: http://{dashboard_url}")
    started = time.time()
    tuner = build_tuner(settings, trial_spec(settings, trainer_settings), resume, callbacks, stopper)
    try:
        results = tuner.fit()
    except SearchStalled as exc:
        print(f"error: {exc}", file=sys.stderr)
        if tracker is not None:
            tracker.close({}, "FAILED")
        return EXIT_STALLED
    finally:
        if replacement is not None:  # however the search ended: no request left standing
            replacement.withdraw()
        price_guard.unblock_all()  # the guard's blocks are this search's, not the next one's in this process
    if fail_fast.error is not None:
        print(f"error: {fail_fast.error}", file=sys.stderr)
        if tracker is not None:
            tracker.close({}, "FAILED")
        return EXIT_FAIL_FAST
    if watchdog.unfinished and not any(s.tripped for s in stoppers):
        done = watchdog.statuses["TERMINATED"] + watchdog.statuses["ERROR"]
        print(
            f"\nsearch interrupted: {done} of {search.tune.num_samples} trials done; the same command resumes it:\n"
            f"  {resume_command()}"
        )
        if tracker is not None:
            tracker.close({}, "KILLED")
        return EXIT_INTERRUPTED
    totals = ledger.totals(time.time() - started)
    told, front = pareto_front(results, settings)
    links = tracker.links() if tracker else []
    status = summarize(results, settings, ledger, totals, told, front, dashboard_url, links)
    if budget is not None and budget.tripped:
        print(
            f"budget: stopped at {usd(ledger.committed_usd())} of budget.max_usd={settings.budget.max_usd}: "
            "no new trials were started; running trials stopped after their checkpoint"
        )
    if tracker is not None:
        summary = {"trials": len(results), "errors": len(results.errors), **totals}
        best = ledger.best_overall()
        if best is not None:
            summary[f"best_{search.metric}"] = best
        tracker.close(summary, "FINISHED" if status == 0 else "FAILED", told, front)
        if tracker.unsent:
            counts = {what: tracker.unsent.count(what) for what in dict.fromkeys(tracker.unsent)}
            missing = ", ".join(f"{n} x {what}" for what, n in counts.items())
            print(f"warning: MLflow unreachable at the end; not logged: {missing}")
    return status


@contextlib.contextmanager
def stop_at_once_on_a_second_interrupt() -> Iterator[None]:
    """Ctrl-C once: Tune stops the search and saves its state (this is the handler it puts back after).
    Ctrl-C again, while that or the summary runs: stop at once; the state saved last is what the same
    command resumes from. Signals reach the main thread only: elsewhere this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def now(signum: int, frame: Any) -> None:
        print(
            f"\nstopped at once; the same command resumes from the state saved last:\n  {resume_command()}", flush=True
        )
        os._exit(EXIT_INTERRUPTED)

    def tune_handled(times: int) -> None:
        if times > 1:  # a second press that reached Tune's handler before it put this one back
            now(signal.SIGINT, None)

    previous = signal.signal(signal.SIGINT, now)
    try:
        with _ray.on_tune_stop_signal(tune_handled):
            yield
    finally:
        signal.signal(signal.SIGINT, previous)
