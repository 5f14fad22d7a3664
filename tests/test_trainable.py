"""Restoring a trial: a corrupt newest checkpoint falls back to the previous good one."""

from __future__ import annotations

import logging

import torch
from ray import tune

from search_spaces.fixed import RESNET8
from tuner import checkpoint
from tuner.config import WorkloadConfig
from tuner.data import load
from tuner.trainable import restore
from tuner.training import Trial


def trial() -> Trial:
    workload = WorkloadConfig(model="resnet", epochs=3, seed=0)
    return Trial({**RESNET8, "width": 8}, workload, load(workload.data), torch.device("cpu"))


def saved_checkpoints(tmp_path) -> list:
    t = trial()
    paths = []
    for i in range(3):
        t.train_epoch()
        path = tmp_path / f"checkpoint_{i:06d}"
        checkpoint.save(path, t.state())
        paths.append(path)
    return paths


def test_intact_newest_checkpoint_is_used(tmp_path) -> None:
    newest = saved_checkpoints(tmp_path)[-1]
    t = trial()
    used = restore(t, tune.Checkpoint.from_directory(str(newest)))
    assert used is not None and used.path.endswith("checkpoint_000002") and t.progress.epoch == 3


def test_truncated_newest_falls_back_to_previous(tmp_path, caplog) -> None:
    paths = saved_checkpoints(tmp_path)
    state = paths[-1] / checkpoint.STATE_FILE
    state.write_bytes(state.read_bytes()[:1000])
    t = trial()
    with caplog.at_level(logging.WARNING):
        used = restore(t, tune.Checkpoint.from_directory(str(paths[-1])))
    assert used.path.endswith("checkpoint_000001") and t.progress.epoch == 2
    assert any("instead of the corrupt newest checkpoint" in r.message for r in caplog.records)


def test_missing_files_everywhere_starts_from_scratch(tmp_path, caplog) -> None:
    for path in saved_checkpoints(tmp_path):
        (path / checkpoint.MANIFEST_FILE).unlink()
    t = trial()
    with caplog.at_level(logging.ERROR):
        assert restore(t, tune.Checkpoint.from_directory(str(tmp_path / "checkpoint_000002"))) is None
    assert t.progress.epoch == 0 and "starting it from scratch" in caplog.text
