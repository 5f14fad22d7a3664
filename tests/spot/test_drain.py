"""A trial's drain watch: one probe of the GCS in the background, a cached answer for every step."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from tuner.spot.drain import DrainWatcher


def wait_until(predicate: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline
        time.sleep(0.01)


def test_drain_watcher_caches_the_probe() -> None:
    calls = []
    state: dict[str, int] = {}

    def probe() -> dict[str, int]:
        calls.append(1)
        return state

    watcher = DrainWatcher("abc", interval_s=0.05, probe=probe).start()
    try:
        wait_until(lambda: len(calls) >= 2)  # a probe's empty answer has been applied
        assert not watcher.draining
        state["abc"] = int((time.time() + 60) * 1000)
        probes = len(calls)
        wait_until(lambda: watcher.draining)
        assert watcher.deadline_s == pytest.approx(time.time() + 60, abs=1)
        assert len(calls) - probes < 20  # a few probes, not one per read
    finally:
        watcher.stop()
