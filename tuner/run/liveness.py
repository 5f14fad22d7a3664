"""The driver watching its own progress: waiting is said out loud, a stall ends the search.

Legitimately waiting for capacity (autoscaled nodes, a price guard's limit, trials queued
behind running ones) is not a hang: once a minute the console says what is pending and
what the cluster has free. A search that cannot progress at all (nothing running or
pending, trials left, the searcher suggests none) exits within ``stall_timeout_s`` with
one line that names the cause. A trial that fits no node the cluster can ever provide is
refused before the search starts (:func:`check_capacity`).

The last view of the trials' states also tells the driver, after ``fit`` returns, whether
the search finished or was interrupted (Ctrl-C): Tune ends both the same way.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any, Optional

from ray.tune import Callback
from ray.tune.experiment import Trial

from tuner.cluster.launcher import describe, fits
from tuner.config import ConfigError, LivenessConfig

UNFINISHED = (Trial.RUNNING, Trial.PENDING, Trial.PAUSED)


class SearchStalled(RuntimeError):
    """The search cannot progress; the message says why and what to do."""


def check_capacity(bundle: Mapping[str, float], workers: int, nodes: list[dict[str, Any]], where: str) -> None:
    """Refuse, before anything starts, a trial no live node can hold (a cluster that does not autoscale)."""
    holding = sum(1 for n in nodes if n.get("Alive") and fits(bundle, n.get("Resources", {})))
    if holding and (workers == 1 or _slots(bundle, nodes) >= workers):
        return
    shapes = {
        describe({k: v for k, v in n.get("Resources", {}).items() if k in bundle}) for n in nodes if n.get("Alive")
    }
    have = ", ".join(sorted(shapes)) or "none"
    need = f"{workers} workers of {describe(bundle)}" if workers > 1 else f"a trial needing {describe(bundle)}"
    raise ConfigError(
        f"no node of {where} fits {need} (nodes: {have}): lower search.resources, or, if the cluster "
        "autoscales, name its config (cluster.launcher_config=cluster/aws.yaml)"
    )


def _slots(bundle: Mapping[str, float], nodes: list[dict[str, Any]]) -> int:
    total = 0
    for n in nodes:
        if n.get("Alive"):
            counts = [int(n["Resources"].get(k, 0) // v) for k, v in bundle.items() if v]
            total += min(counts) if counts else 0
    return total


class Watchdog(Callback):
    """A Tune callback on the driver: status lines while trials wait, :class:`SearchStalled` on a stall."""

    def __init__(
        self,
        cfg: LivenessConfig,
        num_samples: int,
        free: Callable[[], Mapping[str, float]],
        say: Callable[[str], None] = print,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cfg, self.num_samples, self.free, self.say, self.clock = cfg, num_samples, free, say, clock
        self.statuses: Counter[str] = Counter()  # the last step's view: what the search was doing
        self._idle_since: Optional[float] = None
        self._waiting_since: Optional[float] = None
        self._last_status_s: Optional[float] = None

    def __getstate__(self) -> dict[str, Any]:  # Tune pickles callbacks; the hooks stay here
        return {k: v for k, v in self.__dict__.items() if k not in ("free", "say", "clock")}

    @property
    def unfinished(self) -> int:
        return sum(self.statuses[s] for s in UNFINISHED)

    def on_step_end(self, iteration: int, trials: list[Trial], **info: Any) -> None:
        now = self.clock()
        self.statuses = Counter(t.status for t in trials)
        self._check_stall(now, len(trials))
        self._say_waiting(now, [t for t in trials if t.status == Trial.PENDING])

    def _check_stall(self, now: float, created: int) -> None:
        if self.unfinished or created >= self.num_samples:
            self._idle_since = None
            return
        self._idle_since = self._idle_since if self._idle_since is not None else now
        if now - self._idle_since > self.cfg.stall_timeout_s:
            done = self.statuses[Trial.TERMINATED] + self.statuses[Trial.ERROR]
            raise SearchStalled(
                f"search stalled: {done} of {self.num_samples} trials done, none running or pending, and the "
                f"searcher suggested no new trial for {self.cfg.stall_timeout_s:g} s: run the same command again to "
                "resume (the searcher is rebuilt from the trial list), or start afresh with another name=..."
            )

    def _say_waiting(self, now: float, pending: list[Trial]) -> None:
        if not pending:
            self._waiting_since = self._last_status_s = None
            return
        self._waiting_since = self._waiting_since if self._waiting_since is not None else now
        last = self._last_status_s if self._last_status_s is not None else self._waiting_since
        if now - last < self.cfg.status_interval_s:
            return
        self._last_status_s = now
        needs = Counter(describe(_bundle(t)) for t in pending)
        free = describe({k: v for k, v in self.free().items() if k in ("CPU", "GPU")}) or "nothing"
        running = self.statuses[Trial.RUNNING]
        self.say(
            f"waiting for capacity ({now - self._waiting_since:.0f} s): {len(pending)} trial(s) pending "
            f"({', '.join(f'{n} x {need}' for need, n in needs.items())}), {running} running; free now: {free}"
        )


def _bundle(trial: Trial) -> dict[str, float]:
    """The resources of a trial's first bundle (its own process)."""
    bundles = trial.placement_group_factory.bundles
    return dict(bundles[0]) if bundles else {}
