"""The local twin of ``cluster/aws.yaml`` (``cluster=local_spot``).

The twin takes the worker types of the AWS cluster config (names, resources, labels,
min/max, priority) and starts them under Ray's fake multi-node autoscaler on this
machine, with fake GPUs: autoscaling, node loss and preemption then run for real,
without a cloud. It is generated from the cluster config each time, never written by
hand.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any, Optional

import psutil
import ray.util

from tuner import _ray
from tuner.cluster.autoscaler import AutoscalerConfig
from tuner.cluster.boot import EVERY_TYPE, BootingProvider
from tuner.cluster.launcher import worker_types
from tuner.config import ClusterConfig, ConfigError
from tuner.spot import labels
from tuner.spot.drain import drain_node

HEAD_TYPE = "ray.head.default"
# On one machine a killed raylet is noticed by GCS health checks: 1 s x 3 instead of Ray's slower default.
FAST_FAILURE_DETECTION = {"health_check_period_ms": 1000, "health_check_failure_threshold": 3}
STOP_TIMEOUT_S = 10.0  # SIGTERM, then this long before SIGKILL
GONE_TIMEOUT_S = 60.0  # a reclaimed node's raylet is gone within this (the autoscaler updates every second)
AGENT_READY_TIMEOUT_S = 180.0  # the head's dashboard agent answers within this (its modules load for 10+ s on 2 cores)


def twin_config(launcher: dict[str, Any], cfg: ClusterConfig) -> dict[str, Any]:
    """An autoscaler config for the twin's provider (Ray's fake multi-node one, with boot times: ``tuner.cluster.boot``)
    with the launcher config's worker types."""
    zones = launcher["provider"].get("availability_zone", "local-a").split(",")
    region = launcher["provider"].get("region", "local")
    for key, per_type in (("torch_threads", cfg.torch_threads), ("boot_s_per_type", cfg.boot_s_per_type)):
        unknown = sorted(set(per_type) - set(worker_types(launcher)))
        if unknown:
            raise ConfigError(f"cluster.{key}: {', '.join(unknown)} is not a worker type of {cfg.launcher_config}")
    types: dict[str, Any] = {}
    for i, (name, node_type) in enumerate(sorted(worker_types(launcher).items())):
        node_labels = {
            **node_type.get("labels", {}),
            labels.ZONE: zones[i % len(zones)],  # AWS reads it from IMDS at boot; the twin spreads types
            labels.REGION: region,
            labels.NODE_GROUP: name,  # the fake provider does not set it; trials report it
        }
        if name in cfg.torch_threads:
            node_labels[labels.TORCH_THREADS] = str(cfg.torch_threads[name])
        types[name] = {
            # Not `memory` (a RayCluster's groups have it): a fake node's memory is this machine's.
            "resources": {k: v for k, v in node_type["resources"].items() if k != "memory"},
            "labels": node_labels,
            "node_config": {},
            "min_workers": min(node_type.get("min_workers", 0), cfg.max_workers_per_type),
            "max_workers": min(node_type.get("max_workers", 1), cfg.max_workers_per_type),
        }
    types[HEAD_TYPE] = {"resources": {"CPU": 0}, "node_config": {}, "max_workers": 0}
    return {
        "cluster_name": f"{launcher['cluster_name']}-local",
        "max_workers": sum(t["max_workers"] for t in types.values()),
        "upscaling_speed": launcher.get("upscaling_speed", 1.0),
        "idle_timeout_minutes": cfg.idle_timeout_minutes,
        "provider": {
            "type": "external",
            "module": f"{BootingProvider.__module__}.{BootingProvider.__name__}",
            "boot_s": {EVERY_TYPE: cfg.boot_s, **cfg.boot_s_per_type},
            "use_node_id_as_ip": True,
            "disable_node_updaters": True,
            "disable_launch_config_check": True,
        },
        "auth": {"ssh_user": "ubuntu"},
        "available_node_types": types,
        "head_node_type": HEAD_TYPE,
        "file_mounts": {},
        "cluster_synced_files": [],
        "file_mounts_sync_continuously": False,
        "rsync_exclude": [],
        "rsync_filter": [],
        "initialization_commands": [],
        "setup_commands": [],
        "head_setup_commands": [],
        "worker_setup_commands": [],
        "head_start_ray_commands": [],
        "worker_start_ray_commands": [],
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _port_taken(host: str, port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex((host, port)) == 0


def _wait_for_agent(healthz_url: str) -> None:
    """Return once the head's dashboard agent answers. `ray start` returns before it does, and Ray's job server
    gives a submitted job only 10 s to find it: a job submitted to a just-started twin on a loaded machine failed
    with "No available agent to submit job"."""
    deadline = time.monotonic() + AGENT_READY_TIMEOUT_S
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(healthz_url, timeout=5) as response:
                if response.status == 200:
                    return
        time.sleep(0.5)
    raise TimeoutError(
        f"cluster=local_spot: the head's dashboard agent did not answer at {healthz_url} within "
        f"{AGENT_READY_TIMEOUT_S:.0f} s; see dashboard_agent.log in the session's logs (/tmp/ray/session_latest/logs)"
    )


def _names(arg: str, value: str) -> bool:
    """Whether a command-line argument names ``value`` whole (a path under it, or ``--flag=value``)."""
    return arg == value or arg.endswith(f"={value}") or f"{value}/" in arg


def cluster_processes(gcs_address: str, session_dir: Optional[str]) -> list[psutil.Process]:
    """The processes of the Ray cluster whose GCS is at ``gcs_address``: those whose command line names it or its
    session directory, and everything they started (workers and trial processes only carry a title)."""
    roots = []
    for proc in psutil.process_iter(["cmdline"]):
        args = proc.info["cmdline"] or []
        if any(_names(a, gcs_address) or (session_dir is not None and _names(a, session_dir)) for a in args):
            roots.append(proc)
    found: dict[int, psutil.Process] = {}
    for root in roots:
        try:
            for proc in (root, *root.children(recursive=True)):
                found[proc.pid] = proc
        except psutil.NoSuchProcess:
            continue
    return list(found.values())


def session_dir(gcs_port: int) -> Optional[str]:
    """The session directory of the GCS listening on ``gcs_port`` (from its command line)."""
    for proc in psutil.process_iter(["cmdline"]):
        args = proc.info["cmdline"] or []
        if args and args[0].endswith("gcs_server") and f"--gcs_server_port={gcs_port}" in args:
            for arg in args:
                if arg.startswith("--log_dir="):
                    return str(Path(arg.removeprefix("--log_dir=")).parent)
    return None


class LocalTwin:
    """Start the twin with ``ray start --head --autoscaling-config`` on ports of its own, and stop only the
    processes it started: other Ray clusters on the machine (another search's, a user's) are left alone."""

    def __init__(self, config: dict[str, Any], cfg: ClusterConfig) -> None:
        self.config, self.cfg = config, cfg  # config: as generated; the file is the running truth
        self._dir = Path(tempfile.mkdtemp(prefix="tuner-twin-"))
        self.autoscaler = AutoscalerConfig(self._dir / "autoscaler.json")
        self.autoscaler.write(config)
        self.address: Optional[str] = None  # host:port of its GCS, once started
        self._session_dir: Optional[str] = None

    def _ray(self, *args: str, env: Optional[dict[str, str]] = None) -> None:
        ray_bin = shutil.which("ray", path=str(Path(sys.executable).parent)) or "ray"
        subprocess.run([ray_bin, *args], check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    @property
    def config_path(self) -> Path:
        return self.autoscaler.path

    def set_max_workers(self, node_type: str, count: int) -> None:
        """How many nodes of ``node_type`` the twin's "cloud" offers now. The autoscaler re-reads its
        config every update: nodes over the new maximum are terminated (spot capacity reclaimed), and
        pending trials get a node of that type again once capacity is back."""
        self.autoscaler.update_types({node_type: {"max_workers": count}})

    def reclaim(self, node_id: str, node_type: str, notice_s: Optional[float] = None, back: bool = True) -> int:
        """A spot instance reclaimed, the way a cloud does it: with ``notice_s``, a notice first (the drain the
        node's agent sends, reason PREEMPTION, with its deadline); then the type's capacity is taken away
        (``max_workers`` 0: the twin's autoscaler terminates the node, as EC2 terminates the instance) and, with
        ``back``, given back once the node is gone. The node goes at the notice's deadline whatever its trials
        did meanwhile: that wait is the notice. Returns the type's capacity before (for ``set_max_workers``)."""
        assert self.address is not None, "the twin is not running"
        if notice_s:
            assert drain_node(self.address, node_id, "spot notice (twin)", time.time() + notice_s)
            time.sleep(notice_s)
        capacity = int(self.autoscaler.read()["available_node_types"][node_type]["max_workers"])
        self.set_max_workers(node_type, 0)
        deadline = time.monotonic() + GONE_TIMEOUT_S
        while _ray.node_info(self.address).get(node_id, {}).get("alive"):
            if time.monotonic() > deadline:
                raise TimeoutError(f"node {node_id} of {node_type} was not terminated in {GONE_TIMEOUT_S:.0f} s")
            time.sleep(0.2)
        if back:
            self.set_max_workers(node_type, capacity)
        return capacity

    def start(self) -> str:
        """Start the twin; its GCS address (``host:port``), for ``ray.init``."""
        if self.cfg.include_dashboard and _port_taken(self.cfg.dashboard_host, self.cfg.dashboard_port):
            raise ConfigError(
                f"cluster=local_spot: {self.cfg.dashboard_host}:{self.cfg.dashboard_port} is taken (another local twin "
                "or Ray dashboard on this machine): wait for it to end, or set cluster.dashboard_port to a free port"
            )

        host, port, agent_port = ray.util.get_node_ip_address(), _free_port(), _free_port()
        gcs_address = f"{host}:{port}"
        # Its fake nodes join this GCS, not the default port another cluster may hold.
        config = self.autoscaler.read()
        config["provider"]["gcs_address"] = gcs_address
        self.autoscaler.write(config)
        # Fake nodes are local raylets started by the twin's autoscaler.
        env = {**os.environ, "RAY_FAKE_CLUSTER": "1", "AUTOSCALER_UPDATE_INTERVAL_S": "1"}
        self._ray(
            "start",
            "--head",
            f"--port={port}",
            f"--autoscaling-config={self.config_path}",
            "--num-cpus=0",
            "--num-gpus=0",
            f"--dashboard-host={self.cfg.dashboard_host}",
            f"--dashboard-port={self.cfg.dashboard_port}",
            # Not Ray's fixed defaults (52365, 10001), which another Ray cluster on this machine may hold: the
            # head's agent would fail to bind, and the job server would find no agent to run a job with.
            f"--dashboard-agent-listen-port={agent_port}",
            f"--ray-client-server-port={_free_port()}",
            "--include-dashboard=true" if self.cfg.include_dashboard else "--include-dashboard=false",
            "--system-config=" + json.dumps(FAST_FAILURE_DETECTION, separators=(",", ":")),
            env=env,
        )
        self.address, self._session_dir = gcs_address, session_dir(port)
        if self.cfg.include_dashboard:
            _wait_for_agent(f"http://{host}:{agent_port}/api/healthz")
        return self.address

    def stop(self) -> None:
        """Stop the twin's own processes (SIGTERM, then SIGKILL after ``STOP_TIMEOUT_S``), no other cluster's."""
        if self.cfg.keep_running:
            print(
                f"local_spot cluster left running (cluster.keep_running=true) at {self.address}: stop it with "
                "`ray stop --force` (which stops every Ray cluster on this machine)"
            )
            return
        if self.address is not None:
            procs = cluster_processes(self.address, self._session_dir)
            for proc in procs:
                with contextlib.suppress(psutil.NoSuchProcess):
                    proc.terminate()
            _, alive = psutil.wait_procs(procs, timeout=STOP_TIMEOUT_S)
            for proc in alive:
                with contextlib.suppress(psutil.NoSuchProcess):
                    proc.kill()
            psutil.wait_procs(alive, timeout=STOP_TIMEOUT_S)
            self.address = None
        shutil.rmtree(self._dir, ignore_errors=True)
