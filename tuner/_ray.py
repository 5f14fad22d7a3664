"""Every private Ray API the platform uses, in one place, each with the reason no public one serves.

Ray 2.60 exposes node draining only through its GCS client and a hidden CLI, keeps its translation of a
KubeRay ``RayCluster`` into autoscaler node types inside its KubeRay autoscaler, Tune offers no
public way to give a restored experiment this process's callbacks or to save its state when it
creates a trial, and Ray Train gives no handle to the controller of a ``TorchTrainer.fit()`` run
nor a way to size an elastic worker group without the nodes being reclaimed. Tune's function trainable
class, its search generator's saved state, its result loggers' restore of a restarted trial's files and the
names of the internal loggers (and the text of the messages) the console quiets are internal too. If a Ray upgrade
moves or changes any of these, ``tests/test_ray_private.py`` fails and names the call; nothing
else in the package imports a private Ray module.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Optional

DRAIN_REASON = "DRAIN_NODE_REASON_PREEMPTION"
DRAIN_RPC_TIMEOUT_S = 10.0  # a GCS that does not answer the drain within this is treated as a refusal
TOKEN_AUTH_LOGGER = "ray._private.authentication.authentication_token_setup"


def quiet_token_auth_notice() -> None:
    """Ray 2.60 turns token authentication on for a cluster it starts and says so in a warning at every
    ``ray.init``; on the console of every local search that line reads as a problem. It is not one (the
    secure default is what we want), so only real errors from that module are shown.

    Private: the logger is named after Ray's private module; there is no public switch."""
    logging.getLogger(TOKEN_AUTH_LOGGER).setLevel(logging.ERROR)


TRIAL_FAILURE_LOGGER = "ray.tune.execution.tune_controller"
TRIAL_FAILURE_MESSAGE = "Trial task failed for trial"


class _DropMessage(logging.Filter):
    """Drops the records whose message contains ``text``."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text

    def filter(self, record: logging.LogRecord) -> bool:
        return self.text not in record.getMessage()


def _add_once(logger_name: str, log_filter: logging.Filter) -> None:
    """Add ``log_filter`` unless an equal one is there already: every command calls these at start."""
    logger = logging.getLogger(logger_name)
    if not any(type(f) is type(log_filter) and vars(f) == vars(log_filter) for f in logger.filters):
        logger.addFilter(log_filter)


def quiet_trial_failures() -> None:
    """Tune logs every failed trial attempt, a preemption included, with Ray's whole traceback (dozens of lines,
    in colour); the console's line for the trial (``tuner.run.console``) already says what failed, where in
    the user's code, and which file holds the traceback. Only those records are dropped.

    Private: the logger is Tune's internal module, and the filter matches its message's text."""
    _add_once(TRIAL_FAILURE_LOGGER, _DropMessage(TRIAL_FAILURE_MESSAGE))


def use_local_token() -> None:
    """Send this machine's Ray token (``~/.ray/auth_token``) to clusters from now on, as ``ray.init`` does for
    ``address="auto"`` only: Ray 2.60 turns token authentication on for a cluster ``ray start`` starts here,
    and refuses a client given that cluster's address explicitly (as the twin is joined: "auto" may name
    another cluster on the machine) unless it looks for the token.

    Private: the token setup is what ``ray.init`` uses internally; no public switch does this."""
    from ray._private.authentication.authentication_token_setup import (
        maybe_enable_token_auth_if_token_available,
    )

    quiet_token_auth_notice()  # it says "enabled" as it enables
    maybe_enable_token_auth_if_token_available(warn_if_disabled=False)


def gcs_client(gcs_address: str) -> Any:
    """A client of the cluster's GCS, authenticated as ``ray.init`` would be (see :func:`use_local_token`).

    Private: the GCS client is what ``ray.init`` uses internally; the agent and fault injection talk to the
    GCS without becoming a driver."""
    import ray

    use_local_token()
    return ray._raylet.GcsClient(address=gcs_address)


def drain_node(gcs_address: str, node_id: str, message: str, deadline_s: Optional[float]) -> tuple[bool, str]:
    """Ask the GCS to drain ``node_id`` for preemption (the RPC Ray's own autoscaler sends).

    Private: ``ray drain-node`` is a hidden CLI over this same call, and the agent must not
    become a Ray driver (a job per node) to call anything else. Returns (accepted, error)."""
    from ray.core.generated import autoscaler_pb2

    deadline_ms = int(deadline_s * 1000) if deadline_s else 0
    client = gcs_client(gcs_address)
    accepted, error = client.drain_node(
        node_id, autoscaler_pb2.DrainNodeReason.Value(DRAIN_REASON), message, deadline_ms, timeout=DRAIN_RPC_TIMEOUT_S
    )
    return bool(accepted), str(error)


def draining_nodes() -> dict[str, int]:
    """``{node_id_hex: deadline_ms}`` of nodes being drained (0 = no deadline).

    Private: the public state API (``ray.util.state``) needs the dashboard, which a cluster
    may run without, and does not report the drain deadline."""
    from ray._private.state import state

    return dict(state.get_draining_nodes())


def node_info(gcs_address: str) -> dict[str, dict[str, Any]]:
    """``{node_id_hex: {"ip", "alive", "labels"}}`` from the GCS, without connecting as a driver.

    Private for the same reason as :func:`drain_node`: the agent is not a Ray driver."""
    client = gcs_client(gcs_address)
    return {
        node_id.hex(): {"ip": info.node_manager_address, "alive": info.state == 0, "labels": dict(info.labels)}
        for node_id, info in client.get_all_node_info().items()
    }


def kuberay_autoscaling_config(ray_cluster: dict[str, Any]) -> dict[str, Any]:
    """The autoscaler config Ray's KubeRay autoscaler derives from a ``RayCluster`` object: its worker groups as
    node types (resources, labels, min/max, priority), checked by Ray's own ``validate_config``.

    Private: Ray keeps this translation inside its KubeRay autoscaler, which reads the object from the API server;
    the twin and the driver's fit check need the same node types without one."""
    from ray.autoscaler._private.kuberay.autoscaling_config import _derive_autoscaling_config_from_ray_cr

    return dict(_derive_autoscaling_config_from_ray_cr(ray_cluster))


def fake_node_provider() -> type:
    """Ray's fake multi-node provider class: a "cloud" whose nodes are raylets on this machine.

    Private (``ray.autoscaler._private.fake_multi_node``): the only provider that autoscales without a cloud;
    the twin subclasses it to give each launch a boot time (``tuner.cluster.boot``)."""
    from ray.autoscaler._private.fake_multi_node.node_provider import FakeMultiNodeProvider

    provider: type = FakeMultiNodeProvider
    return provider


def fake_nodes_without_ray(provider: Any) -> list[str]:
    """The worker nodes of a fake multi-node provider whose Ray processes have exited (not killed by the provider).

    Private: the provider keeps its nodes, each with the ``ray._private.node.Node`` that started its raylet, in
    ``_nodes`` under its ``lock``; nothing public says whether a fake node's raylet still runs."""
    with provider.lock:
        return [
            node_id
            for node_id, node in provider._nodes.items()
            if "node" in node and not node["node"].remaining_processes_alive()
        ]


def standing_resource_request() -> list[dict[str, float]]:
    """The bundles of the cluster's standing ``request_resources`` call ([] when none or withdrawn).

    Private: the autoscaler SDK can set the request but not read it back; v1 keeps it in the GCS's
    key-value store, v2 in the GCS's cluster resource state."""
    import json

    import ray
    from ray._private.ray_constants import AUTOSCALER_RESOURCE_REQUEST_CHANNEL
    from ray.autoscaler.v2.utils import is_autoscaler_v2
    from ray.experimental.internal_kv import _internal_kv_get, internal_kv_get_gcs_client

    if is_autoscaler_v2():
        from ray.autoscaler.v2.sdk import get_cluster_resource_state

        state = get_cluster_resource_state(internal_kv_get_gcs_client())
        return [
            dict(request.resources_bundle)
            for constraint in state.cluster_resource_constraints
            for grouped in constraint.resource_requests
            for request in [grouped.request] * grouped.count
        ]
    assert ray.is_initialized()
    raw = _internal_kv_get(AUTOSCALER_RESOURCE_REQUEST_CHANNEL)
    return [dict(bundle) for bundle in json.loads(raw)] if raw else []


def bootstrap_address(address: str) -> str:
    """``"auto"`` or ``host:port`` to the GCS address, as ``ray start`` and ``ray.init`` resolve it.

    Private: the public resolution happens only inside ``ray.init``."""
    from ray._private import services

    return str(services.canonicalize_bootstrap_address_or_die(address))


def free_resources_per_node() -> dict[str, dict[str, float]]:
    """Resources free right now per live node (what the GCS last heard from each raylet).

    Private: ``ray.available_resources()`` sums over the cluster; fault injection must know
    which node a trial holds resources on now."""
    from ray._private.state import available_resources_per_node

    return dict(available_resources_per_node())


def stop_propagating_env(names: frozenset[str]) -> None:
    """Stop Ray Tune from copying these environment variables into every trial's runtime_env.

    Private: Tune keeps the list in a module constant; Ray's runtime-env agent writes
    runtime_envs to its log in plain text, so a copied AWS secret would end up on disk."""
    from ray.tune.execution import class_cache

    class_cache.ENV_VARS_TO_PROPAGATE = frozenset(class_cache.ENV_VARS_TO_PROPAGATE) - names


def restored_run_config(tuner: Any) -> Any:
    """The RunConfig a restored ``Tuner`` will run with, to give it this process's callbacks.

    Private: ``Tuner.restore`` unpickles the callbacks of the run that was interrupted and
    takes no new ones; Tune's own advice is to pass them again, which it has no argument for."""
    return tuner._local_tuner.get_run_config()


SAVES_STATE_FIRST = "_tuner_saves_state_first"  # marks Tune's method once wrapped


def save_state_before_new_trials_start() -> None:
    """Make Tune save and upload its experiment state, and wait for the upload, in the step that creates
    trials, before their processes start: storage then names every trial that ran (while it takes uploads;
    a failed one is logged, as Tune's own, and the trials start anyway).

    Private (``TuneController._maybe_update_trial_queue``, ``checkpoint``, its checkpoint manager's period):
    Tune snapshots its state every 10 s or more and uploads it in the background, so a driver killed in
    between left a running trial out of storage; the resumed search made another trial in its place (its
    work lost, its MLflow run orphaned). No public setting saves the state when a trial is created. The
    snapshot period Tune derives from how long a save takes is kept as it was: these saves wait for an
    upload, Tune's own do not. Idempotent."""
    import functools

    from ray.tune.execution.tune_controller import TuneController

    original = TuneController._maybe_update_trial_queue
    if getattr(original, SAVES_STATE_FIRST, False):
        return

    @functools.wraps(original)
    def maybe_update_trial_queue(self: Any) -> None:
        before = len(self.get_trials())
        original(self)
        if len(self.get_trials()) > before:
            manager = self._checkpoint_manager
            period_s = manager._checkpoint_period
            self.checkpoint(force=True, wait=True)
            manager._checkpoint_period = period_s

    setattr(maybe_update_trial_queue, SAVES_STATE_FIRST, True)
    TuneController._maybe_update_trial_queue = maybe_update_trial_queue


def trial_storage() -> tuple[Any, str]:
    """This Tune trial's directory in the experiment's storage: (pyarrow filesystem, path on it).

    Developer API (``TuneContext.get_storage``, whose ``StorageContext`` "may change without notice"):
    a trial restarted without a checkpoint Tune recorded looks there for the ones it wrote before the
    driver's saved state caught up; Tune gives no public way to list a trial's checkpoints."""
    from ray import tune

    storage = tune.get_context().get_storage()
    return storage.storage_filesystem, storage.trial_fs_path


def train_controller_handoff(actor: Any, method: str) -> Any:
    """A Ray Train callback that hands the run's controller actor to ``actor.method`` when the run starts.

    Private (``ControllerCallback``): a Tune trial that runs a ``TorchTrainer`` and is stopped by
    Tune (ASHA, ``max_t``) kills its controller with it; the controller's resource request then
    holds the workers' capacity until it expires (180 s), so the next trial cannot start. With
    the handle, the trial aborts the run first, as Ray's own Ctrl-C handler in ``fit()`` does."""
    import ray
    from ray.train.v2._internal.execution.callback import ControllerCallback

    class Handoff(ControllerCallback):
        def after_controller_start(self, train_run_context: Any) -> None:
            getattr(actor, method).remote(ray.get_runtime_context().current_actor)

    return Handoff()


def abort_train_run(controller: Any, timeout_s: float) -> None:
    """Abort a Ray Train run (workers stopped, resource request cancelled, placement group removed).

    Private (``TrainController.abort``): what ``TorchTrainer.fit()`` calls on Ctrl-C. A run that
    already ended, or whose controller is gone, is left as it is."""
    import ray

    try:
        ray.get(controller.abort.remote(), timeout=timeout_s)
    except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
        pass  # gone already (abort exits the actor), or it did not answer: its request expires on its own


TRAIN_COORDINATOR = ("AutoscalingCoordinator", "AutoscalingCoordinator")  # (name, namespace) Ray Train looks up
TRAIN_COORDINATOR_TICK_S = 2.0  # how fresh its view of the nodes is (Ray's: 20 s)


def drain_aware_train_coordinator() -> bool:
    """Create the cluster's Ray Train autoscaling coordinator, one that leaves draining nodes out of its node
    view; True when that is the coordinator in place (False: an earlier one of Ray's own, kept).

    Private (``ray.data._internal``'s ``_AutoscalingCoordinatorActor``, the detached actor an elastic
    ``TorchTrainer`` sizes its worker group from): it counts every alive node, draining ones included,
    and refreshes its view every 20 s. After a preemption the controller then restarts at the old width
    on the node being reclaimed, waits out the worker-group start timeout, counts a controller error,
    and only then sizes again. Created first under the same name (Ray's ``get_if_exists`` then finds
    it), a subclass whose view leaves draining nodes out and is at most 2 s old makes the restart size
    from the nodes that stay. One already running is never replaced: the Ray Train runs and Ray Data
    jobs using it keep its handle and would be left with a dead actor."""
    import ray
    from ray.data._internal.cluster_autoscaler.default_autoscaling_coordinator import (
        _AutoscalingCoordinatorActor,
    )
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    name, namespace = TRAIN_COORDINATOR
    try:
        return hasattr(ray.get_actor(name, namespace=namespace), "leaves_out_draining_nodes")
    except ValueError:
        pass  # none yet: create ours

    class DrainAwareCoordinator(_AutoscalingCoordinatorActor):
        TICK_INTERVAL_S = TRAIN_COORDINATOR_TICK_S

        def __init__(self) -> None:
            super().__init__(get_cluster_nodes=self.nodes_staying)

        def nodes_staying(self) -> list[dict[str, Any]]:
            draining = draining_nodes()
            return [n for n in ray.nodes() if n["NodeID"] not in draining]

        def leaves_out_draining_nodes(self) -> bool:
            return True

    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    coordinator = (
        ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1)(DrainAwareCoordinator)
        .options(name=name, namespace=namespace, get_if_exists=True, lifetime="detached", scheduling_strategy=here)
        .remote()
    )
    return hasattr(coordinator, "leaves_out_draining_nodes")  # another process may have created one first


RESTORE_HINT_LOGGER = "ray.tune.tune"
RESTORE_HINT_TEXT = "Tuner.restore("


def quiet_restore_hint() -> None:
    """Tune ends an interrupted run with advice to call ``Tuner.restore(...)``; the platform resumes with the
    same command instead, and its console says so. Only that record is dropped.

    Private: the logger is Tune's internal module, and the filter matches its message's text."""
    _add_once(RESTORE_HINT_LOGGER, _DropMessage(RESTORE_HINT_TEXT))


EXPERIMENT_ANALYSIS_LOGGER = "ray.tune.analysis.experiment_analysis"


def quiet_experiment_analysis() -> None:
    """Tune's ``ExperimentAnalysis`` warns for every trial whose results it cannot read (a restored search reads
    the trial list from a directory that holds no results); only its errors are shown.

    Private: the logger is named after Tune's internal module."""
    logging.getLogger(EXPERIMENT_ANALYSIS_LOGGER).setLevel(logging.ERROR)


# Ray Train and Tune log every failed upload of the experiment state with a full traceback, every few seconds.
STORAGE_LOGGERS = (
    "ray.train._internal.storage",
    "ray.train._internal.syncer",
    "ray.tune.execution.experiment_state",
)


def filter_storage_logs(log_filter: logging.Filter) -> None:
    """Add ``log_filter`` to the loggers that report the experiment state's uploads (``tuner.run.storage``
    shortens their tracebacks to one line; Ray retries the sync by itself).

    Private: the loggers are named after Ray's internal modules."""
    for name in STORAGE_LOGGERS:
        _add_once(name, log_filter)


SEARCH_GENERATOR_COUNTER = "counter"  # trials the generator has created
SEARCH_GENERATOR_FINISHED = "finished"  # whether it will create no more


def search_generator_state_files(generator: Any, dirpath: str) -> list[Any]:
    """The state files a Tune ``SearchGenerator`` saved in ``dirpath``, oldest first.

    Private (``CKPT_FILE_TMPL`` and the state's ``counter``/``finished`` keys): a restored search reconciles
    the generator's count of created trials with the trial list (``tuner.run.search``), and Tune offers no
    public way to read or set it."""
    return sorted(Path(dirpath).glob(generator.CKPT_FILE_TMPL.format("*")), key=lambda p: p.stat().st_mtime)


def function_trainable(fn: Any) -> type:
    """Tune's trainable class for the function trainable ``fn``, to subclass (``tuner.trial.trainable``).

    Private (``ray.tune.trainable.wrap_function``): the platform's trainable overrides ``restore`` to fall back
    to a kept checkpoint when the recorded one is gone, and ``cleanup`` to stop a trial's Ray Train run; Tune
    builds the same class from a function itself and has no public hook for either."""
    from ray.tune.trainable import wrap_function

    return wrap_function(fn)  # type: ignore[no-any-return]


def result_loggers() -> list[Any]:
    """Tune's JSON and CSV result loggers (``result.json``, ``progress.csv``), without their copy of the stored
    file over the driver's own when a trial restarts. That copy is for a new driver that lacks the file; on the
    driver that wrote it, it replaces the complete file with the stored one, which lags it (synced at
    checkpoints) or is being rewritten (then empty): a preempted trial's results before its restart were lost
    from both files. Given to Tune in place of its defaults (it adds them only when none is given).

    Private: overrides ``LoggerCallback._restore_from_remote``; Tune has no switch for it."""
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

    class KeepDriverFile:
        def _restore_from_remote(self, file_name: str, trial: Any) -> None:
            if not Path(trial.local_path, file_name).exists():
                super()._restore_from_remote(file_name, trial)  # type: ignore[misc]

    class Json(KeepDriverFile, JsonLoggerCallback):
        pass

    class Csv(KeepDriverFile, CSVLoggerCallback):
        pass

    return [Json(), Csv()]


def restored_checkpoint(restore_arg: Any) -> Any:
    """The checkpoint inside what Tune passes to ``Trainable.restore`` (a training result holding it), or
    None when it passed something else.

    Private: the argument's type (``_TrainingResult``) is internal to Tune."""
    return getattr(restore_arg, "checkpoint", None)


STOP_SIGNAL_TEXT = "Stop signal received"  # Tune's line when its SIGINT handler runs (logger: RESTORE_HINT_LOGGER)


class _OnStopSignal(logging.Filter):
    def __init__(self, callback: Any) -> None:
        super().__init__()
        self.callback, self.seen = callback, 0

    def filter(self, record: logging.LogRecord) -> bool:
        if STOP_SIGNAL_TEXT in record.getMessage():
            self.seen += 1
            self.callback(self.seen)
        return True


@contextlib.contextmanager
def on_tune_stop_signal(callback: Any) -> Iterator[None]:
    """Call ``callback(n)`` each time Tune's SIGINT handler runs (n: how many times so far in the block).

    Tune's handler logs its line and only then puts the previous handler back, so a second Ctrl-C that
    arrives in between runs Tune's handler again and is taken for a first: counting its lines tells the
    driver that the user pressed twice. Private: Tune's internal logger, and its message's text."""
    logger = logging.getLogger(RESTORE_HINT_LOGGER)
    counter = _OnStopSignal(callback)
    logger.addFilter(counter)
    try:
        yield
    finally:
        logger.removeFilter(counter)
