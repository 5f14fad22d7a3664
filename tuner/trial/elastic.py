"""A trial that spans several workers: the user's trainer on every worker of an elastic Ray Train TorchTrainer.

The Tune trial's own process is the coordinator. It holds no CPU or GPU (a memory-only
bundle) and is kept off spot nodes by label selector, so the head or an on-demand worker
runs it; it starts a ``TorchTrainer`` whose workers (``search.resources`` cpu/gpu each,
on spot nodes by label selector) each run the trainer in a trial session. Rank 0's reports
become the trial's results (``TuneReportCallback``) and its checkpoints the trial's lineage;
every rank takes the same checkpoint decisions (an all-reduce at each step), so a spot
notice on any worker's node checkpoints the whole trial at once.

The width moves between ``min`` and ``max``: Ray Train restarts the worker group from the
newest checkpoint at the surviving width when a worker's node is lost, and at a larger one
when capacity returns. A drained node's workers hold after the notice's checkpoints until
its deadline; Ray Train then retries the run as a preemption, sized from the nodes that are
not draining (the driver creates a coordinator that leaves them out, see
``_ray.drain_aware_train_coordinator``), so the shrink costs one worker group start. The trainer keeps the
global batch fixed with ``session.get_context().shards(batch)`` (gradient accumulation), so its hyperparameters
mean the same at every width. A failure Ray Train classifies as a preemption it retries
itself, without limit. A run that fails after a worker's node was lost all the same (no
notice, or one Ray Train did not see in time) is started again here, resuming from its
newest checkpoint; only a failure with every node still there (an application error)
fails the Tune trial, which counts it against ``run.max_failures``.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any, Optional

import ray
import torch
import torch.distributed as dist
from ray import train, tune
from ray.train.torch import TorchConfig, TorchTrainer
from ray.tune.integration.ray_train import TuneReportCallback

from tuner import _ray
from tuner.result_keys import WALL_S
from tuner.spot.drain import node_lost
from tuner.trial.attempt import TrialSpec, call_trainer
from tuner.trial.context import TrialContext
from tuner.trial.heartbeat import Heartbeat, lost_to_preemption

# Ray Train waits this long (default 60 s) for a worker group that cannot be placed, e.g. one sized
# with a node that is draining or just gone, before it counts the error and sizes again.
WORKER_GROUP_START_TIMEOUT_S = 15
PREEMPTION_POLL_S = 1.0  # how soon Ray Train sees a drain (default 5 s): a notice can be shorter than that
RESIZE_CHECK_S = 10.0  # how often a running trial looks for capacity to grow back into
NODE_LOSS_WAIT_S = 20.0  # a failed run waits this long for the GCS to call a worker's node lost (Ray: ~15 s)

log = logging.getLogger(__name__)
STOPPING = threading.Event()  # Tune is stopping this trial: start no new Ray Train run for it
ABORT_TIMEOUT_S = 30.0  # a multi-worker trial's Ray Train run, stopped with its trial


class TrainRunOwner:
    """Mixed into the trial's Tune trainable: it is handed the trial's Ray Train run (its controller), so that
    Tune stopping the trial stops the run and frees the workers at once."""

    _train_controller: Any = None

    def adopt_train_controller(self, controller: Any) -> None:
        self._train_controller = controller

    def stop_train_run(self) -> None:
        if self._train_controller is not None:
            STOPPING.set()  # a run that just failed is not started again
            _ray.abort_train_run(self._train_controller, ABORT_TIMEOUT_S)


class TrainBackend:
    """A worker of a multi-worker trial: results and checkpoints through Ray Train, rank 0's count."""

    def __init__(self, context: TrialContext) -> None:
        self.context = context

    def recorded_checkpoint(self) -> Any:
        return train.get_checkpoint()

    def trial_storage(self) -> Optional[tuple[Any, str]]:
        return None  # a multi-worker trial's checkpoints are its Ray Train run's, which restores them itself

    def report(self, metrics: dict[str, Any], checkpoint_dir: Optional[str]) -> None:
        ckpt = train.Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir and self.context.is_main else None
        train.report(metrics, checkpoint=ckpt)  # every rank reports, the same number of times

    def agree(self, code: int, deadline_s: float) -> tuple[int, float]:
        """The most urgent checkpoint reason of any worker, and the earliest drain deadline."""

        reason = torch.tensor([code], dtype=torch.int64)
        deadline = torch.tensor([deadline_s], dtype=torch.float64)
        dist.all_reduce(reason, op=dist.ReduceOp.MAX)
        dist.all_reduce(deadline, op=dist.ReduceOp.MIN)
        return int(reason.item()), float(deadline.item())

    def gather(self, value: Any) -> list[Any]:
        values: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(values, value)
        return values


def _worker(loop_config: dict[str, Any]) -> None:
    """One worker of the trial's TorchTrainer: the user's trainer in a session that knows its rank."""

    spec: TrialSpec = loop_config["spec"]
    ctx = train.get_context()
    context = TrialContext(
        trial_id=loop_config["trial_id"],
        node_id=ray.get_runtime_context().get_node_id(),
        world_rank=ctx.get_world_rank(),
        world_size=ctx.get_world_size(),
        local_rank=ctx.get_local_rank(),
        max_workers=spec.workers[1],
    )
    call_trainer(spec, loop_config["config"], context, TrainBackend(context))


def run_elastic(config: dict[str, Any], spec: TrialSpec) -> None:
    """The coordinator: a TorchTrainer for this trial, its results forwarded to Tune."""

    os.environ.setdefault("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", str(WORKER_GROUP_START_TIMEOUT_S))
    os.environ.setdefault("RAY_TRAIN_PREEMPTION_POLL_INTERVAL_S", str(PREEMPTION_POLL_S))
    trial_id = tune.get_context().get_trial_id()
    low, high = spec.workers
    gpu = (spec.worker_resources or {}).get("GPU", 0.0)
    scaling = train.ScalingConfig(
        num_workers=(low, high) if low != high else high,
        use_gpu=gpu > 0,
        resources_per_worker=spec.worker_resources,
        label_selector=spec.worker_label_selector,
        elastic_resize_monitor_interval_s=RESIZE_CHECK_S,
    )
    this_trial = ray.get_runtime_context().current_actor  # the trial stops the run when Tune stops the trial
    run_config = train.RunConfig(
        name=f"train-{trial_id}",  # the same name on a retry: Ray Train resumes from this trial's checkpoints
        storage_path=spec.storage_path,
        callbacks=[
            TuneReportCallback(),
            _ray.train_controller_handoff(this_trial, TrainRunOwner.adopt_train_controller.__name__),
        ],
        failure_config=train.FailureConfig(max_failures=0),  # application errors: Tune's run.max_failures counts them
        checkpoint_config=train.CheckpointConfig(num_to_keep=spec.num_to_keep),
    )
    heartbeat = Heartbeat(trial_id)
    while not STOPPING.is_set():
        started_s = time.time()
        trainer = TorchTrainer(
            _worker,
            train_loop_config={"config": config, "spec": spec, "trial_id": trial_id},
            scaling_config=scaling,
            run_config=run_config,
            torch_config=TorchConfig(backend="nccl" if gpu > 0 else "gloo"),
        )
        try:
            trainer.fit()
            return
        except train.TrainingFailedError:
            if STOPPING.is_set() or not _lost_a_node(heartbeat, since_s=started_s):
                raise  # an application error: Tune's run.max_failures counts it
            log.warning(
                "trial %s: a worker's node was lost; the run resumes from its newest checkpoint (a "
                "preemption: not counted against run.max_failures)",
                trial_id,
            )
            time.sleep(_ray.TRAIN_COORDINATOR_TICK_S)  # the coordinator's node view has caught up: size without it


def _lost_a_node(heartbeat: Heartbeat, since_s: float) -> bool:
    """Whether the failed run's last attempt lost a worker's node (its rank 0's heartbeat names them). A node
    lost without notice is known to the GCS only after its health checks fail: wait for that, bounded.
    An attempt that failed before its first heartbeat (loading the trainer or the checkpoint) is not one."""
    try:
        beat = heartbeat.read()
    except Exception as exc:  # the store unreachable: count the failure rather than guess
        log.warning("trial heartbeat unreadable (%s): the failure counts against run.max_failures", exc)
        return False
    if beat is None or float(beat.get(WALL_S, 0.0)) < since_s:
        return False
    deadline = time.monotonic() + NODE_LOSS_WAIT_S
    while not lost_to_preemption(beat, node_lost):
        if time.monotonic() >= deadline:
            return False
        time.sleep(1.0)
    return True
