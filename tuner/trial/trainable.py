"""The Ray Tune trainable every search runs: the user's trainer inside a trial session.

One trial is one Tune function trainable. With one worker it calls the trainer itself
(``run``); with several, or a range, it runs the trainer on each worker of an elastic
Ray Train ``TorchTrainer`` (``tuner.trial.elastic``). Either way the trainer sees only
``tuner.session`` and its ``(config, settings)`` arguments.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Optional

from tuner.config import CheckpointConfig
from tuner.spot.labels import TORCH_THREADS
from tuner.trial import checkpoint as ckpt
from tuner.trial import trainer as trainers
from tuner.trial.context import TrialContext
from tuner.trial.runtime import Backend, Objective, TrialSession, TuneBackend


@dataclass(frozen=True)
class TrialSpec:
    """Everything a trial attempt needs besides its hyperparameters; travels to the workers."""

    trainer: str  # module:function
    settings: Any  # the search's workload section (a dict, or the trainer's settings dataclass)
    objective: Objective
    checkpoint: CheckpointConfig
    assumed_instance_type: str = "g5.xlarge"  # for nodes without an instance-type label (adaptive policy)
    workers: tuple[int, int] = (1, 1)  # (min, max) width; (1, 1): one process, no Ray Train
    worker_resources: Optional[dict[str, float]] = None  # per worker, when workers > 1
    worker_label_selector: Optional[dict[str, str]] = None  # where workers may run (spot nodes, on a cluster)
    storage_path: Optional[str] = None  # where a multi-worker trial's Ray Train run keeps its checkpoints
    num_to_keep: int = 2  # checkpoints kept per trial

    @property
    def elastic(self) -> bool:
        return self.workers != (1, 1)


def call_trainer(spec: TrialSpec, config: dict[str, Any], context: TrialContext, backend: Backend) -> None:
    """Run the user's trainer in a session; its exceptions come out as one line that points into its code."""
    import ray
    import torch

    fn = trainers.load(spec.trainer)
    labels = {k: v[0] if isinstance(v, list) else v for k, v in ray.get_runtime_context().get_node_labels().items()}
    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1.0)
    torch.set_num_threads(int(labels.get(TORCH_THREADS, max(1, int(cpus)))))
    with TrialSession(spec.objective, spec.checkpoint, context, backend, labels, spec.assumed_instance_type):
        try:
            trainers.call(fn, config, spec.settings)
        except Exception as exc:
            raise trainers.TrainerError(trainers.describe(exc, trainers.package_root(fn))) from exc


def run(config: dict[str, Any], spec: TrialSpec) -> None:
    """Ray Tune function trainable: ``tune.with_parameters(run, spec=...)``."""
    import ray
    from ray import tune

    if spec.elastic:
        from tuner.trial.elastic import run_elastic

        run_elastic(config, spec)
        return
    context = TrialContext(trial_id=tune.get_context().get_trial_id(), node_id=ray.get_runtime_context().get_node_id())
    call_trainer(spec, config, context, TuneBackend())


ABORT_TIMEOUT_S = 30.0  # a multi-worker trial's Ray Train run, stopped with its trial


def trainable_class(fn: Callable[[dict[str, Any]], None]) -> type:
    """Tune's trainable class for ``fn``, restoring from a kept checkpoint when the recorded one is gone.

    Tune deletes checkpoints beyond ``num_to_keep`` as new ones arrive; a driver killed before it
    saved its state again restores a trial from a checkpoint deleted meanwhile, and Tune's own
    ``restore`` refuses a missing path before the trial can fall back."""
    from ray.tune.trainable import wrap_function

    base = wrap_function(fn)

    class SpotTrainable(base):  # type: ignore[misc, valid-type]
        _train_controller: Any = None  # a multi-worker trial's Ray Train run (tuner.trial.elastic)

        def adopt_train_controller(self, controller: Any) -> None:
            self._train_controller = controller

        def cleanup(self) -> None:
            """Stopped by Tune (early stopping, ``max_t``, the end of the search): end its Ray Train run too,
            so the workers' resources are free for the next trial at once."""
            super().cleanup()
            if self._train_controller is not None:
                from tuner import _ray
                from tuner.trial.elastic import STOPPING

                STOPPING.set()  # a run that just failed is not started again
                _ray.abort_train_run(self._train_controller, ABORT_TIMEOUT_S)

        def restore(self, checkpoint_path: Any) -> Any:
            recorded = getattr(checkpoint_path, "checkpoint", None)  # Tune passes a (checkpoint, metrics) result
            if recorded is not None:
                checkpoint_path.checkpoint = ckpt.stand_in(recorded)
            return super().restore(checkpoint_path)

    SpotTrainable.__name__ = SpotTrainable.__qualname__ = base.__name__
    return SpotTrainable
