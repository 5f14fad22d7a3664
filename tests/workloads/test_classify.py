"""The built-in trainer's training loop: full-state checkpoints make a resumed trial bit-identical."""

import pytest
import torch

from tuner.trial import checkpoint
from workloads.classify import ClassifySettings, Trial, evaluate
from workloads.data import load

PARAMS = {
    "lr": 0.1,
    "weight_decay": 1e-4,
    "momentum": 0.9,
    "batch_size": 128,
    "depth": 8,
    "width": 8,
    "label_smoothing": 0.1,
}
MLP_PARAMS = {**PARAMS, "layers": 1, "hidden": 32, "dropout": 0.3}


def run(trial: Trial, epochs: int) -> list[tuple[float, float, float]]:
    out = []
    for _ in range(epochs):
        train_loss = trial.train_epoch()
        out.append((train_loss, *evaluate(trial.model, trial.x_val, trial.y_val)))
    return out


@pytest.mark.parametrize(
    "model,params,epochs,k",
    [
        ("resnet", PARAMS, 4, 2),
        ("mlp", MLP_PARAMS, 3, 1),  # dropout draws from torch's RNG: its state must travel too
    ],
)
def test_resume_after_epoch_k_matches_uninterrupted(tmp_path, model: str, params: dict, epochs: int, k: int) -> None:
    torch.set_num_threads(1)
    workload = ClassifySettings(model=model, epochs=epochs, seed=7)
    data = load(workload.data)
    cpu = torch.device("cpu")
    straight = run(Trial(params, workload, data, cpu), epochs)

    first = Trial(params, workload, data, cpu)
    head = run(first, k)
    checkpoint.write(tmp_path, first.state(), {}, rng=[checkpoint.rng_state()])  # as the session writes it
    del first
    torch.manual_seed(12345)  # a fresh process would not share the old RNG position
    resumed = Trial(params, workload, data, cpu)
    resumed.load_state(checkpoint.Checkpoint(str(tmp_path)).load())
    assert resumed.progress.epoch == k
    assert head + run(resumed, epochs - k) == straight  # exact, not approximate


def test_resnet_learns_digits() -> None:
    torch.set_num_threads(1)
    workload = ClassifySettings(model="resnet", epochs=3, seed=0)
    trial = Trial(PARAMS, workload, load(workload.data), torch.device("cpu"))
    *_, (_, _, val_acc) = run(trial, 3)
    assert val_acc > 0.9


def test_resume_mid_epoch_matches_uninterrupted(tmp_path) -> None:
    """A drain checkpoint lands between steps: resuming from it must be exact too."""
    torch.set_num_threads(1)
    workload = ClassifySettings(model="resnet", epochs=2, seed=5)
    data = load(workload.data)
    cpu = torch.device("cpu")
    straight = run(Trial(PARAMS, workload, data, cpu), 2)

    first = Trial(PARAMS, workload, data, cpu)

    def save_at_step_5() -> None:
        if first.progress.epoch == 1 and first.progress.step == 5:
            checkpoint.write(tmp_path, first.state(), {}, rng=[checkpoint.rng_state()])  # as the session writes it

    for _ in range(2):
        first.run_epoch(save_at_step_5)
    resumed = Trial(PARAMS, workload, data, cpu)
    resumed.load_state(checkpoint.Checkpoint(str(tmp_path)).load())
    assert (resumed.progress.epoch, resumed.progress.step) == (1, 5)
    train_loss = resumed.train_epoch()
    assert (train_loss, *evaluate(resumed.model, resumed.x_val, resumed.y_val)) == straight[1]
