"""The trial API: what a training loop calls to get the platform's spot machinery.

A search names a training function (``search.trainer: mypkg.train:fit``); the platform
calls it once per trial attempt as ``fit(config, settings)``: ``config`` holds the
hyperparameters the searcher chose, ``settings`` the search's ``workload:`` section.
Inside it, the calls below (three in the usual loop)::

    from tuner import session

    def fit(config, settings):
        model, opt = build(config)
        ckpt = session.get_checkpoint()              # newest intact checkpoint, or None
        start = ckpt.load()["epoch"] if ckpt else 0   # ... and load the rest of the state
        for epoch in range(start, settings["epochs"]):
            for batch in batches(epoch):
                train_step(batch)
                session.step(lambda: state(epoch))   # cheap; saves on a spot notice
            session.report({"epoch": epoch + 1, "val_loss": evaluate()}, checkpoint=state(epoch + 1))

- :func:`get_checkpoint`: where to resume from, as a :class:`Checkpoint` (the platform's, not
  Ray's: a verified local copy). Checksums are verified; a corrupt newest checkpoint falls back
  to the one before. ``load()`` returns the state as it was given; it also puts back the RNG
  states of the moment it was saved (every checkpoint records them; ``load(rng=False)`` does
  not), so the resumed trial draws what the uninterrupted one would have. ``path`` is the
  directory, for states that were a directory; ``restore_rng()`` puts back the RNGs alone.
- :func:`report`: metrics (numbers) for the searcher, the scheduler, the console and
  MLflow; with ``checkpoint=`` a state (or a function returning one) that is saved when
  the checkpoint policy says so (always on the last report: ``time_attr >= search.max_t``).
- :func:`step`: call it at every step boundary. It costs a few attribute reads; it saves
  ``state()`` when the node got a spot notice (then once more just before the deadline,
  and holds still), or when the policy's time interval is due.
- :func:`should_checkpoint` and :func:`save`: the same decision for loops that write
  their own checkpoints (Lightning, Hugging Face): ask, then hand over the state or the
  directory they wrote.
- :func:`get_context`: the trial's id and, in a multi-worker trial, this worker's rank,
  the width and the gradient-accumulation factor that keeps the global batch fixed; as
  attributes or, as Ray's contexts have them, getters (``get_world_rank()``, ...).

Everything else (preemption and restart counts, lost work, recovery time, the
heartbeat, node labels in results, the cost ledger) happens without user code. A state
is any object ``torch.save`` can write (tensors, numbers, dicts, lists, ...), or a directory
the loop wrote (a ``pathlib.Path``);
:func:`rng_state` / :func:`set_rng_state` capture Python's, NumPy's and torch's RNGs
for loops that write checkpoints the platform does not see.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Optional, Union

from tuner.trial.checkpoint import Checkpoint, rng_state, set_rng_state
from tuner.trial.context import TrialContext
from tuner.trial.runtime import State, current

__all__ = [
    "Checkpoint",
    "TrialContext",
    "get_checkpoint",
    "get_context",
    "report",
    "rng_state",
    "save",
    "set_rng_state",
    "should_checkpoint",
    "step",
]


def get_checkpoint() -> Optional[Checkpoint]:
    """The newest intact checkpoint of this trial (after a preemption, a retry or a driver
    restart), or None on a fresh start."""
    return current().get_checkpoint()


def report(metrics: Mapping[str, Any], checkpoint: Union[State, Callable[[], State], None] = None) -> None:
    """Report numeric metrics; ``checkpoint`` (a state dict or a directory, or a function that
    returns one: called only when needed) is saved with them when the checkpoint policy says
    so, and always with the last report."""
    current().report(metrics, checkpoint)


def step(state: Callable[[], State]) -> None:
    """At a step boundary: save ``state()`` if a spot notice, the notice's deadline or the
    policy's time interval asks for it. Cheap enough for every step."""
    current().step(state)


def should_checkpoint(for_report: bool = False) -> bool:
    """True when a checkpoint is due now (notice, deadline, policy): then call :func:`save`. With
    ``for_report=True`` also when the policy wants one with the report about to be made: then pass the
    checkpoint to that :func:`report`."""
    return current().should_checkpoint(for_report)


def save(state: State) -> None:
    """Save a checkpoint now: a state dict, or a directory of files the loop wrote (a ``pathlib.Path``, or a
    ``str`` naming one)."""
    current().save(state)


def get_context() -> TrialContext:
    """Who and where this trial attempt is: ids, rank, width, accumulation factor."""
    return current().context
