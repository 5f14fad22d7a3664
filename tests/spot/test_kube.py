"""A pod's node labels (tuner.spot.kube) from a Kubernetes API server on 127.0.0.1: what reaches Ray, and what a
bad answer does (one warning, no labels)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.tooling.kube_api import KubeApi
from tuner.spot.kube import in_cluster_api, ray_label_env

NODE = "ip-10-0-3-7.ec2.internal"
LABELS = {
    "topology.kubernetes.io/zone": "us-east-1b",
    "topology.kubernetes.io/region": "us-east-1",
    "karpenter.sh/capacity-type": "spot",
    "node.kubernetes.io/instance-type": "g5.xlarge",
}


@pytest.fixture
def api() -> Iterator[KubeApi]:
    server = KubeApi(token="sa-token").start()
    server.nodes[NODE] = LABELS
    yield server
    server.stop()


@pytest.fixture
def account(tmp_path: Path) -> Path:
    (tmp_path / "token").write_text("sa-token\n")
    return tmp_path


def test_the_nodes_labels_become_rays_label_variables(api: KubeApi, account: Path) -> None:
    env = ray_label_env(api.url, NODE, account)
    assert env == {"RAY_NODE_ZONE": "us-east-1b", "RAY_NODE_REGION": "us-east-1", "RAY_NODE_MARKET_TYPE": "spot"}
    assert api.requests == [f"GET /api/v1/nodes/{NODE}"]


def test_labels_that_cannot_be_read_leave_the_node_unlabelled_with_one_warning(
    api: KubeApi, account: Path, caplog: pytest.LogCaptureFixture
) -> None:
    api.mode = "malformed"
    assert ray_label_env(api.url, NODE, account) == {}
    (account / "token").write_text("another-token")  # 401
    assert ray_label_env(api.url, NODE, account) == {}
    (account / "token").write_text("sa-token")
    assert ray_label_env(api.url, "no-such-node", account) == {}  # 404
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 3 and all(w.startswith("node labels not read (") for w in warnings), warnings
    assert "no metadata.labels" in warnings[0] and "401" in warnings[1] and "404" in warnings[2]
    assert ray_label_env(None, NODE, account) == {} and ray_label_env(api.url, None, account) == {}  # off-cluster


def test_the_in_cluster_address(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    assert in_cluster_api() is None
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.100.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    assert in_cluster_api() == "https://10.100.0.1:443"
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "fd00::1")
    assert in_cluster_api() == "https://[fd00::1]:443"
