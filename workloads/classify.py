"""The built-in image-classification trainer (``+search=resnet``, ``+search=mlp``).

An ordinary user of ``tuner.session``: ``train(config, settings)`` builds the model
the search's hyperparameters describe, resumes from the session's checkpoint, trains
with SGD (Nesterov) and a cosine schedule, calls ``session.step`` at every step and
reports each epoch. The data order of epoch ``e`` is a pure function of (seed, e),
and :meth:`Trial.state` carries everything else that changes during training, so a
trial restored from its state (at an epoch or mid-epoch) finishes with exactly the
metrics of an uninterrupted one. :class:`Trial` is pure PyTorch and unit-tested as is.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Optional

import torch
import torch.nn.functional as F
from omegaconf import MISSING

from tuner import session
from tuner.config import ConfigError
from workloads import models
from workloads.data import Dataset, DataSettings, load

EVAL_BATCH = 1024
_SEED_STRIDE = 1_000_003  # keeps (seed, epoch) data orders distinct


@dataclass
class ClassifySettings:
    """The search's ``workload:`` section for this trainer (typed: a typo fails before the search starts)."""

    model: str = MISSING  # a name in workloads.models.MODELS
    data: DataSettings = field(default_factory=DataSettings)
    epochs: int = 10  # epochs a trial trains if early stopping lets it
    seed: int = 0  # model init and data order; same seed => same result

    def __post_init__(self) -> None:
        if self.epochs <= 0:
            raise ConfigError(f"epochs={self.epochs}: must be > 0")
        if self.model not in models.MODELS:
            raise ConfigError(f"model={self.model!r}: use one of {', '.join(sorted(models.MODELS))}")


@dataclass
class Progress:
    """Where a trial is, down to the step."""

    epoch: int = 0  # epochs completed
    step: int = 0  # steps completed in the current epoch
    epoch_loss_sum: float = 0.0  # of the current epoch's completed steps
    best_val_acc: float = 0.0


def _epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * _SEED_STRIDE + epoch))


def evaluate(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """Mean cross-entropy and accuracy on (x, y)."""
    model.eval()
    loss_sum, correct = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(x), EVAL_BATCH):
            logits = model(x[i : i + EVAL_BATCH])
            loss_sum += F.cross_entropy(logits, y[i : i + EVAL_BATCH], reduction="sum").item()
            correct += (logits.argmax(1) == y[i : i + EVAL_BATCH]).sum().item()
    return loss_sum / len(x), correct / len(x)


class Trial:
    """One trial's model, optimizer, schedule and progress; (de)serialises its full state."""

    def __init__(self, params: dict[str, Any], workload: ClassifySettings, data: Dataset, device: torch.device) -> None:
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
            "progress": asdict(self.progress),
        }  # the RNG states: recorded with every checkpoint and put back by load() (checkpoint.rng)

    def load_state(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        self.progress = Progress(**state["progress"])

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
            idx = order[p.step * self.batch_size : (p.step + 1) * self.batch_size]
            loss = F.cross_entropy(self.model(self.x_train[idx]), self.y_train[idx], label_smoothing=smoothing)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            self.schedule.step()
            p.epoch_loss_sum += loss.item() * len(idx)
            p.step += 1
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
        started = time.perf_counter()
        train_loss = self.train_epoch(after_step)
        val_loss, val_acc = evaluate(self.model, self.x_val, self.y_val)
        self.progress.best_val_acc = max(self.progress.best_val_acc, val_acc)
        return {
            "epoch": self.progress.epoch,
            "train_loss": train_loss,
            "val_loss": val_loss,
            "val_acc": val_acc,
            "best_val_acc": self.progress.best_val_acc,
            "lr": self.schedule.get_last_lr()[0],
            "epoch_time_s": time.perf_counter() - started,  # of this attempt (a resumed epoch counts its rest)
        }


def train(config: dict[str, Any], settings: ClassifySettings) -> None:
    """The trainer the built-in searches name: ``search.trainer: workloads.classify:train``."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")  # Ray hides GPUs a trial was not given
    trial = Trial(config, settings, load(settings.data), device)
    restored = session.get_checkpoint()
    if restored is not None:
        trial.load_state(restored.load())
    while not trial.done:
        metrics = trial.run_epoch(after_step=lambda: session.step(trial.state))
        session.report(metrics, checkpoint=trial.state())
