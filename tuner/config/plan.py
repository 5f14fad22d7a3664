"""The schema of ``python -m tuner.plan``: a campaign profile and the strategies to replay it under."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from tuner.config.base import require
from tuner.config.platform import (
    DEADLINE_FACTOR,
    GPU_BOOT_S,
    MAX_INTERVAL_S,
    MIN_INTERVAL_S,
    POLICIES,
    REPLACEMENT_LEAD_S,
    RESTART_S,
    UNNOTICED_FRACTION,
    TrackingConfig,
)


@dataclass
class CampaignProfile:
    """A tuning campaign as the simulator sees it (``tuner.simulate``)."""

    trials: int = 64
    epochs: int = 50  # epochs each trial trains (after early stopping, on average)
    epoch_s: float = 30.0  # one epoch on one GPU of the market's type
    checkpoint_s: float = 5.0  # one checkpoint write (training stalls meanwhile)
    restart_s: float = RESTART_S  # get a node, start the trial process, restore its checkpoint
    # of restart_s, the node's launch (asked for ahead of the loss, it boots meanwhile); None: GPU_BOOT_S, at most
    # restart_s (a profile whose restart_s is a measured few seconds is all launch)
    boot_s: Optional[float] = None
    concurrency: int = 8  # trials at a time, one GPU each

    def __post_init__(self) -> None:
        require(min(self.trials, self.epochs, self.concurrency) > 0, "profile: trials, epochs, concurrency must be > 0")
        require(self.epoch_s > 0 and self.checkpoint_s >= 0 and self.restart_s >= 0, "profile: times must be >= 0")
        require(
            self.boot_s is None or 0 <= self.boot_s <= self.restart_s,
            "profile: boot_s must be in [0, restart_s] (a part of a restart)",
        )

    @property
    def launch_s(self) -> float:
        """The node's launch within a restart."""
        return min(GPU_BOOT_S, self.restart_s) if self.boot_s is None else self.boot_s


@dataclass
class StrategyConfig:
    """How a campaign uses spot capacity."""

    name: str = "platform"
    checkpoint: str = "adaptive"  # periodic | adaptive (Young/Daly from the zone's observed interruption rate)
    every_s: float = 600.0  # periodic: training seconds between checkpoints
    min_interval_s: float = MIN_INTERVAL_S  # adaptive: bounds on the interval
    max_interval_s: float = MAX_INTERVAL_S
    notice: bool = True  # checkpoint on the interruption notice
    replacement: bool = True  # with notice: the next node asked for before the deadline (tuner.cost.replacement)
    replacement_lead_s: float = REPLACEMENT_LEAD_S  # that long before it (at the notice if it gives less)
    unnoticed_fraction: float = UNNOTICED_FRACTION  # with notice: interruptions that still come without one
    zones: str = "all"  # one (each stream keeps to one zone) | all (the cheapest zone with capacity)
    fallback: bool = True  # on-demand once waiting for spot would miss the deadline
    deadline_factor: float = DEADLINE_FACTOR  # deadline = this x the on-demand makespan (fallback keeps it)
    workers: list[int] = field(default_factory=lambda: [1, 1])  # GPUs per trial [min, max]; min < max: elastic

    def __post_init__(self) -> None:
        require(self.checkpoint in POLICIES, f"strategy {self.name}: checkpoint {' | '.join(POLICIES)}")
        require(self.zones in ("one", "all"), f"strategy {self.name}: zones one | all")
        require(
            self.every_s > 0 and 0 < self.min_interval_s <= self.max_interval_s, f"strategy {self.name}: intervals > 0"
        )
        require(self.deadline_factor >= 1.0, f"strategy {self.name}: deadline_factor must be >= 1")
        require(self.replacement_lead_s >= 0, f"strategy {self.name}: replacement_lead_s must be >= 0")
        require(0 <= self.unnoticed_fraction <= 1, f"strategy {self.name}: unnoticed_fraction must be in [0, 1]")
        require(
            len(self.workers) == 2 and 1 <= self.workers[0] <= self.workers[1],
            f"strategy {self.name}: workers must be [min, max] with 1 <= min <= max",
        )


@dataclass
class TypeChoiceConfig:
    """Which spot GPU type the campaign's trials (one GPU each) should run on (``tuner.plan.types``)."""

    region: str = "us-east-1"  # the catalog's spot prices and the Spot Advisor's interruption rates there
    epoch_s: dict[str, float] = field(default_factory=dict)  # seconds per epoch on one GPU of each type (measured)

    def __post_init__(self) -> None:
        require(all(s > 0 for s in self.epoch_s.values()), "types.epoch_s: seconds per epoch must be > 0")


@dataclass
class PlanConfig:
    """``python -m tuner.plan``: a campaign replayed over real spot traces under several strategies."""

    output_dir: str = "outputs"
    markets: list[str] = field(default_factory=lambda: ["aws-v100", "gcp-h100", "aws-p3-32node"])
    profile: CampaignProfile = field(default_factory=CampaignProfile)
    strategies: list[StrategyConfig] = field(default_factory=lambda: [StrategyConfig()])
    starts: int = 48  # start times spread over each trace; the table shows means
    types: TypeChoiceConfig = field(default_factory=TypeChoiceConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)

    def __post_init__(self) -> None:
        require(self.starts > 0, "starts must be > 0")
        require(len({s.name for s in self.strategies}) == len(self.strategies), "strategies need distinct names")
