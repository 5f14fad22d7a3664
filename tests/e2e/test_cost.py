"""The cost ledger end to end: labelled nodes, the real driver, MLflow child costs add up to the parent's."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from ray.cluster_utils import Cluster

from tests.e2e.test_cli import runs_of
from tuner.chaos import experiment
from tuner.config import BudgetConfig, ClusterConfig, Config, TrackingConfig
from tuner.labels import INSTANCE_TYPE, MARKET, REGION, ZONE
from tuner.run import execute

pytestmark = pytest.mark.slow


def settings(tmp_path: Path, address: str, **overrides) -> Config:
    return experiment(
        f"costed-{tmp_path.name}", str(tmp_path / "ray_results"), 3, space="search_spaces.mlp:space", model="mlp",
        num_samples=4, concurrency=2, output_dir=str(tmp_path),
        cluster=ClusterConfig(address=address, head_instance_type="g6.xlarge"),
        tracking=TrackingConfig(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db", experiment_name="costed",
                                artifact_location=str(tmp_path / "mlartifacts")),
        **overrides,
    )  # fmt: skip


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
    ranked = client.search_runs([parent.info.experiment_id], "tags.`mlflow.parentRunId` != ''",
                                order_by=["metrics.cost_usd DESC"])  # fmt: skip
    assert [r.data.metrics["cost_usd"] for r in ranked] == sorted(child.data.metrics["cost_usd"] for child in children)[::-1]
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"cost_ledger.csv", "accuracy_vs_cost.png"} <= artifacts


def test_budget_stops_starting_trials(labelled_cluster, tmp_path: Path, capsys) -> None:
    cfg = settings(tmp_path, labelled_cluster.address, budget=BudgetConfig(max_usd=1e-5))
    cfg.search.tune.num_samples = 8
    assert execute(cfg) == 0
    out = capsys.readouterr().out
    assert "budget: stopped at $" in out
    started = int(re.search(r"\d+ of (\d+) trials finished", out).group(1))
    assert started < 8  # no new trials once the budget was reached
