"""``python -m tuner.report [since_days=7] [experiments=[resnet]] [tracking.tracking_uri=...]``.

The spot operations report across searches: how often each instance type and zone is
interrupted (preemptions per node-hour, with the node-hours behind each rate), what a unit
of training and a trial cost per instance type, spot vs on-demand, and a monthly
projection at the observed usage. Printed, saved as one HTML page with plots and CSV
tables, and logged to MLflow. ``interruption_rates.csv`` feeds the adaptive checkpoint
policy (``checkpoint.observed_rates``).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Optional

import hydra
from omegaconf import DictConfig

from tuner import config as config_mod
from tuner.cli import command
from tuner.config import ReportConfig
from tuner.report import render
from tuner.report.aggregate import Report, build
from tuner.report.collect import collect
from tuner.result_keys import COST_USD, ON_DEMAND_COST_USD, SAVINGS_PCT
from tuner.run.tracking import experiment_id


def log_to_mlflow(cfg: ReportConfig, report: Report, files: list[str]) -> Optional[str]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=cfg.tracking.tracking_uri)
    run = client.create_run(experiment_id(client, cfg.tracking), run_name=f"report-{time.strftime('%Y-%m-%d_%H-%M')}")
    metrics = {
        COST_USD: report.cost_usd,
        ON_DEMAND_COST_USD: report.on_demand_usd,
        SAVINGS_PCT: report.savings_pct,
        "monthly_usd": report.monthly_usd,
        "monthly_on_demand_usd": report.monthly_on_demand_usd,
        "searches": float(len(report.searches)),
    }
    for key, value in metrics.items():
        client.log_metric(run.info.run_id, key, value)
    for path in files:
        client.log_artifact(run.info.run_id, path)
    client.set_terminated(run.info.run_id)
    return str(run.info.run_id)


def run_report(cfg: ReportConfig) -> Report:
    logging.getLogger("matplotlib").setLevel(logging.WARNING)
    searches, rows = collect(cfg)
    report = build(searches, rows, cfg.min_node_hours, cfg.min_projection_days, cfg.since_days)
    print(render.console(report))
    files = render.write(report, Path(cfg.output_dir))
    print(f"report:  {files['html'].resolve()}")
    print(f"rates:   {files['rates'].resolve()}  (checkpoint.observed_rates=... feeds them to the adaptive policy)")
    if cfg.tracking.enabled:
        run_id = log_to_mlflow(cfg, report, [str(p) for p in files.values()])
        print(f"MLflow:  experiment {cfg.tracking.experiment_name!r}, run {run_id}")
    return report


@hydra.main(version_base="1.3", config_path="../../conf", config_name="report")
def main(cfg: DictConfig) -> None:
    command(run_report, cfg)


config_mod.register()

if __name__ == "__main__":
    main()
