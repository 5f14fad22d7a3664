"""Replay a tuning campaign over a real spot market (``tuner.traces``) under a strategy.

The campaign (``CampaignProfile``) is ``concurrency`` streams of trials, each with an
equal share of the work (trials x epochs x seconds per epoch). At every tick of the
trace each stream is waiting for capacity, starting (getting a node, restoring its
checkpoint), training (checkpointing at the strategy's interval, each write
stalling it ``checkpoint_s``), on on-demand, or done. A zone that turns unavailable
under a stream preempts it: with notice handling the trial checkpoints within the
notice and loses nothing, without it loses the work since its last checkpoint; a
strategy's ``unnoticed_fraction`` of preemptions comes without notice (as an expected loss).
Costs are the per-tick spot prices of the zones used (on-demand at list price).

The ideal a strategy is judged against: the campaign's GPU-hours at the spot prices
of the zones it used, with no lost work, no restarts and no waiting.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Optional

from tuner.config import CampaignProfile, StrategyConfig
from tuner.cost.fallback import Fallback
from tuner.plan.traces import Market
from tuner.trial.policy import lost_share, young_daly_interval_s

HISTORY_S = 7 * 86400.0  # adaptive: the interruption rate is estimated from this much trace before the start
MIN_HISTORY_H = 12.0  # with less available history than this, the rate is the whole-trace average
RETURN_SLACK_TICKS = 2  # an on-demand stream goes back to spot with this much slack beyond a restart


@dataclass
class Stream:
    work_left_s: float
    home: int  # its zone when a strategy keeps to one zone
    interval_s: float
    zone: Optional[int] = None
    mode: str = "wait"  # wait | start | run | on_demand | done
    restart_left_s: float = 0.0
    since_checkpoint_s: float = 0.0
    debt_s: float = 0.0  # a checkpoint write that ran past the end of the last tick
    finished_s: float = 0.0
    cost_usd: float = 0.0
    spot_usd: float = 0.0
    spot_s: float = 0.0
    on_demand_s: float = 0.0
    preemptions: int = 0
    lost_s: float = 0.0
    preempted_at_s: Optional[float] = None  # when the last preemption hit, until training resumes
    recovery_s: float = 0.0  # waiting for capacity + restarting, summed over preemptions

    @property
    def on_spot(self) -> int:
        """The zone a stream that is starting or running on spot is in."""
        assert self.zone is not None, f"a stream in mode {self.mode} has no zone"
        return self.zone


@dataclass
class Outcome:
    """One campaign replayed from one start tick."""

    cost_usd: float
    on_demand_cost_usd: float
    ideal_usd: float
    makespan_s: float
    on_demand_makespan_s: float
    preemptions: int
    lost_work_s: float
    on_demand_s: float
    met_deadline: bool
    recovery_s: float = 0.0

    @property
    def savings_pct(self) -> float:
        return 100.0 * (1.0 - self.cost_usd / self.on_demand_cost_usd)

    @property
    def ideal_savings_pct(self) -> float:
        return 100.0 * (1.0 - self.ideal_usd / self.on_demand_cost_usd)

    @property
    def vs_ideal(self) -> float:
        return self.cost_usd / self.ideal_usd

    @property
    def makespan_ratio(self) -> float:
        return self.makespan_s / self.on_demand_makespan_s


@dataclass
class Summary:
    """Means over the start ticks (and the share of runs that met the deadline)."""

    strategy: str
    market: str
    gpu: str
    runs: int
    cost_usd: float
    on_demand_cost_usd: float
    savings_pct: float
    ideal_savings_pct: float
    vs_ideal: float
    makespan_h: float
    makespan_ratio: float
    preemptions: float
    lost_work_h: float
    on_demand_h: float
    met_deadline_pct: float
    outcomes: list[Outcome] = field(default_factory=list, repr=False)

    def row(self) -> dict[str, object]:
        return {
            "strategy": self.strategy, "spot_usd": round(self.cost_usd, 2), "on_demand_usd": round(self.on_demand_cost_usd, 2),
            "savings_%": round(self.savings_pct, 1), "ideal_%": round(self.ideal_savings_pct, 1),
            "vs_ideal": round(self.vs_ideal, 3), "makespan_h": round(self.makespan_h, 2),
            "vs_on_demand": round(self.makespan_ratio, 2), "preemptions": self.preemptions,
            "lost_h": round(self.lost_work_h, 3), "fallback_h": round(self.on_demand_h, 2),
            "deadline_met_%": round(self.met_deadline_pct),
        }  # fmt: skip


def interruption_rate_per_h(market: Market, zone: int, tick: int) -> float:
    """Drops (available -> not) per available hour in the week of trace before ``tick``."""
    z = market.zones[zone]
    first = max(0, tick - int(HISTORY_S / market.tick_s))
    window = z.available[first : tick + 1]
    if len(window) * market.tick_s / 3600.0 < MIN_HISTORY_H:
        window = z.available
    drops = sum(1 for a, b in zip(window, window[1:]) if a and not b)
    available_h = sum(window) * market.tick_s / 3600.0
    return max(drops, 0.5) / max(available_h, market.tick_s / 3600.0)


def _checkpoint_interval_s(profile: CampaignProfile, strategy: StrategyConfig, market: Market, zone: int, tick: int) -> float:
    if strategy.checkpoint == "periodic":
        return strategy.every_s
    lossy = interruption_rate_per_h(market, zone, tick) * _lost_share(profile, strategy, market)
    return young_daly_interval_s(profile.checkpoint_s, lossy, strategy.min_interval_s, strategy.max_interval_s)


def _lost_share(profile: CampaignProfile, strategy: StrategyConfig, market: Market) -> float:
    """The share of a preemption's work since the last checkpoint that is lost (an expectation over preemptions)."""
    return lost_share(profile.checkpoint_s, market.notice_s if strategy.notice else None, strategy.unnoticed_fraction)


def _advance(s: Stream, budget_s: float, profile: CampaignProfile) -> float:
    """Spend up to ``budget_s`` restarting and training; return the wall seconds used (paid)."""
    budget_s -= s.debt_s
    used, s.debt_s = s.debt_s, 0.0
    if s.restart_left_s > 0:
        step = min(budget_s, s.restart_left_s)
        s.restart_left_s -= step
        used += step
        budget_s -= step
    while budget_s > 1e-9 and s.work_left_s > 1e-9 and s.restart_left_s <= 0:
        step = min(budget_s, s.interval_s - s.since_checkpoint_s, s.work_left_s)
        s.since_checkpoint_s += step
        s.work_left_s -= step
        used += step
        budget_s -= step
        if s.since_checkpoint_s >= s.interval_s - 1e-9 and s.work_left_s > 1e-9:
            s.since_checkpoint_s = 0.0
            used += profile.checkpoint_s
            budget_s -= profile.checkpoint_s
    if budget_s < 0:
        s.debt_s, used = -budget_s, used + budget_s  # paid in the next tick
    return used


def replay(market: Market, profile: CampaignProfile, strategy: StrategyConfig, start_tick: int) -> Outcome:
    """One campaign from ``start_tick`` (the trace wraps around if the campaign outlives it)."""
    ticks, dt = market.ticks, market.tick_s
    per_stream_s = profile.trials * profile.epochs * profile.epoch_s / profile.concurrency
    on_demand_price = statistics.mean(z.on_demand_usd_per_gpu_hour for z in market.zones)
    on_demand_makespan_s = per_stream_s + profile.restart_s
    deadline_s = strategy.deadline_factor * on_demand_makespan_s
    rule = Fallback(profile.restart_s, return_margin_s=RETURN_SLACK_TICKS * dt)  # the live driver's rule too
    zones = range(len(market.zones))
    homes = [i % len(market.zones) for i in range(profile.concurrency)]
    if strategy.zones == "one":  # the cheapest zone at the start, for every stream
        cheapest = min(zones, key=lambda z: market.zones[z].spot_usd_per_gpu_hour[start_tick % ticks])
        homes = [cheapest] * profile.concurrency if market.capacity_per_zone is None else homes
    streams = [Stream(per_stream_s, home, _checkpoint_interval_s(profile, strategy, market, home, start_tick))
               for home in homes]  # fmt: skip
    t = 0.0
    k = start_tick
    while any(s.mode != "done" for s in streams):
        tick = k % ticks
        used_by: dict[int, int] = {}
        for s in streams:
            if s.zone is not None and s.mode in ("start", "run"):
                used_by[s.zone] = used_by.get(s.zone, 0) + 1
        for s in streams:
            if s.mode == "done":
                continue
            if s.mode in ("start", "run") and not market.zones[s.on_spot].available[tick]:
                s.preemptions += 1
                lost = s.since_checkpoint_s * _lost_share(profile, strategy, market)
                s.work_left_s += lost
                s.lost_s += lost
                s.since_checkpoint_s, s.restart_left_s, s.debt_s, s.mode = 0.0, 0.0, 0.0, "wait"
                s.preempted_at_s = t
                used_by[s.on_spot] -= 1
            slowdown = 1.0 + profile.checkpoint_s / s.interval_s
            slack_s = rule.slack_s(deadline_s, t + dt, s.work_left_s * slowdown)
            if s.mode == "on_demand" and rule.back_to_spot(slack_s):
                s.mode = "wait"  # spot may be back
            if s.mode == "wait":
                if strategy.fallback and rule.on_demand_now(slack_s):
                    s.mode, s.zone, s.restart_left_s = "on_demand", None, profile.restart_s
                else:
                    candidates = [s.home] if strategy.zones == "one" else list(zones)
                    free = [z for z in candidates if market.zones[z].available[tick]
                            and (market.capacity_per_zone is None or used_by.get(z, 0) < market.capacity_per_zone)]  # fmt: skip
                    if free:
                        s.zone = min(free, key=lambda z: market.zones[z].spot_usd_per_gpu_hour[tick])
                        s.mode, s.restart_left_s = "start", profile.restart_s
                        used_by[s.zone] = used_by.get(s.zone, 0) + 1
                        if strategy.checkpoint == "adaptive":
                            s.interval_s = _checkpoint_interval_s(profile, strategy, market, s.zone, tick)
            if s.mode in ("start", "run", "on_demand"):
                restart_before_s = s.restart_left_s
                used = _advance(s, dt, profile)
                if s.preempted_at_s is not None and s.restart_left_s <= 0:
                    s.recovery_s += t + restart_before_s - s.preempted_at_s  # training again from here
                    s.preempted_at_s = None
                if s.mode == "on_demand":
                    price = on_demand_price
                    s.on_demand_s += used
                else:
                    price = market.zones[s.on_spot].spot_usd_per_gpu_hour[tick]
                    s.spot_s += used
                    s.spot_usd += price * used / 3600.0
                    if s.restart_left_s <= 0:
                        s.mode = "run"
                s.cost_usd += price * used / 3600.0
                if s.work_left_s <= 1e-9:
                    s.mode, s.finished_s = "done", t + used
        t += dt
        k += 1
    work_h = profile.concurrency * per_stream_s / 3600.0
    spot_s = sum(s.spot_s for s in streams)
    ideal_price = (sum(s.spot_usd for s in streams) * 3600.0 / spot_s if spot_s
                   else min(z.spot_usd_per_gpu_hour[start_tick % ticks] for z in market.zones))  # fmt: skip
    makespan_s = max(s.finished_s for s in streams)
    return Outcome(
        cost_usd=sum(s.cost_usd for s in streams), on_demand_cost_usd=work_h * on_demand_price,
        ideal_usd=work_h * ideal_price, makespan_s=makespan_s, on_demand_makespan_s=on_demand_makespan_s,
        preemptions=sum(s.preemptions for s in streams), lost_work_s=sum(s.lost_s for s in streams),
        on_demand_s=sum(s.on_demand_s for s in streams), met_deadline=makespan_s <= deadline_s + 1e-6,
        recovery_s=sum(s.recovery_s for s in streams),
    )  # fmt: skip


def evaluate(market: Market, profile: CampaignProfile, strategy: StrategyConfig, starts: int) -> Summary:
    """Replay from ``starts`` start ticks spread evenly over the trace; means."""
    ticks = market.ticks
    outcomes = [replay(market, profile, strategy, i * ticks // starts) for i in range(starts)]
    mean = statistics.fmean  # means: rare preemptions would vanish in a median

    return Summary(
        strategy=strategy.name, market=market.name, gpu=market.gpu, runs=len(outcomes),
        cost_usd=mean([o.cost_usd for o in outcomes]), on_demand_cost_usd=mean([o.on_demand_cost_usd for o in outcomes]),
        savings_pct=mean([o.savings_pct for o in outcomes]), ideal_savings_pct=mean([o.ideal_savings_pct for o in outcomes]),
        vs_ideal=mean([o.vs_ideal for o in outcomes]), makespan_h=mean([o.makespan_s for o in outcomes]) / 3600.0,
        makespan_ratio=mean([o.makespan_ratio for o in outcomes]), preemptions=mean([o.preemptions for o in outcomes]),
        lost_work_h=mean([o.lost_work_s for o in outcomes]) / 3600.0,
        on_demand_h=mean([o.on_demand_s for o in outcomes]) / 3600.0,
        met_deadline_pct=100.0 * sum(o.met_deadline for o in outcomes) / len(outcomes), outcomes=outcomes,
    )  # fmt: skip
