"""Kubernetes, exercised on the local twin (no API server can run here): the twin derived from
cluster/k8s/raycluster.yaml (Ray's own KubeRay translation of its worker groups) runs a search to the end; and
worker "pods" as KubeRay starts them (tuner.spot.pod wrapping the group's `ray start --block`, the group's name
in RAY_NODE_TYPE_NAME, the node's labels from a Kubernetes API server on 127.0.0.1) turn the kubelet's SIGTERM
into Ray's drain: the trial takes its drain checkpoint and resumes on the other pod, nothing redone, with the
undisturbed run's metrics at every step."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import BIN, REPO, cli_env, free_port
from tests.tooling import TUNER_RUN
from tests.tooling.kube_api import KubeApi
from tuner import _ray
from tuner.cluster.launcher import load_launcher_config
from tuner.cluster.twin import LocalTwin, twin_config
from tuner.config import ClusterConfig
from tuner.result_keys import CHECKPOINT_ONLY, CHECKPOINT_REASON, LOST_WORK_S, NODE_ID, PREEMPTIONS, RECOVERY_S, ZONE
from tuner.spot import labels

pytestmark = pytest.mark.slow

RAYCLUSTER = "cluster/k8s/raycluster.yaml"
GROUP = "spot-g5"
GRACE_S, MARGIN_S = 20, 5  # the pods' terminationGracePeriodSeconds, and the wrapper's margin before its end
UNTIL_STOPPED = 10_000_000  # the disturbed run trains until the test creates its stop file
GUARD_S = 600  # a hang guard only: every wait below ends on an event
ZONES = {"pod-a": "us-east-1a", "pod-b": "us-east-1b"}


def results(out: Path) -> list[dict[str, Any]]:
    rows = []
    for path in (out / "ray_results" / "regression").glob("trial_*/result.json"):
        rows += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return sorted(rows, key=lambda r: r["wall_s"])


def test_a_search_runs_on_the_twin_of_the_ray_cluster(tmp_path: Path) -> None:
    args = [
        "--config-dir",
        "examples/conf",
        "+search=regression",
        "cluster=local_spot",
        f"cluster.launcher_config={RAYCLUSTER}",
        "cluster.max_workers_per_type=1",
        "cluster.include_dashboard=false",
        "search.tune.num_samples=2",
        "search.tune.max_concurrent_trials=2",
        "tracking=none",
        f"output_dir={tmp_path}",
    ]
    proc = subprocess.run([*TUNER_RUN, *args], cwd=REPO, env=cli_env(), capture_output=True, text=True, timeout=GUARD_S)
    assert proc.returncode == 0 and "2 of 2 trials finished, 0 failed." in proc.stdout, proc.stdout[-3000:]
    groups = {r["node_group"] for r in results(tmp_path)}
    kube = load_launcher_config(RAYCLUSTER)["available_node_types"]
    assert groups and groups <= set(kube) - {"headgroup"}, groups  # the RayCluster's worker groups


def start_command(group: dict[str, Any], gcs: str, temp_dir: str) -> str:
    """The `ray start` KubeRay generates for a worker of ``group`` (its $KUBERAY_GEN_RAY_START_CMD); a temp dir and
    ports of its own, as a pod has: the pods of this test share one machine."""
    resources = {k: int(v) for k, v in group["resources"].items()}
    custom = {k: v for k, v in resources.items() if k not in ("CPU", "GPU")}
    node_labels = ",".join(f"{k}={v}" for k, v in group["labels"].items())
    return (
        f"{BIN / 'ray'} start --address={gcs} --block --num-cpus={resources['CPU']} --num-gpus={resources['GPU']} "
        f"--resources='{json.dumps(custom)}' --labels={node_labels} --dashboard-agent-listen-port={free_port()} "
        f"--temp-dir={temp_dir}"
    )


class Pods:
    """Worker pods of one group: each the wrapper as main process, as cluster/k8s/raycluster.yaml runs it."""

    def __init__(self, twin: LocalTwin, api: KubeApi, logs: Path) -> None:
        spec = next(d for d in yaml.safe_load_all((REPO / RAYCLUSTER).read_text()) if d["kind"] == "RayCluster")
        self.group = next(g for g in spec["spec"]["workerGroupSpecs"] if g["groupName"] == GROUP)
        self.twin, self.api, self.logs = twin, api, logs
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.temp_dirs: list[str] = []

    def start(self, name: str) -> None:
        assert self.twin.address is not None
        self.api.nodes[name] = {
            "topology.kubernetes.io/zone": ZONES[name],
            "topology.kubernetes.io/region": "us-east-1",
            "karpenter.sh/capacity-type": "spot",
            "node.kubernetes.io/instance-type": self.group["labels"][labels.INSTANCE_TYPE],
        }
        wrapper = [sys.executable, "-m", "tuner.spot.pod", f"--grace-s={GRACE_S}", f"--margin-s={MARGIN_S}"]
        self.temp_dirs.append(tempfile.mkdtemp(prefix="pod-", dir="/tmp"))  # short: Ray's socket paths must fit
        start = start_command(self.group, self.twin.address, self.temp_dirs[-1])
        command = [*wrapper, f"--kube-api={self.api.url}", "--", "bash", "-c", f"exec {start}"]
        # As the kubelet and KubeRay set them; and the twin's token auth (its token in ~/.ray/auth_token).
        env = {**os.environ, "NODE_NAME": name, "RAY_NODE_TYPE_NAME": GROUP, "RAY_AUTH_MODE": "token"}
        with (self.logs / f"{name}.log").open("wb") as log:  # its own process group: close() stops Ray too
            self.procs[name] = subprocess.Popen(
                command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )

    def node_of(self, name: str) -> str:
        """The Ray node the pod started, once it has joined the cluster."""
        deadline = time.monotonic() + GUARD_S
        while True:
            found = re.search(r"Ray node (\w+) up", self.log(name))
            nodes = _ray.node_info(self.twin.address or "") if found else {}
            joined = [n for n, info in nodes.items() if found and n.startswith(found.group(1)) and info["alive"]]
            if joined:
                return joined[0]
            assert self.procs[name].poll() is None and time.monotonic() < deadline, self.log(name)
            time.sleep(0.2)

    def log(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text(errors="replace")

    def close(self) -> None:
        for proc in self.procs.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # the wrapper, `ray start` and its raylet
            proc.wait()
        for temp_dir in self.temp_dirs:
            shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def pods(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pods]:
    """The twin of the RayCluster with no nodes of its own (the pods are its workers, as KubeRay's would be), and
    two pods of the spot-g5 group on it."""
    cfg = ClusterConfig(name="local_spot", launcher_config=RAYCLUSTER, max_workers_per_type=0, include_dashboard=False)
    twin = LocalTwin(twin_config(load_launcher_config(RAYCLUSTER), cfg), cfg)
    api = KubeApi(token=None).start()
    twin.start()
    found = Pods(twin, api, tmp_path_factory.mktemp("pods"))
    try:
        for name in ZONES:
            found.start(name)
        yield found
    finally:
        found.close()
        twin.stop()
        api.stop()


def cli(out: Path, steps: int) -> list[str]:
    return [
        *TUNER_RUN,
        "--config-dir",
        "examples/conf",
        "+search=regression",
        "search.space=tests.spaces:regression",
        "search.tune.num_samples=1",
        f"search.workload.steps={steps}",
        f"search.scheduler.grace_period={steps}",
        "search.workload.eval_every=200",
        "cluster.address=auto",
        "run.max_failures=0",  # a preemption is not a failure
        # The pod's hold of Ray to the deadline is under test: the trial stays to it, not moving to the other pod
        # once it has room (tests/e2e/test_replacement.py tests the move).
        "checkpoint.move=false",
        "tracking=none",
        f"output_dir={out}",
        f"run.stop_file={out / 'STOP'}",
    ]


def wait_for(
    out: Path, driver: subprocess.Popen[str], what: str, enough: Callable[[list[dict[str, Any]]], bool]
) -> list[dict[str, Any]]:
    deadline = time.monotonic() + GUARD_S
    while not enough(rows := results(out)):
        assert driver.poll() is None and time.monotonic() < deadline, f"no {what}"
        time.sleep(0.2)
    return rows


def test_a_pods_sigterm_drains_its_node_and_the_trial_resumes_on_the_other_pod(pods: Pods, tmp_path: Path) -> None:
    nodes = {name: pods.node_of(name) for name in ZONES}
    for name, node_id in nodes.items():  # the Kubernetes node's labels reached Ray's
        node_labels = _ray.node_info(pods.twin.address or "")[node_id]["labels"]
        assert node_labels[labels.ZONE] == ZONES[name] and node_labels[labels.MARKET] == "spot", node_labels
        assert node_labels[labels.NODE_GROUP] == GROUP and node_labels[labels.INSTANCE_TYPE] == "g5.xlarge"
    out, log = tmp_path / "disturbed", tmp_path / "disturbed.log"
    with log.open("w") as stream:
        driver = subprocess.Popen(
            cli(out, UNTIL_STOPPED), cwd=REPO, env=cli_env(), stdout=stream, stderr=subprocess.STDOUT, text=True
        )
    try:
        rows = wait_for(out, driver, "report at step 1000", lambda rows: any(r.get("step", 0) >= 1000 for r in rows))
        victim = next(name for name, node_id in nodes.items() if node_id == rows[-1][NODE_ID])
        pod = pods.procs[victim]
        sigterm_s = time.time()
        pod.send_signal(signal.SIGTERM)  # the kubelet, evicting the pod for Karpenter's interruption drain
        while "drained Ray node" not in pods.log(victim):
            assert pod.poll() is None and time.time() - sigterm_s < GRACE_S, pods.log(victim)
            time.sleep(0.1)
        pod.send_signal(signal.SIGTERM)  # and again, while it drains: still one drain
        wait_for(
            out,
            driver,
            "reports from the other pod",
            lambda rows: sum(r[NODE_ID] != nodes[victim] and not r.get(CHECKPOINT_ONLY) for r in rows) >= 3,
        )
        assert pod.wait(timeout=GRACE_S + 30) == 0, pods.log(victim)
        (out / "STOP").touch()
        driver.wait(timeout=GUARD_S)
    finally:
        if driver.poll() is None:
            driver.kill()
    assert driver.returncode == 0, log.read_text()[-4000:]
    wrapper_log = pods.log(victim)
    assert wrapper_log.count("drained Ray node") == 1 and "SIGTERM again (2)" in wrapper_log, wrapper_log
    stopped = re.search(r"^(\S+ \S+) tuner.spot.pod INFO Ray stopped", wrapper_log, re.M)
    assert stopped, wrapper_log
    held_s = datetime.strptime(stopped.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp() - sigterm_s
    assert held_s >= GRACE_S - MARGIN_S - 1, held_s  # Ray held up until the drain's deadline, then stopped

    done = results(out)
    reasons = [r[CHECKPOINT_REASON] for r in done if r.get(CHECKPOINT_ONLY) and r[NODE_ID] == nodes[victim]]
    assert reasons[-2:] == ["drain", "deadline"], reasons
    reports = [r for r in done if not r.get(CHECKPOINT_ONLY)]
    final = reports[-1]
    assert final[PREEMPTIONS] == 1 and {r[ZONE] for r in reports} == set(ZONES.values())  # moved, zone priced
    per_report = sorted(b["train_time_s"] - a["train_time_s"] for a, b in zip(reports, reports[1:]))
    step_s = per_report[len(per_report) // 2] / 200  # the median report's 200 steps
    assert final[LOST_WORK_S] <= step_s, (final[LOST_WORK_S], step_s)  # at most one step redone
    print(
        f"\nSIGTERM path: lost {final[LOST_WORK_S]:.3f} s (one step {step_s:.4f} s), recovery {final[RECOVERY_S]:.1f} s"
    )

    undisturbed = tmp_path / "undisturbed"
    base = subprocess.run(
        cli(undisturbed, int(final["step"])), cwd=REPO, env=cli_env(), capture_output=True, text=True, timeout=GUARD_S
    )
    assert base.returncode == 0, base.stdout[-3000:]
    reference = {r["step"]: r["val_loss"] for r in results(undisturbed) if not r.get(CHECKPOINT_ONLY)}
    assert final["step"] in reference
    assert {r["step"]: r["val_loss"] for r in reports} == {s: reference[s] for s in (r["step"] for r in reports)}
