"""The worker pod's wrapper (tuner.spot.pod) without Ray: the node's labels from a Kubernetes API server on
127.0.0.1, and the process rules (SIGTERM stops the command, the command's exit is the wrapper's, bad
arguments). The drain itself, on a Ray node of the twin: tests/e2e/test_k8s.py."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.tooling.kube_api import KubeApi
from tuner.spot.pod import ray_label_env

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


def wrapper(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tuner.spot.pod", *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def test_sigterm_stops_a_command_that_never_started_ray() -> None:
    proc = wrapper(
        "--grace-s", "30", "--", sys.executable, "-c", "import time; print('up', flush=True); time.sleep(60)"
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "up"
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0 and time.monotonic() - started < 15, out  # no node to drain: no wait for a deadline


def test_the_commands_own_exit_is_the_wrappers() -> None:
    proc = wrapper("--", sys.executable, "-c", "raise SystemExit(3)")
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 3 and "the command exited with 3 before any SIGTERM" in out


@pytest.mark.parametrize(
    "args,message",
    [([], "give the command that starts Ray after --"), (["--grace-s", "5", "--margin-s", "5", "--", "true"], "below")],
)
def test_bad_arguments(args: list[str], message: str) -> None:
    proc = wrapper(*args)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 2 and message in out.splitlines()[-1]
