"""The local twin's spot capacity following a real trace, time-compressed."""

from __future__ import annotations

import threading
import time

from tuner.cluster.twin import LocalTwin
from tuner.plan.traces import Market


class TraceInjector:
    """Spot capacity of the local twin (``cluster=local_spot``) that comes and goes as a trace says,
    time-compressed.

    Trace zone ``z`` stands for worker type ``node_types[z]`` with capacity 1: the type's maximum is
    1 while the zone is available and 0 while it is not, so the twin's own autoscaler terminates the
    node (the trial on it is lost) and launches a new one for waiting trials once capacity is back,
    as EC2 does with spot capacity. A tick of the trace lasts ``tick_s`` real seconds.
    """

    def __init__(
        self, twin: LocalTwin, node_types: dict[int, str], market: Market, first_tick: int, tick_s: float
    ) -> None:
        self.twin, self.node_types, self.market = twin, node_types, market
        self.first_tick, self.tick_s = first_tick, tick_s
        self.open: set[int] = set()
        self.removals = 0
        self.returns_s: list[float] = []  # unix times at which a zone's capacity came back

    def available(self, zone: int, tick: int) -> bool:
        trace = self.market.zones[zone].available
        return tick >= len(trace) or trace[tick]

    def start(self) -> None:
        """Capacity as at the first tick (call before the twin starts)."""
        for zone in self.node_types:
            self._set(zone, self.available(zone, self.first_tick))

    def run(self, ticks: int, stop: threading.Event) -> None:
        """Follow ``ticks`` ticks of the trace from the first, on an absolute schedule."""
        origin = time.monotonic()
        for step in range(1, ticks + 1):
            if stop.wait(max(0.0, origin + step * self.tick_s - time.monotonic())):
                return
            for zone in self.node_types:
                self._set(zone, self.available(zone, self.first_tick + step))

    def restore_all(self) -> None:
        """Every zone available again (after the traced window): the campaign may finish."""
        for zone in self.node_types:
            self._set(zone, True)

    def _set(self, zone: int, available: bool) -> None:
        if available != (zone in self.open):
            self.twin.set_max_workers(self.node_types[zone], int(available))
            if available:
                self.open.add(zone)
                self.returns_s.append(time.time())
            else:
                self.open.discard(zone)
                self.removals += 1
