"""What the ledgers add up to: interruption rates, cost per unit of training, totals, a projection.

A node's hours are its first to last second seen by any trial of its search; a node counts
as preempted when a trial's stay on it ended that way. Local runs priced as an assumed
instance type are kept apart from real nodes (``TYPE (assumed)``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import pandas as pd

from tuner.report.collect import SECONDS_PER_DAY, Search
from tuner.result_keys import COST_USD, ON_DEMAND_COST_USD, PREEMPTIONS

DAYS_PER_MONTH = 30.0
ANY_ZONE = "*"  # a type's rate over all its zones
RATE_COLUMNS = ["instance_type", "zone", "nodes", "node_hours", PREEMPTIONS, "per_node_hour"]
COST_COLUMNS = [
    "instance_type",
    "unit",
    "trials",
    "progress",
    COST_USD,
    "on_demand_usd",
    "per_unit_usd",
    "per_trial_usd",
]


@dataclass
class Report:
    searches: list[Search]
    rates: pd.DataFrame  # RATE_COLUMNS + sample: per (type, zone), then per type over all zones (zone "*")
    costs: pd.DataFrame  # COST_COLUMNS: per (type, progress unit)
    by_search: pd.DataFrame  # cost_usd, on_demand_cost_usd per search (run_id), in the order they started
    trials: int
    cost_usd: float
    on_demand_usd: float
    span_days: float  # the usage the projection extrapolates from
    min_node_hours: float

    @property
    def savings_pct(self) -> float:
        return 100.0 * (1.0 - self.cost_usd / self.on_demand_usd) if self.on_demand_usd > 0 else 0.0

    @property
    def monthly_usd(self) -> float:
        return self.cost_usd * DAYS_PER_MONTH / self.span_days

    @property
    def monthly_on_demand_usd(self) -> float:
        return self.on_demand_usd * DAYS_PER_MONTH / self.span_days


def _typed(rows: pd.DataFrame) -> pd.DataFrame:
    flagged = rows["assumed"].astype(str) == "True"
    return rows.assign(
        type=rows["instance_type"].where(~flagged, rows["instance_type"] + " (assumed)"),
        zone=rows["zone"].fillna("-").replace("", "-"),
        preempted=rows["preempted"].astype(str) == "True",
        cost_usd=pd.to_numeric(rows[COST_USD], errors="coerce"),
        on_demand_cost_usd=pd.to_numeric(rows[ON_DEMAND_COST_USD], errors="coerce"),
    )


def rates(rows: pd.DataFrame, min_node_hours: float) -> pd.DataFrame:
    """Preemptions per node-hour by instance type and zone, and by type over all zones."""
    if "node_id" not in rows or rows.empty:
        return pd.DataFrame(columns=[*RATE_COLUMNS, "sample"])
    nodes = rows.groupby(["run_id", "node_id"]).agg(
        instance_type=("type", "first"),
        zone=("zone", "first"),
        start=("start_s", "min"),
        end=("end_s", "max"),
        preempted=("preempted", "any"),
    )
    nodes["hours"] = (nodes["end"] - nodes["start"]) / 3600.0

    def per(keys: list[str]) -> pd.DataFrame:
        return (
            nodes.groupby(keys)
            .agg(nodes=("hours", "size"), node_hours=("hours", "sum"), preemptions=("preempted", "sum"))
            .reset_index()
        )

    table = pd.concat([per(["instance_type", "zone"]), per(["instance_type"]).assign(zone=ANY_ZONE)], ignore_index=True)
    hours = table["node_hours"]
    table["per_node_hour"] = (table[PREEMPTIONS] / hours.where(hours > 0)).fillna(0.0)
    table["sample"] = (hours < min_node_hours).map({True: "small", False: "ok"})
    table = table.sort_values(["zone"], key=lambda z: z == ANY_ZONE, kind="stable")
    return table[[*RATE_COLUMNS, "sample"]].reset_index(drop=True)


def costs(rows: pd.DataFrame) -> pd.DataFrame:
    """Cost per instance type and unit of training progress (the searches' ``time_attr``) and per trial."""
    if "unit" not in rows or rows.empty:
        return pd.DataFrame(columns=COST_COLUMNS)
    keyed = rows.assign(trial=rows["run_id"] + "/" + rows["trial_id"])
    table = (
        keyed.groupby(["type", "unit"])
        .agg(
            trials=("trial", "nunique"),
            progress=("progress", "sum"),
            cost_usd=(COST_USD, "sum"),
            on_demand_usd=(ON_DEMAND_COST_USD, "sum"),
        )
        .reset_index()
        .rename(columns={"type": "instance_type"})
    )
    table["per_unit_usd"] = table[COST_USD] / table["progress"].where(table["progress"] > 0)
    table["per_trial_usd"] = table[COST_USD] / table["trials"]
    return table[COST_COLUMNS]


def build(
    searches: list[Search],
    rows: pd.DataFrame,
    min_node_hours: float,
    min_projection_days: float,
    window_days: Optional[float] = None,
) -> Report:
    typed = (
        _typed(rows) if not rows.empty else pd.DataFrame(columns=["run_id", "trial_id", COST_USD, ON_DEMAND_COST_USD])
    )
    by_search = typed.groupby("run_id")[[COST_USD, ON_DEMAND_COST_USD]].sum().reindex([s.run_id for s in searches])
    trials = typed[["run_id", "trial_id"]].drop_duplicates().shape[0]
    if window_days is not None:
        span_days = window_days
    else:
        span_days = (
            (max(s.end_s for s in searches) - min(s.start_s for s in searches)) / SECONDS_PER_DAY if searches else 0.0
        )
    return Report(
        searches,
        rates(typed, min_node_hours),
        costs(typed),
        by_search.fillna(0.0),
        trials,
        float(typed[COST_USD].sum()),
        float(typed[ON_DEMAND_COST_USD].sum()),
        max(span_days, min_projection_days),
        min_node_hours,
    )
