"""The Ray Tune trainable every search runs: the user's trainer inside a trial session.

One trial is one Tune function trainable. With one worker it calls the trainer itself
(``run``); with several, or a range, it runs the trainer on each worker of an elastic
Ray Train ``TorchTrainer`` (``tuner.trial.elastic``). Either way the trainer sees only
``tuner.session`` and its ``(config, settings)`` arguments.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import ray
from ray import tune

from tuner import _ray
from tuner.trial import checkpoint as ckpt
from tuner.trial.attempt import TrialSpec, call_trainer
from tuner.trial.context import TrialContext
from tuner.trial.elastic import TrainRunOwner, run_elastic
from tuner.trial.runtime import TuneBackend


def run(config: dict[str, Any], spec: TrialSpec) -> None:
    """Ray Tune function trainable: ``tune.with_parameters(run, spec=...)``."""

    if spec.elastic:
        run_elastic(config, spec)
        return
    context = TrialContext(trial_id=tune.get_context().get_trial_id(), node_id=ray.get_runtime_context().get_node_id())
    call_trainer(spec, config, context, TuneBackend())


def trainable_class(fn: Callable[[dict[str, Any]], None]) -> type:
    """Tune's trainable class for ``fn``, restoring from a kept checkpoint when the recorded one is gone.

    Tune deletes checkpoints beyond ``num_to_keep`` as new ones arrive; a driver killed before it
    saved its state again restores a trial from a checkpoint deleted meanwhile, and Tune's own
    ``restore`` refuses a missing path before the trial can fall back."""
    base = _ray.function_trainable(fn)

    class SpotTrainable(base, TrainRunOwner):  # type: ignore[misc, valid-type]
        def cleanup(self) -> None:
            """Stopped by Tune (early stopping, ``max_t``, the end of the search): end its Ray Train run too,
            so the workers' resources are free for the next trial at once."""
            super().cleanup()
            self.stop_train_run()

        def restore(self, checkpoint_path: Any) -> Any:
            recorded = _ray.restored_checkpoint(checkpoint_path)  # Tune passes a (checkpoint, metrics) result
            if recorded is not None:
                checkpoint_path.checkpoint = ckpt.stand_in(recorded)
            return super().restore(checkpoint_path)

    SpotTrainable.__name__ = SpotTrainable.__qualname__ = base.__name__
    return SpotTrainable
