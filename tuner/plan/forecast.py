"""Does forecasting the spot market earn its keep? Simple forecasters against the last value, judged
with a rolling origin on the shipped traces, fitted on each series' first half, scored on its second.

Two questions a platform could act on, one hour ahead:
- the spot price (the price guard, placement): mean absolute percentage error (MAPE);
- "capacity gone within the hour" for a zone that has capacity now (the checkpoint policy, the
  fallback): precision and recall. The event is known an hour late (the hour must pass), so the
  "last value" of this series is the event of the hour that just ended.

Forecasters: last value (the baseline), seasonal naive (the same moment a day earlier) and simple
exponential smoothing (its smoothing factor, and the decision threshold for events, fitted on
the first half). The verdict is what the numbers say; nothing here is used by the platform unless
it beats the baseline on the second half (see the README's table).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

HORIZON_S = 3600.0
SEASON_S = 86400.0
ALPHAS = (0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9)
THRESHOLDS = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6)
Forecast = Callable[[int], float]  # origin tick -> the forecast for origin + horizon


def smoothed(series: Sequence[float], alpha: float) -> list[float]:
    """Simple exponential smoothing: the level after each value (its flat forecast for any horizon)."""
    level, out = series[0], []
    for value in series:
        level = alpha * value + (1 - alpha) * level
        out.append(level)
    return out


def mape(forecast: Forecast, series: Sequence[float], origins: range, horizon: int) -> float:
    errors = [abs(forecast(t) - series[t + horizon]) / abs(series[t + horizon]) for t in origins]
    return 100.0 * sum(errors) / len(errors)


@dataclass
class Scores:
    precision: float
    recall: float

    @property
    def f1(self) -> float:
        total = self.precision + self.recall
        return 2 * self.precision * self.recall / total if total else 0.0


def capacity_events(available: Sequence[bool], horizon: int) -> list[float]:
    """1.0 at tick t when the zone has capacity at t and loses it within ``horizon`` ticks."""
    events, next_loss = [0.0] * len(available), None
    for t in range(len(available) - 1, -1, -1):
        if not available[t]:
            next_loss = t
        elif next_loss is not None and next_loss - t <= horizon:
            events[t] = 1.0
    return events


def classify(score: Forecast, threshold: float, events: Sequence[float], origins: Sequence[int]) -> Scores:
    said = [score(t) >= threshold for t in origins]
    happened = [events[t] > 0 for t in origins]
    hits = sum(s and h for s, h in zip(said, happened))
    return Scores(hits / max(sum(said), 1), hits / max(sum(happened), 1))


def evaluate_prices(series: Sequence[float], tick_s: float) -> dict[str, float]:
    """MAPE of each forecaster on the second half; the smoothing factor chosen on the first."""
    horizon, season = max(1, round(HORIZON_S / tick_s)), round(SEASON_S / tick_s)
    split = len(series) // 2
    fit, test = range(season, split - horizon), range(split, len(series) - horizon)
    levels = {a: smoothed(series, a) for a in ALPHAS}
    alpha = min(ALPHAS, key=lambda a: mape(lambda t: levels[a][t], series, fit, horizon))
    return {
        "last_value": mape(lambda t: series[t], series, test, horizon),
        "seasonal_naive": mape(lambda t: series[t + horizon - season], series, test, horizon),
        "smoothing": mape(lambda t: levels[alpha][t], series, test, horizon),
        "alpha": alpha,
    }


def evaluate_capacity(available: Sequence[bool], tick_s: float) -> dict[str, Scores]:
    """Precision/recall of "gone within the hour" at ticks with capacity, on the second half."""
    horizon, season = max(1, round(HORIZON_S / tick_s)), round(SEASON_S / tick_s)
    events = capacity_events(available, horizon)
    known = [0.0] * horizon + events[:-horizon]  # at t, the event of t - horizon has just become known
    split = len(available) // 2
    fit = [t for t in range(season, split - horizon) if available[t]]
    test = [t for t in range(split, len(available) - horizon) if available[t]]
    levels = {a: smoothed(known, a) for a in ALPHAS}
    best = max(
        ((a, th) for a in ALPHAS for th in THRESHOLDS),
        key=lambda p: classify(lambda t: levels[p[0]][t], p[1], events, fit).f1,
    )
    return {
        "last_value": classify(lambda t: known[t], 0.5, events, test),
        "seasonal_naive": classify(lambda t: events[t - season], 0.5, events, test),
        "smoothing": classify(lambda t: levels[best[0]][t], best[1], events, test),
    }
