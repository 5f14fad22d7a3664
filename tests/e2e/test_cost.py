"""The cost ledger, the price guard and the operations report end to end: labelled nodes, the real
driver, MLflow child costs add up to the parent's."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from ray.cluster_utils import Cluster

from tests.conftest import REPO
from tests.e2e.test_cli import runs_of
from tests.tooling.searches import experiment
from tuner.config import (
    BudgetConfig,
    ClusterConfig,
    Config,
    PriceGuardConfig,
    TrackingConfig,
)
from tuner.cost import price_guard
from tuner.run.driver import execute
from tuner.spot.labels import INSTANCE_TYPE, MARKET, REGION, ZONE

pytestmark = pytest.mark.slow


def settings(tmp_path: Path, address: str, **overrides) -> Config:
    return experiment(
        f"costed-{tmp_path.name}",
        str(tmp_path / "ray_results"),
        3,
        space="search_spaces.mlp:space",
        model="mlp",
        num_samples=4,
        concurrency=2,
        output_dir=str(tmp_path),
        cluster=ClusterConfig(address=address, head_instance_type="g6.xlarge"),
        tracking=TrackingConfig(
            tracking_uri=f"sqlite:///{tmp_path}/mlflow.db",
            experiment_name="costed",
            artifact_location=str(tmp_path / "mlartifacts"),
        ),
        **overrides,
    )


@pytest.fixture(scope="module")
def labelled_cluster():
    """Two worker nodes of different instance types and markets, and a head that runs nothing."""
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    for itype, market, zone in (("g5.xlarge", "spot", "use1-az1"), ("g6.xlarge", "on-demand", "use1-az2")):
        cluster.add_node(num_cpus=1, labels={INSTANCE_TYPE: itype, MARKET: market, ZONE: zone, REGION: "us-east-1"})
    cluster.wait_for_nodes()
    yield cluster
    cluster.shutdown()


def test_child_costs_add_up_to_the_parent(labelled_cluster, tmp_path: Path, capsys) -> None:
    assert execute(settings(tmp_path, labelled_cluster.address)) == 0
    out = capsys.readouterr().out
    assert "on-demand (" in out and "% saved)" in out and "head $" in out
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    (parent,), children = runs_of(uri, "costed")
    assert len(children) == 4
    child_cost = sum(c.data.metrics["cost_usd"] for c in children)
    child_od = sum(c.data.metrics["on_demand_cost_usd"] for c in children)
    assert child_cost > 0 and parent.data.metrics["cost_usd"] == pytest.approx(child_cost)
    assert parent.data.metrics["on_demand_cost_usd"] == pytest.approx(child_od)
    assert parent.data.metrics["campaign_cost_usd"] > parent.data.metrics["cost_usd"]  # the head
    types = {c.data.tags["tuner.instance_types"] for c in children}
    assert types <= {"g5.xlarge", "g6.xlarge", "g5.xlarge,g6.xlarge"} and len(types) >= 1
    for child in children:
        m = child.data.metrics
        spot_only = child.data.tags["tuner.markets"] == "spot"
        assert (m["cost_usd"] < m["on_demand_cost_usd"]) == spot_only
        assert 0 <= m["savings_pct"] < 100 and m["gpu_hours"] >= 0
    # Sorting by cost in the MLflow UI: it is a plain run metric.
    client = MlflowClient(tracking_uri=uri)
    ranked = client.search_runs(
        [parent.info.experiment_id], "tags.`mlflow.parentRunId` != ''", order_by=["metrics.cost_usd DESC"]
    )
    assert [r.data.metrics["cost_usd"] for r in ranked] == sorted(child.data.metrics["cost_usd"] for child in children)[
        ::-1
    ]
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"cost_ledger.csv", "metric_vs_cost.png"} <= artifacts


def test_budget_stops_starting_trials(labelled_cluster, tmp_path: Path, capsys) -> None:
    cfg = settings(tmp_path, labelled_cluster.address, budget=BudgetConfig(max_usd=1e-5))
    cfg.search.tune.num_samples = 8
    assert execute(cfg) == 0
    out = capsys.readouterr().out
    assert "budget: stopped at $" in out
    started = int(re.search(r"\d+ of (\d+) trials finished", out).group(1))
    assert started < 8  # no new trials once the budget was reached


def test_price_guard_keeps_new_trials_off_an_expensive_type_and_the_report_reads_it_all(
    labelled_cluster, tmp_path: Path, capsys
) -> None:
    """g5.xlarge is over its limit from the start: every trial runs on g6.xlarge. A second, unguarded
    search uses both types; `python -m tuner.report` then reads both searches from the store."""
    guard = PriceGuardConfig(enabled=True, max_usd_per_hour={"g5.xlarge": 0.01}, enforce=True, interval_s=60)
    assert execute(settings(tmp_path, labelled_cluster.address, price_guard=guard)) == 0
    out = capsys.readouterr().out
    assert "price guard: watching g5.xlarge every 60 s (enforced)" in out
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    (guarded,), children = runs_of(uri, "costed")
    assert {c.data.tags["tuner.instance_types"] for c in children} == {"g6.xlarge"}
    assert re.match(r"over: \$0\.4\d+/h vs limit \$0\.0100/h", guarded.data.tags["tuner.price_guard.g5.xlarge"])
    assert guarded.data.metrics["price_guard_over.g5.xlarge"] == 1.0
    assert price_guard.blocked() == set()  # the guard's blocks ended with its search (this process runs more)

    second = settings(tmp_path, labelled_cluster.address)
    second.name = f"{second.name}-2"
    assert execute(second) == 0
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "tuner.report",
            f"tracking.tracking_uri={uri}",
            f"output_dir={tmp_path / 'report'}",
            f"tracking.artifact_location={tmp_path / 'mlartifacts'}",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    client = MlflowClient(tracking_uri=uri)
    parents = [r for r in runs_of(uri, "costed")[0]]
    assert len(parents) == 2
    total = sum(p.data.metrics["cost_usd"] for p in parents)
    (report_run,) = client.search_runs([client.get_experiment_by_name("tuner-reports").experiment_id])
    assert report_run.data.metrics["cost_usd"] == pytest.approx(total, rel=1e-4)
    assert report_run.data.metrics["searches"] == 2
    rates = (tmp_path / "report" / "interruption_rates.csv").read_text()
    assert "g6.xlarge,use1-az2," in rates and "g5.xlarge,use1-az1," in rates
    assert re.search(r"g6\.xlarge +use1-az2 +\d+ +[\d.]+ +0 +0\.0000 +small", proc.stdout), proc.stdout
