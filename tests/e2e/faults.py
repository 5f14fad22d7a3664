"""Faults injected on the local twin the way they happen in a cloud: a spot instance reclaimed, with a notice
first (the drain the agent sends) or without one. The twin's "cloud" takes the node's type's capacity away
(``max_workers`` 0: its autoscaler terminates the node, as EC2 terminates a reclaimed instance) and, once the
node is gone, gives it back."""

from __future__ import annotations

import time
from typing import Callable, Optional

from tuner import _ray
from tuner.cluster.twin import LocalTwin
from tuner.spot.drain import drain_node

GONE_TIMEOUT_S = 60.0


def reclaim(twin: LocalTwin, node_id: str, node_type: str, notice_s: Optional[float] = None, back: bool = True) -> int:
    """Take the node away (at the deadline of a notice of ``notice_s``, if given: the cloud's rule, not a wait for
    anything); with ``back``, its type has capacity again once it is gone. Returns the type's capacity before (to
    give it back later with ``twin.set_max_workers``). The sleep is the notice itself: a cloud takes the node at
    the deadline whatever the trial did meanwhile."""
    gcs = _ray.bootstrap_address("auto")
    if notice_s:
        assert drain_node(gcs, node_id, "test spot notice", time.time() + notice_s)
        time.sleep(notice_s)
    capacity = int(twin.autoscaler.read()["available_node_types"][node_type]["max_workers"])
    twin.set_max_workers(node_type, 0)
    deadline = time.monotonic() + GONE_TIMEOUT_S
    while _ray.node_info(gcs).get(node_id, {}).get("alive"):
        assert time.monotonic() < deadline, f"node {node_id} of {node_type} was not terminated"
        time.sleep(0.2)
    if back:
        twin.set_max_workers(node_type, capacity)
    return capacity


def trained_past(trial_id: str, train_time_s: float, running: Callable[[], bool], timeout_s: float = 600) -> None:
    """Block until the trial's heartbeat (the driver's store, read as the trial's next attempt reads it) holds
    more than ``train_time_s`` of training: work past the checkpoint taken then, which a kill now loses.
    ``running()`` false (the search ended) fails at once; the limit is a hang guard."""
    import ray

    from tuner.trial.heartbeat import Heartbeat

    connected = ray.is_initialized()
    if not connected:
        ray.init(address="auto", logging_level="ERROR", log_to_driver=False)
    try:
        beats, deadline = Heartbeat(trial_id), time.monotonic() + timeout_s
        while (beats.read() or {}).get("train_time_s", 0.0) <= train_time_s:
            assert running() and time.monotonic() < deadline, f"trial {trial_id} trained nothing past {train_time_s:.2f} s"
            time.sleep(0.05)
    finally:
        if not connected:
            ray.shutdown()
