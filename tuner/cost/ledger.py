"""The cost ledger: what every trial cost on the nodes it ran on, next to on-demand.

Every result a trial reports says where it ran (node id, instance type, market,
zone: Ray node labels) and when. Per trial and node attempt that gives an
interval; its cost is the node's price over the interval (price changes
integrated) times the trial's share of the node (GPUs used / GPUs on the node, or
the CPU share on CPU-only nodes). The baseline is the same intervals at the
on-demand price of the same instance type; savings % = 1 - cost / on-demand.
Work redone after a preemption (lost work) lengthens the lost attempt's interval:
it was paid for, and it is reported as ``lost_work_cost_usd``.

Nodes without an instance-type label (a plain local run) are costed as one whole
``assumed_instance_type`` per trial, and the summary says so. Each stay also records the
trial's progress on it (in the search's ``time_attr`` units), so that the report can say
what a unit of training cost on each instance type.

Longer than most modules (~350 lines) because the stays, their pricing and the totals
and files made from them are one bookkeeping: split apart, each part would need the
others' internals.
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Optional

import ray
from ray.tune import Callback
from ray.tune.experiment import Trial

from tuner import pareto
from tuner.config import CostConfig, SearchConfig
from tuner.cost.pricing import PriceSource, integrate_usd, node_share
from tuner.result_keys import (
    ATTEMPT_STARTED_S,
    CHECKPOINT_ONLY,
    COST_USD,
    GPU_HOURS,
    INSTANCE_TYPE,
    LEDGER_OBJECTIVES,
    LOST_WORK_COST_USD,
    LOST_WORK_S,
    MARKET,
    NODE_ID,
    ON_DEMAND_COST_USD,
    PREEMPTIONS,
    REGION,
    SAVINGS_PCT,
    WALL_S,
    WORKER_NODES,
    WORLD_SIZE,
    ZONE,
)
from tuner.spot import labels

log = logging.getLogger(__name__)


@dataclass
class Interval:
    """A trial's stay on one node (one attempt)."""

    node_id: str
    instance_type: str
    market: str
    region: str
    zone: str
    start_s: float
    end_s: float
    share: float  # of the node's price charged to this trial
    node_gpus: float
    assumed: bool = False  # no instance label: priced as the assumed type
    lost_s: float = 0.0  # seconds of this stay whose work was redone elsewhere
    progress: float = 0.0  # new time_attr units reached during this stay (redone ones not counted again)
    preempted: bool = False  # the stay ended with the node taken away (the trial counted a preemption)

    @property
    def seconds(self) -> float:
        return max(0.0, self.end_s - self.start_s)


@dataclass
class Priced:
    cost_usd: float
    on_demand_cost_usd: float
    lost_work_cost_usd: float


def price(interval: Interval, prices: PriceSource) -> Optional[Priced]:
    """Cost of one interval, or None when a price is unknown (never $0)."""
    on_demand_rate = prices.on_demand(interval.instance_type, interval.region)
    if on_demand_rate is None or interval.seconds == 0:
        return None if on_demand_rate is None else Priced(0.0, 0.0, 0.0)
    on_demand = on_demand_rate * interval.seconds / 3600.0
    if interval.market == "spot":
        history = prices.spot_history(
            interval.instance_type, interval.region, interval.zone, interval.start_s, interval.end_s
        )
        cost = integrate_usd(history, interval.start_s, interval.end_s)
        if cost is None:
            return None
    else:
        cost = on_demand
    lost = cost * interval.lost_s / interval.seconds
    return Priced(cost * interval.share, on_demand * interval.share, lost * interval.share)


@dataclass
class TrialCost:
    cost_usd: float = 0.0
    on_demand_cost_usd: float = 0.0
    lost_work_cost_usd: float = 0.0
    gpu_hours: float = 0.0
    priced: bool = True
    instance_types: str = ""
    markets: str = ""

    @property
    def savings_pct(self) -> float:
        return 100.0 * (1.0 - self.cost_usd / self.on_demand_cost_usd) if self.on_demand_cost_usd > 0 else 0.0


def trial_cost(intervals: list[Interval], prices: PriceSource) -> TrialCost:
    out = TrialCost(
        instance_types=",".join(sorted({i.instance_type for i in intervals})),
        markets=",".join(sorted({i.market for i in intervals})),
    )
    for interval in intervals:
        out.gpu_hours += interval.seconds * interval.share * interval.node_gpus / 3600.0
        priced = price(interval, prices)
        if priced is None:
            out.priced = False
            continue
        out.cost_usd += priced.cost_usd
        out.on_demand_cost_usd += priced.on_demand_cost_usd
        out.lost_work_cost_usd += priced.lost_work_cost_usd
    return out


@dataclass
class TrialLedger:
    intervals: dict[str, Interval] = field(default_factory=dict)  # per node and attempt
    attempts: dict[str, list[str]] = field(default_factory=dict)  # attempt -> its intervals (one per node it used)
    last_attempt: Optional[str] = None
    lost_work_s: float = 0.0
    preemptions: int = 0
    reached: float = 0.0  # the highest time_attr value reported
    best: Optional[float] = None  # the best value of the search's metric reported

    def intervals_of(self, attempt: Optional[str]) -> list[Interval]:
        return [self.intervals[key] for key in self.attempts.get(attempt or "", [])]


def labels_from_ray(node_id: str) -> dict[str, str]:
    """Where a node is (instance type, market, zone, region) by its Ray labels, as a trial reports it."""

    node: dict[str, Any] = next((n for n in ray.nodes() if n["NodeID"] == node_id), {"Labels": {}})
    have = node.get("Labels") or {}
    return {
        "instance_type": have.get(labels.INSTANCE_TYPE, ""),
        "market": have.get(labels.MARKET, ""),
        "zone": have.get(labels.ZONE, ""),
        "region": have.get(labels.REGION, ""),
    }


class CostLedger(Callback):
    """Builds each trial's intervals from its results; prices them on demand. A search that optimises
    the trial's cost (``search.objectives``) finds it in each result, priced up to that result."""

    def __init__(
        self,
        cfg: CostConfig,
        region: str,
        search: SearchConfig,
        prices: PriceSource,
        head_instance_type: Optional[str] = None,
        node_labels: Optional[Callable[[str], dict[str, str]]] = None,
    ) -> None:
        self.cfg, self.region, self.prices = cfg, region, prices
        self.node_labels = node_labels or labels_from_ray  # where a multi-worker trial's other workers ran
        self.resources = search.resources
        self.metric = search.metric
        self.mode = search.mode
        self.time_attr = search.time_attr
        self.head_instance_type = head_instance_type
        self.objectives = [k for k in search.objectives if k in LEDGER_OBJECTIVES]  # added to each result
        self._unpriced_warned: set[str] = set()
        self.trials: dict[str, TrialLedger] = {}
        self.assumed_used = False

    # Tune saves and restores callback state with the experiment (driver restarts).
    def get_state(self) -> Optional[dict[str, Any]]:
        return {"trials": self.trials, "assumed_used": self.assumed_used}

    def set_state(self, state: dict[str, Any]) -> None:
        self.trials, self.assumed_used = state["trials"], state["assumed_used"]

    def __getstate__(self) -> dict[str, Any]:  # Tune pickles callbacks; the label lookup stays here
        return {k: v for k, v in self.__dict__.items() if k != "node_labels"}

    def _interval(self, result: dict[str, Any], workers: int = 1) -> Interval:
        """A stay of ``workers`` of the trial's workers on the node ``result`` describes."""
        itype = result.get(INSTANCE_TYPE) or ""
        assumed = not itype
        if assumed:
            itype, market, region, zone = self.cfg.assumed_instance_type, self.cfg.assumed_market, self.region, ""
        else:
            market, zone = result.get(MARKET) or "on-demand", result.get(ZONE) or ""
            region = result.get(REGION) or self.region
        shape = self.prices.shape(itype)
        gpus = shape.gpus if shape is not None else 0.0
        share = 1.0 if assumed else node_share(self.resources.cpu, self.resources.gpu, shape)
        self.assumed_used |= assumed
        start = float(result.get(ATTEMPT_STARTED_S, result[WALL_S]))
        return Interval(
            result[NODE_ID],
            itype,
            market,
            region,
            zone,
            start,
            float(result[WALL_S]),
            min(share * workers, 1.0),
            gpus,
            assumed,
        )

    def _stays(self, ledger: TrialLedger, result: dict[str, Any]) -> list[Interval]:
        """The intervals of the attempt this result comes from: one per node its workers ran on."""
        attempt = str(result.get(ATTEMPT_STARTED_S, 0))
        if attempt not in ledger.attempts:
            workers = str(result.get(WORKER_NODES) or result[NODE_ID]).split(",")
            for node in dict.fromkeys(workers):
                where = result if node == result[NODE_ID] else {**result, NODE_ID: node, **self.node_labels(node)}
                ledger.intervals[f"{node}@{attempt}"] = self._interval(where, workers.count(node))
            ledger.attempts[attempt] = [f"{node}@{attempt}" for node in dict.fromkeys(workers)]
        return [ledger.intervals[key] for key in ledger.attempts[attempt]]

    def on_trial_result(
        self, iteration: int, trials: list[Trial], trial: Trial, result: dict[str, Any], **info: Any
    ) -> None:
        if WALL_S not in result or "node_id" not in result:
            return
        ledger = self.trials.setdefault(trial.trial_id, TrialLedger())
        attempt = str(result.get(ATTEMPT_STARTED_S, 0))
        stays = self._stays(ledger, result)
        for interval in stays:
            interval.end_s = max(interval.end_s, float(result[WALL_S]))
        previous = ledger.intervals_of(ledger.last_attempt) if ledger.last_attempt not in (None, attempt) else []
        lost = float(result.get(LOST_WORK_S, 0.0))  # worker-seconds
        if lost > ledger.lost_work_s and previous:
            extra_s = (lost - ledger.lost_work_s) / max(int(result.get(WORLD_SIZE, 1)), 1)
            for interval in previous:  # the redone work ran (and was paid) there
                interval.end_s += extra_s
                interval.lost_s += extra_s
        ledger.lost_work_s = max(ledger.lost_work_s, lost)
        preemptions = int(result.get(PREEMPTIONS, ledger.preemptions))
        if preemptions > ledger.preemptions and previous:
            for interval in previous:
                interval.preempted = True
        ledger.preemptions = preemptions
        if not result.get(CHECKPOINT_ONLY):
            reached = float(result.get(self.time_attr, 0.0))
            stays[0].progress += max(0.0, reached - ledger.reached)  # rank 0's node carries the trial's progress
            ledger.reached = max(ledger.reached, reached)
            if self.metric in result:
                value = float(result[self.metric])
                better = ledger.best is None or (value > ledger.best if self.mode == "max" else value < ledger.best)
                ledger.best = value if better else ledger.best
        ledger.last_attempt = attempt
        if self.objectives:  # Tune lets callbacks add to a result: the searcher reads them at the trial's end
            metrics = self.trial_metrics(trial.trial_id)
            result.update({k: metrics[k] for k in self.objectives if k in metrics})
            if any(k not in metrics for k in self.objectives) and trial.trial_id not in self._unpriced_warned:
                self._unpriced_warned.add(trial.trial_id)
                log.warning(
                    "trial %s ran on %s, which has no price: its cost is unknown, so the searcher will "
                    "count it as pruned",
                    trial.trial_id,
                    ledger.intervals_of(attempt)[0].instance_type,
                )

    # -- views ------------------------------------------------------------------
    def best(self, trial_id: str, default: Optional[float] = None) -> Optional[float]:
        """The best value of the search's metric the trial reported."""
        ledger = self.trials.get(trial_id)
        return default if ledger is None or ledger.best is None else ledger.best

    def best_overall(self) -> Optional[float]:
        values = [t.best for t in self.trials.values() if t.best is not None]
        return (max(values) if self.mode == "max" else min(values)) if values else None

    def cost_of(self, trial_id: str) -> TrialCost:
        ledger = self.trials.get(trial_id)
        return trial_cost(list(ledger.intervals.values()), self.prices) if ledger else TrialCost(priced=False)

    def trial_metrics(self, trial_id: str) -> dict[str, float]:
        cost, ledger = self.cost_of(trial_id), self.trials.get(trial_id, TrialLedger())
        metrics = {
            GPU_HOURS: cost.gpu_hours,
            PREEMPTIONS: float(ledger.preemptions),
            LOST_WORK_S: ledger.lost_work_s,
        }
        if cost.priced:
            metrics.update(
                cost_usd=cost.cost_usd,
                on_demand_cost_usd=cost.on_demand_cost_usd,
                savings_pct=cost.savings_pct,
                lost_work_cost_usd=cost.lost_work_cost_usd,
            )
        return metrics

    def trial_tags(self, trial_id: str) -> dict[str, str]:
        cost = self.cost_of(trial_id)
        tags = {"tuner.instance_types": cost.instance_types, "tuner.markets": cost.markets}
        if not cost.priced:
            tags["tuner.unpriced"] = "true"
        if self.assumed_used:
            tags["tuner.assumed_instance_type"] = self.cfg.assumed_instance_type
        return tags

    def committed_usd(self) -> float:
        return sum(self.cost_of(t).cost_usd for t in self.trials)

    def totals(self, wall_s: float) -> dict[str, float]:
        costs = {t: self.cost_of(t) for t in self.trials}
        priced = [c for c in costs.values() if c.priced]
        spot = sum(c.cost_usd for c in priced)
        on_demand = sum(c.on_demand_cost_usd for c in priced)
        totals = {
            COST_USD: spot,
            ON_DEMAND_COST_USD: on_demand,
            SAVINGS_PCT: 100.0 * (1 - spot / on_demand) if on_demand > 0 else 0.0,
            LOST_WORK_COST_USD: sum(c.lost_work_cost_usd for c in priced),
            GPU_HOURS: sum(c.gpu_hours for c in costs.values()),
            PREEMPTIONS: float(sum(t.preemptions for t in self.trials.values())),
            "unpriced_trials": float(len(costs) - len(priced)),
        }
        node_cost = 0.0 if self.assumed_used else self._node_cost()  # one assumed node per trial: no sharing
        if node_cost:
            totals["utilization_pct"] = 100.0 * spot / node_cost
        if self.head_instance_type:
            head_rate = self.prices.on_demand(self.head_instance_type, self.region)
            if head_rate is None:
                totals["head_unpriced"] = 1.0
            else:
                totals["head_cost_usd"] = head_rate * wall_s / 3600.0
                totals["campaign_cost_usd"] = spot + totals["head_cost_usd"]
        return totals

    def _node_cost(self) -> float:
        """Whole-node cost over each node's observed lifetime (first to last interval on it)."""
        nodes: dict[str, Interval] = {}
        for ledger in self.trials.values():
            for interval in ledger.intervals.values():
                seen = nodes.setdefault(interval.node_id, Interval(**{**asdict(interval), "share": 1.0, "lost_s": 0.0}))
                seen.start_s, seen.end_s = min(seen.start_s, interval.start_s), max(seen.end_s, interval.end_s)
        priced = [price(i, self.prices) for i in nodes.values()]
        return sum(p.cost_usd for p in priced if p is not None)

    def csv(self) -> str:
        """Every interval of every trial, priced: the ledger as an MLflow artifact."""
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(
            [
                "trial_id",
                "node_id",
                "instance_type",
                "market",
                "region",
                "zone",
                "start_s",
                "end_s",
                "seconds",
                "share",
                "lost_s",
                "assumed",
                "unit",
                "progress",
                "preempted",
                COST_USD,
                ON_DEMAND_COST_USD,
            ]
        )
        for trial_id, ledger in sorted(self.trials.items()):
            for i in ledger.intervals.values():
                p = price(i, self.prices)
                writer.writerow(
                    [
                        trial_id,
                        i.node_id,
                        i.instance_type,
                        i.market,
                        i.region,
                        i.zone,
                        f"{i.start_s:.3f}",
                        f"{i.end_s:.3f}",
                        f"{i.seconds:.3f}",
                        f"{i.share:.4f}",
                        f"{i.lost_s:.3f}",
                        i.assumed,
                        self.time_attr,
                        f"{i.progress:g}",
                        i.preempted,
                        "" if p is None else f"{p.cost_usd:.8g}",
                        "" if p is None else f"{p.on_demand_cost_usd:.8g}",
                    ]
                )
        return out.getvalue()

    def plot(self, path: str, marked: Optional[Sequence[str]] = None) -> None:
        """The search's metric (each trial's best) against its cost, on-demand cost beside, and the Pareto
        front of the two marked; ``marked``: a multi-objective search's own front (trial ids) instead."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        points = {t: (self.cost_of(t), ledger.best) for t, ledger in self.trials.items() if ledger.best is not None}
        points = {t: (c, best) for t, (c, best) in points.items() if c.priced}
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for c, best in points.values():
            ax.plot([c.cost_usd, c.on_demand_cost_usd], [best, best], color="0.85", zorder=1)
        ax.scatter(
            [c.on_demand_cost_usd for c, _ in points.values()],
            [b for _, b in points.values()],
            marker="o",
            facecolors="none",
            edgecolors="0.5",
            label="same trial at on-demand price",
            zorder=2,
        )
        ax.scatter(
            [c.cost_usd for c, _ in points.values()],
            [b for _, b in points.values()],
            color="tab:blue",
            label="trial (spot)",
            zorder=3,
        )
        if marked is None:
            front = pareto.front({t: (c.cost_usd, best) for t, (c, best) in points.items()}, ["min", self.mode])
            xy = sorted((points[t][0].cost_usd, points[t][1]) for t in front)
            if xy:
                ax.step(*zip(*xy), where="post", color="tab:red", label="Pareto front", zorder=4)
        else:
            xy = [(points[t][0].cost_usd, points[t][1]) for t in marked if t in points]
            if xy:
                ax.scatter(
                    *zip(*xy),
                    s=160,
                    facecolors="none",
                    edgecolors="tab:red",
                    linewidths=2,
                    label="Pareto front of the search's objectives",
                    zorder=4,
                )
        ax.set_xlabel("cost (USD)")
        ax.set_ylabel(f"best {self.metric}")
        ax.set_title(f"{self.metric} vs cost per trial" + (" (assumed instance prices)" if self.assumed_used else ""))
        ax.legend(loc="best")
        fig.tight_layout()
        fig.savefig(path, dpi=120)
        plt.close(fig)
