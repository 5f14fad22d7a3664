import math

import pytest

from tuner.config import CheckpointConfig
from tuner.spot.labels import INSTANCE_TYPE
from tuner.trial.policy import (
    BUCKET_MONTHLY_FRACTION,
    CheckpointPolicy,
    advisor_rate_per_h,
    lost_share,
    young_daly_interval_s,
)


def test_young_daly_formula_and_bounds() -> None:
    rate_per_h = 0.36  # one interruption per 10,000 s
    assert young_daly_interval_s(2.0, rate_per_h, 1, 1e9) == pytest.approx(math.sqrt(2 * 2.0 * 10_000))
    assert young_daly_interval_s(2.0, rate_per_h, 500, 1e9) == 500
    assert young_daly_interval_s(2.0, rate_per_h, 1, 100) == 100


def test_advisor_buckets() -> None:
    # us-east-1 in the shipped snapshot: g5.xlarge ">20%", g4dn.xlarge "15-20%"
    assert advisor_rate_per_h("g5.xlarge", "us-east-1") == pytest.approx(0.25 / 730)
    assert advisor_rate_per_h("g4dn.xlarge", "us-east-1") == pytest.approx(0.175 / 730)
    assert advisor_rate_per_h("no-such.type", "us-east-1") is None


def test_adaptive_interval_shorter_for_riskier_bucket() -> None:
    """>20 % bucket gets a shorter interval than a <5 % bucket, for the same checkpoint cost."""
    from tuner.trial.policy import _advisor

    risky = next(k for k, v in _advisor().items() if v == ">20%")
    safe = next(k for k, v in _advisor().items() if v == "<5%")
    cfg = CheckpointConfig(policy="adaptive", min_interval_s=1, max_interval_s=1e9, unnoticed_fraction=1.0)
    policies = []
    for region, itype in (risky, safe):
        policy = CheckpointPolicy.for_node(
            cfg, {INSTANCE_TYPE: itype, "ray.io/availability-region": region}, "g5.xlarge", "us-east-1"
        )
        policy.observe_cost(5.0, notice_usable=True)
        policies.append(policy)
    assert policies[0].interval_s < policies[1].interval_s
    assert policies[0].interval_s == pytest.approx(math.sqrt(2 * 5.0 / (0.25 / 730 / 3600)))


def test_adaptive_decisions() -> None:
    policy = CheckpointPolicy.for_node(
        CheckpointConfig(policy="adaptive", interruption_rate_per_h=36.0, min_interval_s=1, unnoticed_fraction=1.0),
        {},
        "g5.xlarge",
        "us-east-1",
    )
    assert policy.due_at_report(1, 0.1)  # first checkpoint measures C
    policy.observe_cost(0.5, notice_usable=True)
    assert policy.interval_s == pytest.approx(math.sqrt(2 * 0.5 / 0.01))  # 10 s
    assert not policy.due_between_reports(5) and policy.due_between_reports(10.5)


def test_with_a_notice_only_interruptions_without_one_shorten_the_interval() -> None:
    """A drain notice checkpoints at once: a write that fits in it loses nothing, so only the unnoticed share
    of interruptions counts; a write longer than the notice, or no notice handling, counts them all."""
    assert (
        lost_share(5.0, 120.0, 0.1) == 0.1
        and lost_share(200.0, 120.0, 0.1) == 1.0
        and lost_share(5.0, None, 0.1) == 1.0
    )
    cfg = dict(policy="adaptive", interruption_rate_per_h=0.36, min_interval_s=1, max_interval_s=1e9)
    intervals = {}
    for fraction in (1.0, 0.1, 0.0):
        policy = CheckpointPolicy.for_node(
            CheckpointConfig(**cfg, unnoticed_fraction=fraction), {}, "g5.xlarge", "us-east-1"
        )
        policy.observe_cost(2.0, notice_usable=True)
        intervals[fraction] = policy.interval_s
    assert intervals[0.1] == pytest.approx(intervals[1.0] * math.sqrt(10))  # lambda / 10 -> T x sqrt(10)
    assert intervals[0.0] == 1e9  # nothing ever lost: the upper bound
    slow = CheckpointPolicy.for_node(
        CheckpointConfig(**cfg, notice_s=1.0, unnoticed_fraction=0.1), {}, "g5.xlarge", "us-east-1"
    )
    slow.observe_cost(2.0, notice_usable=True)  # the write outlasts the notice
    assert slow.interval_s == pytest.approx(intervals[1.0])
    unhooked = CheckpointPolicy.for_node(CheckpointConfig(**cfg, unnoticed_fraction=0.1), {}, "g5.xlarge", "us-east-1")
    unhooked.observe_cost(2.0, notice_usable=False)  # no session.step: a notice waits for the next report
    assert unhooked.interval_s == pytest.approx(intervals[1.0])


def test_periodic_decisions() -> None:
    policy = CheckpointPolicy.for_node(CheckpointConfig(every_reports=2, every_s=30), {}, "g5.xlarge", "us-east-1")
    assert not policy.due_at_report(1, 5) and policy.due_at_report(2, 5)
    assert policy.due_between_reports(31) and not policy.due_between_reports(29)


def test_a_node_without_labels_is_taken_in_the_pricing_region_as_the_ledger_prices_it() -> None:
    cfg = CheckpointConfig(policy="adaptive")
    for region, bucket in (("eu-north-1", "5-10%"), ("us-east-1", ">20%")):  # g5.xlarge's Spot Advisor buckets
        policy = CheckpointPolicy.for_node(cfg, {}, "g5.xlarge", region)
        assert policy.rate_per_h == pytest.approx(BUCKET_MONTHLY_FRACTION[bucket] / 730)
