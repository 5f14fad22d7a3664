import pytest
import torch

from workloads.models import build
from workloads.models.resnet import BasicBlock, ResNet


@pytest.mark.parametrize("depth,blocks", [(8, 3), (14, 6), (20, 9)])
def test_depth_is_6n_plus_2(depth: int, blocks: int) -> None:
    model = ResNet(depth, 16, 1, 10)
    assert sum(isinstance(m, BasicBlock) for m in model.modules()) == blocks
    convs = sum(isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3) for m in model.modules())
    assert convs + 1 == depth  # 3x3 convs plus the classifier layer


@pytest.mark.parametrize("shape", [(1, 8, 8), (3, 32, 32)])
def test_forward_shapes(shape: tuple[int, int, int]) -> None:
    model = build("resnet", {"depth": 8, "width": 8}, shape, 10)
    assert model(torch.zeros(2, *shape)).shape == (2, 10)


def test_width_doubles_per_stage() -> None:
    model = ResNet(8, 16, 1, 10)
    assert model.head.in_features == 64


def test_invalid_depth() -> None:
    with pytest.raises(ValueError, match="6n\\+2"):
        ResNet(10, 16, 1, 10)


def test_unknown_model() -> None:
    with pytest.raises(ValueError, match="unknown model"):
        build("vit", {}, (1, 8, 8), 10)
