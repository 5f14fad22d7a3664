"""The Ray Tune function trainable every workload runs.

Restore the trial's full state if Tune hands us a checkpoint, train epoch by
epoch (``tuner.training``), report metrics each epoch and a checkpoint when due.
"""

from __future__ import annotations

import tempfile
from typing import Any

import ray
import torch
from ray import tune

from tuner import checkpoint
from tuner.config import WorkloadConfig
from tuner.data import load
from tuner.training import Trial


def _device() -> torch.device:
    """The GPU Ray assigned to this trial, else the CPU."""
    if ray.is_initialized() and ray.get_gpu_ids() and torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


def _assigned_cpus() -> int:
    if not ray.is_initialized():
        return 1
    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1.0)
    return max(1, int(cpus))


def _restore(trial: Trial) -> None:
    ckpt = tune.get_checkpoint()
    if ckpt is None:
        return
    with ckpt.as_directory() as directory:
        trial.load_state(checkpoint.load(directory))


def _report(trial: Trial, metrics: dict[str, Any], with_checkpoint: bool) -> None:
    if not with_checkpoint:
        tune.report(metrics)
        return
    with tempfile.TemporaryDirectory(prefix="tuner-ckpt-") as directory:
        checkpoint.save(directory, trial.state())
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(directory))


def train(params: dict[str, Any], workload: WorkloadConfig) -> None:
    """Ray Tune function trainable: ``tune.with_parameters(train, workload=...)``."""
    torch.set_num_threads(_assigned_cpus())
    trial = Trial(params, workload, load(workload.data), _device())
    _restore(trial)
    while not trial.done:
        metrics = trial.run_epoch()
        epoch = trial.progress.epoch
        due = epoch % workload.checkpoint_every_epochs == 0 or trial.done
        _report(trial, metrics, with_checkpoint=due)
