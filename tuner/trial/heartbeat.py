"""A trial's heartbeat and what an interruption cost it.

Every trial attempt records where it is (node, training seconds, counters) about twice a
second in a small named actor that the driver pins to its own, on-demand, node: the
record outlives the trial's node. The next attempt of the trial reads it to tell a
preemption (the node is gone or draining) from an application error, and how many
training seconds were lost (trained after the checkpoint it resumes from).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Optional

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from tuner.result_keys import COUNTERS, NODE_ID, TRAIN_TIME_S, WALL_S, WORLD_SIZE

log = logging.getLogger(__name__)

STORE_NAME = "tuner-heartbeats"
NAMESPACE = "tuner"
EVERY_S = 0.5  # lost work is measured to this resolution
READ_TIMEOUT_S = 10.0


@dataclass
class Progress:
    """Training seconds behind a trial's state and what interruptions have cost it so far."""

    train_time_s: float = 0.0  # seconds spent in the trainer (checkpoint writes and holds excluded)
    reports: int = 0  # report() calls behind this state
    preemptions: int = 0  # restarts after the trial's node was lost
    restarts: int = 0  # restarts for any reason
    lost_work_s: float = 0.0  # training worker-seconds redone after restarts
    recovery_s: float = 0.0  # seconds from losing a node to training again, summed

    def counters(self) -> dict[str, float]:
        return {k: getattr(self, k) for k in COUNTERS}

    @classmethod
    def from_dict(cls, record: dict[str, Any]) -> Progress:
        return cls(**{k: v for k, v in record.items() if k in asdict(cls())})


def account_restart(
    progress: Progress, beat: dict[str, Any], nodes: list[str], now_s: float, node_lost: Callable[[str], bool]
) -> tuple[Progress, bool, float]:
    """Charge the previous attempt's loss to ``progress`` (restored from a checkpoint); ``nodes``: this
    attempt's workers' nodes.

    Returns (progress, preempted, worker-seconds lost). The heartbeat is newer than any checkpoint,
    so its counters win; an attempt that ended with an application error says so in its last
    heartbeat; one that vanished while a node of its was lost or drained (or, with one worker, that
    now runs elsewhere) was preempted, and so was one whose error came with another worker's node lost."""
    for key in COUNTERS:
        setattr(progress, key, max(getattr(progress, key), beat.get(key, 0)))
    lost_s = max(0.0, float(beat[TRAIN_TIME_S]) - progress.train_time_s) * int(beat.get(WORLD_SIZE, 1))
    progress.restarts += 1
    progress.lost_work_s += lost_s
    before = list(beat.get("nodes") or [beat[NODE_ID]])
    moved = len(before) == 1 and before[0] not in nodes  # a single process elsewhere; a trial that grew has not moved
    preempted = (not beat.get("error") and moved) or lost_to_preemption(beat, node_lost)
    if preempted:
        progress.preemptions += 1
        progress.recovery_s += max(0.0, now_s - float(beat[WALL_S]))
    return progress, preempted, lost_s


def lost_to_preemption(beat: dict[str, Any], node_lost: Callable[[str], bool]) -> bool:
    """Whether the attempt that wrote ``beat`` ended because a node of its is gone or draining.

    A worker whose node went without notice takes its peers down with it (their collectives
    fail): the error rank 0 reported then was that loss, not the trainer's."""
    before = list(beat.get("nodes") or [beat[NODE_ID]])
    peer_lost = any(node_lost(n) for n in before if n != beat[NODE_ID])
    return peer_lost or (not beat.get("error") and any(node_lost(n) for n in before))


@ray.remote(num_cpus=0)
class HeartbeatStore:
    """Latest heartbeat per trial id, in memory on the driver's node."""

    def __init__(self) -> None:
        self._beats: dict[str, dict[str, Any]] = {}

    def put(self, trial_id: str, record: dict[str, Any]) -> None:
        self._beats[trial_id] = record

    def get(self, trial_id: str) -> Optional[dict[str, Any]]:
        return self._beats.get(trial_id)

    def clear(self, trial_id: str) -> None:
        self._beats.pop(trial_id, None)


def start_store() -> Any:
    """Create (or find) the store on this process's node: the driver's, which is never spot."""

    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    return HeartbeatStore.options(  # type: ignore[attr-defined]
        name=STORE_NAME, namespace=NAMESPACE, lifetime="detached", get_if_exists=True, scheduling_strategy=here
    ).remote()


class Heartbeat:
    """A trial attempt's side of the store: rate-limited, fire-and-forget writes."""

    def __init__(self, trial_id: str, store: Any = None) -> None:
        self.trial_id = trial_id
        self.last_s = 0.0
        self._store = store
        if store is None:
            try:
                self._store = ray.get_actor(STORE_NAME, namespace=NAMESPACE)
            except ValueError:  # no driver of ours started it (a bare Tune run): no accounting, no failure
                log.warning("no heartbeat store in this cluster: restarts and lost work are not measured")

    def read(self) -> Optional[dict[str, Any]]:
        if self._store is None:
            return None
        return ray.get(self._store.get.remote(self.trial_id), timeout=READ_TIMEOUT_S)  # type: ignore[no-any-return]

    def beat(self, record: dict[str, Any], force: bool = False) -> None:
        now = time.time()
        if self._store is not None and (force or now - self.last_s >= EVERY_S):
            self.last_s = now
            self._store.put.remote(self.trial_id, {**record, WALL_S: now})

    def clear(self) -> None:
        if self._store is not None:
            self._store.clear.remote(self.trial_id)


def wait_trained_past(
    trial_id: str, train_time_s: float, running: Callable[[], bool], timeout_s: float = 600.0
) -> None:
    """Block until the trial's heartbeat holds more than ``train_time_s`` of training (work past the checkpoint
    taken then, which losing its node now would cost): how a fault is placed between two checkpoints by what
    the trial did, not by the clock. Needs a connected driver; ``running()`` false (the search ended) raises
    at once, and ``timeout_s`` is a hang guard."""
    beats, deadline = Heartbeat(trial_id), time.monotonic() + timeout_s
    while (beats.read() or {}).get(TRAIN_TIME_S, 0.0) <= train_time_s:
        if not running():
            raise RuntimeError(f"the search ended before trial {trial_id} trained past {train_time_s:.2f} s")
        if time.monotonic() > deadline:
            raise TimeoutError(f"trial {trial_id} trained nothing past {train_time_s:.2f} s in {timeout_s:.0f} s")
        time.sleep(0.05)
