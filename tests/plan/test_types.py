"""The planner's type choice: the live placement's rule (price x share x seconds per epoch) over a catalog,
with the interruption overhead of each type; the pick by price against the pick by cost."""

from __future__ import annotations

from pathlib import Path

import pytest

from tuner.config import CampaignProfile, ConfigError, StrategyConfig, TypeChoiceConfig
from tuner.cost.pricing import Catalog
from tuner.plan.types import interruption_overhead, picks, type_costs
from tuner.trial.policy import advisor_rate_per_h

HEADER = "provider,instance_type,region,zone,gpus,vcpus,on_demand_usd_per_hour,spot_usd_per_hour\n"


def catalog(tmp_path: Path, rows: list[str]) -> Catalog:
    path = tmp_path / "prices.csv"
    path.write_text(HEADER + "".join(f"{r}\n" for r in rows))
    return Catalog(path)


PROFILE = CampaignProfile(trials=10, epochs=6, checkpoint_s=5, restart_s=90)
STRATEGY = StrategyConfig()


def test_by_cost_picks_the_faster_type_when_its_epoch_costs_less(tmp_path) -> None:
    prices = catalog(
        tmp_path,
        [
            "aws,slow.xlarge,r1,z1,1,4,0.5,0.20",
            "aws,slow.xlarge,r1,z2,1,4,0.5,0.18",  # the cheapest zone counts
            "aws,fast.xlarge,r1,z1,1,4,1.0,0.30",
            "aws,quad.12xlarge,r1,z1,4,48,4.0,1.60",  # a trial pays a quarter of the node
            "aws,cpu.large,r1,z1,0,2,0.1,0.01",  # no GPU: not a candidate
            "aws,fast.xlarge,r2,z1,1,4,1.0,0.01",  # another region
        ],
    )
    costs = type_costs(
        TypeChoiceConfig(region="r1", epoch_s={"slow.xlarge": 60, "fast.xlarge": 25}), PROFILE, STRATEGY, prices
    )
    by_name = {c.instance_type: c for c in costs}
    assert set(by_name) == {"slow.xlarge", "fast.xlarge", "quad.12xlarge"}
    assert by_name["slow.xlarge"].usd_per_gpu_h == 0.18 and by_name["quad.12xlarge"].usd_per_gpu_h == 0.40
    slow = by_name["slow.xlarge"]
    assert slow.campaign_usd == pytest.approx(10 * 6 * 60 * (1 + slow.overhead) * 0.18 / 3600)
    assert by_name["quad.12xlarge"].campaign_usd is None  # no epoch_s: ranked by price only, after the timed ones
    assert [c.instance_type for c in costs] == ["fast.xlarge", "slow.xlarge", "quad.12xlarge"]
    by_price, by_cost = picks(costs)
    assert by_price is slow and by_cost is by_name["fast.xlarge"]
    assert picks(type_costs(TypeChoiceConfig(region="r1"), PROFILE, STRATEGY, prices)) == (None, None)


def test_interruptions_cost_more_without_notice_and_at_a_higher_rate() -> None:
    quiet = interruption_overhead(0.0, PROFILE, STRATEGY)
    assert quiet == pytest.approx(PROFILE.checkpoint_s / STRATEGY.max_interval_s)  # checkpoint writes only
    noticed, busy = interruption_overhead(0.01, PROFILE, STRATEGY), interruption_overhead(0.1, PROFILE, STRATEGY)
    unnoticed = interruption_overhead(0.01, PROFILE, StrategyConfig(notice=False))
    assert quiet < noticed < busy and noticed < unnoticed
    periodic = interruption_overhead(0.01, PROFILE, StrategyConfig(checkpoint="periodic", every_s=600, notice=False))
    assert periodic == pytest.approx(5 / 600 + (0.01 * 300 + 0.01 * 90) / 3600)


def test_the_shipped_catalog_and_advisor_rate_every_us_east_1_gpu_type() -> None:
    costs = type_costs(TypeChoiceConfig(epoch_s={"g4dn.xlarge": 60, "g5.xlarge": 25}), PROFILE, STRATEGY)
    assert len(costs) >= 10 and all(c.rate_per_h == advisor_rate_per_h(c.instance_type, "us-east-1") for c in costs)
    by_price, by_cost = picks(costs)
    assert by_price is not None and by_price.instance_type == "g4dn.xlarge"
    assert by_cost is not None and by_cost.instance_type == "g5.xlarge"


def test_bad_input_is_one_line() -> None:
    with pytest.raises(ConfigError, match=r"types.epoch_s names \['nope.xlarge'\]: no spot price in us-east-1; priced"):
        type_costs(TypeChoiceConfig(epoch_s={"nope.xlarge": 3}), PROFILE, STRATEGY)
    with pytest.raises(ConfigError, match="types.region='mars-1': the catalog has no spot GPU prices there"):
        type_costs(TypeChoiceConfig(region="mars-1"), PROFILE, STRATEGY)
    with pytest.raises(ConfigError, match="types.epoch_s: seconds per epoch must be > 0"):
        TypeChoiceConfig(epoch_s={"g5.xlarge": 0})
