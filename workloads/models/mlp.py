"""A small fully connected network: seconds per trial, for fast checks of the machinery."""

from __future__ import annotations

import math
from typing import Any

from torch import nn


def build_mlp(params: dict[str, Any], in_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    hidden = int(params["hidden"])
    layers: list[nn.Module] = [nn.Flatten()]
    width = math.prod(in_shape)
    for _ in range(int(params["layers"])):
        layers += [nn.Linear(width, hidden), nn.ReLU(), nn.Dropout(float(params.get("dropout", 0.0)))]
        width = hidden
    layers.append(nn.Linear(width, num_classes))
    return nn.Sequential(*layers)
