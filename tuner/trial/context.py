"""What a trainer may ask about the attempt it runs in (``tuner.session.get_context``)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TrialContext:
    """The trial, and this worker's place in it.

    A single-worker trial is rank 0 of width 1. In an elastic trial ``world_size`` is the
    width of the current attempt and ``max_workers`` the widest it may run. The search's
    batch size is the *global* batch at every width: it is cut into ``max_workers`` fixed
    shards, and worker ``r`` of ``w`` takes shards ``r, r + w, ...`` as its micro-steps
    (gradient accumulation). With a sum-reduced loss scaled by :meth:`loss_scale`, the
    averaged gradient is the same global-batch gradient at any width.
    """

    trial_id: str
    node_id: str
    world_rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    max_workers: int = 1

    # Getters as Ray's TrainContext and TuneContext have them, for code written against those.
    def get_trial_id(self) -> str:
        return self.trial_id

    def get_node_id(self) -> str:
        return self.node_id

    def get_world_rank(self) -> int:
        return self.world_rank

    def get_world_size(self) -> int:
        return self.world_size

    def get_local_rank(self) -> int:
        return self.local_rank

    @property
    def is_main(self) -> bool:
        """Rank 0: the worker whose reports and checkpoints count."""
        return self.world_rank == 0

    def shards(self, global_batch: int) -> list[slice]:
        """This worker's micro-batches, as slices of the global batch (same cut at every width)."""
        cuts = [s * global_batch // self.max_workers for s in range(self.max_workers + 1)]
        return [slice(cuts[s], cuts[s + 1]) for s in range(self.world_rank, self.max_workers, self.world_size)]

    @property
    def accumulation_steps(self) -> int:
        """Micro-steps per optimizer step on this worker: ceil(max_workers / world_size) or one fewer."""
        return len(range(self.world_rank, self.max_workers, self.world_size))

    def loss_scale(self, global_batch: int) -> float:
        """Multiply a *sum*-reduced micro-batch loss by this: after the all-reduce averages over
        ``world_size`` workers, the gradient is the mean over the global batch."""
        return self.world_size / global_batch
