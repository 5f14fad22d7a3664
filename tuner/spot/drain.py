"""Draining Ray nodes for preemption, and a trial's view of whether its node is draining.

A node drained with reason PREEMPTION and the notice's deadline (the DrainNode RPC Ray's
own autoscaler uses) gets no new work, and Tune does not charge the failure of a trial
whose node went that way to ``max_failures``. Inside a trial, :class:`DrainWatcher` asks
the GCS about twice a second from a background thread, so the training loop reads a
cached value at every step instead of sending an RPC per step.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from typing import Optional

import ray

from tuner import _ray
from tuner.spot.notices import Notice

log = logging.getLogger(__name__)


def drain_node(gcs_address: str, node_id: str, message: str, deadline_s: Optional[float]) -> bool:
    """Ask the GCS to drain ``node_id`` for preemption; True when accepted."""
    accepted, error = _ray.drain_node(gcs_address, node_id, message, deadline_s)
    if not accepted:
        log.error("drain of node %s refused: %s", node_id, error)
    return accepted


class OnceDrain:
    """Drains one node for the first notice that comes (a SIGTERM, a metadata notice); later ones are logged.

    Never raises: a GCS that cannot be reached or refuses is logged, and a later notice may try again."""

    def __init__(self, gcs_address: str, node_id: str) -> None:
        self.gcs_address, self.node_id = gcs_address, node_id
        self.drained: Optional[Notice] = None
        self._lock = threading.Lock()

    def __call__(self, notice: Notice) -> bool:
        with self._lock:
            if self.drained is not None:
                log.warning("%s %s: the node is already draining; not drained again", notice.provider, notice.action)
                return True
            message = f"{notice.provider} spot {notice.action}" + (f" ({notice.detail})" if notice.detail else "")
            try:
                accepted = drain_node(self.gcs_address, self.node_id, message, notice.deadline_s)
            except Exception as exc:  # the GCS unreachable or gone: a notice must never crash its caller
                log.error("drain of node %s failed: %s", self.node_id, exc)
                return False
            if accepted:
                self.drained = notice
                left = notice.remaining_s
                log.warning("drained Ray node %s (%s), deadline in %.0f s", self.node_id[:12], message, left or 0.0)
            return accepted


def draining_nodes() -> dict[str, int]:
    """``{node_id_hex: deadline_ms}`` of nodes being drained (0 = no deadline)."""
    return _ray.draining_nodes()


def node_lost(node_id: str) -> bool:
    """True when the node is dead or draining: a restart caused by it is a preemption."""

    alive = {n["NodeID"]: n["Alive"] for n in ray.nodes()}
    return not alive.get(node_id, False) or node_id in draining_nodes()


def room_elsewhere(node_id: str, needs: Callable[[], Mapping[str, float]]) -> Callable[[], bool]:
    """A probe: whether a live node other than ``node_id``, and not draining, has ``needs()`` free right now
    (asked once, at the first probe: only a trial whose node drains needs it)."""
    wanted: list[Mapping[str, float]] = []

    def probe() -> bool:
        if not wanted:
            wanted.append(needs())
        draining = draining_nodes()
        return any(
            other != node_id and other not in draining and all(free.get(k, 0.0) >= v for k, v in wanted[0].items())
            for other, free in _ray.free_resources_per_node().items()
        )

    return probe


def own_resources() -> dict[str, float]:
    """What this worker process holds, as a bundle elsewhere would need it: without the placement's pin to its
    node's type (``type:...``) and the placement-group and node-specific names Ray adds."""
    held = ray.get_runtime_context().get_assigned_resources()
    return {
        k: float(v) for k, v in held.items() if not k.startswith(("type:", "node:")) and "_group_" not in k and v > 0
    }


class DrainWatcher:
    """Caches whether a node is draining (``draining``) and its deadline (``deadline_s``); once it is, and with a
    ``room`` probe, also whether another node has room for the trial now (``room_elsewhere``)."""

    def __init__(
        self,
        node_id: str,
        interval_s: float,
        probe: Callable[[], dict[str, int]] = draining_nodes,
        room: Optional[Callable[[], bool]] = None,
    ):
        self.node_id, self.interval_s, self._probe, self._room = node_id, interval_s, probe, room
        self.draining = False
        self.deadline_s: Optional[float] = None
        self.room_elsewhere = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tuner-drain-watcher", daemon=True)

    def start(self) -> DrainWatcher:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                nodes = self._probe()
            except Exception as exc:  # the GCS may be briefly unreachable; keep the last answer
                log.debug("draining-node probe failed: %s", exc)
            else:
                if self.node_id in nodes:
                    deadline_ms = nodes[self.node_id]
                    self.deadline_s = deadline_ms / 1000 if deadline_ms else None
                    self.draining = True
            if self.draining and self._room is not None and not self.room_elsewhere:
                try:
                    self.room_elsewhere = self._room()
                except Exception as exc:  # as above: no answer is no room
                    log.debug("room probe failed: %s", exc)
            self._stop.wait(self.interval_s)
