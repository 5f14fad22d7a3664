import random

import numpy as np
import pytest
import torch

from tuner import checkpoint


def test_roundtrip_with_rng_states(tmp_path) -> None:
    torch.manual_seed(1), np.random.seed(2), random.seed(3)
    state = {"w": torch.arange(4.0), "epoch": 3, "rng": checkpoint.rng_state()}
    expected = (torch.rand(3), np.random.rand(3), random.random())
    checkpoint.save(tmp_path, state)

    torch.manual_seed(99), np.random.seed(99), random.seed(99)
    loaded = checkpoint.load(tmp_path)
    checkpoint.set_rng_state(loaded["rng"])
    assert torch.equal(loaded["w"], state["w"]) and loaded["epoch"] == 3
    assert torch.equal(torch.rand(3), expected[0])
    assert np.array_equal(np.random.rand(3), expected[1])
    assert random.random() == expected[2]


def test_truncated_state_is_refused(tmp_path) -> None:
    checkpoint.save(tmp_path, {"w": torch.zeros(1000)})
    path = tmp_path / checkpoint.STATE_FILE
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(checkpoint.CorruptCheckpointError, match="checksum"):
        checkpoint.load(tmp_path)


def test_missing_manifest_means_incomplete_write(tmp_path) -> None:
    checkpoint.save(tmp_path, {"w": torch.zeros(3)})
    (tmp_path / checkpoint.MANIFEST_FILE).unlink()
    with pytest.raises(checkpoint.CorruptCheckpointError, match="incomplete"):
        checkpoint.load(tmp_path)


def test_missing_state_file(tmp_path) -> None:
    checkpoint.save(tmp_path, {"w": torch.zeros(3)})
    (tmp_path / checkpoint.STATE_FILE).unlink()
    with pytest.raises(checkpoint.CorruptCheckpointError, match="missing"):
        checkpoint.load(tmp_path)
