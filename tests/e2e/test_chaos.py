"""Node chaos in the style of Ray's fault-tolerance release test: nothing is lost.

Worker raylets are taken away at random points of the trials' progress (fixed seed), some after a spot notice, during
a real search with checkpoints in S3 (SeaweedFS) and MLflow tracking; spare nodes
replace them. Every trial must reach its last epoch with exactly the final metrics of
an undisturbed run, with one MLflow child run each, and each trial must have counted
one preemption per removal that interrupted it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from ray.cluster_utils import Cluster

from tests.e2e.test_cli import runs_of
from tests.tooling.chaos import node_chaos
from tests.tooling.searches import experiment
from tuner.config import RunSettings, StorageConfig, TrackingConfig

pytestmark = pytest.mark.slow


def test_random_node_kills_lose_nothing(s3_server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in s3_server.env.items():
        monkeypatch.setenv(key, value)
    bucket = s3_server.make_bucket()
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    # Kills are placed by the trials' progress (each in the first half of a trial's epochs), so all three
    # come at any machine speed; half the epochs are left to train while a node goes (1-2 s to remove a raylet).
    cfg = experiment(
        "chaos",
        str(tmp_path),
        epochs=16,
        space="tests.spaces:resnet8_lr",
        num_samples=4,
        concurrency=2,
        output_dir=str(tmp_path),
        storage=StorageConfig(kind="s3", bucket=bucket, endpoint_url=s3_server.endpoint_url),
        tracking=TrackingConfig(tracking_uri=uri, artifact_location=str(tmp_path / "mlartifacts")),
        run=RunSettings(max_failures=3),  # kills without notice count as failures; notices do not
    )
    # Ray's default failure detection: on 2 loaded cores, faster health checks declare live nodes dead.
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    try:
        report = node_chaos(cluster, cfg, kills=3, seed=7, notice_fraction=0.5, workers=2)
    finally:
        cluster.shutdown()
    why = json.dumps(report)  # whole, with where each trial ran: pytest would truncate the dict
    assert report["kills"] == 3 and report["data_lost"] == 0 and report["trials_finished"] == 4, why
    # Every trial a removal interrupted counted exactly one preemption per removal (a kill may land
    # on a node whose trial just finished: that interrupts nothing).
    assert all(interrupted == seen for interrupted, seen in report["by_trial"].values()), why
    assert report["trials_interrupted"] >= 2, why
    _, children = runs_of(uri, "chaos-chaos")
    assert len(children) == 4 and len({c.data.tags["tuner.trial_id"] for c in children}) == 4
    assert sum(c.data.metrics["preemptions"] for c in children) == report["preemptions_seen_by_trials"]
    keys = s3_server.keys(bucket)
    assert any("chaos-chaos/trial_" in k and k.endswith("manifest.json") for k in keys)
