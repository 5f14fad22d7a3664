"""The schema of ``python -m tuner.report``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from tuner.config.base import require
from tuner.config.platform import TrackingConfig


@dataclass
class ReportConfig:
    """``python -m tuner.report``: the spot operations report over an MLflow store."""

    output_dir: str = "outputs"
    # The store the searches logged to; the report is logged there too, as tracking.experiment_name.
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    experiments: list[str] = field(default_factory=list)  # MLflow experiments to include; empty = all
    since_days: Optional[float] = None  # only searches started in the last N days; None = all
    min_node_hours: float = 100.0  # a rate with fewer node-hours behind it is marked as a small sample
    min_projection_days: float = 1.0  # the monthly projection extrapolates from at least this many days

    def __post_init__(self) -> None:
        require(self.since_days is None or self.since_days > 0, f"since_days={self.since_days}: must be > 0")
        require(self.min_node_hours >= 0, "min_node_hours must be >= 0")
        require(self.min_projection_days > 0, "min_projection_days must be > 0")
