"""When a trial checkpoints: periodic, or adaptive from the node's interruption rate.

Adaptive uses Young/Daly's first-order optimum T = sqrt(2 C / lambda): C is the
measured time to write a checkpoint, lambda the rate of interruptions that lose
work. A drain notice always checkpoints at once, whatever the policy
(``tuner.trial.runtime``), so when a checkpoint write fits in the notice only the
interruptions that come without one (``unnoticed_fraction``: host failures, a
notice that never arrives) lose work; periodic checkpoints guard against those
alone. The interruption rate comes from the config, else the observed rates, else
the AWS Spot Advisor bucket of the node's instance type (``tuner/catalog``). The
planner's simulator uses the same functions (``tuner.plan.simulate``).
"""

from __future__ import annotations

import csv
import functools
import logging
import math
from dataclasses import dataclass
from typing import Optional

from tuner import catalog
from tuner.config import CheckpointConfig, ConfigError
from tuner.result_keys import PREEMPTIONS
from tuner.spot import labels as node_labels

log = logging.getLogger(__name__)

SPOT_ADVISOR_CSV = catalog.DIR / "aws-spot-advisor-gpu.csv"
HOURS_PER_MONTH = 730.0
# Spot Advisor buckets (% of instances interrupted per month) -> their midpoint.
BUCKET_MONTHLY_FRACTION = {"<5%": 0.025, "5-10%": 0.075, "10-15%": 0.125, "15-20%": 0.175, ">20%": 0.25}


@functools.lru_cache(maxsize=1)
def _advisor() -> dict[tuple[str, str], str]:
    with SPOT_ADVISOR_CSV.open() as f:
        return {(row["region"], row["instance_type"]): row["interruption_frequency"] for row in csv.DictReader(f)}


def advisor_rate_per_h(instance_type: str, region: str) -> Optional[float]:
    """Interruptions per instance-hour implied by the Spot Advisor bucket, or None if unknown."""
    bucket = _advisor().get((region, instance_type))
    return None if bucket is None else BUCKET_MONTHLY_FRACTION[bucket] / HOURS_PER_MONTH


def load_observed_rates(path: str, min_node_hours: float) -> dict[str, float]:
    """Interruptions per node-hour by ``type@zone`` (zone ``*``: all zones) from the report's
    interruption_rates.csv, for rows with at least ``min_node_hours`` behind them. With no
    preemption seen, half of one is assumed so that the interval stays finite."""
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
        return {
            f"{row['instance_type']}@{row['zone']}": max(float(row[PREEMPTIONS]), 0.5) / float(row["node_hours"])
            for row in rows
            if float(row["node_hours"]) >= max(min_node_hours, 1e-9)
        }
    except (OSError, KeyError, ValueError) as exc:
        raise ConfigError(
            f"checkpoint.observed_rates={path!r} is not a readable interruption_rates.csv ({exc})"
        ) from exc


def lost_share(checkpoint_cost_s: float, notice_s: Optional[float], unnoticed_fraction: float) -> float:
    """The share of interruptions that lose the work since the last checkpoint: all of them without
    notice handling (``notice_s`` None) or when a write outlasts the notice, else the unnoticed ones."""
    return 1.0 if notice_s is None or checkpoint_cost_s > notice_s else unnoticed_fraction


def young_daly_interval_s(checkpoint_cost_s: float, rate_per_h: float, lower_s: float, upper_s: float) -> float:
    """sqrt(2 C / lambda), clamped to [lower_s, upper_s]; ``rate_per_h``: interruptions that lose work."""
    if rate_per_h <= 0:
        return upper_s
    rate_per_s = rate_per_h / 3600.0
    return min(upper_s, max(lower_s, math.sqrt(2.0 * max(checkpoint_cost_s, 1e-3) / rate_per_s)))


@dataclass
class CheckpointPolicy:
    """Decides at step boundaries and reports whether a checkpoint is due."""

    cfg: CheckpointConfig
    rate_per_h: Optional[float] = None  # adaptive: the interruption rate in force
    last_cost_s: float = 0.0  # measured time of the last checkpoint write
    interval_s: Optional[float] = None  # adaptive: the chosen interval, reported as a metric

    @classmethod
    def for_node(
        cls, cfg: CheckpointConfig, labels: dict[str, str], assumed_instance_type: str, assumed_region: str
    ) -> CheckpointPolicy:
        """The policy for the node with ``labels``; a node without instance or region labels (a local run) is
        taken as ``assumed_instance_type`` in ``assumed_region``, as the cost ledger prices it."""
        rate = cfg.interruption_rate_per_h
        if rate is None and cfg.policy == "adaptive":
            itype = labels.get(node_labels.INSTANCE_TYPE, assumed_instance_type)
            region, zone = labels.get(node_labels.REGION) or assumed_region, labels.get(node_labels.ZONE, "-")
            observed = cfg.observed_rates_per_h
            rate = observed.get(f"{itype}@{zone}", observed.get(f"{itype}@*"))
            if rate is not None:
                log.info("interruption rate for %s in %s: %.3g /h observed", itype, zone, rate)
            else:
                rate = advisor_rate_per_h(itype, region) or advisor_rate_per_h(assumed_instance_type, assumed_region)
        return cls(cfg, rate)

    def observe_cost(self, seconds: float, notice_usable: bool) -> None:
        """A checkpoint write took ``seconds``. ``notice_usable``: the trainer calls ``session.step`` (or
        ``should_checkpoint``), so a notice checkpoints between reports, not only at the next one."""
        self.last_cost_s = seconds
        if self.cfg.policy == "adaptive" and self.rate_per_h:
            notice_s = self.cfg.notice_s if notice_usable else None
            seen_s = seconds + self.cfg.drain_poll_interval_s  # a notice is seen at the next poll, then written
            lossy = self.rate_per_h * lost_share(seen_s, notice_s, self.cfg.unnoticed_fraction)
            interval = young_daly_interval_s(seconds, lossy, self.cfg.min_interval_s, self.cfg.max_interval_s)
            if self.interval_s is None or abs(interval - self.interval_s) > 0.1 * self.interval_s:
                log.info(
                    "adaptive checkpoint interval %.0f s (C=%.2f s, lambda=%.2e /h, losing work: %.2e /h)",
                    interval,
                    seconds,
                    self.rate_per_h,
                    lossy,
                )
            self.interval_s = interval

    def due_between_reports(self, seconds_since_checkpoint: float) -> bool:
        if self.cfg.policy == "adaptive":
            return self.interval_s is not None and seconds_since_checkpoint >= self.interval_s
        return self.cfg.every_s is not None and seconds_since_checkpoint >= self.cfg.every_s

    def due_at_report(self, reports: int, seconds_since_checkpoint: float) -> bool:
        """At the ``reports``-th report (1-based) of the trial."""
        if self.cfg.policy == "adaptive":  # the first checkpoint measures C
            return self.interval_s is None or seconds_since_checkpoint >= self.interval_s
        return reports % self.cfg.every_reports == 0 or self.due_between_reports(seconds_since_checkpoint)
