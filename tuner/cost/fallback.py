"""Spot first, on-demand when a deadline needs it: Can't Be Late's rule, for the planner and the live cluster.

The rule (Wu et al., "Can't Be Late", NSDI 2024) in one place: work that must be done by
a deadline waits for spot capacity while its slack (the time left once a restart and the
remaining work are paid) is positive, runs on on-demand capacity once the slack is gone,
and goes back to spot when the slack allows a restart with a margin to spare. The planner
(``tuner.plan.simulate``) applies it to each stream of a replayed campaign; the driver
applies it to each trial waiting for a node (:class:`CapacityGate`): the deadline of a
trial is its queueing time plus ``deadline_factor`` times what it would take on on-demand.

Ray's autoscaler cannot express the preference by itself on AWS (its v2 ranks node types by
``priority`` but keeps asking for a spot type whose launches fail), so the gate edits the
autoscaler's own config: while no waiting trial has run out of slack, the on-demand types
are capped at their base (``min_workers``) and rank below spot; once one has, they open
up to their ``max_workers`` and rank first. When the gate closes again, on-demand nodes
above the base are drained (no new trials; their running ones finish) and released when idle.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional

from ray.tune import Callback
from ray.tune.experiment import Trial

log = logging.getLogger(__name__)

SPOT_FIRST, ON_DEMAND_FIRST = 10, 20  # node type priorities (autoscaler v2: higher wins among equals)


@dataclass(frozen=True)
class Fallback:
    """Can't Be Late's rule. ``restart_s``: a new node, the process, the checkpoint restored."""

    restart_s: float
    return_margin_s: float = 0.0

    def slack_s(self, deadline_s: float, now_s: float, work_left_s: float) -> float:
        """Time to spare if the work restarted now and then ran without a break."""
        return deadline_s - (now_s + self.restart_s + work_left_s)

    def on_demand_now(self, slack_s: float) -> bool:
        return slack_s <= 0

    def back_to_spot(self, slack_s: float) -> bool:
        return slack_s > self.return_margin_s + self.restart_s


class AutoscalerTypes:
    """The node types in the autoscaler's config file (the twin's, or ``~/ray_bootstrap_config.yaml`` on a
    ``ray up`` head): read, changed, written back atomically. The autoscaler re-reads it every update."""

    def __init__(self, path: str) -> None:
        from pathlib import Path

        self.path = Path(path).expanduser()

    def update(self, changes: dict[str, dict[str, int]]) -> None:
        """``{type: {"max_workers": n, "priority": p}}``; the cluster's ``max_workers`` follows the types'."""
        import yaml

        config = yaml.safe_load(self.path.read_text())  # JSON is YAML too
        types = config["available_node_types"]
        for name, fields in changes.items():
            types[name].update(fields)
        config["max_workers"] = sum(t.get("max_workers", 0) for n, t in types.items() if n != config["head_node_type"])
        staged = self.path.with_suffix(".tmp")
        staged.write_text(yaml.safe_dump(config) if self.path.suffix in (".yaml", ".yml") else __import__("json").dumps(config))
        staged.replace(self.path)


class CapacityGate(Callback):
    """The driver's side of the rule: on-demand capacity opens when a waiting trial runs out of slack."""

    def __init__(self, rule: Fallback, deadline_factor: float, trial_s: Callable[[], Optional[float]],
                 types: AutoscalerTypes, spot_types: list[str], on_demand: dict[str, tuple[int, int]],
                 drain: Callable[[], list[str]], say: Callable[[str], None] = print,
                 clock: Callable[[], float] = time.time) -> None:  # fmt: skip
        self.rule, self.deadline_factor, self.trial_s = rule, deadline_factor, trial_s
        self.types, self.spot_types, self.on_demand = types, spot_types, on_demand  # on-demand type -> (base, max)
        self.drain, self.say, self.clock = drain, say, clock
        self.waiting_since: dict[str, float] = {}
        self.open = False
        self.opened_at_s: Optional[float] = None
        self.opened_after_s: list[float] = []  # how long the first waiting trial waited before each opening
        self._apply()

    def __getstate__(self) -> dict[str, Any]:  # Tune pickles callbacks; the hooks stay here
        return {k: v for k, v in self.__dict__.items() if k not in ("trial_s", "types", "drain", "say", "clock")}

    def _apply(self) -> None:
        changes = {t: {"priority": ON_DEMAND_FIRST if self.open else SPOT_FIRST} for t in self.spot_types}
        for name, (base, most) in self.on_demand.items():
            changes[name] = {"max_workers": most if self.open else base, "min_workers": base,
                             "priority": ON_DEMAND_FIRST + 1 if self.open else SPOT_FIRST - 1}  # fmt: skip
        self.types.update(changes)

    def on_step_end(self, iteration: int, trials: list[Trial], **info: Any) -> None:
        now = self.clock()
        pending = {t.trial_id for t in trials if t.status == Trial.PENDING}
        self.waiting_since = {t: self.waiting_since.get(t, now) for t in pending}
        expected_s = self.trial_s()
        if expected_s is None or not self.waiting_since:
            if self.open and not pending:
                self._close(now)
            return
        slack = min(self.rule.slack_s(since + self.deadline_factor * (expected_s + self.rule.restart_s), now, expected_s)
                    for since in self.waiting_since.values())  # fmt: skip
        if not self.open and self.rule.on_demand_now(slack):
            self.open, self.opened_at_s = True, now
            self.opened_after_s.append(now - min(self.waiting_since.values()))
            self._apply()
            self.say(f"capacity: {len(pending)} trial(s) waited {self.opened_after_s[-1]:.0f} s for spot and the "
                     f"deadline needs them running: on-demand opened ({', '.join(self.on_demand)})")  # fmt: skip
        elif self.open and self.rule.back_to_spot(slack):
            self._close(now)

    def _close(self, now: float) -> None:
        self.open = False
        self._apply()
        drained = self.drain()
        self.say("capacity: no trial needs on-demand any more: spot first again"
                 + (f"; {len(drained)} on-demand node(s) drained, released when idle" if drained else ""))
