import torch

from workloads.models import build


def test_mlp_layers_and_output() -> None:
    model = build("mlp", {"hidden": 32, "layers": 2, "dropout": 0.1}, (1, 8, 8), 10)
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert [lin.in_features for lin in linears] == [64, 32, 32]
    assert model(torch.zeros(3, 1, 8, 8)).shape == (3, 10)
