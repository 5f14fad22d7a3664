"""Real spot-market traces, read into one shape for the simulator (``tuner.simulate``).

A market is a set of zones (or nodes) sampled on a common tick: whether a spot GPU
could be had at each tick and what it cost. Values are as published (see
``tuner/catalog/README.md``); only their encoding is unified here (GCP marks
*preempted* with 1, AWS marks *available* with 1).
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Optional

from tuner import catalog
from tuner.cost.pricing import Catalog

TRACES = catalog.DIR / "traces"
V100_ON_DEMAND_USD_PER_H = 3.06  # p3.2xlarge list price, as the trace README gives it
H100_GPUS_PER_MACHINE = 8  # a3-highgpu-8g prices are for the whole machine
EVENTS_TICK_S = 60.0
AWS_NOTICE_S = 120.0
GCP_NOTICE_S = 30.0  # the cluster-event trace is sampled at this tick


@dataclass
class ZoneTrace:
    """One zone's (or node's) spot capacity and price per tick, for one GPU."""

    name: str
    available: list[bool]
    spot_usd_per_gpu_hour: list[float]
    on_demand_usd_per_gpu_hour: float


@dataclass
class Market:
    name: str
    gpu: str
    tick_s: float
    start_s: float  # unix time of tick 0
    zones: list[ZoneTrace]
    notice_s: float  # interruption notice: AWS 120 s, GCP 30 s
    capacity_per_zone: Optional[int] = None  # GPUs one zone can give at a time (None: as many as asked)

    @property
    def ticks(self) -> int:
        return min(len(z.available) for z in self.zones)


def aws_v100() -> Market:
    """AWS p3.2xlarge capacity probes in 3 zones with their per-row spot prices."""
    zones, start_s, tick_s = [], 0.0, 0.0
    for path in sorted((TRACES / "aws-v100-availability").glob("*.csv")):
        with path.open() as f:
            rows = list(csv.DictReader(f))
        prices = json.loads(path.with_suffix(".prices.json").read_text())["spot_usd_per_hour"]
        times = [
            datetime.strptime(r["date"], "%Y-%m-%d %H:%M:%S").replace(tzinfo=timezone.utc).timestamp() for r in rows
        ]
        start_s = times[0]
        tick_s = (times[-1] - times[0]) / (len(times) - 1)  # ~195 s, as probed
        zones.append(ZoneTrace(path.stem, [r["availability"] == "1" for r in rows], prices, V100_ON_DEMAND_USD_PER_H))
    return Market("aws-v100", "V100 (p3.2xlarge)", tick_s, start_s, zones, AWS_NOTICE_S)


def gcp_h100() -> Market:
    """GCP a3-highgpu-8g capacity in 7 zones; prices per GPU (machine price / 8)."""
    zones, start_s, tick_s = [], 0.0, 0.0
    for path in sorted((TRACES / "gcp-h100-preemption").glob("*.json")):
        trace = json.loads(path.read_text())
        meta = trace["metadata"]
        tick_s = float(meta["gap_seconds"])
        start_s = datetime.fromisoformat(meta["start_time"]).timestamp()
        on_demand = float(meta["price_info"]["on_demand_price"]) / H100_GPUS_PER_MACHINE
        spot = [float(p) / H100_GPUS_PER_MACHINE for p in trace["prices"]]
        zones.append(ZoneTrace(path.stem, [x == 0 for x in trace["data"]], spot, on_demand))
    return Market("gcp-h100", "H100 (a3-highgpu-8g / 8)", tick_s, start_s, zones, GCP_NOTICE_S)


def cluster_events(instance_type: str = "p3.2xlarge", region: str = "us-east-1", zone: str = "use1-az1") -> Market:
    """The 32-node p3 cluster trace as one 'zone' per node slot: a node present is capacity there.

    Slots are filled in arrival order; a removed node frees its slot until another arrives.
    Prices are the catalog's for the instance type (constant: the trace has none).
    """
    catalog = Catalog()
    spot, on_demand = catalog.spot_price(instance_type, region, zone), catalog.on_demand(instance_type, region)
    assert spot is not None and on_demand is not None, f"no catalog price for {instance_type}"
    with (TRACES / "cluster-events" / "aws-p3-32node.csv").open() as f:
        events = [(int(t) / 1000.0, kind, node) for t, kind, node in csv.reader(f)]
    end_s = max(t for t, _, _ in events)
    ticks = int(end_s // EVENTS_TICK_S) + 1
    slots: dict[str, int] = {}
    free: list[int] = []
    timeline: list[list[bool]] = []
    for t, kind, node in sorted(events):
        tick = int(t // EVENTS_TICK_S)
        if kind == "add":
            slot = free.pop(0) if free else len(timeline)
            if slot == len(timeline):
                timeline.append([False] * ticks)
            slots[node] = slot
            for k in range(tick, ticks):
                timeline[slot][k] = True
        elif node in slots:
            slot = slots.pop(node)
            for k in range(tick, ticks):
                timeline[slot][k] = False
            free.append(slot)
            free.sort()
    zones = [ZoneTrace(f"slot{i:02d}", avail, [spot] * ticks, on_demand) for i, avail in enumerate(timeline)]
    return Market(
        "aws-p3-32node", f"V100 ({instance_type})", EVENTS_TICK_S, 0.0, zones, AWS_NOTICE_S, capacity_per_zone=1
    )


MARKETS = {"aws-v100": aws_v100, "gcp-h100": gcp_h100, "aws-p3-32node": cluster_events}
