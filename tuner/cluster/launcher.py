"""A cluster's worker types, and what fits on them: a ``ray up`` cluster config (``cluster/aws.yaml``) or a
KubeRay ``RayCluster`` (``cluster/k8s/raycluster.yaml``, its worker groups as node types, translated by Ray's
own KubeRay autoscaler code).

The cluster config is the one source of truth for the worker types: the driver refuses a
trial none of them can ever hold, and the local twin is generated from it.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from tuner import _ray
from tuner.config import ConfigError

REPO = Path(__file__).resolve().parent.parent.parent


def load_launcher_config(path: str) -> dict[str, Any]:
    full = Path(path) if Path(path).is_absolute() else REPO / path
    try:
        docs = [doc for doc in yaml.safe_load_all(full.read_text()) if doc]
        ray_clusters = [doc for doc in docs if isinstance(doc, dict) and doc.get("kind") == "RayCluster"]
        if ray_clusters:
            return from_ray_cluster(ray_clusters[0], zones_of_node_pools(full.parent))
        if len(docs) != 1 or not isinstance(docs[0], dict):
            raise ValueError("expected one mapping (a `ray up` config) or a RayCluster manifest")
        return dict(docs[0])
    except (OSError, yaml.YAMLError, TypeError, ValueError, KeyError, AssertionError) as exc:
        raise ConfigError(f"cluster.launcher_config={path!r} cannot be read: {exc}") from exc


def from_ray_cluster(ray_cluster: Mapping[str, Any], zones: list[str]) -> dict[str, Any]:
    """The worker groups of a ``RayCluster`` as a launcher config's node types, as Ray's KubeRay autoscaler
    sees them; ``zones`` (where the Karpenter node pools launch) play the role of ``provider.availability_zone``."""
    ray_cluster = {**ray_cluster, "metadata": {"namespace": "default", **ray_cluster.get("metadata", {})}}
    config = _ray.kuberay_autoscaling_config(ray_cluster)
    if zones:
        config["provider"]["availability_zone"] = ",".join(zones)
        config["provider"]["region"] = zones[0].rstrip("abcdefghijklmnopqrstuvwxyz")
    return config


def zones_of_node_pools(directory: Path) -> list[str]:
    """The zones the Karpenter ``NodePool`` manifests next to a ``RayCluster`` allow, in their order."""
    zones: list[str] = []
    for path in sorted(directory.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if isinstance(doc, dict) and doc.get("kind") == "NodePool":
                for req in doc["spec"]["template"]["spec"].get("requirements", []):
                    if req["key"] == "topology.kubernetes.io/zone" and req["operator"] == "In":
                        zones += [z for z in req["values"] if z not in zones]
    return zones


def worker_types(launcher: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    head = launcher["head_node_type"]
    return {name: t for name, t in launcher["available_node_types"].items() if name != head}


def fits(bundle: Mapping[str, float], have: Mapping[str, float]) -> bool:
    return all(have.get(k, 0) >= v for k, v in bundle.items() if v)


def describe(bundle: Mapping[str, float]) -> str:
    return " ".join(f"{k.lower()}={v:g}" for k, v in bundle.items() if v)


def check_fits(launcher: Mapping[str, Any], bundle: Mapping[str, float], workers: int = 1) -> None:
    """Refuse, before anything starts, a trial no worker type can ever hold (it would wait forever):
    each worker's bundle must fit a type, and ``workers`` of them the node limits together (per type, and
    the cluster's ``max_workers``: the roomiest nodes first)."""
    types = worker_types(launcher)
    holds = sorted(
        ((per_node(bundle, t.get("resources", {})), int(t.get("max_workers", 0))) for t in types.values()), reverse=True
    )
    nodes_left, room = int(launcher.get("max_workers", sum(n for _, n in holds))), 0
    for each, count in holds:
        taken = min(count, nodes_left)
        room, nodes_left = room + each * taken, nodes_left - taken
    if room >= workers:
        return
    offered = ", ".join(f"{n}={t.get('resources')}" for n, t in types.items())
    what = f"{workers} workers of {describe(bundle)}" if workers > 1 else f"a trial needing {describe(bundle)}"
    raise ConfigError(f"no worker type fits {what} (types: {offered}): lower search.resources or add a node type")


def per_node(bundle: Mapping[str, float], have: Mapping[str, float]) -> int:
    """How many bundles one node of these resources holds."""
    counts = [int(have.get(k, 0) // v) for k, v in bundle.items() if v]
    return min(counts) if counts else 0
