"""Checkpoints: state dicts and framework directories, the manifest written last, RNG capture, and
restoring the newest intact one (a corrupt newest falls back; a deleted one is replaced by a kept one)."""

import logging
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from ray import tune

from tuner.trial import checkpoint


def write(path: Path, epoch: int, trial_id: str = "t") -> Path:
    checkpoint.write(
        path, {"w": torch.full((100,), float(epoch)), "epoch": epoch}, {"trial_id": trial_id, "reason": "test"}
    )
    return path


def test_roundtrip_with_rng_states(tmp_path) -> None:
    torch.manual_seed(1), np.random.seed(2), random.seed(3)
    state = {"w": torch.arange(4.0), "epoch": 3, "rng": checkpoint.rng_state()}
    expected = (torch.rand(3), np.random.rand(3), random.random())
    checkpoint.write(tmp_path, state, {"progress": {"reports": 3}})

    torch.manual_seed(99), np.random.seed(99), random.seed(99)
    checkpoint.verify(tmp_path)
    loaded = checkpoint.Checkpoint(str(tmp_path)).load()
    checkpoint.set_rng_state(loaded["rng"])
    assert torch.equal(loaded["w"], state["w"]) and loaded["epoch"] == 3
    assert torch.equal(torch.rand(3), expected[0])
    assert np.array_equal(np.random.rand(3), expected[1])
    assert random.random() == expected[2]
    assert checkpoint.read_meta(tmp_path) == {"progress": {"reports": 3}}


def draws() -> tuple[torch.Tensor, np.ndarray, float]:
    return torch.rand(3), np.random.rand(3), random.random()


def test_load_puts_back_this_ranks_rng_states_unless_told_not_to(tmp_path) -> None:
    states, expected = [], []
    for rank in range(2):  # what each worker's RNGs would draw next, when the checkpoint was written
        torch.manual_seed(10 + rank), np.random.seed(20 + rank), random.seed(30 + rank)
        states.append(checkpoint.rng_state())
        expected.append(draws())
    checkpoint.write(tmp_path, {"w": torch.arange(4.0)}, {}, rng=states)
    checkpoint.verify(tmp_path)  # the RNG file is in the manifest

    for rank in range(2):
        torch.manual_seed(99), np.random.seed(99), random.seed(99)
        assert torch.equal(checkpoint.Checkpoint(str(tmp_path), rank=rank).load()["w"], torch.arange(4.0))
        got = draws()
        assert (
            torch.equal(got[0], expected[rank][0])
            and np.array_equal(got[1], expected[rank][1])
            and got[2] == expected[rank][2]
        )
    torch.manual_seed(99)
    untouched = torch.rand(3)
    torch.manual_seed(99)
    checkpoint.Checkpoint(str(tmp_path)).load(rng=False)
    assert torch.equal(torch.rand(3), untouched)
    torch.manual_seed(99)
    checkpoint.Checkpoint(str(tmp_path), rng=False).load()  # checkpoint.rng=false
    assert torch.equal(torch.rand(3), untouched)
    assert not checkpoint.Checkpoint(str(tmp_path), rank=2).restore_rng()  # a rank the checkpoint did not have

    (tmp_path / checkpoint.RNG_FILE).write_bytes(b"tampered")
    with pytest.raises(checkpoint.CorruptCheckpointError, match="rng.pt does not match"):
        checkpoint.verify(tmp_path)


def test_a_directory_holding_the_rng_file_name_is_refused(tmp_path) -> None:
    source = tmp_path / "mine"
    source.mkdir()
    (source / checkpoint.RNG_FILE).write_bytes(b"x")
    with pytest.raises(checkpoint.CheckpointStateError, match="rng.pt, a name the platform reserves"):
        checkpoint.write(tmp_path / "ckpt", str(source), {})


def test_a_directory_of_files_is_copied_in_and_verified(tmp_path) -> None:
    written = tmp_path / "by-framework"
    (written / "sub").mkdir(parents=True)
    (written / "model.bin").write_bytes(b"x" * 1000)
    (written / "sub" / "trainer_state.json").write_text("{}")
    checkpoint.write(tmp_path / "ckpt", str(written), {})
    checkpoint.verify(tmp_path / "ckpt")
    assert (tmp_path / "ckpt" / "sub" / "trainer_state.json").read_text() == "{}"
    (tmp_path / "ckpt" / "sub" / "trainer_state.json").write_text("{changed}")
    with pytest.raises(checkpoint.CorruptCheckpointError, match="trainer_state.json does not match"):
        checkpoint.verify(tmp_path / "ckpt")
    with pytest.raises(FileNotFoundError, match="holds files, not a state dict"):
        checkpoint.Checkpoint(str(tmp_path / "ckpt")).load()


def test_a_state_torch_cannot_save_is_one_clear_error(tmp_path) -> None:
    import threading

    with pytest.raises(checkpoint.CheckpointStateError, match="cannot be saved by torch.save .*lock"):
        checkpoint.write(tmp_path, {"lock": threading.Lock()}, {})
    with pytest.raises(checkpoint.CheckpointStateError, match="reserves"):
        (tmp_path / "d").mkdir()
        (tmp_path / "d" / checkpoint.MANIFEST_FILE).write_text("{}")
        checkpoint.write(tmp_path / "c", str(tmp_path / "d"), {})


def test_truncated_state_is_refused(tmp_path) -> None:
    write(tmp_path, 1)
    path = tmp_path / checkpoint.STATE_FILE
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(checkpoint.CorruptCheckpointError, match="checksum"):
        checkpoint.verify(tmp_path)


def test_missing_manifest_means_incomplete_write(tmp_path) -> None:
    write(tmp_path, 1)
    (tmp_path / checkpoint.MANIFEST_FILE).unlink()
    with pytest.raises(checkpoint.CorruptCheckpointError, match="incomplete"):
        checkpoint.verify(tmp_path)


def test_missing_state_file(tmp_path) -> None:
    write(tmp_path, 1)
    (tmp_path / checkpoint.STATE_FILE).unlink()
    with pytest.raises(checkpoint.CorruptCheckpointError, match="missing"):
        checkpoint.verify(tmp_path)


def kept(tmp_path: Path) -> list[Path]:
    """Three checkpoints of a trial, as Tune lays them out."""
    return [write(tmp_path / "trial" / f"checkpoint_{i:06d}", i) for i in range(3)]


def restore(tmp_path: Path, recorded: Path) -> checkpoint.Restored | None:
    return checkpoint.fetch_newest_intact(tune.Checkpoint.from_directory(str(recorded)), tmp_path / "restore", "t")


def restored_epoch(tmp_path: Path, recorded: Path) -> int | None:
    restored = restore(tmp_path, recorded)
    return None if restored is None else checkpoint.Checkpoint(str(restored.path)).load()["epoch"]


def test_intact_newest_checkpoint_is_used(tmp_path) -> None:
    paths = kept(tmp_path)
    (tmp_path / "restore").mkdir()
    assert restored_epoch(tmp_path, paths[-1]) == 2


def test_a_newer_checkpoint_than_the_recorded_one_is_used_and_reported_again(tmp_path) -> None:
    """Written just before its node went; Tune never got its result."""
    paths = kept(tmp_path)
    (tmp_path / "restore").mkdir()
    restored = restore(tmp_path, paths[1])
    assert restored is not None and restored.unreported
    assert checkpoint.Checkpoint(str(restored.path)).load()["epoch"] == 2
    assert not restore(tmp_path, paths[2]).unreported


def test_with_none_recorded_the_newest_intact_one_in_the_trial_directory_is_used(tmp_path) -> None:
    """A driver killed before its saved state named a checkpoint: the trial's own, newest intact first."""
    import pyarrow.fs

    paths = kept(tmp_path)
    (paths[2] / checkpoint.STATE_FILE).write_bytes(b"torn")  # the newest was half-written
    (tmp_path / "restore").mkdir()
    storage = (pyarrow.fs.LocalFileSystem(), str(tmp_path / "trial"))
    restored = checkpoint.fetch_unrecorded(storage, tmp_path / "restore", "t")
    assert restored is not None and restored.unreported
    assert checkpoint.Checkpoint(str(restored.path)).load()["epoch"] == 1
    assert checkpoint.fetch_unrecorded(storage, tmp_path / "restore", "another-trial") is None
    assert checkpoint.fetch_unrecorded((storage[0], str(tmp_path / "none")), tmp_path / "restore", "t") is None
    assert checkpoint.fetch_unrecorded(None, tmp_path / "restore", "t") is None


def test_the_newest_is_the_one_that_trained_most_not_the_highest_name(tmp_path) -> None:
    """A trial restarted with nothing recorded writes over its own directories from checkpoint_000000 on:
    a stale checkpoint_000002 (3 reports) must lose to checkpoint_000000 rewritten since (4 reports)."""
    import pyarrow.fs

    trial = tmp_path / "trial"
    for index, reports in ((0, 4), (1, 2), (2, 3)):
        checkpoint.write(
            trial / f"checkpoint_{index:06d}",
            {"epoch": reports},
            {"trial_id": "t", "progress": {"reports": reports, "train_time_s": 10.0 * reports}},
        )
    (tmp_path / "restore").mkdir()
    restored = checkpoint.fetch_unrecorded((pyarrow.fs.LocalFileSystem(), str(trial)), tmp_path / "restore", "t")
    assert restored is not None and checkpoint.Checkpoint(str(restored.path)).load()["epoch"] == 4
    recorded = restore(tmp_path, trial / "checkpoint_000000")  # recorded since: the stale one is not "newer"
    assert recorded is not None and not recorded.unreported
    assert checkpoint.Checkpoint(str(recorded.path)).load()["epoch"] == 4


def test_storage_that_cannot_be_listed_starts_the_trial_afresh(tmp_path, caplog) -> None:
    class Unreachable:
        def get_file_info(self, selector):  # type: ignore[no-untyped-def]
            raise OSError("When listing objects under key 'trial': AWS Error NETWORK_CONNECTION")

    with caplog.at_level(logging.WARNING):
        assert checkpoint.fetch_unrecorded((Unreachable(), "bucket/trial"), tmp_path, "t") is None
    assert "cannot list bucket/trial for checkpoints" in caplog.text


def test_a_newer_checkpoint_of_another_trial_is_not_taken(tmp_path) -> None:
    """PBT hands a trial another trial's checkpoint: that one, not the donor's later ones."""
    paths = kept(tmp_path)
    write(paths[2], 2, trial_id="donor")
    (tmp_path / "restore").mkdir()
    restored = restore(tmp_path, paths[1])
    assert restored is not None and not restored.unreported
    assert checkpoint.Checkpoint(str(restored.path)).load()["epoch"] == 1


def test_tune_gets_a_stand_in_for_a_recorded_checkpoint_that_is_gone(tmp_path) -> None:
    import shutil

    paths = kept(tmp_path)
    assert checkpoint.stand_in(tune.Checkpoint.from_directory(str(paths[1]))).path == str(paths[1])
    shutil.rmtree(paths[0])
    assert checkpoint.stand_in(tune.Checkpoint.from_directory(str(paths[0]))).path == str(paths[1])  # the oldest kept


def test_truncated_newest_falls_back_to_previous(tmp_path, caplog) -> None:
    paths = kept(tmp_path)
    state = paths[-1] / checkpoint.STATE_FILE
    state.write_bytes(state.read_bytes()[:1000])
    (tmp_path / "restore").mkdir()
    with caplog.at_level(logging.WARNING):
        assert restored_epoch(tmp_path, paths[-1]) == 1
    assert any("instead of the recorded checkpoint" in r.message for r in caplog.records)


def test_a_recorded_checkpoint_deleted_since_is_replaced_by_the_newest_kept(tmp_path, caplog) -> None:
    paths = kept(tmp_path)
    import shutil

    shutil.rmtree(paths[0])  # Tune's num_to_keep deleted it after the driver last saved its state
    (tmp_path / "restore").mkdir()
    with caplog.at_level(logging.WARNING):
        assert restored_epoch(tmp_path, paths[0]) == 2
    assert "is gone" in caplog.text


def test_missing_files_everywhere_starts_from_scratch(tmp_path, caplog) -> None:
    paths = kept(tmp_path)
    for path in paths:
        (path / checkpoint.MANIFEST_FILE).unlink()
    (tmp_path / "restore").mkdir()
    with caplog.at_level(logging.ERROR):
        assert restored_epoch(tmp_path, paths[-1]) is None
    assert "starting it from scratch" in caplog.text
