"""Spot and on-demand prices per instance type and zone.

- :class:`Catalog`: real public prices shipped in ``tuner/catalog/prices.csv``
  (``scripts/build_catalog.py``); offline, and the fallback.
- :class:`AwsPrices`: EC2 ``DescribeSpotPriceHistory`` (Linux/UNIX, the interval
  asked, paginated) and the Pricing API's ``GetProducts`` (on-demand), cached on
  disk with a TTL; when AWS cannot be reached it warns once and uses the catalog.

An unknown instance type or a missing price is ``None``: the caller marks the trial
unpriced. Nothing here ever turns "unknown" into $0.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import json
import logging
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional, Protocol, TypeVar

from tuner import catalog

log = logging.getLogger(__name__)
T = TypeVar("T")

CATALOG_CSV = catalog.DIR / "prices.csv"
# The Pricing API's "location" names for the regions we know, as GetProducts expects them.
PRICING_LOCATIONS = {
    "us-east-1": "US East (N. Virginia)",
    "us-east-2": "US East (Ohio)",
    "us-west-2": "US West (Oregon)",
    "eu-west-1": "EU (Ireland)",
}


@dataclass(frozen=True)
class PricePoint:
    """From ``start_s`` (unix time) on, until the next point, the price is ``usd_per_hour``."""

    start_s: float
    usd_per_hour: float


@dataclass(frozen=True)
class InstanceShape:
    gpus: float
    vcpus: float


class PriceSource(Protocol):
    def shape(self, instance_type: str) -> Optional[InstanceShape]: ...

    def on_demand(self, instance_type: str, region: str) -> Optional[float]: ...

    def spot_history(
        self, instance_type: str, region: str, zone: str, start_s: float, end_s: float
    ) -> list[PricePoint]: ...


LOOKBACK_S = 6 * 3600.0  # DescribeSpotPriceHistory lists changes: look back far enough to find the one in force


def current_spot(
    prices: PriceSource, instance_type: str, region: str, zones: list[str], now_s: float
) -> Optional[float]:
    """The spot price in force now: the highest over ``zones`` (empty: the region), since a new node may
    land in any of them; None when no price is known."""
    found = []
    for zone in zones or [""]:
        history = prices.spot_history(instance_type, region, zone, now_s - LOOKBACK_S, now_s)
        in_force = [p for p in history if p.start_s <= now_s]
        if in_force:
            found.append(max(in_force, key=lambda p: p.start_s).usd_per_hour)
    return max(found) if found else None


def node_share(cpu: float, gpu: float, shape: Optional[InstanceShape]) -> float:
    """The share of a node's price a trial of ``cpu``/``gpu`` pays: its GPUs of the node's, else its vCPUs."""
    if shape is None:
        return 1.0
    if gpu > 0 and shape.gpus > 0:
        return gpu / shape.gpus
    return cpu / max(shape.vcpus, 1.0)


def integrate_usd(history: list[PricePoint], start_s: float, end_s: float) -> Optional[float]:
    """USD for running from start_s to end_s under a piecewise-constant price; None if uncovered."""
    points = sorted(history, key=lambda p: p.start_s)
    if not points or end_s <= start_s:
        return None if not points else 0.0
    if points[0].start_s > start_s:  # the first known price also held just before it was recorded
        points[0] = PricePoint(start_s, points[0].usd_per_hour)
    total = 0.0
    for i, point in enumerate(points):
        seg_start = max(start_s, point.start_s)
        seg_end = min(end_s, points[i + 1].start_s if i + 1 < len(points) else end_s)
        if seg_end > seg_start:
            total += point.usd_per_hour * (seg_end - seg_start) / 3600.0
    return total


@dataclass(frozen=True)
class _Row:
    provider: str
    instance_type: str
    region: str
    zone: str
    shape: InstanceShape
    on_demand: Optional[float]
    spot: Optional[float]


class Catalog:
    """Shipped list prices: one spot price per zone (AWS: per AZ ID), constant over time."""

    def __init__(self, path: Path = CATALOG_CSV) -> None:
        self.rows = self._load(path)

    @staticmethod
    @functools.lru_cache(maxsize=2)
    def _load(path: Path) -> tuple[_Row, ...]:
        def num(text: str) -> Optional[float]:
            return float(text) if text.strip() else None

        with path.open() as f:
            return tuple(
                _Row(
                    r["provider"],
                    r["instance_type"],
                    r["region"],
                    r["zone"],
                    InstanceShape(float(r["gpus"]), float(r["vcpus"])),
                    num(r["on_demand_usd_per_hour"]),
                    num(r["spot_usd_per_hour"]),
                )
                for r in csv.DictReader(f)
            )

    def _rows(self, instance_type: str, region: Optional[str] = None) -> list[_Row]:
        return [r for r in self.rows if r.instance_type == instance_type and (region is None or r.region == region)]

    def shape(self, instance_type: str) -> Optional[InstanceShape]:
        rows = self._rows(instance_type)
        return rows[0].shape if rows else None

    def on_demand(self, instance_type: str, region: str) -> Optional[float]:
        prices = [r.on_demand for r in self._rows(instance_type, region) if r.on_demand is not None]
        return prices[0] if prices else None

    def spot_price(self, instance_type: str, region: str, zone: str) -> Optional[float]:
        """The zone's price; a zone the catalog does not name (AZ names vs IDs) gets the region's median."""
        rows = [r for r in self._rows(instance_type, region) if r.spot is not None]
        exact = [r.spot for r in rows if r.zone == zone and r.spot is not None]
        if exact:
            return exact[0]
        return statistics.median(r.spot for r in rows if r.spot is not None) if rows else None

    def spot_history(
        self, instance_type: str, region: str, zone: str, start_s: float, end_s: float
    ) -> list[PricePoint]:
        price = self.spot_price(instance_type, region, zone)
        return [] if price is None else [PricePoint(start_s, price)]


class AwsPrices:
    """Live AWS prices through boto3, cached on disk, falling back to the catalog (one warning)."""

    def __init__(
        self,
        cache_dir: Path,
        ttl_s: float = 3600.0,
        ec2_client: Any = None,
        pricing_client: Any = None,
        fallback: Optional[Catalog] = None,
    ) -> None:
        self.cache_dir, self.ttl_s = Path(cache_dir), ttl_s
        self._ec2, self._pricing = ec2_client, pricing_client
        self.fallback = fallback or Catalog()
        self.fell_back = False

    def _client(self, service: str, region: str) -> Any:
        import boto3

        if service == "ec2":
            return self._ec2 or boto3.client("ec2", region_name=region)
        return self._pricing or boto3.client("pricing", region_name="us-east-1")  # the Pricing API's home

    def _cached(self, key: dict[str, Any], fetch: Callable[[], Any]) -> Any:
        name = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32]
        path = self.cache_dir / f"{name}.json"
        if path.is_file() and time.time() - path.stat().st_mtime < self.ttl_s:
            return json.loads(path.read_text())
        value = fetch()
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(value))
        return value

    def _or_fallback(self, what: str, fetch: Callable[[], T], fallback: Callable[[], T]) -> T:
        try:
            return fetch()
        except Exception as exc:  # no credentials, no network, throttling, malformed answer
            if not self.fell_back:
                self.fell_back = True
                log.warning("AWS prices unavailable (%s: %s); using the shipped catalog", what, str(exc)[:160])
            return fallback()

    def shape(self, instance_type: str) -> Optional[InstanceShape]:
        return self.fallback.shape(instance_type)

    def on_demand(self, instance_type: str, region: str) -> Optional[float]:
        def fetch() -> Optional[float]:
            usd = self._cached(
                {"od": instance_type, "region": region}, lambda: self._get_products(instance_type, region)
            )
            return None if usd is None else float(usd)

        return self._or_fallback("GetProducts", fetch, lambda: self.fallback.on_demand(instance_type, region))

    def _get_products(self, instance_type: str, region: str) -> Optional[float]:
        filters = [
            {"Type": "TERM_MATCH", "Field": k, "Value": v}
            for k, v in {
                "instanceType": instance_type,
                "location": PRICING_LOCATIONS.get(region, region),
                "operatingSystem": "Linux",
                "tenancy": "Shared",
                "preInstalledSw": "NA",
                "capacitystatus": "Used",
            }.items()
        ]
        client = self._client("pricing", region)
        for page in client.get_paginator("get_products").paginate(ServiceCode="AmazonEC2", Filters=filters):
            for item in page["PriceList"]:
                product = json.loads(item) if isinstance(item, str) else item
                for term in product["terms"]["OnDemand"].values():
                    for dimension in term["priceDimensions"].values():
                        usd = float(dimension["pricePerUnit"]["USD"])
                        if usd > 0:
                            return usd
        return None

    def spot_history(
        self, instance_type: str, region: str, zone: str, start_s: float, end_s: float
    ) -> list[PricePoint]:
        def fetch() -> list[PricePoint]:
            key = {"spot": instance_type, "zone": zone, "start": int(start_s // 3600), "end": int(end_s // 3600) + 1}
            raw = self._cached(key, lambda: self._describe_spot(instance_type, region, zone, start_s, end_s))
            return [PricePoint(t, p) for t, p in raw]

        return self._or_fallback(
            "DescribeSpotPriceHistory",
            fetch,
            lambda: self.fallback.spot_history(instance_type, region, zone, start_s, end_s),
        )

    def _describe_spot(
        self, instance_type: str, region: str, zone: str, start_s: float, end_s: float
    ) -> list[tuple[float, float]]:
        client = self._client("ec2", region)
        kwargs: dict[str, Any] = {
            "InstanceTypes": [instance_type],
            "ProductDescriptions": ["Linux/UNIX"],
            "StartTime": datetime.fromtimestamp(start_s, timezone.utc),
            "EndTime": datetime.fromtimestamp(end_s, timezone.utc),
        }
        if zone:
            kwargs["AvailabilityZone"] = zone
        points = []
        for page in client.get_paginator("describe_spot_price_history").paginate(**kwargs):
            for entry in page["SpotPriceHistory"]:
                points.append((entry["Timestamp"].timestamp(), float(entry["SpotPrice"])))
        return sorted(points)


def make_source(kind: str, cache_dir: Path, ttl_s: float = 3600.0) -> PriceSource:
    """``pricing.source``: catalog | aws (``tuner.config.platform.PRICE_SOURCES``)."""
    if kind == "aws":
        return AwsPrices(cache_dir, ttl_s)
    return Catalog()
