"""A ceiling on a search's spend: no new trials once committed plus projected cost would pass it."""

from __future__ import annotations

import logging
from typing import Any

from ray.tune.stopper import Stopper

from tuner.cost.ledger import CostLedger
from tuner.result_keys import CHECKPOINT_ONLY
from tuner.text import usd

log = logging.getLogger(__name__)


class BudgetStopper(Stopper):
    """Stop starting trials (and let running ones stop after their checkpoint) past ``max_usd``."""

    def __init__(self, ledger: CostLedger, max_usd: float, time_attr: str, max_t: float) -> None:
        self.ledger, self.max_usd, self.time_attr, self.max_t = ledger, max_usd, time_attr, max_t
        self.tripped = False
        self._rates: dict[str, tuple[float, float]] = {}  # trial -> (USD per time_attr unit, units done)

    def _projected(self) -> float:
        return sum(rate * max(0.0, self.max_t - done) for rate, done in self._rates.values())

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        done = float(result.get(self.time_attr, 0) or 0)
        if done > 0 and not result.get(CHECKPOINT_ONLY):
            self._rates[trial_id] = (self.ledger.cost_of(trial_id).cost_usd / done, done)
        if not self.tripped and self.ledger.committed_usd() + self._projected() > self.max_usd:
            self.tripped = True
            log.warning(
                "budget: committed %s + projected %s would exceed budget.max_usd=%s; stopping",
                usd(self.ledger.committed_usd()),
                usd(self._projected()),
                usd(self.max_usd),
            )
        return self.tripped

    def stop_all(self) -> bool:
        return self.tripped
