"""Model builders by name: ``build(name, params, in_shape, num_classes)``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from workloads.models.mlp import build_mlp
from workloads.models.resnet import build_resnet

MODELS: dict[str, Callable[..., nn.Module]] = {"resnet": build_resnet, "mlp": build_mlp}


def build(name: str, params: dict[str, Any], in_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(sorted(MODELS))}")
    return MODELS[name](params, in_shape, num_classes)
