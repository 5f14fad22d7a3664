"""Preemption on a real multi-node Ray cluster: notices drain nodes, trials move on.

Nodes are real raylets (``ray.cluster_utils.Cluster``); each spot worker gets the
real agent process (``python -m tuner.spot.agent``) polling a fake metadata server on
127.0.0.1; nodes are killed with ``remove_node(allow_graceful=False)``.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import ray
from ray.cluster_utils import Cluster

from tests.tooling.chaos import NodeChaos, ResultRecorder, deadline_saved
from tests.tooling.searches import experiment
from tuner.config import CheckpointConfig, ClusterConfig, Config, RunSettings
from tuner.run.driver import execute
from tuner.spot import drain
from tuner.trial.heartbeat import EVERY_S as HEARTBEAT_EVERY_S

pytestmark = pytest.mark.slow

EPOCHS = 12


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    """A head that runs no trials; tests add and remove their own worker nodes."""
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    try:
        yield c
    finally:
        ray.shutdown()
        c.shutdown()


def add_workers(cluster: Cluster, n: int) -> list:
    nodes = [cluster.add_node(num_cpus=1) for _ in range(n)]
    cluster.wait_for_nodes()
    return nodes


def remove_workers(cluster: Cluster) -> None:
    for node in list(cluster.worker_nodes):
        cluster.remove_node(node, allow_graceful=False)


def settings(
    cluster: Cluster,
    tmp_path: Path,
    space: str = "search_spaces.fixed:resnet8",
    max_failures: int = 0,
    epochs: int = EPOCHS,
    **ckpt: Any,
) -> Config:
    return experiment(
        f"preempt-{tmp_path.name}",
        str(tmp_path / "ray_results"),
        epochs,
        space=space,
        output_dir=str(tmp_path),
        run=RunSettings(max_failures=max_failures),
        checkpoint=CheckpointConfig(final_margin_s=2.0, **ckpt),
        cluster=ClusterConfig(address=cluster.address),
    )


def wait_for(predicate, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def node_of(results: list[dict]) -> str:
    return results[-1]["node_id"]


@ray.remote(num_cpus=1)
class Busy:
    """Work on the node, so that a drained node stays up (an idle one exits at once)."""

    def ping(self) -> str:
        return ray.get_runtime_context().get_node_id()


@pytest.mark.parametrize("provider", ["aws", "gcp", "azure"])
def test_agent_drains_its_node_for_each_provider(cluster: Cluster, provider: str) -> None:
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    ray.init(address=cluster.address)
    chaos = NodeChaos(cluster, provider=provider)
    node = chaos.add_node(num_cpus=1)  # with its own metadata server and a real agent process
    busy = Busy.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node.node_id, soft=False)).remote()
    assert ray.get(busy.ping.remote()) == node.node_id
    try:
        polled = len(node.metadata.requests)
        wait_for(lambda: len(node.metadata.requests) >= polled + 3, 30, "polls with no notice")
        assert node.node_id not in drain.draining_nodes()
        node.metadata.mode = "malformed"  # never a false drain
        polled = len(node.metadata.requests)
        wait_for(lambda: len(node.metadata.requests) >= polled + 3, 30, "polls of malformed answers")
        assert node.node_id not in drain.draining_nodes() and node.agent.poll() is None
        node.metadata.mode, node.metadata.terminate_at = "ok", time.time() + 30
        wait_for(lambda: node.node_id in drain.draining_nodes(), 10, "the drain")
        deadline_ms = drain.draining_nodes()[node.node_id]
        assert deadline_ms / 1000 == pytest.approx(node.metadata.terminate_at, abs=2)
    finally:
        ray.kill(busy)
        chaos.close()
        ray.shutdown()
    assert node.agent.returncode == 0, node.output
    assert "draining this Ray node" in node.output and "terminate notice" in node.output


def run_search(cfg: Config, chaos) -> tuple[int, dict[str, Any], ResultRecorder]:
    """The search through the driver, faults injected by ``chaos(recorder)`` from a thread;
    (status, final result, all)."""
    recorder = ResultRecorder()
    thread = threading.Thread(target=chaos, args=(recorder,), daemon=True)
    thread.start()
    status = execute(cfg, observers=[recorder])
    thread.join(60)
    reports = [r for r in recorder.results if not r.get("checkpoint_only")]
    return status, reports[-1] if reports else {}, recorder


def test_notice_checkpoints_at_once_and_trial_moves_without_a_failure(cluster: Cluster, tmp_path: Path) -> None:
    """max_failures=0: a preempted trial still resumes on the other node and finishes. The other node has room
    when the notice comes: the trial checkpoints to move at once and goes there (checkpoint.move) instead of
    holding to the deadline; the hold is tested in tests/e2e/test_k8s.py and test_examples.py."""
    chaos = NodeChaos(cluster, provider="aws")
    epochs = 20

    def inject(recorder: ResultRecorder) -> None:
        wait_for(lambda: any(r.get("epoch", 0) >= 2 for r in recorder.results), 120, "two epochs")
        node = node_of(recorder.results)
        chaos.preempt(node, notice_s=1.5, saved=deadline_saved(recorder, node))

    try:
        for _ in range(2):
            chaos.add_node(num_cpus=1)
        status, final, recorder = run_search(settings(cluster, tmp_path, max_failures=0, epochs=epochs), inject)
    finally:
        chaos.close()
    assert status == 0
    agents = [e.get("agent_output", "")[-1500:] for e in chaos.log]  # what the agents saw, if it went wrong
    assert final["epoch"] == epochs and final["preemptions"] == 1, agents
    reasons = [r.get("checkpoint_reason") for r in recorder.results if r.get("checkpoint_only")]
    assert reasons[:1] == ["move"], reasons
    assert len({r["node_id"] for r in recorder.results}) == 2  # it moved
    # Lost work: at most one training step (the trial held still after its last checkpoint).
    epoch_rows = [r for r in recorder.results if not r.get("checkpoint_only")]
    step_s = max(r["epoch_time_s"] for r in epoch_rows) / 45  # 1437 images / batch 32 = 45 steps
    assert final["lost_work_s"] <= step_s, (final["lost_work_s"], step_s)
    assert final["recovery_s"] < 30


def test_hard_kill_resumes_from_last_periodic_checkpoint(cluster: Cluster, tmp_path: Path) -> None:
    """No notice: the trial resumes from its last periodic checkpoint; lost work <= one interval."""
    nodes = add_workers(cluster, 2)
    by_id = {n.node_id: n for n in nodes}
    # still training when the kill lands, however fast the machine (removing a raylet takes 1-2 s)
    every, epochs = 8, 30

    def chaos(recorder: ResultRecorder) -> None:
        # Two epochs past the first checkpoint; the node goes a few epochs later.
        wait_for(lambda: any(r.get("epoch") == every + 2 for r in recorder.results), 120, "work past a checkpoint")
        cluster.remove_node(by_id[node_of(recorder.results)], allow_graceful=False)

    try:
        status, final, recorder = run_search(
            settings(cluster, tmp_path, max_failures=1, epochs=epochs, every_reports=every), chaos
        )
    finally:
        remove_workers(cluster)
    assert status == 0
    assert final["epoch"] == epochs and final["preemptions"] == 1
    first_node = recorder.results[0]["node_id"]
    epochs_after = [r["epoch"] for r in recorder.results if r["node_id"] != first_node]
    assert epochs_after[0] > 1 and epochs_after[0] % every == 1  # right after a checkpoint, not from scratch
    # The kill lands when it lands (an epoch takes 0.17-0.6 s here): the heartbeat must have seen the epochs
    # reported past the checkpoint, to its resolution, and no more than the work since the checkpoint.
    redone_s = sum(
        r["epoch_time_s"]
        for r in recorder.results
        if r["node_id"] == first_node and r["epoch"] >= epochs_after[0] and not r.get("checkpoint_only")
    )
    interval_s = every * max(r["epoch_time_s"] for r in recorder.results)
    assert redone_s - HEARTBEAT_EVERY_S <= final["lost_work_s"] <= interval_s + HEARTBEAT_EVERY_S, (
        final["lost_work_s"],
        redone_s,
    )


def test_application_error_fails_the_trial(cluster: Cluster, tmp_path: Path, capsys) -> None:
    add_workers(cluster, 1)
    try:
        status, _, _ = run_search(settings(cluster, tmp_path, space="tests.spaces:invalid_resnet"), lambda r: None)
    finally:
        remove_workers(cluster)
    assert status == 1
    out = capsys.readouterr()
    assert re.search(
        r"FAILED  ValueError: ResNet depth must be 6n\+2 .* \(at workloads/models/resnet\.py:\d+ in __init__\)", out.out
    ), out.out
