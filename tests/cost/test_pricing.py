"""Prices: integration of price changes, the shipped catalog, AWS APIs through botocore's Stubber."""

from __future__ import annotations

import json
import logging
from datetime import datetime, timezone

import boto3
import pytest
from botocore.stub import ANY, Stubber

from tuner.cost.pricing import AwsPrices, Catalog, PricePoint, integrate_usd

T0 = 1_700_000_000.0


def test_integrate_price_change_mid_interval() -> None:
    history = [PricePoint(T0, 1.0), PricePoint(T0 + 1800, 3.0)]
    assert integrate_usd(history, T0, T0 + 3600) == pytest.approx(0.5 * 1.0 + 0.5 * 3.0)
    assert integrate_usd(history, T0 + 900, T0 + 2700) == pytest.approx(0.25 * 1.0 + 0.25 * 3.0)
    # A price recorded after the start also held just before: AWS reports changes, not ticks.
    assert integrate_usd([PricePoint(T0 + 600, 2.0)], T0, T0 + 3600) == pytest.approx(2.0)
    assert integrate_usd([], T0, T0 + 10) is None


def test_catalog_real_prices() -> None:
    catalog = Catalog()
    assert catalog.on_demand("g5.xlarge", "us-east-1") == pytest.approx(1.006)
    assert catalog.spot_price("g5.xlarge", "us-east-1", "use1-az1") == pytest.approx(0.4177)
    zones = [r.spot for r in catalog.rows if r.instance_type == "g5.xlarge" and r.region == "us-east-1" and r.spot]
    assert min(zones) <= catalog.spot_price("g5.xlarge", "us-east-1", "us-east-1a") <= max(zones)  # AZ name: median
    assert catalog.shape("g5.12xlarge").gpus == 4
    assert catalog.on_demand("a3-highgpu-8g", "us-central1") == pytest.approx(82.52543396)
    assert catalog.on_demand("m6i.xlarge", "us-east-1") is None  # not a GPU type: unknown, not $0
    assert catalog.spot_history("nope.large", "us-east-1", "", T0, T0 + 1) == []


def stubbed(service: str):
    client = boto3.client(service, region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="y")
    return client, Stubber(client)


def test_spot_history_paginated_and_cached(tmp_path) -> None:
    ec2, stub = stubbed("ec2")
    ts = [datetime.fromtimestamp(T0 + dt, timezone.utc) for dt in (0, 1800)]
    page = lambda entries, token=None: {  # noqa: E731  (real DescribeSpotPriceHistory shape)
        "SpotPriceHistory": [
            {
                "AvailabilityZone": "us-east-1a",
                "InstanceType": "g5.xlarge",
                "ProductDescription": "Linux/UNIX",
                "SpotPrice": price,
                "Timestamp": t,
            }
            for t, price in entries
        ],
        **({"NextToken": token} if token else {"NextToken": ""}),
    }
    expected = {
        "InstanceTypes": ["g5.xlarge"],
        "ProductDescriptions": ["Linux/UNIX"],
        "StartTime": ANY,
        "EndTime": ANY,
        "AvailabilityZone": "us-east-1a",
    }
    stub.add_response("describe_spot_price_history", page([(ts[1], "0.600000")], "page2"), expected)
    stub.add_response("describe_spot_price_history", page([(ts[0], "0.400000")]), {**expected, "NextToken": "page2"})
    prices = AwsPrices(tmp_path, ec2_client=ec2)
    with stub:
        history = prices.spot_history("g5.xlarge", "us-east-1", "us-east-1a", T0, T0 + 3600)
        again = prices.spot_history("g5.xlarge", "us-east-1", "us-east-1a", T0, T0 + 3600)  # from the disk cache
    stub.assert_no_pending_responses()
    assert history == again == [PricePoint(T0, 0.4), PricePoint(T0 + 1800, 0.6)]
    assert integrate_usd(history, T0, T0 + 3600) == pytest.approx(0.5)


def test_empty_spot_history_is_unpriced(tmp_path) -> None:
    ec2, stub = stubbed("ec2")
    stub.add_response("describe_spot_price_history", {"SpotPriceHistory": [], "NextToken": ""})
    with stub:
        assert AwsPrices(tmp_path, ec2_client=ec2).spot_history("g5.xlarge", "us-east-1", "", T0, T0 + 60) == []


def test_on_demand_from_get_products(tmp_path) -> None:
    pricing, stub = stubbed("pricing")
    product = {
        "product": {"attributes": {"instanceType": "g6.xlarge"}},
        "terms": {
            "OnDemand": {"T1": {"priceDimensions": {"D1": {"unit": "Hrs", "pricePerUnit": {"USD": "0.8048000000"}}}}}
        },
    }
    stub.add_response("get_products", {"PriceList": [json.dumps(product)], "FormatVersion": "aws_v1", "NextToken": ""})
    with stub:
        assert AwsPrices(tmp_path, pricing_client=pricing).on_demand("g6.xlarge", "us-east-1") == pytest.approx(0.8048)


def test_unreachable_aws_falls_back_to_the_catalog_with_one_warning(tmp_path, caplog) -> None:
    ec2, stub = stubbed("ec2")
    pricing, pstub = stubbed("pricing")
    stub.add_client_error("describe_spot_price_history", "UnauthorizedOperation")
    pstub.add_client_error("get_products", "AccessDeniedException")
    prices = AwsPrices(tmp_path, ec2_client=ec2, pricing_client=pricing)
    with stub, pstub, caplog.at_level(logging.WARNING):
        history = prices.spot_history("g5.xlarge", "us-east-1", "use1-az1", T0, T0 + 60)
        on_demand = prices.on_demand("g5.xlarge", "us-east-1")
    assert history == [PricePoint(T0, pytest.approx(0.4177))] and on_demand == pytest.approx(1.006)
    assert sum("using the shipped catalog" in r.message for r in caplog.records) == 1
