"""Hugging Face: ``TunerCallback`` for ``Trainer(callbacks=[...])`` (``pip install 'tuner[huggingface]'``).

    args = TrainingArguments(output_dir=..., max_steps=..., eval_strategy="steps", save_strategy="no", ...)
    trainer = Trainer(model=model, args=args, ..., callbacks=[TunerCallback()])
    trainer.train(resume_from_checkpoint=resume_path())

Every evaluation's metrics are reported with ``step`` (the global step). When a spot notice
arrives, the checkpoint policy wants one with an evaluation's report, or its time interval is
due, the callback sets ``control.should_save``: the Trainer writes its own checkpoint (model,
optimizer, scheduler, RNG, trainer state) at the end of that step, and the callback hands the
directory to the platform. An evaluation in the same step is reported together with that
checkpoint, and the last step is always saved. The Trainer resumes exactly: it skips the batches it had
seen and restores the RNG.
"""

from __future__ import annotations

import os
from typing import Any, Optional

from transformers import (
    TrainerCallback,
    TrainerControl,
    TrainerState,
    TrainingArguments,
)

from tuner import session


def resume_path() -> Optional[str]:
    """The newest intact checkpoint of this trial, as ``trainer.train(resume_from_checkpoint=...)`` takes it."""
    ckpt = session.get_checkpoint()
    return None if ckpt is None else ckpt.path


class TunerCallback(TrainerCallback):
    """Reports evaluations and hands the Trainer's checkpoints to the platform when it asks for one."""

    def __init__(self) -> None:
        self._pending: Optional[dict[str, Any]] = None  # an evaluation waiting for this step's checkpoint

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any) -> None:
        # The Trainer's own flow has decided whether this step evaluates: a report is coming.
        if session.should_checkpoint(for_report=control.should_evaluate) or state.global_step >= state.max_steps:
            control.should_save = True

    def on_evaluate(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        metrics: Optional[dict[str, float]] = None,
        **kw: Any,
    ) -> None:
        values = {k: v for k, v in (metrics or {}).items() if isinstance(v, (int, float))}
        values["step"] = state.global_step
        if control.should_save:
            self._pending = values
        else:
            session.report(values)

    def on_save(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any) -> None:
        if not args.should_save:  # only the main process writes
            return
        directory = os.path.join(args.output_dir, f"checkpoint-{state.global_step}")
        if self._pending is not None:
            session.report(self._pending, checkpoint=directory)
            self._pending = None
        else:
            session.save(directory)
