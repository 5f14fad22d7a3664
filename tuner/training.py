"""One trial's training state: model, optimizer, LR schedule, progress and RNG.

Pure PyTorch (no Ray), so it is unit-tested directly. The data order of epoch
``e`` is a pure function of (seed, e), and :meth:`Trial.state` carries everything
else that changes during training, so a trial restored from its state finishes
with exactly the metrics of an uninterrupted one.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch
import torch.nn.functional as F

from tuner import checkpoint, models
from tuner.config import WorkloadConfig
from tuner.data import Dataset

EVAL_BATCH = 1024
_SEED_STRIDE = 1_000_003  # keeps (seed, epoch) data orders distinct


@dataclass
class Progress:
    """Where a trial is, down to the step, and what interruptions have cost it so far."""

    epoch: int = 0  # epochs completed
    step: int = 0  # steps completed in the current epoch
    epoch_loss_sum: float = 0.0  # of the current epoch's completed steps
    best_val_acc: float = 0.0
    train_time_s: float = 0.0  # training + evaluation seconds behind this state
    preemptions: int = 0  # restores after the trial's node was lost
    restarts: int = 0  # restores for any reason
    lost_work_s: float = 0.0  # training seconds redone after restores
    recovery_s: float = 0.0  # seconds from losing a node to training again, summed


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
        if device.type == "cuda":  # same data order + deterministic kernels => same result
            torch.backends.cudnn.deterministic = True
            torch.backends.cudnn.benchmark = False
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

    def train_epoch(self, after_step: Optional[Callable[[], None]] = None) -> float:
        """Finish the current epoch in its fixed order; returns its mean training loss.

        Resumes mid-epoch when the state was saved between steps; ``after_step``
        runs at every step boundary (where a checkpoint is consistent).
        """
        self.model.train()
        p = self.progress
        order = _epoch_order(len(self.x_train), self.workload.seed, p.epoch).to(self.device)
        smoothing = float(self.params.get("label_smoothing", 0.0))
        while p.step < self.steps_per_epoch:
            start = time.perf_counter()
            idx = order[p.step * self.batch_size : (p.step + 1) * self.batch_size]
            loss = F.cross_entropy(self.model(self.x_train[idx]), self.y_train[idx], label_smoothing=smoothing)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            self.schedule.step()
            p.epoch_loss_sum += loss.item() * len(idx)
            p.step += 1
            p.train_time_s += time.perf_counter() - start
            if after_step is not None:
                after_step()
        mean_loss = p.epoch_loss_sum / len(self.x_train)
        p.epoch, p.step, p.epoch_loss_sum = p.epoch + 1, 0, 0.0
        return mean_loss

    @property
    def done(self) -> bool:
        return self.progress.epoch >= self.workload.epochs

    def run_epoch(self, after_step: Optional[Callable[[], None]] = None) -> dict[str, float]:
        """Finish the epoch, evaluate, update progress; return the epoch's metrics."""
        trained_before = self.progress.train_time_s
        train_loss = self.train_epoch(after_step)
        eval_start = time.perf_counter()
        val_loss, val_acc = evaluate(self.model, self.x_val, self.y_val)
        self.progress.train_time_s += time.perf_counter() - eval_start
        elapsed = self.progress.train_time_s - trained_before
        self.progress.best_val_acc = max(self.progress.best_val_acc, val_acc)
        return {
            "epoch": self.progress.epoch,
            "train_loss": train_loss,
            "val_loss": val_loss,
            "val_acc": val_acc,
            "best_val_acc": self.progress.best_val_acc,
            "lr": self.schedule.get_last_lr()[0],
            "epoch_time_s": elapsed,
            "train_time_s": self.progress.train_time_s,
            **self.interruption_metrics(),
        }

    def interruption_metrics(self) -> dict[str, float]:
        p = self.progress
        return {
            "preemptions": p.preemptions,
            "restarts": p.restarts,
            "lost_work_s": p.lost_work_s,
            "recovery_s": p.recovery_s,
        }
