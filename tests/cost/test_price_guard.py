"""The price guard against AWS's DescribeSpotPriceHistory, fed a rising then falling price through botocore's
Stubber."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from botocore.stub import ANY

from tests.cost.test_pricing import stubbed
from tuner.config import ConfigError, PriceGuardConfig
from tuner.cost import price_guard
from tuner.cost.placement import trial_resources
from tuner.cost.price_guard import PriceGuard
from tuner.cost.pricing import AwsPrices, Catalog
from tuner.spot.labels import INSTANCE_TYPE

T0 = 1_800_000_000.0
INTERVAL_S = 300.0


def history(prices: list[tuple[float, str]]) -> dict:
    """A real DescribeSpotPriceHistory answer: price changes, newest first."""
    return {
        "SpotPriceHistory": [
            {
                "AvailabilityZone": "us-east-1a",
                "InstanceType": "g5.xlarge",
                "ProductDescription": "Linux/UNIX",
                "SpotPrice": price,
                "Timestamp": datetime.fromtimestamp(t, timezone.utc),
            }
            for t, price in sorted(prices, reverse=True)
        ],
        "NextToken": "",
    }


def test_rising_then_falling_price_blocks_then_unblocks(tmp_path) -> None:
    ec2, stub = stubbed("ec2")
    expected = {
        "InstanceTypes": ["g5.xlarge"],
        "ProductDescriptions": ["Linux/UNIX"],
        "StartTime": ANY,
        "EndTime": ANY,
        "AvailabilityZone": "us-east-1a",
    }
    series = [  # what AWS answers at each check: the changes in the look-back window
        [(T0 - 3600, "0.400000")],
        [(T0 - 3600, "0.400000"), (T0 + 200, "0.650000")],  # rose past the limit
        [(T0 + 200, "0.650000"), (T0 + 500, "0.700000")],  # still over: no second warning
        [(T0 + 500, "0.700000"), (T0 + 800, "0.450000")],  # fell back
    ]
    for answer in series:
        stub.add_response("describe_spot_price_history", history(answer), expected)
    now = [T0]
    events: list[tuple[dict, dict]] = []
    cfg = PriceGuardConfig(
        enabled=True, interval_s=INTERVAL_S, max_usd_per_hour={"g5.xlarge": 0.6}, zones=["us-east-1a"], enforce=True
    )
    prices = AwsPrices(tmp_path, ttl_s=0, ec2_client=ec2)  # every check asks AWS
    guard = PriceGuard(
        cfg,
        "us-east-1",
        prices,
        ["g5.xlarge"],
        notify=lambda tags, metrics: events.append((tags, metrics)),
        clock=lambda: now[0],
    )
    seen = []
    with stub:
        for _ in series:
            guard.on_step_begin(0, [])  # due: checks
            guard.on_step_begin(0, [])  # not due yet: no AWS call (the Stubber would fail on an extra one)
            seen.append((guard.last_checks[0].usd_per_hour, set(guard.blocked), set(price_guard._BLOCKED)))
            now[0] += INTERVAL_S
    stub.assert_no_pending_responses()
    assert prices.fell_back is False
    assert seen == [
        (0.40, set(), set()),
        (0.65, {"g5.xlarge"}, {"g5.xlarge"}),
        (0.70, {"g5.xlarge"}, {"g5.xlarge"}),
        (0.45, set(), set()),
    ]
    assert [e["state"] for e in guard.events] == ["over", "ok"]
    (over_tags, over_metrics), (ok_tags, ok_metrics) = events
    assert over_tags["tuner.price_guard.g5.xlarge"].startswith("over: $0.6500/h vs limit $0.6000/h")
    assert over_metrics == {"price_guard_over.g5.xlarge": 1.0, "spot_usd_per_hour.g5.xlarge": 0.65}
    assert (
        ok_tags["tuner.price_guard.g5.xlarge"].startswith("ok: $0.4500/h")
        and ok_metrics["price_guard_over.g5.xlarge"] == 0.0
    )


def test_new_trials_get_a_selector_only_while_a_type_is_blocked() -> None:
    cfg = PriceGuardConfig(enabled=True, max_fraction_of_on_demand=0.2, enforce=True)  # g5.xlarge spot ~0.41 of 1.006
    guard = PriceGuard(cfg, "us-east-1", Catalog(), ["g5.xlarge", "g6.xlarge"])
    checks = {c.instance_type: c for c in guard.check()}
    assert checks["g5.xlarge"].limit_usd_per_hour == pytest.approx(0.2 * 1.006) and checks["g5.xlarge"].over
    pgf = trial_resources({"CPU": 1.0, "GPU": 0.25}, {"lr": 0.1})
    assert pgf.bundles == [{"CPU": 1.0, "GPU": 0.25}]
    selector = pgf._bound.arguments["bundle_label_selector"]
    assert (
        selector == [{INSTANCE_TYPE: "!in(" + ",".join(sorted(guard.blocked)) + ")"}] and "g5.xlarge" in guard.blocked
    )
    relaxed = PriceGuard(
        PriceGuardConfig(enabled=True, max_fraction_of_on_demand=0.9, enforce=True),
        "us-east-1",
        Catalog(),
        ["g5.xlarge"],
    )
    relaxed.check()
    assert "bundle_label_selector" not in trial_resources({"CPU": 1.0}, {})._bound.arguments


def test_a_guard_needs_a_limit() -> None:
    with pytest.raises(ConfigError, match="price_guard.enabled needs a limit"):
        PriceGuardConfig(enabled=True)
