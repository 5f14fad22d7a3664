"""SIGKILL a search's driver at a precise point, the way a crash or an OOM kill would land there.

Loaded into every Python process of a test search (driver and Ray workers) through
PYTHONPATH. ``TUNER_KILL_AT=POINT:N`` kills the whole process group (the driver and its
local Ray cluster: the head is gone) the N-th time, counted across processes, that POINT
is reached; ``TUNER_KILL_DIR`` holds the counters.

- ``checkpoint_upload``: a trial is uploading a checkpoint; half its files are in storage.
- ``checkpoint_saved``: a trial's checkpoint is complete in storage; the driver has not heard of it.
- ``trial_start``: the console has just said a trial started (its process is up; it has
  trained nothing yet).
- ``trial_done``: the console has just said a trial is done (Tune told the Optuna searcher
  first); nothing about its end is saved yet, and its newest checkpoint may be newer than
  the one the saved experiment state records.
"""

from __future__ import annotations

import os
import signal

POINT, _, NTH = os.environ.get("TUNER_KILL_AT", "").partition(":")
# The first process (the driver) names its process group; Ray's processes inherit the variable.
PGID_ENV = "TUNER_KILL_PGID"


def _reached(point: str) -> bool:
    """True the N-th time ``point`` is reached in any process (an O_EXCL file per arrival)."""
    if point != POINT:
        return False
    for i in range(1, int(NTH) + 1):
        try:
            os.close(os.open(os.path.join(os.environ["TUNER_KILL_DIR"], f"{point}.{i}"), os.O_CREAT | os.O_EXCL))
            return i == int(NTH)
        except FileExistsError:
            continue
    return False


def _kill() -> None:
    open(os.path.join(os.environ["TUNER_KILL_DIR"], "killed"), "w").close()
    os.killpg(int(os.environ[PGID_ENV]), signal.SIGKILL)


def _install() -> None:
    if POINT == "checkpoint_upload":
        from ray.train._internal import storage

        original = storage.StorageContext.persist_current_checkpoint

        def persist_current_checkpoint(self, checkpoint):
            if not _reached(POINT):
                return original(self, checkpoint)
            self.storage_filesystem.create_dir(self.checkpoint_fs_path)
            first = sorted(os.listdir(checkpoint.path))[0]
            with open(os.path.join(checkpoint.path, first), "rb") as src:
                with self.storage_filesystem.open_output_stream(f"{self.checkpoint_fs_path}/{first}") as dst:
                    dst.write(src.read())
            _kill()

        storage.StorageContext.persist_current_checkpoint = persist_current_checkpoint
    elif POINT == "checkpoint_saved":
        from ray.train._internal import storage

        original_persist = storage.StorageContext.persist_current_checkpoint

        def persist_then_kill(self, checkpoint):
            persisted = original_persist(self, checkpoint)
            if _reached(POINT):
                _kill()
            return persisted

        storage.StorageContext.persist_current_checkpoint = persist_then_kill
    elif POINT in ("trial_start", "trial_done"):
        from tuner.run.console import ProgressPrinter

        name = {"trial_start": "on_trial_start", "trial_done": "on_trial_complete"}[POINT]
        original_hook = getattr(ProgressPrinter, name)

        def hook(self, iteration, trials, trial, **info):
            original_hook(self, iteration, trials, trial, **info)
            if _reached(POINT):
                _kill()

        setattr(ProgressPrinter, name, hook)


if POINT:
    os.environ.setdefault(PGID_ENV, str(os.getpgrp()))
    _install()
