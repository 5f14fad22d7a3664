"""PyTorch Lightning: ``TunerCallback`` for ``Trainer(callbacks=[...])`` (``pip install 'tuner[lightning]'``).

    trainer = L.Trainer(max_epochs=settings.epochs, callbacks=[TunerCallback()], ...)
    trainer.fit(model, datamodule=dm, ckpt_path=resume_path())

At the end of every training epoch (after validation) the logged metrics
(``trainer.callback_metrics``) are reported with ``epoch``; the full Lightning checkpoint
(``trainer.save_checkpoint``) goes with them when the checkpoint policy says so. When a spot
notice arrives it is written at the next batch boundary. ``resume_path()`` is where the
trial's newest intact checkpoint is, for ``ckpt_path``. Lightning restores its loops'
counters but not the RNGs: at the first batch after a resume the callback puts back the RNG
states the platform recorded with the checkpoint (Python, NumPy, torch, CUDA; unless
``checkpoint.rng=false``). One process per trial (multi-worker trials use ``tuner.session``
in a plain loop).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any, Optional

import lightning.pytorch as pl
import torch

from tuner import session

CHECKPOINT_FILE = "last.ckpt"


def resume_path() -> Optional[str]:
    """The newest intact checkpoint of this trial, as ``trainer.fit(..., ckpt_path=...)`` takes it; None at the
    start."""
    ckpt = session.get_checkpoint()
    return None if ckpt is None else str(Path(ckpt.path) / CHECKPOINT_FILE)


class TunerCallback(pl.Callback):
    """Reports each epoch's logged metrics and writes checkpoints into the platform when asked."""

    def __init__(self) -> None:
        self._rng: Optional[torch.Tensor] = None
        self._dir = Path(tempfile.mkdtemp(prefix="tuner-lightning-"))

    def _write(self, trainer: pl.Trainer) -> str:
        shutil.rmtree(self._dir / "ckpt", ignore_errors=True)
        trainer.save_checkpoint(self._dir / "ckpt" / CHECKPOINT_FILE)
        return str(self._dir / "ckpt")

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self._rng is not None:  # the first batch after a resume draws where the saved run would have
            ckpt = session.get_checkpoint()
            if ckpt is not None and ckpt.rng and not ckpt.restore_rng():
                torch.set_rng_state(self._rng)  # a checkpoint written before the platform recorded RNGs
            self._rng = None

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        last_of_epoch = batch_idx + 1 >= trainer.num_training_batches  # saved with the epoch's report instead
        if not last_of_epoch and session.should_checkpoint():
            session.save(self._write(trainer))

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if getattr(v, "numel", lambda: 1)() == 1}
        session.report({**metrics, "epoch": trainer.current_epoch + 1}, checkpoint=lambda: self._write(trainer))

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        shutil.rmtree(self._dir, ignore_errors=True)

    def state_dict(self) -> dict[str, Any]:
        return {"torch_rng": torch.get_rng_state()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._rng = state_dict.get("torch_rng")
