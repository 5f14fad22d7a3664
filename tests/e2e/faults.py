"""Faults for tests on the local twin: what the product's own injection does (``LocalTwin.reclaim``,
``heartbeat.wait_trained_past``), from a test process that is not a Ray driver."""

from __future__ import annotations

from collections.abc import Callable


def trained_past(trial_id: str, train_time_s: float, running: Callable[[], bool], timeout_s: float = 600) -> None:
    """``tuner.trial.heartbeat.wait_trained_past``, connected to the twin ("auto") for the wait only."""
    import ray

    from tuner.trial.heartbeat import wait_trained_past

    connected = ray.is_initialized()
    if not connected:
        ray.init(address="auto", logging_level="ERROR", log_to_driver=False)
    try:
        wait_trained_past(trial_id, train_time_s, running, timeout_s)
    finally:
        if not connected:
            ray.shutdown()
