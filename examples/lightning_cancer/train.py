"""A LightningModule, tuned with the platform through one callback (``tuner.integrations.lightning``).

Binary classification of scikit-learn's bundled breast-cancer data (569 tumours, 30
features; real and offline) with a small MLP. The settings are typed by a dataclass, so a
typo in the search's ``workload:`` section fails before the search starts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import lightning.pytorch as L
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from tuner.integrations.lightning import TunerCallback, resume_path


@dataclass
class Settings:
    epochs: int = 10
    seed: int = 0


class Classifier(L.LightningModule):
    def __init__(self, config: dict[str, Any], features: int) -> None:
        super().__init__()
        self.config = config
        self.net = nn.Sequential(
            nn.Linear(features, config["hidden"]),
            nn.ReLU(),
            nn.Dropout(config["dropout"]),
            nn.Linear(config["hidden"], 1),
        )

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = nn.functional.binary_cross_entropy_with_logits(self.net(x).squeeze(1), y)
        self.log("train_loss", loss, on_epoch=True, on_step=False)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        logits = self.net(x).squeeze(1)
        self.log("val_loss", nn.functional.binary_cross_entropy_with_logits(logits, y))
        self.log("val_acc", ((logits > 0).float() == y).float().mean())

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.config["lr"], weight_decay=self.config["weight_decay"])


def loaders(batch_size: int, seed: int) -> tuple[DataLoader, DataLoader]:
    from sklearn.datasets import load_breast_cancer

    x, y = load_breast_cancer(return_X_y=True)
    x, y = torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.float32)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    train, val = order[: int(0.8 * len(x))], order[int(0.8 * len(x)) :]
    mean, std = x[train].mean(0), x[train].std(0)
    x = (x - mean) / std
    shuffled = torch.Generator().manual_seed(seed)  # the loader's own generator: epochs draw a fixed order
    return (
        DataLoader(TensorDataset(x[train], y[train]), batch_size=batch_size, shuffle=True, generator=shuffled),
        DataLoader(TensorDataset(x[val], y[val]), batch_size=256),
    )


def fit(config: dict[str, Any], settings: Settings) -> None:
    L.seed_everything(settings.seed, verbose=False)
    train, val = loaders(config["batch_size"], settings.seed)
    model = Classifier(config, train.dataset.tensors[0].shape[1])
    trainer = L.Trainer(
        max_epochs=settings.epochs,
        callbacks=[TunerCallback()],
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(model, train, val, ckpt_path=resume_path())
