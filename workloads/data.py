"""Datasets as in-memory tensors with a fixed, seeded train/validation split.

Both datasets fit in memory, so a trial's data order is fully determined by its
seed and epoch (see ``workloads.classify``) and a resumed trial sees the same batches.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from sklearn.model_selection import train_test_split

from tuner.config import ConfigError


@dataclass
class DataSettings:
    """Which dataset a classification trial trains on, and its fixed validation split."""

    name: str = "digits"  # digits (bundled with scikit-learn) | cifar10 (downloaded into root)
    val_fraction: float = 0.2
    split_seed: int = 0
    root: str = "outputs/data"  # download directory for cifar10

    def __post_init__(self) -> None:
        if self.name not in LOADERS:
            raise ConfigError(f"data.name={self.name!r}: use {' or '.join(LOADERS)}")
        if not 0.0 < self.val_fraction < 1.0:
            raise ConfigError(f"data.val_fraction={self.val_fraction}: must be between 0 and 1")


@dataclass(frozen=True)
class Dataset:
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    num_classes: int

    @property
    def in_shape(self) -> tuple[int, int, int]:
        channels, height, width = self.x_train.shape[1:]
        return channels, height, width


def _split_and_normalize(x: np.ndarray, y: np.ndarray, cfg: DataSettings) -> Dataset:
    x_tr, x_va, y_tr, y_va = train_test_split(x, y, test_size=cfg.val_fraction, random_state=cfg.split_seed, stratify=y)
    mean = x_tr.mean(axis=(0, 2, 3), keepdims=True)
    std = x_tr.std(axis=(0, 2, 3), keepdims=True) + 1e-8

    def tensor(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(((a - mean) / std).astype(np.float32))

    return Dataset(
        tensor(x_tr), torch.from_numpy(y_tr).long(), tensor(x_va), torch.from_numpy(y_va).long(), int(y.max()) + 1
    )


def load_digits(cfg: DataSettings) -> Dataset:
    """scikit-learn's bundled 8x8 handwritten digits (1797 images, real, offline)."""
    from sklearn.datasets import load_digits as sk_digits

    bunch = sk_digits()
    x = bunch.data.reshape(-1, 1, 8, 8).astype(np.float32) / 16.0
    return _split_and_normalize(x, bunch.target.astype(np.int64), cfg)


def load_cifar10(cfg: DataSettings) -> Dataset:
    """CIFAR-10 training set (downloaded into ``cfg.root``), split like digits."""
    try:
        from torchvision.datasets import CIFAR10
    except ImportError as exc:
        raise RuntimeError("data=cifar10 needs torchvision: pip install -e '.[cifar]'") from exc
    train = CIFAR10(cfg.root, train=True, download=True)
    x = np.asarray(train.data, dtype=np.float32).transpose(0, 3, 1, 2) / 255.0
    return _split_and_normalize(x, np.asarray(train.targets, dtype=np.int64), cfg)


LOADERS = {"digits": load_digits, "cifar10": load_cifar10}


def load(cfg: DataSettings) -> Dataset:
    return LOADERS[cfg.name](cfg)
