"""The built-in trainer's data: a fixed, stratified, normalised split of scikit-learn's digits."""

import torch

from workloads.data import DataSettings, load


def test_digits_split_is_fixed_and_stratified() -> None:
    a, b = load(DataSettings()), load(DataSettings())
    assert torch.equal(a.x_val, b.x_val) and torch.equal(a.y_train, b.y_train)
    assert len(a.x_train) + len(a.x_val) == 1797
    assert a.in_shape == (1, 8, 8) and a.num_classes == 10
    counts = torch.bincount(a.y_val, minlength=10)
    assert counts.min() >= 34 and counts.max() <= 38  # ~20 % of each ~180-image class


def test_other_split_seed_gives_other_split() -> None:
    assert not torch.equal(load(DataSettings(split_seed=0)).y_val, load(DataSettings(split_seed=1)).y_val)


def test_normalized_with_train_statistics() -> None:
    data = load(DataSettings())
    assert abs(float(data.x_train.mean())) < 1e-4
    assert abs(float(data.x_train.std()) - 1.0) < 1e-2
