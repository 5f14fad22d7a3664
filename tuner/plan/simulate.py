"""Replay a tuning campaign over a real spot market (``tuner.traces``) under a strategy.

The campaign (``CampaignProfile``) is ``concurrency`` streams of trials, each with an
equal share of the work (trials x epochs x GPU-seconds per epoch). A strategy's trials
span ``workers = [min, max]`` GPUs (data parallel, linear speed-up): fixed-width ones
(min = max) wait for all their GPUs; elastic ones run on as many as they can get, at
least min, restart at the surviving width when one is preempted and at a larger one
(from their last checkpoint, as Ray Train's resize does) when capacity returns. At every tick of the
trace each stream is waiting for capacity, starting (getting a node, restoring its
checkpoint), training (checkpointing at the strategy's interval, each write
stalling it ``checkpoint_s``), on on-demand, or done. A zone that turns unavailable
under a stream preempts it: with notice handling the trial checkpoints within the
notice and loses nothing, without it loses the work since its last checkpoint; a
strategy's ``unnoticed_fraction`` of preemptions comes without notice (as an expected loss). With
``replacement``, the next node is asked for before the deadline: a restart that finds capacity at once is
shorter by the part of the node's boot that lead covers, and the lead is paid twice (see
:func:`restart_after_preemption`).
Costs are the per-tick spot prices of the zones used (on-demand at list price).

The ideal a strategy is judged against: the campaign's GPU-hours at the spot prices
of the zones it used, with no lost work, no restarts and no waiting.
"""

from __future__ import annotations

import statistics
from collections import Counter
from dataclasses import dataclass, field
from typing import Optional

from tuner.config import CampaignProfile, ConfigError, StrategyConfig
from tuner.cost.fallback import Fallback
from tuner.plan.traces import Market
from tuner.trial.policy import lost_share, young_daly_interval_s

HISTORY_S = 7 * 86400.0  # adaptive: the interruption rate is estimated from this much trace before the start
MIN_HISTORY_H = 12.0  # with less available history than this, the rate is the whole-trace average
RETURN_SLACK_TICKS = 2  # an on-demand stream goes back to spot with this much slack beyond a restart


@dataclass
class Stream:
    work_left_s: float  # wall seconds at full width
    home: int  # its zone when a strategy keeps to one zone
    interval_s: float
    held: list[int] = field(default_factory=list)  # the zone of each spot GPU it holds while starting or running
    mode: str = "wait"  # wait | start | run | on_demand | done
    restart_left_s: float = 0.0
    since_checkpoint_s: float = 0.0
    debt_s: float = 0.0  # a checkpoint write that ran past the end of the last tick
    finished_s: float = 0.0
    cost_usd: float = 0.0
    spot_usd: float = 0.0
    spot_s: float = 0.0  # GPU-seconds on spot
    on_demand_s: float = 0.0  # GPU-seconds on on-demand
    preemptions: int = 0
    lost_s: float = 0.0  # GPU-seconds of training redone
    preempted_at_s: Optional[float] = None  # when the last preemption hit, until training resumes
    asked_tick: Optional[int] = None  # the tick of the last preemption (its next node asked for ahead of it)
    recovery_s: float = 0.0  # waiting for capacity + restarting, summed over preemptions

    def start(self, held: list[int], restart_s: float) -> None:
        """Start (again) on these spot GPUs."""
        self.held, self.mode, self.restart_left_s = held, "start", restart_s

    def back_to_checkpoint(self, lost_gpu_s: float, width: int) -> None:
        """Go back to the last checkpoint; ``lost_gpu_s`` of the training since is lost and done again."""
        self.work_left_s += lost_gpu_s / width
        self.lost_s += lost_gpu_s
        self.since_checkpoint_s, self.restart_left_s, self.debt_s = 0.0, 0.0, 0.0


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
            "strategy": self.strategy,
            "spot_usd": round(self.cost_usd, 2),
            "on_demand_usd": round(self.on_demand_cost_usd, 2),
            "savings_%": round(self.savings_pct, 1),
            "ideal_%": round(self.ideal_savings_pct, 1),
            "vs_ideal": round(self.vs_ideal, 3),
            "makespan_h": round(self.makespan_h, 2),
            "vs_on_demand": round(self.makespan_ratio, 2),
            "preemptions": self.preemptions,
            "lost_h": round(self.lost_work_h, 3),
            "fallback_h": round(self.on_demand_h, 2),
            "deadline_met_%": round(self.met_deadline_pct),
        }


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


def _checkpoint_interval_s(
    profile: CampaignProfile, strategy: StrategyConfig, market: Market, zone: int, tick: int
) -> float:
    if strategy.checkpoint == "periodic":
        return strategy.every_s
    lossy = interruption_rate_per_h(market, zone, tick) * _lost_share(profile, strategy, market)
    return young_daly_interval_s(profile.checkpoint_s, lossy, strategy.min_interval_s, strategy.max_interval_s)


def _lost_share(profile: CampaignProfile, strategy: StrategyConfig, market: Market) -> float:
    """The share of a preemption's work since the last checkpoint that is lost (an expectation over preemptions)."""
    return lost_share(profile.checkpoint_s, market.notice_s if strategy.notice else None, strategy.unnoticed_fraction)


def restart_after_preemption(
    profile: CampaignProfile, strategy: StrategyConfig, notice_s: float
) -> tuple[float, float]:
    """(seconds, overlap GPU-seconds) of a restart on a node that was free when its trial's node went: the
    expectation over preemptions with and without a notice (lead ``notice_s``).

    Asked for ahead of the deadline (``strategy.replacement``: ``replacement_lead_s`` before it, or at the notice
    if that gives less), the node boots meanwhile: the restart is the boot beyond that lead plus the process
    start. What it costs beyond the restart is the lead itself, paid twice: the new node booting while the trial
    still trains on the old one, then the old one idle until its deadline once the trial has moved
    (``checkpoint.move``), per GPU; priced at the new node's zone (the old node's idle part is the old zone's: a
    simplification). Asked for at the loss, it is the whole restart and nothing more. A trial that restarts at
    its surviving width (elastic) asks for no node."""

    if not (strategy.notice and strategy.replacement):
        return profile.restart_s, 0.0
    noticed, lead_s = 1.0 - strategy.unnoticed_fraction, min(notice_s, strategy.replacement_lead_s)
    asked_s = max(0.0, profile.launch_s - lead_s) + profile.restart_s - profile.launch_s
    return noticed * asked_s + (1.0 - noticed) * profile.restart_s, noticed * lead_s


def _advance(s: Stream, budget_s: float, profile: CampaignProfile, rate: float) -> float:
    """Spend up to ``budget_s`` restarting and training at ``rate`` (the share of full width it runs at);
    return the wall seconds used (paid)."""
    budget_s -= s.debt_s
    used, s.debt_s = s.debt_s, 0.0
    if s.restart_left_s > 0:
        step = min(budget_s, s.restart_left_s)
        s.restart_left_s -= step
        used += step
        budget_s -= step
    while budget_s > 1e-9 and s.work_left_s > 1e-9 and s.restart_left_s <= 0:
        step = min(budget_s, s.interval_s - s.since_checkpoint_s, s.work_left_s / rate)
        s.since_checkpoint_s += step
        s.work_left_s -= step * rate
        used += step
        budget_s -= step
        if s.since_checkpoint_s >= s.interval_s - 1e-9 and s.work_left_s > 1e-9:
            s.since_checkpoint_s = 0.0
            used += profile.checkpoint_s
            budget_s -= profile.checkpoint_s
    if budget_s < 0:
        s.debt_s, used = -budget_s, used + budget_s  # paid in the next tick
    return used


def _free_slots(market: Market, candidates: list[int], used_by: Counter[int], tick: int, want: int) -> list[int]:
    """Up to ``want`` free spot GPUs among ``candidates``' zones, cheapest first (a zone per GPU)."""
    slots: list[int] = []
    for z in sorted(candidates, key=lambda z: market.zones[z].spot_usd_per_gpu_hour[tick]):
        if market.zones[z].available[tick]:
            room = want if market.capacity_per_zone is None else market.capacity_per_zone - used_by[z]
            slots += [z] * max(0, min(room, want - len(slots)))
    return slots


def replay(market: Market, profile: CampaignProfile, strategy: StrategyConfig, start_tick: int) -> Outcome:
    """One campaign from ``start_tick`` (the trace wraps around if the campaign outlives it)."""
    ticks, dt = market.ticks, market.tick_s
    low, wide = strategy.workers
    if market.capacity_per_zone is not None and low > market.capacity_per_zone * len(market.zones):
        raise ConfigError(
            f"strategy {strategy.name}: {low} workers per trial, {market.name} never has more than "
            f"{market.capacity_per_zone * len(market.zones)} GPUs"
        )
    per_stream_s = profile.trials * profile.epochs * profile.epoch_s / profile.concurrency  # GPU-seconds
    on_demand_price = statistics.mean(z.on_demand_usd_per_gpu_hour for z in market.zones)
    on_demand_makespan_s = per_stream_s / wide + profile.restart_s
    deadline_s = strategy.deadline_factor * on_demand_makespan_s
    rule = Fallback(profile.restart_s, return_margin_s=RETURN_SLACK_TICKS * dt)  # the live driver's rule too
    asked = restart_after_preemption(profile, strategy, market.notice_s)
    zones = list(range(len(market.zones)))
    homes = [i % len(market.zones) for i in range(profile.concurrency)]
    if strategy.zones == "one":  # the cheapest zone at the start, for every stream
        cheapest = min(zones, key=lambda z: market.zones[z].spot_usd_per_gpu_hour[start_tick % ticks])
        homes = [cheapest] * profile.concurrency if market.capacity_per_zone is None else homes
    streams = [
        Stream(per_stream_s / wide, home, _checkpoint_interval_s(profile, strategy, market, home, start_tick))
        for home in homes
    ]
    t = 0.0
    k = start_tick
    while any(s.mode != "done" for s in streams):
        tick = k % ticks
        used_by = Counter(z for s in streams if s.mode in ("start", "run") for z in s.held)
        for s in streams:
            if s.mode == "done":
                continue
            candidates = [s.home] if strategy.zones == "one" else zones
            if s.mode in ("start", "run") and not all(market.zones[z].available[tick] for z in s.held):
                s.preemptions += 1
                s.back_to_checkpoint(s.since_checkpoint_s * len(s.held) * _lost_share(profile, strategy, market), wide)
                used_by.subtract(s.held)
                s.preempted_at_s, s.asked_tick = t, k
                kept = [z for z in s.held if market.zones[z].available[tick]]
                if len(kept) >= low:  # elastic: on at the surviving width
                    s.start(kept, profile.restart_s)
                    used_by.update(kept)
                else:
                    s.held, s.mode = [], "wait"
            elif s.mode == "run" and len(s.held) < wide:
                if more := _free_slots(market, candidates, used_by, tick, wide - len(s.held)):
                    s.back_to_checkpoint(s.since_checkpoint_s * len(s.held), wide)  # Ray Train grows from it
                    s.start(s.held + more, profile.restart_s)
                    used_by.update(more)
            slowdown = 1.0 + profile.checkpoint_s / s.interval_s
            slack_s = rule.slack_s(deadline_s, t + dt, s.work_left_s * slowdown)
            if s.mode == "on_demand" and rule.back_to_spot(slack_s):
                s.mode = "wait"  # spot may be back
            if s.mode == "wait":
                if strategy.fallback and rule.on_demand_now(slack_s):
                    s.mode, s.held, s.restart_left_s = "on_demand", [], profile.restart_s
                elif len(slots := _free_slots(market, candidates, used_by, tick, wide)) >= low:
                    # capacity asked for ahead of the loss is only up now if there was some to launch at once
                    restart_s, overlap_s = asked if s.asked_tick == k else (profile.restart_s, 0.0)
                    s.start(slots, restart_s)
                    s.cost_usd += overlap_s * sum(market.zones[z].spot_usd_per_gpu_hour[tick] for z in slots) / 3600
                    used_by.update(slots)
                    if strategy.checkpoint == "adaptive":
                        s.interval_s = _checkpoint_interval_s(profile, strategy, market, slots[0], tick)
            if s.mode in ("start", "run", "on_demand"):
                restart_before_s = s.restart_left_s
                width = wide if s.mode == "on_demand" else len(s.held)
                used = _advance(s, dt, profile, width / wide)
                if s.preempted_at_s is not None and s.restart_left_s <= 0:
                    s.recovery_s += t + restart_before_s - s.preempted_at_s  # training again from here
                    s.preempted_at_s = None
                if s.mode == "on_demand":
                    price = on_demand_price * wide
                    s.on_demand_s += used * wide
                else:
                    price = sum(market.zones[z].spot_usd_per_gpu_hour[tick] for z in s.held)
                    s.spot_s += used * width
                    s.spot_usd += price * used / 3600.0
                    if s.restart_left_s <= 0:
                        s.mode = "run"
                s.cost_usd += price * used / 3600.0
                if s.work_left_s <= 1e-9:
                    s.mode, s.finished_s, s.held = "done", t + used, []
        t += dt
        k += 1
    work_h = profile.concurrency * per_stream_s / 3600.0
    spot_s = sum(s.spot_s for s in streams)
    ideal_price = (
        sum(s.spot_usd for s in streams) * 3600.0 / spot_s
        if spot_s
        else min(z.spot_usd_per_gpu_hour[start_tick % ticks] for z in market.zones)
    )
    makespan_s = max(s.finished_s for s in streams)
    return Outcome(
        cost_usd=sum(s.cost_usd for s in streams),
        on_demand_cost_usd=work_h * on_demand_price,
        ideal_usd=work_h * ideal_price,
        makespan_s=makespan_s,
        on_demand_makespan_s=on_demand_makespan_s,
        preemptions=sum(s.preemptions for s in streams),
        lost_work_s=sum(s.lost_s for s in streams),
        on_demand_s=sum(s.on_demand_s for s in streams),
        met_deadline=makespan_s <= deadline_s + 1e-6,
        recovery_s=sum(s.recovery_s for s in streams),
    )


def evaluate(market: Market, profile: CampaignProfile, strategy: StrategyConfig, starts: int) -> Summary:
    """Replay from ``starts`` start ticks spread evenly over the trace; means."""
    ticks = market.ticks
    outcomes = [replay(market, profile, strategy, i * ticks // starts) for i in range(starts)]
    mean = statistics.fmean  # means: rare preemptions would vanish in a median

    return Summary(
        strategy=strategy.name,
        market=market.name,
        gpu=market.gpu,
        runs=len(outcomes),
        cost_usd=mean([o.cost_usd for o in outcomes]),
        on_demand_cost_usd=mean([o.on_demand_cost_usd for o in outcomes]),
        savings_pct=mean([o.savings_pct for o in outcomes]),
        ideal_savings_pct=mean([o.ideal_savings_pct for o in outcomes]),
        vs_ideal=mean([o.vs_ideal for o in outcomes]),
        makespan_h=mean([o.makespan_s for o in outcomes]) / 3600.0,
        makespan_ratio=mean([o.makespan_ratio for o in outcomes]),
        preemptions=mean([o.preemptions for o in outcomes]),
        lost_work_h=mean([o.lost_work_s for o in outcomes]) / 3600.0,
        on_demand_h=mean([o.on_demand_s for o in outcomes]) / 3600.0,
        met_deadline_pct=100.0 * sum(o.met_deadline for o in outcomes) / len(outcomes),
        outcomes=outcomes,
    )
