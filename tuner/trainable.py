"""The one training loop every workload runs inside Ray Tune.

Restore the full state if Tune hands us a checkpoint, train epoch by epoch, report
metrics each epoch and a checkpoint when due. The data order of epoch ``e`` is a
pure function of (seed, e), and the checkpoint carries model, optimizer, LR
schedule, epoch/step, best metric and RNG states, so a trial resumed from a
checkpoint finishes with exactly the metrics of an uninterrupted one.
"""

from __future__ import annotations

import math
import tempfile
import time
from dataclasses import dataclass
from typing import Any

import ray
import torch
import torch.nn.functional as F
from ray import tune

from tuner import checkpoint, models
from tuner.config import WorkloadConfig
from tuner.data import Dataset, load

EVAL_BATCH = 1024
_SEED_STRIDE = 1_000_003  # keeps (seed, epoch) data orders distinct


@dataclass
class Progress:
    """Where a trial is: epochs completed, best metric so far, training seconds spent."""

    epoch: int = 0
    best_val_acc: float = 0.0
    train_time_s: float = 0.0


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


def _epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * _SEED_STRIDE + epoch))


@torch.no_grad()
def evaluate(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """Mean cross-entropy and accuracy on (x, y)."""
    model.eval()
    loss_sum, correct = 0.0, 0
    for i in range(0, len(x), EVAL_BATCH):
        logits = model(x[i : i + EVAL_BATCH])
        loss_sum += F.cross_entropy(logits, y[i : i + EVAL_BATCH], reduction="sum").item()
        correct += (logits.argmax(1) == y[i : i + EVAL_BATCH]).sum().item()
    return loss_sum / len(x), correct / len(x)


class Trial:
    """One trial's model, optimizer, schedule and progress; (de)serialises its full state."""

    def __init__(self, params: dict[str, Any], workload: WorkloadConfig, data: Dataset, device: torch.device) -> None:
        self.params, self.workload, self.device = params, workload, device
        self.x_train, self.y_train = data.x_train.to(device), data.y_train.to(device)
        self.x_val, self.y_val = data.x_val.to(device), data.y_val.to(device)
        torch.manual_seed(workload.seed)
        self.model = models.build(workload.model, params, data.in_shape, data.num_classes).to(device)
        self.batch_size = int(params["batch_size"])
        self.steps_per_epoch = math.ceil(len(self.x_train) / self.batch_size)
        self.optimizer = torch.optim.SGD(
            self.model.parameters(),
            lr=float(params["lr"]),
            momentum=float(params["momentum"]),
            weight_decay=float(params["weight_decay"]),
            nesterov=True,
        )
        self.schedule = torch.optim.lr_scheduler.CosineAnnealingLR(
            self.optimizer, T_max=workload.epochs * self.steps_per_epoch
        )
        self.progress = Progress()

    def state(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
            "progress": vars(self.progress).copy(),
            "rng": checkpoint.rng_state(),
        }

    def load_state(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        self.progress = Progress(**state["progress"])
        checkpoint.set_rng_state(state["rng"])

    def train_epoch(self) -> float:
        """One pass over the training data in this epoch's order; returns mean loss."""
        self.model.train()
        order = _epoch_order(len(self.x_train), self.workload.seed, self.progress.epoch).to(self.device)
        smoothing = float(self.params.get("label_smoothing", 0.0))
        loss_sum = 0.0
        for step in range(self.steps_per_epoch):
            idx = order[step * self.batch_size : (step + 1) * self.batch_size]
            loss = F.cross_entropy(self.model(self.x_train[idx]), self.y_train[idx], label_smoothing=smoothing)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            self.schedule.step()
            loss_sum += loss.item() * len(idx)
        self.progress.epoch += 1
        return loss_sum / len(self.x_train)


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
    while trial.progress.epoch < workload.epochs:
        start = time.perf_counter()
        train_loss = trial.train_epoch()
        val_loss, val_acc = evaluate(trial.model, trial.x_val, trial.y_val)
        elapsed = time.perf_counter() - start
        trial.progress.train_time_s += elapsed
        trial.progress.best_val_acc = max(trial.progress.best_val_acc, val_acc)
        epoch = trial.progress.epoch
        metrics = {
            "epoch": epoch,
            "train_loss": train_loss,
            "val_loss": val_loss,
            "val_acc": val_acc,
            "best_val_acc": trial.progress.best_val_acc,
            "lr": trial.schedule.get_last_lr()[0],
            "epoch_time_s": elapsed,
            "train_time_s": trial.progress.train_time_s,
        }
        due = epoch % workload.checkpoint_every_epochs == 0 or epoch == workload.epochs
        _report(trial, metrics, with_checkpoint=due)
