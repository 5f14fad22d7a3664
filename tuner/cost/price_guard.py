"""Price guard: spot prices checked during a search, against limits the team accepts.

Every ``interval_s`` the guard asks the pricing module for each watched type's
current spot price (the highest over the watched zones: a new node may land in any
of them). Over its limit (``max_usd_per_hour`` for the type, else
``max_fraction_of_on_demand`` of its on-demand price) the type is *blocked*: one
warning, an MLflow tag and metric on the search's parent run, and, with
``enforce``, new trials get a label selector that keeps them off that instance type
until its price is back under the limit. The cluster config's per-type maximum
spot price stays the hard ceiling; this is the softer, team-level one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Optional

from ray.tune import Callback

from tuner.config import PriceGuardConfig
from tuner.cost.pricing import PriceSource, current_spot

log = logging.getLogger(__name__)

# The blocked types live in the driver process: Tune calls the trial-resources function there for every
# new trial (``tuner.cost.placement.trial_resources``), through a copy of the trainable, so the guard's own
# attributes would not be seen.
_BLOCKED: set[str] = set()


def blocked() -> set[str]:
    """Instance types an enforcing guard keeps new trials off now."""
    return set(_BLOCKED)


def unblock_all() -> None:
    """A search's end (or a new guard's start): a later search in this process starts with nothing blocked."""
    _BLOCKED.clear()


@dataclass
class PriceCheck:
    instance_type: str
    usd_per_hour: Optional[float]  # None: no price known now
    limit_usd_per_hour: Optional[float]

    @property
    def over(self) -> bool:
        return (
            self.usd_per_hour is not None
            and self.limit_usd_per_hour is not None
            and self.usd_per_hour > self.limit_usd_per_hour
        )


class PriceGuard(Callback):
    """A Tune callback on the driver; ``notify(tags, metrics)`` records events on the parent run."""

    def __init__(
        self,
        cfg: PriceGuardConfig,
        region: str,
        prices: PriceSource,
        watched: list[str],
        notify: Optional[Callable[[dict[str, str], dict[str, float]], None]] = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.cfg, self.region, self.prices, self.watched = cfg, region, prices, watched
        self.notify, self.clock = notify, clock
        self.last_check_s: Optional[float] = None
        self.blocked: set[str] = set()
        self.last_checks: list[PriceCheck] = []
        self.events: list[dict[str, Any]] = []
        unblock_all()

    def __getstate__(self) -> dict[str, Any]:  # Tune pickles callbacks; the price source and hook stay here
        return {k: v for k, v in self.__dict__.items() if k not in ("prices", "notify", "clock")}

    def limit(self, instance_type: str) -> Optional[float]:
        limits = self.cfg.max_usd_per_hour or {}
        if instance_type in limits:
            return limits[instance_type]
        if self.cfg.max_fraction_of_on_demand is not None:
            on_demand = self.prices.on_demand(instance_type, self.region)
            return None if on_demand is None else on_demand * self.cfg.max_fraction_of_on_demand
        return None

    def current(self, instance_type: str, now_s: float) -> Optional[float]:
        return current_spot(self.prices, instance_type, self.region, self.cfg.zones, now_s)

    def check(self) -> list[PriceCheck]:
        """Check every watched type now; block and unblock; record what changed."""
        now = self.clock()
        self.last_check_s = now
        checks = self.last_checks = [PriceCheck(t, self.current(t, now), self.limit(t)) for t in self.watched]
        for c in checks:
            if c.over and c.instance_type not in self.blocked:
                self.blocked.add(c.instance_type)
                self._record(c, now, "over")
                log.warning(
                    "price guard: %s spot at $%.4f/h is over its limit $%.4f/h%s",
                    c.instance_type,
                    c.usd_per_hour,
                    c.limit_usd_per_hour,
                    "; no new trials on it until it falls back" if self.cfg.enforce else "",
                )
            elif not c.over and c.instance_type in self.blocked and c.usd_per_hour is not None:
                self.blocked.discard(c.instance_type)
                self._record(c, now, "ok")
                log.warning(
                    "price guard: %s spot is back to $%.4f/h (limit $%.4f/h)",
                    c.instance_type,
                    c.usd_per_hour,
                    c.limit_usd_per_hour,
                )
        if self.cfg.enforce:
            _BLOCKED.clear()
            _BLOCKED.update(self.blocked)
        return checks

    def _record(self, c: PriceCheck, now_s: float, state: str) -> None:
        event = {
            "time_s": now_s,
            "instance_type": c.instance_type,
            "state": state,
            "usd_per_hour": c.usd_per_hour,
            "limit_usd_per_hour": c.limit_usd_per_hour,
        }
        self.events.append(event)
        if self.notify is not None:
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(now_s))
            tag = f"{state}: ${c.usd_per_hour:.4f}/h vs limit ${c.limit_usd_per_hour:.4f}/h at {when} UTC"
            self.notify(
                {f"tuner.price_guard.{c.instance_type}": tag},
                {
                    f"price_guard_over.{c.instance_type}": float(state == "over"),
                    f"spot_usd_per_hour.{c.instance_type}": float(c.usd_per_hour or 0.0),
                },
            )

    def on_step_begin(self, iteration: int, trials: list[Any], **info: Any) -> None:
        if self.last_check_s is None or self.clock() - self.last_check_s >= self.cfg.interval_s:
            self.check()
