"""What a campaign will cost on spot, how long it takes, what preemptions eat (``python -m tuner.plan``).

The campaign profile is replayed over real traces (``tuner.plan.traces``) from many start
times under each strategy (``tuner.plan.simulate``); a table per market, a PNG plot and a
CSV go to the output directory and, with tracking on, to MLflow. A last table says which
spot GPU type the campaign should run on (``tuner.plan.types``).
"""

from __future__ import annotations

import csv
import logging
import re
import time
from pathlib import Path

from tuner.config import ConfigError, PlanConfig
from tuner.plan.simulate import Summary, evaluate
from tuner.plan.traces import MARKETS
from tuner.plan.types import TypeCost, picks, type_costs
from tuner.run.tracking import experiment_id
from tuner.text import table, usd

TYPE_COLUMNS = [
    "instance_type",
    "gpus",
    "spot_usd_per_gpu_h",
    "interrupted_%_per_month",
    "epoch_s",
    "overhead_%",
    "campaign_usd",
    "pick",
]
COLUMNS = [
    "strategy",
    "spot_usd",
    "on_demand_usd",
    "savings_%",
    "ideal_%",
    "vs_ideal",
    "makespan_h",
    "vs_on_demand",
    "preemptions",
    "lost_h",
    "fallback_h",
    "deadline_met_%",
]


def plan(cfg: PlanConfig) -> dict[str, list[Summary]]:
    unknown = [m for m in cfg.markets if m not in MARKETS]
    if unknown:
        raise ConfigError(f"markets={unknown}: choose from {', '.join(MARKETS)}")
    results = {}
    for name in cfg.markets:
        market = MARKETS[name]()  # parsing a trace takes a while: once per market, not per strategy
        results[name] = [evaluate(market, cfg.profile, s, cfg.starts) for s in cfg.strategies]
    return results


def plot(results: dict[str, list[Summary]], path: Path) -> None:
    """Per market: spot cost per strategy against on-demand and the ideal; makespan vs on-demand."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(results), figsize=(5 * len(results), 7), squeeze=False)
    for col, (market, summaries) in enumerate(results.items()):
        names = [s.strategy for s in summaries]
        cost, makespan = axes[0][col], axes[1][col]
        cost.bar(names, [s.cost_usd for s in summaries], color="tab:blue", label="spot (simulated)")
        cost.axhline(summaries[0].on_demand_cost_usd, color="0.4", linestyle="--", label="on-demand")
        ideal = [s.on_demand_cost_usd * (1 - s.ideal_savings_pct / 100) for s in summaries]
        cost.scatter(names, ideal, color="tab:green", marker="_", s=400, label="ideal spot", zorder=3)
        cost.set_title(market)
        cost.set_ylabel("campaign cost (USD)")
        cost.legend(fontsize=8)
        makespan.bar(names, [s.makespan_ratio for s in summaries], color="tab:orange")
        makespan.axhline(1.0, color="0.4", linestyle="--")
        makespan.set_ylabel("makespan / on-demand makespan")
        for ax in (cost, makespan):
            ax.tick_params(axis="x", rotation=30, labelsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def log_to_mlflow(
    cfg: PlanConfig, results: dict[str, list[Summary]], chosen: dict[str, float], files: list[Path]
) -> str:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=cfg.tracking.tracking_uri)
    run = client.create_run(experiment_id(client, cfg.tracking), run_name=f"plan-{time.strftime('%Y-%m-%d_%H-%M')}")
    for key, value in {**vars(cfg.profile), "starts": cfg.starts}.items():
        client.log_param(run.info.run_id, f"profile.{key}", value)
    from mlflow.entities import Metric

    now_ms = int(time.time() * 1000)
    metrics = [
        Metric(re.sub(r"[^\w\-. :/]", "_", f"{market}.{s.strategy}.{key}"), float(getattr(s, key)), now_ms, 0)
        for market, summaries in results.items()
        for s in summaries
        for key in ("cost_usd", "savings_pct", "vs_ideal", "makespan_ratio", "preemptions", "lost_work_h")
    ] + [Metric(f"types.{key}", value, now_ms, 0) for key, value in chosen.items()]
    client.log_batch(run.info.run_id, metrics=metrics)
    for path in files:
        client.log_artifact(run.info.run_id, str(path))
    client.set_terminated(run.info.run_id)
    return str(run.info.run_id)


def run_plan(cfg: PlanConfig) -> dict[str, list[Summary]]:
    logging.getLogger("matplotlib").setLevel(logging.WARNING)
    costs = type_costs(cfg.types, cfg.profile, cfg.strategies[-1])  # bad types.* fail before the replay
    results = plan(cfg)
    p = cfg.profile
    work_h = p.trials * p.epochs * p.epoch_s / 3600.0
    print(
        f"campaign: {p.trials} trials x {p.epochs} epochs x {p.epoch_s:g} s = {work_h:.1f} GPU-hours, "
        f"{p.concurrency} at a time; means over {cfg.starts} start times per trace"
    )
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    csv_path, png_path = out / "plan.csv", out / "plan.png"
    with csv_path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["market", *COLUMNS])
        writer.writeheader()
        for market, summaries in results.items():
            print(f"\n{market} ({summaries[0].gpu}):")
            print(table([s.row() for s in summaries], COLUMNS))
            writer.writerows({"market": market, **s.row()} for s in summaries)
    types_path = out / "plan_types.csv"
    chosen = print_type_choice(cfg, costs, types_path)
    plot(results, png_path)
    print(f"\ntables: {csv_path.resolve()}, {types_path.resolve()}\nplot:   {png_path.resolve()}")
    if cfg.tracking.enabled:
        run_id = log_to_mlflow(cfg, results, chosen, [csv_path, types_path, png_path])
        print(f"MLflow: experiment {cfg.tracking.experiment_name!r}, run {run_id}")
    return results


def print_type_choice(cfg: PlanConfig, costs: list[TypeCost], path: Path) -> dict[str, float]:
    """The type table (console and ``path``) and the two picks; returns the picks' costs (empty without
    any ``types.epoch_s``)."""

    by_price, by_cost = picks(costs)
    marks = {
        c.instance_type: ", ".join(how for how, pick in (("by price", by_price), ("by cost", by_cost)) if pick is c)
        for c in costs
    }
    rows = [c.row(marks[c.instance_type]) for c in costs]
    print(
        f"\nspot GPU types in {cfg.types.region} for this campaign (one GPU per trial; catalog prices, Spot Advisor "
        f"interruption rates, strategy {cfg.strategies[-1].name!r}; a closed form, no trace covers several types):"
    )
    print(table(rows, TYPE_COLUMNS))
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=TYPE_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    if by_price is None or by_cost is None or by_price.campaign_usd is None or by_cost.campaign_usd is None:
        print(
            "types.epoch_s is empty: give the seconds per epoch measured on each type to choose by cost per epoch, "
            "e.g. +types.epoch_s='{g4dn.xlarge: 60, g5.xlarge: 25}' (the live placement measures them)"
        )
        return {}
    ratio = by_cost.campaign_usd / by_price.campaign_usd
    print(
        f"type choice: by price {by_price.instance_type} {usd(by_price.campaign_usd)}, by cost per epoch "
        f"{by_cost.instance_type} {usd(by_cost.campaign_usd)}: {ratio:.3f}x"
    )
    return {"by_price_usd": by_price.campaign_usd, "by_cost_usd": by_cost.campaign_usd, "by_cost_vs_by_price": ratio}
