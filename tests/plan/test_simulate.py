"""The spot-market simulator on hand-made markets (exact numbers) and on the shipped real traces."""

from __future__ import annotations

import pytest

from tuner.config import CampaignProfile, ConfigError, StrategyConfig
from tuner.plan.simulate import evaluate, interruption_rate_per_h, replay
from tuner.plan.traces import (
    MARKETS,
    Market,
    ZoneTrace,
    aws_v100,
    cluster_events,
    gcp_h100,
)

TICK_S = 600.0
PROFILE = CampaignProfile(trials=1, epochs=6, epoch_s=600.0, checkpoint_s=0.0, restart_s=0.0, boot_s=0.0, concurrency=1)
PERIODIC = dict(
    checkpoint="periodic", every_s=1500.0, zones="one", fallback=False, unnoticed_fraction=0.0, replacement=False
)


def market(*zones: tuple[str, float]) -> Market:
    """Zones from strings of 1 (available) / 0, at a spot price; on-demand $3/h."""
    traces = [
        ZoneTrace(f"z{i}", [c == "1" for c in avail], [price] * len(avail), 3.0)
        for i, (avail, price) in enumerate(zones)
    ]
    return Market("hand", "test GPU", TICK_S, 0.0, traces, notice_s=120.0)


def test_undisturbed_campaign_costs_exactly_its_gpu_hours_at_spot() -> None:
    out = replay(market(("1" * 10, 1.0)), PROFILE, StrategyConfig(**PERIODIC), 0)
    assert out.cost_usd == pytest.approx(1.0) and out.on_demand_cost_usd == pytest.approx(3.0)  # 1 GPU-hour
    assert out.makespan_s == pytest.approx(3600) and out.preemptions == 0 and out.vs_ideal == pytest.approx(1.0)


def test_preemption_without_notice_loses_the_work_since_the_last_checkpoint() -> None:
    # Available 3 ticks (1800 s trained, checkpoint at 1500 s), gone 2 ticks, back.
    m = market(("1110011111", 1.0))
    out = replay(m, PROFILE, StrategyConfig(notice=False, **PERIODIC), 0)
    assert out.preemptions == 1 and out.lost_work_s == pytest.approx(300.0)
    assert out.makespan_s == pytest.approx(5 * TICK_S + 2100)  # 3 ticks, 2 waiting, then 1800 + 300 redone
    assert out.cost_usd == pytest.approx((1800 + 2100) / 3600)  # paid while running, not while waiting
    assert out.recovery_s == pytest.approx(2 * TICK_S)  # waited two ticks for the zone
    with_notice = replay(m, PROFILE, StrategyConfig(notice=True, **PERIODIC), 0)
    assert with_notice.lost_work_s == 0 and with_notice.makespan_s == pytest.approx(5 * TICK_S + 1800)
    some_unnoticed = replay(m, PROFILE, StrategyConfig(**{**PERIODIC, "unnoticed_fraction": 0.25}), 0)
    assert some_unnoticed.lost_work_s == pytest.approx(0.25 * 300.0)  # the expected loss: a quarter come unannounced


def test_checkpoint_writes_and_restarts_take_time() -> None:
    profile = CampaignProfile(trials=1, epochs=6, epoch_s=600.0, checkpoint_s=60.0, restart_s=120.0, concurrency=1)
    out = replay(market(("1" * 10, 1.0)), profile, StrategyConfig(**PERIODIC), 0)
    assert out.makespan_s == pytest.approx(120 + 3600 + 2 * 60)  # checkpoints at 1500 s and 3000 s of training


def test_diversification_moves_to_the_cheapest_zone_with_capacity() -> None:
    m = market(("1100000000", 1.0), ("1111111111", 2.0))
    one = replay(m, PROFILE, StrategyConfig(**PERIODIC), 0)
    assert one.makespan_s > 6 * TICK_S and not one.met_deadline  # waits for its zone: never back in this trace...
    all_zones = replay(m, PROFILE, StrategyConfig(**{**PERIODIC, "zones": "all"}), 0)
    assert all_zones.preemptions == 1 and all_zones.makespan_s == pytest.approx(2 * TICK_S + 2400)
    assert all_zones.cost_usd == pytest.approx(1200 / 3600 * 1.0 + 2400 / 3600 * 2.0)


@pytest.mark.parametrize(
    "notice_s, asked_lead_s, boot_s",
    [(120.0, 90.0, 60.0), (120.0, 120.0, 60.0), (30.0, 90.0, 60.0)],  # AWS's notice, 90 s ahead or at it; GCP's
)
def test_a_node_asked_for_ahead_of_the_loss_shortens_the_restart_and_pays_the_lead_twice(
    notice_s: float, asked_lead_s: float, boot_s: float
) -> None:
    """Zone 0 goes after 2 ticks, zone 1 has capacity: the trial restarts there at once. Asked for
    ``replacement_lead_s`` before the deadline (at the notice if shorter), the restart is the boot beyond that
    lead plus the process start (30 s), and the lead is paid on both nodes; asked for at the loss, the whole
    restart (90 s)."""
    m = market(("1100000000", 1.0), ("1111111111", 2.0))
    m.notice_s = notice_s
    profile = CampaignProfile(
        trials=1, epochs=6, epoch_s=600.0, checkpoint_s=0.0, restart_s=90.0, boot_s=boot_s, concurrency=1
    )
    at_loss = replay(m, profile, StrategyConfig(**{**PERIODIC, "zones": "all"}), 0)
    asked = StrategyConfig(**{**PERIODIC, "zones": "all", "replacement": True, "replacement_lead_s": asked_lead_s})
    ahead = replay(m, profile, asked, 0)
    lead_s = min(notice_s, asked_lead_s)
    restart_s, left_s = max(0.0, boot_s - lead_s) + 30.0, 3600 - (2 * TICK_S - 90)  # the first start: 90 s
    assert at_loss.makespan_s == pytest.approx(2 * TICK_S + 90 + left_s)  # restarted the tick it was lost
    assert ahead.makespan_s == pytest.approx(2 * TICK_S + restart_s + left_s)
    assert at_loss.cost_usd == pytest.approx(2 * TICK_S / 3600 * 1.0 + (90 + left_s) / 3600 * 2.0)
    assert ahead.cost_usd == pytest.approx(2 * TICK_S / 3600 * 1.0 + (restart_s + lead_s + left_s) / 3600 * 2.0)


def test_a_restart_shorter_than_a_launch_is_all_launch() -> None:
    """A measured restart of a few seconds (the twin's) with no boot_s given: the launch is that restart."""
    assert CampaignProfile(restart_s=14.5).launch_s == 14.5 and CampaignProfile().launch_s == 60.0
    with pytest.raises(ConfigError, match="boot_s must be in"):
        CampaignProfile(restart_s=14.5, boot_s=60.0)


def test_fallback_to_on_demand_keeps_the_deadline() -> None:
    m = market(("1000000000000000", 1.0))
    late = replay(m, PROFILE, StrategyConfig(**PERIODIC), 0)
    kept = replay(m, PROFILE, StrategyConfig(**{**PERIODIC, "fallback": True, "deadline_factor": 1.5}), 0)
    assert kept.met_deadline and kept.on_demand_s > 0 and kept.makespan_s <= 1.5 * 3600
    assert kept.cost_usd > late.cost_usd  # on-demand is dearer, but the campaign ends in time


def test_interruption_rate_from_the_trace_before_the_start() -> None:
    m = market(("10" * 100, 1.0))  # a drop every other tick: 1 per 600 available seconds
    assert interruption_rate_per_h(m, 0, 150) == pytest.approx(6.0, rel=0.05)


def test_real_traces_load_as_published() -> None:
    aws, gcp, events = aws_v100(), gcp_h100(), cluster_events()
    assert [z.name for z in aws.zones] == ["us-east-1a", "us-east-2a", "us-west-2b"] and aws.ticks == 20158
    assert aws.tick_s == pytest.approx(195, abs=2) and aws.zones[0].on_demand_usd_per_gpu_hour == 3.06
    assert len(gcp.zones) == 7 and gcp.tick_s == 600 and (aws.notice_s, gcp.notice_s) == (120, 30)
    us_central = next(z for z in gcp.zones if z.name == "us-central1-b")
    assert us_central.on_demand_usd_per_gpu_hour == pytest.approx(82.52543396 / 8)
    assert 0.9 < sum(us_central.available) / len(us_central.available) < 0.92  # 1 = preempted, inverted
    assert len(events.zones) <= 40 and events.capacity_per_zone == 1
    assert max(sum(z.available[k] for z in events.zones) for k in range(events.ticks)) <= 32


def test_default_strategy_captures_most_of_the_savings_on_every_market() -> None:
    """Issue #7's savings target, on the shipped traces, for the default resnet campaign profile."""
    for name, build in MARKETS.items():
        s = evaluate(build(), CampaignProfile(), StrategyConfig(), starts=48)
        assert s.vs_ideal <= 1.10 and s.makespan_ratio <= 1.25 and s.met_deadline_pct == 100, (name, s.row())
    assert evaluate(aws_v100(), CampaignProfile(), StrategyConfig(), 48).savings_pct >= 63
    assert evaluate(gcp_h100(), CampaignProfile(), StrategyConfig(), 48).savings_pct >= 70


def test_an_elastic_trial_runs_on_what_is_left_and_grows_back_from_its_last_checkpoint() -> None:
    """Two one-GPU nodes (capacity 1 each), a 2-GPU trial of 3600 GPU-seconds. Fixed width waits while a
    node is gone; elastic [1, 2] trains on at half speed, and growing back redoes what it trained since
    its last checkpoint (Ray Train restarts the worker group from it)."""

    def nodes(second: str) -> Market:
        traces = [
            ZoneTrace("n0", [True] * 10, [1.0] * 10, 3.0),
            ZoneTrace("n1", [c == "1" for c in second], [1.0] * 10, 3.0),
        ]
        return Market("hand", "test GPU", TICK_S, 0.0, traces, notice_s=120.0, capacity_per_zone=1)

    wide = dict(PERIODIC, zones="all", notice=True)
    fixed, elastic = StrategyConfig(**wide, workers=[2, 2]), StrategyConfig(**wide, workers=[1, 2])
    gone_long = nodes("1000011111")
    waited, kept_on = replay(gone_long, PROFILE, fixed, 0), replay(gone_long, PROFILE, elastic, 0)
    assert waited.makespan_s == pytest.approx(5 * TICK_S + 1200)  # 600 s at width 2, 4 ticks waiting, 1200 s
    assert kept_on.makespan_s == pytest.approx(TICK_S + 4 * TICK_S)  # then 1200 full-width s at half speed
    assert waited.cost_usd == pytest.approx(1.0) and kept_on.cost_usd == pytest.approx(1.0)  # 1 GPU-hour either way
    back_soon = nodes("1011111111")
    waited, regrown = replay(back_soon, PROFILE, fixed, 0), replay(back_soon, PROFILE, elastic, 0)
    # one GPU's tick since the checkpoint
    assert regrown.lost_work_s == pytest.approx(600.0) and waited.lost_work_s == 0
    assert regrown.makespan_s == pytest.approx(waited.makespan_s) and regrown.cost_usd == pytest.approx(
        1.0 + 600 / 3600
    )
    with pytest.raises(ConfigError, match="never has more than 2 GPUs"):
        replay(gone_long, PROFILE, StrategyConfig(**wide, workers=[3, 4]), 0)
