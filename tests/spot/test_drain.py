"""A trial's drain watch: one probe of the GCS in the background, a cached answer for every step."""

from __future__ import annotations

import time

import pytest

from tuner.spot.drain import DrainWatcher


def test_drain_watcher_caches_the_probe() -> None:
    calls = []
    state: dict[str, int] = {}

    def probe() -> dict[str, int]:
        calls.append(1)
        return state

    watcher = DrainWatcher("abc", interval_s=0.05, probe=probe).start()
    try:
        time.sleep(0.2)
        assert not watcher.draining
        state["abc"] = int((time.time() + 60) * 1000)
        time.sleep(0.2)
        assert watcher.draining and watcher.deadline_s == pytest.approx(time.time() + 60, abs=1)
        assert len(calls) < 20  # a few probes, not one per read
    finally:
        watcher.stop()
