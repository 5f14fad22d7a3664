"""The operations report over hand-made MLflow runs (exact numbers), its HTML in headless Chromium,
and the observed rates fed back to the adaptive checkpoint policy."""

from __future__ import annotations

import csv
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import screenshot
from tuner.config import CheckpointConfig, ConfigError, ReportConfig, TrackingConfig
from tuner.report.__main__ import run_report
from tuner.report.aggregate import ANY_ZONE
from tuner.report.collect import LEDGER_ARTIFACT
from tuner.report.render import RATES_CSV
from tuner.run.tracking import TAG_EXPERIMENT
from tuner.trial.policy import CheckpointPolicy, advisor_rate_per_h, load_observed_rates

HOUR_S = 3600.0
COLUMNS = [
    "trial_id",
    "node_id",
    "instance_type",
    "market",
    "region",
    "zone",
    "start_s",
    "end_s",
    "seconds",
    "share",
    "lost_s",
    "assumed",
    "unit",
    "progress",
    "preempted",
    "cost_usd",
    "on_demand_cost_usd",
]


def row(
    trial: str,
    node: str,
    itype: str,
    zone: str,
    start_h: float,
    end_h: float,
    epochs: int,
    preempted: bool,
    cost: float,
    on_demand: float,
    t0: float,
) -> dict:
    start, end = t0 + start_h * HOUR_S, t0 + end_h * HOUR_S
    return dict(
        zip(
            COLUMNS,
            [
                trial,
                node,
                itype,
                "spot",
                "us-east-1",
                zone,
                start,
                end,
                end - start,
                1.0,
                0.0,
                False,
                "epoch",
                epochs,
                preempted,
                cost,
                on_demand,
            ],
        )
    )


def log_search(client: MlflowClient, experiment: str, rows: list[dict], tmp_path: Path) -> None:
    exp = client.get_experiment_by_name(experiment)
    exp_id = (
        exp.experiment_id
        if exp
        else client.create_experiment(experiment, artifact_location=(tmp_path / "art").as_uri())
    )
    start_s, end_s = min(r["start_s"] for r in rows), max(r["end_s"] for r in rows)
    run = client.create_run(exp_id, start_time=int(start_s * 1000), tags={TAG_EXPERIMENT: f"/results/{experiment}"})
    path = tmp_path / LEDGER_ARTIFACT
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    client.log_artifact(run.info.run_id, str(path))
    client.set_terminated(run.info.run_id, end_time=int(end_s * 1000))


@pytest.fixture
def store(tmp_path: Path) -> str:
    """Two searches, hand-made: g5.xlarge in two zones (one preemption in 5 node-hours in zone a), g6.xlarge."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(tracking_uri=uri)
    t0 = time.time() - 5 * 86400
    log_search(
        client,
        "resnet",
        [
            row("t1", "n1", "g5.xlarge", "use1-az1", 0, 2, 10, True, 0.80, 2.00, t0),  # preempted after 2 h
            row("t1", "n2", "g5.xlarge", "use1-az1", 2, 5, 15, False, 1.20, 3.00, t0),  # resumed: 3 h more
            row("t2", "n3", "g6.xlarge", "use1-az2", 0, 4, 20, False, 1.60, 3.20, t0),
        ],
        tmp_path,
    )
    log_search(
        client, "mlp", [row("t3", "n4", "g5.xlarge", "use1-az3", 0, 1, 5, False, 0.40, 1.00, t0 + 86400)], tmp_path
    )
    return uri


def report_cfg(tmp_path: Path, uri: str, **kw) -> ReportConfig:
    tracking = TrackingConfig(
        tracking_uri=uri, experiment_name="tuner-reports", artifact_location=str(tmp_path / "rep-art")
    )
    return ReportConfig(output_dir=str(tmp_path / "report"), tracking=tracking, min_node_hours=4.0, **kw)


def test_rates_costs_and_projection_by_hand(store: str, tmp_path: Path, capsys) -> None:
    report = run_report(report_cfg(tmp_path, store, since_days=10))
    rates = report.rates.set_index(["instance_type", "zone"])
    a = rates.loc[("g5.xlarge", "use1-az1")]
    assert (
        (a.nodes, a.preemptions) == (2, 1)
        and a.node_hours == pytest.approx(5.0)
        and a.per_node_hour == pytest.approx(0.2)
    )
    g5 = rates.loc[("g5.xlarge", ANY_ZONE)]
    assert (g5.nodes, g5.preemptions) == (3, 1) and g5.node_hours == pytest.approx(6.0)
    assert rates.loc[("g6.xlarge", "use1-az2")].per_node_hour == 0.0
    costs = report.costs.set_index("instance_type")
    assert costs.loc["g5.xlarge"].cost_usd == pytest.approx(2.40) and costs.loc["g5.xlarge"].progress == 30
    assert costs.loc["g5.xlarge"].unit == "epoch" and costs.loc["g5.xlarge"].trials == 2
    assert costs.loc["g5.xlarge"].per_unit_usd == pytest.approx(0.08) and costs.loc[
        "g5.xlarge"
    ].per_trial_usd == pytest.approx(1.20)
    assert costs.loc["g6.xlarge"].per_unit_usd == pytest.approx(0.08) and costs.loc[
        "g6.xlarge"
    ].per_trial_usd == pytest.approx(1.60)
    assert report.cost_usd == pytest.approx(4.00) and report.on_demand_usd == pytest.approx(9.20)
    assert report.savings_pct == pytest.approx(100 * (1 - 4.00 / 9.20))
    # 10 days of usage cost $4.00: $12.00 a month, $27.60 on demand.
    assert report.monthly_usd == pytest.approx(12.00) and report.monthly_on_demand_usd == pytest.approx(27.60)
    out = capsys.readouterr().out
    assert "g5.xlarge      use1-az1  2      5.000       1            0.2000         ok" in out
    assert "use1-az3  1      1.000       0            0.0000         small" in out  # < min_node_hours
    assert "monthly projection at the usage of 10.00 days: spot $12.00 vs on-demand $27.60" in out
    # Logged to MLflow as a run of its own, with the page and the tables.
    client = MlflowClient(tracking_uri=store)
    (run,) = client.search_runs([client.get_experiment_by_name("tuner-reports").experiment_id])
    assert run.data.metrics["monthly_usd"] == pytest.approx(12.00)
    assert {"report.html", RATES_CSV, "cost_by_type.csv"} <= {a.path for a in client.list_artifacts(run.info.run_id)}
    assert "$0.08" in out and "$0.0000" not in out  # money with significant digits


def test_experiment_and_window_filters(store: str, tmp_path: Path) -> None:
    only_mlp = run_report(report_cfg(tmp_path, store, experiments=["mlp"]))
    assert [s.experiment for s in only_mlp.searches] == ["mlp"] and only_mlp.cost_usd == pytest.approx(0.40)
    assert only_mlp.span_days == 1.0  # one search of an hour: the projection's floor
    assert run_report(report_cfg(tmp_path, store, since_days=0.5)).searches == []  # both started days ago
    with pytest.raises(ConfigError, match=r"experiments=\[.nope.\]: not in"):
        run_report(report_cfg(tmp_path, store, experiments=["nope"]))


def test_html_page_shows_its_plots_in_headless_chromium(store: str, tmp_path: Path) -> None:
    run_report(report_cfg(tmp_path, store, since_days=10))
    page = tmp_path / "report" / "report.html"
    assert "<img" in page.read_text() and "http" not in page.read_text().split("<body>")[1]  # self-contained
    pixels = screenshot(page.as_uri(), tmp_path / "shot.png").reshape(-1, 3)
    r, g, b = pixels.T
    blue = int(((b > 150) & (r < 80) & (90 < g) & (g < 150)).sum())  # matplotlib's tab:blue bars and lines
    green = int(((g > 120) & (r < 80) & (b < 80)).sum())  # the savings bars
    non_white = int((pixels != 255).any(axis=1).sum())
    assert non_white > 0.05 * len(pixels), "blank page"
    assert blue > 2000 and green > 2000, (blue, green)


def test_observed_rates_feed_the_adaptive_policy(store: str, tmp_path: Path) -> None:
    run_report(report_cfg(tmp_path, store))
    rates = load_observed_rates(str(tmp_path / "report" / RATES_CSV), min_node_hours=4.0)
    assert rates == {
        "g5.xlarge@use1-az1": pytest.approx(0.2),
        "g5.xlarge@*": pytest.approx(1 / 6),
        "g6.xlarge@use1-az2": pytest.approx(0.5 / 4),
        "g6.xlarge@*": pytest.approx(0.5 / 4),
    }
    cfg = CheckpointConfig(policy="adaptive", observed_rates_per_h=rates)
    labels = {"tuner.io/instance-type": "g5.xlarge", "ray.io/availability-zone": "use1-az1"}
    # enough node-hours: observed
    assert CheckpointPolicy.for_node(cfg, labels, "g5.xlarge", "us-east-1").rate_per_h == pytest.approx(0.2)
    labels["ray.io/availability-zone"] = "use1-az3"  # 1 node-hour there: the type's rate over all zones
    assert CheckpointPolicy.for_node(cfg, labels, "g5.xlarge", "us-east-1").rate_per_h == pytest.approx(1 / 6)
    labels["tuner.io/instance-type"] = "g6e.xlarge"  # never observed: the Spot Advisor bucket
    assert CheckpointPolicy.for_node(cfg, labels, "g5.xlarge", "us-east-1").rate_per_h == advisor_rate_per_h(
        "g6e.xlarge", "us-east-1"
    )
    with pytest.raises(ConfigError, match="not a readable interruption_rates.csv"):
        load_observed_rates(str(tmp_path / "missing.csv"), 1.0)
