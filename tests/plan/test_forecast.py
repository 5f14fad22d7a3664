"""The forecast evaluation on series whose best forecaster is known."""

from __future__ import annotations

import math
import random

from tuner.plan import forecast

TICK_S = 600.0  # 6 ticks an hour, 144 a day


def test_a_daily_pattern_is_found_by_the_seasonal_forecaster_and_a_random_walk_by_the_last_value() -> None:
    days = 20
    daily = [2.0 + math.sin(2 * math.pi * t / 144) for t in range(144 * days)]
    scores = forecast.evaluate_prices(daily, TICK_S)
    assert scores["seasonal_naive"] < 1e-9 and scores["last_value"] > 1.0
    rng = random.Random(0)
    walk = [2.0]
    for _ in range(144 * days):
        walk.append(max(0.5, walk[-1] + rng.gauss(0, 0.05)))
    scores = forecast.evaluate_prices(walk, TICK_S)
    assert scores["last_value"] < scores["seasonal_naive"] and scores["smoothing"] >= scores["last_value"] * 0.99


def test_capacity_events_are_losses_within_the_horizon_at_ticks_with_capacity() -> None:
    available = [True, True, True, False, True, True, True, True]
    assert forecast.capacity_events(available, 2) == [0.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0]


def test_capacity_that_goes_every_afternoon_is_foreseen_a_day_ahead() -> None:
    """Capacity gone for an hour at the same time each day: the seasonal forecaster catches every loss,
    the last value (the hour that just ended) none of them."""
    available = [not (90 <= t % 144 < 96) for t in range(144 * 20)]
    scores = forecast.evaluate_capacity(available, TICK_S)
    assert scores["seasonal_naive"].recall == 1.0 and scores["seasonal_naive"].precision == 1.0
    assert scores["last_value"].recall == 0.0
