"""Which spot GPU type a campaign should run on: the live placement's rule, priced and risk-weighted.

The live placement (``tuner.cost.placement``) sends each trial to the type with the lowest
expected cost per epoch: spot price x the trial's share of the node x the seconds an epoch
takes there. The planner applies the same rule to the whole campaign on every GPU type of a
region's catalog: the cheapest zone's spot price, one GPU's share of the node, and the seconds
per epoch given for the type (``types.epoch_s``: measured, e.g. by the live placement, whose
console line and MLflow tag give them), plus what interruptions add at the type's Spot Advisor
rate (a type it does not rate: its worst bucket) under the planner's default strategy:
checkpoint writes at its interval, the work lost by the interruptions that come without a
usable notice, and a restart each. The shipped traces each cover one type, so this part is a
closed form, not a replay. Among the types with seconds per epoch, "by price" is what a
list-price chooser takes (the lowest spot price per GPU-hour), "by cost" the platform's choice.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from tuner.config import CampaignProfile, ConfigError, StrategyConfig, TypeChoiceConfig
from tuner.cost.placement import usd_per_unit
from tuner.cost.pricing import Catalog
from tuner.plan.simulate import restart_after_preemption
from tuner.plan.traces import AWS_NOTICE_S
from tuner.trial.policy import (
    BUCKET_MONTHLY_FRACTION,
    HOURS_PER_MONTH,
    advisor_rate_per_h,
    lost_share,
    young_daly_interval_s,
)

UNRATED_PER_H = max(BUCKET_MONTHLY_FRACTION.values()) / HOURS_PER_MONTH  # a type the Spot Advisor does not rate


@dataclass(frozen=True)
class TypeCost:
    """A campaign on one spot GPU type, one GPU per trial."""

    instance_type: str
    gpus: float  # per node
    usd_per_gpu_h: float  # the cheapest zone's spot price / the node's GPUs
    rate_per_h: Optional[float]  # interruptions per node-hour (the Spot Advisor bucket's midpoint); None: not rated
    epoch_s: Optional[float]  # None: not given, ranked by price only
    overhead: float  # what interruptions add to the paid time (checkpoints, lost work, restarts), a share
    campaign_usd: Optional[float]

    def row(self, picks: str) -> dict[str, object]:
        """The table's row (blank where unknown)."""
        rated = "" if self.rate_per_h is None else round(100 * self.rate_per_h * HOURS_PER_MONTH, 1)
        return {
            "instance_type": self.instance_type,
            "gpus": self.gpus,
            "spot_usd_per_gpu_h": round(self.usd_per_gpu_h, 4),
            "interrupted_%_per_month": rated,
            "epoch_s": "" if self.epoch_s is None else self.epoch_s,
            "overhead_%": round(100 * self.overhead, 2),
            "campaign_usd": "" if self.campaign_usd is None else round(self.campaign_usd, 2),
            "pick": picks,
        }


def interruption_overhead(rate_per_h: float, profile: CampaignProfile, strategy: StrategyConfig) -> float:
    """Extra training time per unit of training from interruptions at ``rate_per_h`` (first order): the
    checkpoint writes, half an interval lost per interruption that loses work, a restart per interruption (and
    what asking for its node ahead of the loss pays twice: :func:`tuner.plan.simulate.restart_after_preemption`)."""
    lossy_per_h = rate_per_h * lost_share(
        profile.checkpoint_s, AWS_NOTICE_S if strategy.notice else None, strategy.unnoticed_fraction
    )
    if strategy.checkpoint == "periodic":
        interval_s = strategy.every_s
    else:
        interval_s = young_daly_interval_s(
            profile.checkpoint_s, lossy_per_h, strategy.min_interval_s, strategy.max_interval_s
        )
    restart_s, overlap_s = restart_after_preemption(profile, strategy, AWS_NOTICE_S)
    return (
        profile.checkpoint_s / interval_s
        + (lossy_per_h * interval_s / 2 + rate_per_h * (restart_s + overlap_s)) / 3600.0
    )


def type_costs(
    cfg: TypeChoiceConfig, profile: CampaignProfile, strategy: StrategyConfig, catalog: Optional[Catalog] = None
) -> list[TypeCost]:
    """Every spot GPU type of the region: those with ``epoch_s`` by expected campaign cost, then the rest by price."""
    spot: dict[str, tuple[float, float]] = {}  # type -> (GPUs, cheapest zone's price)
    for r in (catalog or Catalog()).rows:
        if r.region == cfg.region and r.shape.gpus > 0 and r.spot is not None:
            gpus, price = spot.get(r.instance_type, (r.shape.gpus, r.spot))
            spot[r.instance_type] = (gpus, min(price, r.spot))
    if not spot:
        raise ConfigError(f"types.region={cfg.region!r}: the catalog has no spot GPU prices there")
    unknown = sorted(set(cfg.epoch_s) - set(spot))
    if unknown:
        raise ConfigError(
            f"types.epoch_s names {unknown}: no spot price in {cfg.region}; priced there: {', '.join(sorted(spot))}"
        )
    costs = []
    for itype, (gpus, price) in spot.items():
        rate = advisor_rate_per_h(itype, cfg.region)
        overhead = interruption_overhead(UNRATED_PER_H if rate is None else rate, profile, strategy)
        epoch_s = cfg.epoch_s.get(itype)
        campaign = None
        if epoch_s is not None:
            campaign = profile.trials * profile.epochs * usd_per_unit(price, 1 / gpus, epoch_s * (1 + overhead))
        costs.append(TypeCost(itype, gpus, price / gpus, rate, epoch_s, overhead, campaign))
    return sorted(costs, key=lambda c: (c.campaign_usd is None, c.campaign_usd or 0.0, c.usd_per_gpu_h))


def picks(costs: list[TypeCost]) -> tuple[Optional[TypeCost], Optional[TypeCost]]:
    """(by price, by cost) among the types with ``epoch_s``: the lowest spot price per GPU-hour, the lowest
    expected campaign cost; (None, None) without any."""
    timed = [c for c in costs if c.campaign_usd is not None]
    if not timed:
        return None, None
    return min(timed, key=lambda c: c.usd_per_gpu_h), min(timed, key=lambda c: c.campaign_usd or 0.0)
