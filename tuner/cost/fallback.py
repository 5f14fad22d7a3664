"""Spot first, on-demand when a deadline needs it: Can't Be Late's rule, for the planner and the live cluster.

The rule (Wu et al., "Can't Be Late", NSDI 2024) lives in :class:`Fallback`: work that must
be done by a deadline waits for spot capacity while its slack (the time left once a restart
and the remaining work are paid) is positive, takes on-demand capacity once the slack is
gone, and goes back to spot when the slack allows a restart with a margin to spare. The
planner (``tuner.plan.simulate``) applies it to each stream of a replayed campaign; the
driver applies it to each trial waiting for a node (:class:`CapacityGate`), whose deadline
is its queueing time plus ``deadline_factor`` times its expected run on on-demand capacity.

Ray's autoscaler cannot say "spot while it can be had, on-demand after a wait" by itself:
its v2 ranks node types by ``priority`` but on AWS keeps asking for a spot type whose
launches fail, and it places new trials on any free node, on-demand ones included. So the
gate steers the autoscaler's own config (``tuner.cluster.autoscaler``): closed, the
on-demand types rank below spot and cannot grow beyond the nodes they have (at least their
``min_workers`` base); open, they rank first and may grow to their ``max_workers``. When it
closes again, the on-demand nodes above the base are drained: no new trials go there, the
running ones finish, and the autoscaler releases the idle nodes.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Optional, Protocol

import ray
from ray.tune import Callback
from ray.tune.experiment import Trial

from tuner.cluster.autoscaler import AutoscalerConfig
from tuner.cluster.launcher import worker_types
from tuner.result_keys import TRAIN_TIME_S
from tuner.spot.drain import drain_node
from tuner.spot.labels import MARKET, NODE_GROUP

log = logging.getLogger(__name__)

SPOT_FIRST = 10  # node type priority of spot types (autoscaler v2: higher wins between equal fits)


@dataclass(frozen=True)
class Fallback:
    """Can't Be Late's rule. ``restart_s``: a new node, the process, the checkpoint restored."""

    restart_s: float
    return_margin_s: float = 0.0

    def slack_s(self, deadline_s: float, now_s: float, work_left_s: float) -> float:
        """Time to spare if the work (re)started now and then ran without a break."""
        return deadline_s - (now_s + self.restart_s + work_left_s)

    def on_demand_now(self, slack_s: float) -> bool:
        return slack_s <= 0

    def back_to_spot(self, slack_s: float) -> bool:
        return slack_s > self.return_margin_s + self.restart_s


class Nodes(Protocol):
    """The cluster's nodes of a type, as the gate needs them."""

    def alive(self, node_type: str) -> list[str]: ...

    def drain(self, node_ids: list[str]) -> None: ...


class RayNodes:
    """Nodes by their ``ray.io/node-group`` label; drained like a spot notice, without a deadline."""

    def alive(self, node_type: str) -> list[str]:
        return [n["NodeID"] for n in ray.nodes() if n["Alive"] and n["Labels"].get(NODE_GROUP) == node_type]

    def drain(self, node_ids: list[str]) -> None:
        for node_id in node_ids:
            drain_node(ray.get_runtime_context().gcs_address, node_id, "tuner: back to spot", None)


class CapacityGate(Callback):
    """The driver's side of the rule, checked every ``interval_s``: on-demand capacity opens when a
    trial waiting for a node runs out of slack, and closes when no waiting trial needs it."""

    def __init__(
        self,
        rule: Fallback,
        deadline_factor: float,
        expected_trial_s: float,
        time_attr: str,
        max_t: float,
        autoscaler: AutoscalerConfig,
        spot_types: list[str],
        on_demand: dict[str, tuple[int, int]],
        nodes: Nodes,
        interval_s: float,
        say: Callable[[str], None] = print,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.rule, self.deadline_factor, self.expected_trial_s = rule, deadline_factor, expected_trial_s
        self.time_attr, self.max_t = time_attr, max_t
        self.autoscaler, self.spot_types, self.on_demand = autoscaler, spot_types, on_demand  # type -> (base, most)
        self.nodes, self.interval_s, self.say, self.clock = nodes, interval_s, say, clock
        self.open = False
        self.waiting_since: dict[str, float] = {}
        self.unit_s: dict[str, float] = {}  # per trial: training seconds per time_attr unit
        self.opened_after_s: list[float] = []  # how long the longest-waiting trial had waited, at each opening
        self._checked_s = 0.0
        self._caps: dict[str, int] = {}
        self._apply()

    def __getstate__(self) -> dict[str, Any]:  # Tune pickles callbacks; the hooks stay here
        return {k: v for k, v in self.__dict__.items() if k not in ("autoscaler", "nodes", "say", "clock")}

    def trial_s(self) -> float:
        """A trial's expected run, from what trials measured so far (else the configured guess)."""
        if not self.unit_s:
            return self.expected_trial_s
        return statistics.median(self.unit_s.values()) * self.max_t

    def on_trial_result(
        self, iteration: int, trials: list[Trial], trial: Trial, result: dict[str, Any], **info: Any
    ) -> None:
        reached = float(result.get(self.time_attr, 0) or 0)
        if reached > 0 and result.get(TRAIN_TIME_S):
            self.unit_s[trial.trial_id] = float(result[TRAIN_TIME_S]) / reached

    def on_step_end(self, iteration: int, trials: list[Trial], **info: Any) -> None:
        now = self.clock()
        if now - self._checked_s < self.interval_s:
            return
        self._checked_s = now
        pending = {t.trial_id for t in trials if t.status == Trial.PENDING}
        self.waiting_since = {t: self.waiting_since.get(t, now) for t in pending}
        work_s = self.trial_s()
        slack = min(
            (
                self.rule.slack_s(since + self.deadline_factor * (work_s + self.rule.restart_s), now, work_s)
                for since in self.waiting_since.values()
            ),
            default=float("inf"),
        )
        if not self.open and self.rule.on_demand_now(slack):
            self.open = True
            self.opened_after_s.append(now - min(self.waiting_since.values()))
            self.say(
                f"capacity: a trial waited {self.opened_after_s[-1]:.0f} s for spot and its deadline needs it "
                f"running: on-demand opened ({', '.join(self.on_demand)})"
            )
        elif self.open and self.rule.back_to_spot(slack):
            self.open = False
            above_base = [n for t, (base, _) in self.on_demand.items() for n in self.nodes.alive(t)[base:]]
            self.nodes.drain(above_base)
            self.say(
                "capacity: no waiting trial needs on-demand: spot first again"
                + (f"; {len(above_base)} on-demand node(s) drained, released when idle" if above_base else "")
            )
        self._apply()

    def _apply(self) -> None:
        """Caps and ranks in the autoscaler's config, written only when they change."""
        caps = {
            t: most if self.open else max(base, len(self.nodes.alive(t))) for t, (base, most) in self.on_demand.items()
        }
        if caps == self._caps:
            return
        self._caps = caps
        ranked = {t: {"priority": SPOT_FIRST} for t in self.spot_types}
        for name, cap in caps.items():
            ranked[name] = {"max_workers": cap, "priority": SPOT_FIRST + 1 if self.open else SPOT_FIRST - 1}
        self.autoscaler.update_types(ranked)


def worker_types_by_market(
    launcher: dict[str, Any], caps: dict[str, int]
) -> tuple[list[str], dict[str, tuple[int, int]]]:
    """(spot types, {on-demand type: (base, max)}) of a launcher config; ``caps`` bound the max (the twin's)."""

    spot, on_demand = [], {}
    for name, node_type in worker_types(launcher).items():
        if node_type.get("labels", {}).get(MARKET) == "spot":
            spot.append(name)
        else:
            most = min(int(node_type.get("max_workers", 0)), caps.get(name, 10**6))
            on_demand[name] = (min(int(node_type.get("min_workers", 0)), most), most)
    return spot, on_demand


def gate_for(
    cfg: Any,
    search: Any,
    launcher: dict[str, Any],
    autoscaler_path: str,
    caps: dict[str, int],
    nodes: Optional[Nodes] = None,
) -> Optional[CapacityGate]:
    """The gate for this cluster, or None when it has no on-demand type to fall back to."""
    spot, on_demand = worker_types_by_market(launcher, caps)
    if not spot or not on_demand:
        return None
    rule = Fallback(cfg.restart_s, cfg.return_margin_s)
    return CapacityGate(
        rule,
        cfg.deadline_factor,
        cfg.expected_trial_s,
        search.time_attr,
        search.max_t,
        AutoscalerConfig(autoscaler_path),
        spot,
        on_demand,
        nodes or RayNodes(),
        cfg.interval_s,
    )
