"""The local twin of ``cluster/aws.yaml`` (``cluster=local_spot``).

The twin takes the worker types of the AWS cluster config (names, resources, labels,
min/max, priority) and starts them under Ray's fake multi-node autoscaler on this
machine, with fake GPUs: autoscaling, node loss and preemption then run for real,
without a cloud. It is generated from the cluster config each time, never written by
hand.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Optional

from tuner.cluster.autoscaler import AutoscalerConfig
from tuner.cluster.launcher import worker_types
from tuner.config import ClusterConfig, ConfigError
from tuner.spot import labels

HEAD_TYPE = "ray.head.default"
# On one machine a killed raylet is noticed by GCS health checks: 1 s x 3 instead of Ray's slower default.
FAST_FAILURE_DETECTION = {"health_check_period_ms": 1000, "health_check_failure_threshold": 3}


def twin_config(launcher: dict[str, Any], cfg: ClusterConfig) -> dict[str, Any]:
    """A fake_multinode autoscaler config with the launcher config's worker types."""
    zones = launcher["provider"].get("availability_zone", "local-a").split(",")
    region = launcher["provider"].get("region", "local")
    unknown = sorted(set(cfg.torch_threads) - set(worker_types(launcher)))
    if unknown:
        raise ConfigError(f"cluster.torch_threads: {', '.join(unknown)} is not a worker type of {cfg.launcher_config}")
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
            "resources": dict(node_type["resources"]),
            "labels": node_labels,
            "node_config": {},
            "min_workers": node_type.get("min_workers", 0),
            "max_workers": min(node_type.get("max_workers", 1), cfg.max_workers_per_type),
        }
    types[HEAD_TYPE] = {"resources": {"CPU": 0}, "node_config": {}, "max_workers": 0}
    return {
        "cluster_name": f"{launcher['cluster_name']}-local",
        "max_workers": sum(t["max_workers"] for t in types.values()),
        "upscaling_speed": launcher.get("upscaling_speed", 1.0),
        "idle_timeout_minutes": cfg.idle_timeout_minutes,
        "provider": {
            "type": "fake_multinode",
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


class LocalTwin:
    """Start the twin with ``ray start --head --autoscaling-config`` and stop it after."""

    def __init__(self, config: dict[str, Any], cfg: ClusterConfig) -> None:
        self.config, self.cfg = config, cfg  # config: as generated; the file is the running truth
        self._dir = Path(tempfile.mkdtemp(prefix="tuner-twin-"))
        self.autoscaler = AutoscalerConfig(self._dir / "autoscaler.json")
        self.autoscaler.write(config)
        self.address: Optional[str] = None

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

    def start(self) -> str:
        path = self.config_path
        # Fake nodes are local raylets; the fake provider stops every Ray process on `ray stop --force`.
        env = {**os.environ, "RAY_FAKE_CLUSTER": "1", "AUTOSCALER_UPDATE_INTERVAL_S": "1"}
        self._ray(
            "start", "--head", f"--autoscaling-config={path}", "--num-cpus=0", "--num-gpus=0",
            f"--dashboard-host={self.cfg.dashboard_host}", f"--dashboard-port={self.cfg.dashboard_port}",
            "--include-dashboard=true" if self.cfg.include_dashboard else "--include-dashboard=false",
            "--system-config=" + json.dumps(FAST_FAILURE_DETECTION, separators=(",", ":")),
            env=env,
        )  # fmt: skip
        self.address = "auto"
        return self.address

    def stop(self) -> None:
        if self.cfg.keep_running:
            print("local_spot cluster left running (cluster.keep_running=true): stop it with `ray stop --force`")
            return
        self._ray("stop", "--force")
        shutil.rmtree(self._dir, ignore_errors=True)
