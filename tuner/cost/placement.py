"""Price-performance placement: each new trial on the spot type with the lowest expected cost per unit of training.

Throughput is measured as trials run, never assumed. Between two results of one attempt, a
trial's ``train_time_s`` (seconds in the trainer; checkpoint writes excluded) grows by some
seconds while its ``time_attr`` (an epoch, a step) grows by some units: its seconds per unit on
the worker type it runs on. Trials differ in the work one unit takes (a deeper or wider net
takes longer on every type), so each unit is weighted by the trial's relative work, the product
of its hyperparameters raised to the powers the search declares in ``search.work_scaling``
(a ResNet epoch: ``{depth: 1, width: 2}``; batch size does not change an epoch's work): a type's
speed is its seconds per unit of work over every trial that ran there. Declared, not fitted:
with a few trials per type a fit cannot tell a slow type from heavy trials. A type's expected
cost per unit for the next trial is its current spot price x the trial's share of the node (the
ledger's rule) x the seconds per unit predicted for that trial; the trial goes to the cheapest.
A type no trial has run on yet is tried while it would win even if it ran ``explore_speedup``
times faster than the fastest measured one; before any measurement the price alone orders the
types (``placement.by=price`` keeps it so).

A type is offered while it has room: the trials placed there and not finished are fewer than its
nodes allowed by the autoscaler config (``max_workers``: the twin's "cloud" sets 0 when capacity is
gone) times the trials one node holds, an enforcing price guard does not block it, and no trial
has waited ``wait_s`` for it. Otherwise the next best type is chosen, and with none left, any
type. The trial's bundle then asks for a sliver of the chosen type's own resource,
``type:<instance type>`` (declared on that spot type in the cluster config, and on the on-demand
types for every spot type, so the capacity fallback of ``tuner.cost.fallback`` still reaches a
trial that waits): a resource, not a label selector, because Ray's v1 autoscaler launches nodes
for resource demands and ignores label selectors. A trial that
restarts after losing its node, or that a resumed driver finds waiting, is placed afresh before it
asks for a node again (its type may have lost capacity). Multi-worker (elastic) trials are not
placed: their workers go to any spot type.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Optional

from ray.tune import Callback, PlacementGroupFactory
from ray.tune.experiment import Trial

from tuner.cluster.autoscaler import AutoscalerConfig
from tuner.cluster.launcher import per_node, worker_types
from tuner.config import ConfigError, PlacementConfig
from tuner.cost import price_guard
from tuner.cost.fallback import worker_types_by_market
from tuner.cost.pricing import PriceSource, current_spot, node_share
from tuner.result_keys import ATTEMPT_STARTED_S, NODE_GROUP, TRAIN_TIME_S
from tuner.spot.labels import INSTANCE_TYPE
from tuner.text import usd

PLACED_UNITS = 0.001  # of a node's type resource (1000 declared): any number of trials fit beside each other


def type_resource(instance_type: str) -> str:
    """The custom resource of nodes of ``instance_type`` (and of the on-demand types) in the cluster config."""
    return f"type:{instance_type}"


def usd_per_unit(usd_per_hour: float, share: float, seconds_per_unit: float) -> float:
    """Expected cost of one unit of training (an epoch, a step) on a node type: its price x the trial's share
    of the node x the unit's seconds there. The rule of the live placement and of the planner's type choice."""
    return usd_per_hour * share * seconds_per_unit / 3600.0


# The placement lives in the driver process, where Tune calls :func:`trial_resources` for each new
# trial through a copy of the trainable (the price guard's blocked types live there too).
_ACTIVE: Optional[Placement] = None


@dataclass(frozen=True)
class NodeType:
    """A spot worker type trials can be placed on."""

    name: str  # the cluster config's worker type (the ray.io/node-group label)
    instance_type: str
    share: float  # of the node's price a trial pays (GPUs or vCPUs used / the node's)


@dataclass(frozen=True)
class Decision:
    node_type: str
    instance_type: str
    usd_per_unit: float  # expected; relative only (price x share) before anything is measured
    reason: str


class Throughput:
    """Seconds per unit of work per type, from the trials' results (a trial's work per unit: :meth:`work`)."""

    def __init__(self, work_scaling: Mapping[str, float]) -> None:
        self.work_scaling = dict(work_scaling)
        self.totals: dict[str, list[float]] = {}  # type -> [seconds, units x work]
        self._last: dict[str, tuple[str, str, float, float]] = {}  # trial -> (attempt, type, train_time_s, units)

    def work(self, config: Mapping[str, Any]) -> float:
        """The relative work of one unit of a trial of ``config``: the product of its hyperparameters' powers."""
        return float(math.prod(float(config[p]) ** e for p, e in self.work_scaling.items()))

    def observe(
        self, trial_id: str, config: Mapping[str, Any], node_type: str, attempt: str, train_time_s: float, units: float
    ) -> None:
        last = self._last.get(trial_id)
        self._last[trial_id] = (attempt, node_type, train_time_s, units)
        if last is None or last[:2] != (attempt, node_type) or units <= last[3] or train_time_s <= last[2]:
            return
        seconds_work = self.totals.setdefault(node_type, [0.0, 0.0])
        seconds_work[0] += train_time_s - last[2]
        seconds_work[1] += (units - last[3]) * self.work(config)

    def seconds_per_unit(self, config: Mapping[str, Any]) -> dict[str, float]:
        """Predicted seconds per unit of a trial of ``config`` on each measured type."""
        work = self.work(config)
        return {t: seconds / done * work for t, (seconds, done) in self.totals.items()}


class Placement(Callback):
    """The driver's side: measures throughput from results, chooses a type for each new trial, says why."""

    def __init__(
        self,
        cfg: PlacementConfig,
        time_attr: str,
        bundle: dict[str, float],
        types: list[NodeType],
        price: Callable[[str], Optional[float]],
        slots: Callable[[], Mapping[str, int]],
        work_scaling: Mapping[str, float],
        say: Callable[[str], None] = print,
        tag: Optional[Callable[[Trial, dict[str, str]], None]] = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        global _ACTIVE
        self.cfg, self.time_attr, self.bundle, self.types = cfg, time_attr, bundle, types
        self.price, self.slots, self.say, self.tag, self.clock = price, slots, say, tag, clock
        self.throughput = Throughput(work_scaling)
        self.short: set[str] = set()  # types a trial has waited wait_s for, until a trial runs there again
        self.decided: dict[str, list[Decision]] = {}  # config key -> decisions not yet matched to a started trial
        self.decisions: dict[str, Decision] = {}  # trial id -> its decision
        self.replacements: dict[str, Decision] = {}  # trial id -> where it goes after its node's notice
        self.running: dict[str, str] = {}  # trial id -> its chosen type, until the trial ends
        self.waiting_since: dict[str, float] = {}
        self._first_step = True
        _ACTIVE = self

    def __getstate__(self) -> dict[str, Any]:  # Tune pickles callbacks; the hooks stay here
        return {k: v for k, v in self.__dict__.items() if k not in ("price", "slots", "say", "tag", "clock")}

    def choose(self, config: Mapping[str, Any]) -> Optional[Decision]:
        """The type for a new trial of ``config``; None when no type is offered (any type will do)."""
        decision = self.rank(config)
        if decision is not None:
            self.decided.setdefault(config_key(config), []).append(decision)
        return decision

    def replace(self, trial: Trial, reclaimed: str) -> Optional[Decision]:
        """The type for a trial whose node of instance type ``reclaimed`` got a notice: the choice of a new trial,
        without that type. Kept for the trial's restart (:meth:`place_again`) and counted on its type meanwhile."""
        decision = self.rank(trial.config, exclude=frozenset({reclaimed}))
        if decision is not None:
            self.replacements[trial.trial_id] = decision
        return decision

    def rank(self, config: Mapping[str, Any], exclude: frozenset[str] = frozenset()) -> Optional[Decision]:
        """The offered type with the lowest expected cost per unit for ``config``, not of an ``exclude`` instance
        type; None when no type is offered."""
        blocked, room = price_guard.blocked() | exclude, self.slots()  # room: one read of the autoscaler config
        offered = [
            (t, p)
            for t in self.types
            if t.instance_type not in blocked and t.name not in self.short and self.live(t.name) < room.get(t.name, 0)
            for p in [self.price(t.instance_type)]
            if p is not None
        ]
        if not offered:
            return None
        unit = self.time_attr
        measured = self.throughput.seconds_per_unit(config) if self.cfg.by == "throughput" else {}
        fastest = min(measured.values(), default=1.0)
        ranked = []
        for t, price in offered:
            seconds = measured.get(t.name)
            cost = usd_per_unit(price, t.share, seconds if seconds is not None else fastest / self.cfg.explore_speedup)
            if not measured:
                why = (
                    "no type measured yet: the cheapest spot price"
                    if self.cfg.by == "throughput"
                    else "placement.by=price"
                )
                why = f"{usd(price)}/h x {t.share:.2g} of a node; {why}"
            elif seconds is None:
                why = (
                    f"not measured yet; tried while it could be cheapest "
                    f"({self.cfg.explore_speedup:g}x the fastest measured)"
                )
            else:
                why = f"{usd(price)}/h x {t.share:.2g} of a node x {seconds:.3g} s/{unit} measured = {usd(cost)}/{unit}"
            ranked.append((cost, t, why))
        ranked.sort(key=lambda r: r[0])
        cost, best, why = ranked[0]
        if len(ranked) > 1 and measured:
            runner_cost, runner, _ = ranked[1]
            why += f"; next {runner.instance_type} {usd(runner_cost)}/{unit}"
        return Decision(best.name, best.instance_type, cost, why)

    def live(self, node_type: str) -> int:
        """Trials placed on ``node_type`` that have not finished (waiting ones and replacements included)."""
        waiting = sum(1 for queue in self.decided.values() for d in queue if d.node_type == node_type)
        replacing = sum(1 for d in self.replacements.values() if d.node_type == node_type)
        return waiting + replacing + sum(1 for t in self.running.values() if t == node_type)

    def on_trial_start(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        waiting = self.decided.get(config_key(trial.config))
        if trial.trial_id in self.decisions or not waiting:
            return
        decision = self.decisions[trial.trial_id] = waiting.pop(0)
        self.running[trial.trial_id] = decision.node_type
        self.waiting_since.pop(trial.trial_id, None)
        self.say(f"placement: trial {trial.trial_id} -> {decision.instance_type} ({decision.reason})")
        if self.tag is not None:
            self.tag(trial, {"tuner.placement": decision.instance_type, "tuner.placement_reason": decision.reason})

    def on_trial_result(
        self, iteration: int, trials: list[Trial], trial: Trial, result: dict[str, Any], **info: Any
    ) -> None:
        node_type = result.get(NODE_GROUP)
        if not node_type or self.time_attr not in result or TRAIN_TIME_S not in result:
            return
        self.short.discard(node_type)
        self.throughput.observe(
            trial.trial_id,
            trial.config,
            node_type,
            str(result.get(ATTEMPT_STARTED_S, "")),
            float(result[TRAIN_TIME_S]),
            float(result[self.time_attr]),
        )

    def place_again(self, trial: Trial) -> None:
        """Place a trial about to ask for a node again (not running: Tune allows the change): where capacity
        was asked for at its node's notice (:meth:`replace`), else afresh."""
        self.running.pop(trial.trial_id, None)
        self.decisions.pop(trial.trial_id, None)
        replacement = self.replacements.pop(trial.trial_id, None)
        if replacement is not None:
            self.decided.setdefault(config_key(trial.config), []).append(replacement)
        trial.update_resources(resources_on(self.bundle, replacement or self.choose(trial.config)))

    def on_trial_recover(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        self.place_again(trial)

    def on_step_begin(self, iteration: int, trials: list[Trial], **info: Any) -> None:
        for trial in trials:  # paused to move off a node with a notice: it resumes where capacity was asked for
            if trial.status == Trial.PAUSED and trial.trial_id in self.replacements:
                self.place_again(trial)
        if self._first_step:  # a resumed search: its waiting trials were placed by the driver before
            self._first_step = False
            for trial in trials:
                if trial.status == Trial.PENDING and config_key(trial.config) not in self.decided:
                    self.place_again(trial)

    def on_trial_complete(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        self.running.pop(trial.trial_id, None)
        self.replacements.pop(trial.trial_id, None)

    def on_trial_error(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        self.running.pop(trial.trial_id, None)
        self.replacements.pop(trial.trial_id, None)

    def on_step_end(self, iteration: int, trials: list[Trial], **info: Any) -> None:
        """A trial waiting ``wait_s`` for its type: the type is short of capacity, new trials go elsewhere."""
        now = self.clock()
        pending = {t.trial_id: t for t in trials if t.status == Trial.PENDING}
        self.waiting_since = {tid: self.waiting_since.get(tid, now) for tid in pending}
        for tid, since in self.waiting_since.items():
            waiting = self.decided.get(config_key(pending[tid].config))
            if waiting and now - since >= self.cfg.wait_s and waiting[0].node_type not in self.short:
                self.short.add(waiting[0].node_type)
                self.say(
                    f"placement: trial {tid} waited {now - since:.0f} s for {waiting[0].instance_type}: "
                    "new trials go to other types until one runs there again"
                )


def config_key(config: Mapping[str, Any]) -> str:
    return repr(sorted(config.items()))


def trial_resources(bundle: dict[str, float], config: dict[str, Any]) -> Any:
    """A new trial's resources (``tune.with_resources`` calls this in the driver): its bundle, on the
    placement's chosen type (or an on-demand one), off the price guard's blocked types."""
    return resources_on(bundle, _ACTIVE.choose(config) if _ACTIVE is not None else None)


def pinned(bundle: dict[str, float], decision: Optional[Decision]) -> dict[str, float]:
    """``bundle`` asking for a sliver of the decided type's resource (unchanged without a decision)."""
    return bundle if decision is None else {**bundle, type_resource(decision.instance_type): PLACED_UNITS}


def resources_on(bundle: dict[str, float], decision: Optional[Decision]) -> Any:
    """A trial's resources: ``bundle`` on the decided type, off the price guard's blocked types."""
    bundle = pinned(bundle, decision)
    blocked = price_guard.blocked()
    if not blocked:
        return PlacementGroupFactory([bundle])
    return PlacementGroupFactory([bundle], bundle_label_selector=[{INSTANCE_TYPE: f"!in({','.join(sorted(blocked))})"}])


def placement_for(
    cfg: PlacementConfig,
    search: Any,
    launcher: Optional[dict[str, Any]],
    autoscaler_path: Optional[str],
    prices: PriceSource,
    region: str,
    say: Callable[[str], None] = print,
    tag: Optional[Callable[[Trial, dict[str, str]], None]] = None,
) -> Optional[Placement]:
    """The placement for this cluster, or None (and none active): disabled, no launcher config,
    multi-worker trials, no on-demand fallback steering the autoscaler config (``autoscaler_path``:
    the capacity gate's), or fewer than two priced spot types that declare their resource (said).
    Spot types of which none is priced are a config error."""
    global _ACTIVE
    _ACTIVE = None
    if not cfg.enabled or launcher is None or search.resources.width != (1, 1):
        return None
    spot, _ = worker_types_by_market(launcher, {})
    if not spot:
        return None
    launched = worker_types(launcher)

    def price(itype: str) -> Optional[float]:
        return current_spot(prices, itype, region, [], time.time())

    types, unpriced, unsteerable = [], [], []
    for name in sorted(spot):
        itype = launched[name].get("labels", {}).get(INSTANCE_TYPE)
        shape = prices.shape(itype) if itype else None
        if not itype or shape is None or price(itype) is None:
            unpriced.append(name)
        elif type_resource(itype) not in launched[name].get("resources", {}):
            unsteerable.append(f'"{type_resource(itype)}": 1000 to {name}')
        else:
            types.append(NodeType(name, itype, node_share(search.resources.cpu, search.resources.gpu, shape)))
    if autoscaler_path is None:
        say(
            "placement: off: the on-demand types carry every spot type's resource, and without the fallback's caps on "
            "them (fallback.enabled, cluster.autoscaler_config) Ray's autoscaler would launch them for placed trials"
        )
        return None
    if not types and not unsteerable:
        raise ConfigError(
            f"placement: no spot worker type of the cluster config is priced ({', '.join(unpriced)}): label each "
            f"{INSTANCE_TYPE}: <a type in the price catalog>, or set placement.enabled=false"
        )
    if len(types) < 2:
        why = (
            f"add {', '.join(unsteerable)} in resources (as in cluster/aws.yaml)"
            if unsteerable
            else f"one priced spot type ({types[0].instance_type}): nothing to choose"
        )
        say(f"placement: off: {why}")
        return None
    autoscaler = AutoscalerConfig(autoscaler_path)

    def slots() -> dict[str, int]:
        """Trials each type can hold now: its nodes allowed by the autoscaler config x trials per node."""
        now = autoscaler.read()["available_node_types"]
        return {
            t.name: int(now.get(t.name, {}).get("max_workers", 0))
            * per_node(search.resources.bundle, launched[t.name].get("resources", {}))
            for t in types
        }

    how = "measured cost per " + search.time_attr if cfg.by == "throughput" else "spot price"
    say(f"placement: each new trial on the spot type with the lowest {how} ({len(types)} types)")
    return Placement(cfg, search.time_attr, search.resources.bundle, types, price, slots, search.work_scaling, say, tag)
