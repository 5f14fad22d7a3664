"""One attempt of a trial on one worker: what it needs (``TrialSpec``) and the user's trainer called in a
trial session. Both the single-process trainable and the workers of an elastic trial start here."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import ray
import torch

from tuner.config import CheckpointConfig
from tuner.spot.labels import TORCH_THREADS
from tuner.trial import trainer as trainers
from tuner.trial.context import TrialContext
from tuner.trial.runtime import Backend, Objective, TrialSession


@dataclass(frozen=True)
class TrialSpec:
    """Everything a trial attempt needs besides its hyperparameters; travels to the workers."""

    trainer: str  # module:function
    settings: Any  # the search's workload section (a dict, or the trainer's settings dataclass)
    objective: Objective
    checkpoint: CheckpointConfig
    assumed_instance_type: str  # for nodes without an instance-type label (cost.assumed_instance_type)
    assumed_region: str  # for nodes without a region label (pricing.region)
    workers: tuple[int, int]  # (min, max) width; (1, 1): one process, no Ray Train
    worker_resources: Optional[dict[str, float]]  # per worker, when workers > 1
    worker_label_selector: Optional[dict[str, str]]  # where workers may run (spot nodes, on a cluster)
    storage_path: Optional[str]  # where a multi-worker trial's Ray Train run keeps its checkpoints
    num_to_keep: int  # checkpoints kept per trial

    @property
    def elastic(self) -> bool:
        return self.workers != (1, 1)


def call_trainer(spec: TrialSpec, config: dict[str, Any], context: TrialContext, backend: Backend) -> None:
    """Run the user's trainer in a session; its exceptions come out as one line that points into its code."""

    fn = trainers.load(spec.trainer)
    labels = {k: v[0] if isinstance(v, list) else v for k, v in ray.get_runtime_context().get_node_labels().items()}
    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1.0)
    torch.set_num_threads(int(labels.get(TORCH_THREADS, max(1, int(cpus)))))
    with TrialSession(
        spec.objective, spec.checkpoint, context, backend, labels, spec.assumed_instance_type, spec.assumed_region
    ):
        try:
            trainers.call(fn, config, spec.settings)
        except Exception as exc:
            raise trainers.TrainerError(trainers.describe(exc, trainers.package_root(fn))) from exc
