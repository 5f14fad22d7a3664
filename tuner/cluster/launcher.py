"""A ``ray up`` cluster config (``cluster/aws.yaml``): its worker types, and what fits on them.

The cluster config is the one source of truth for the worker types: the driver refuses a
trial none of them can ever hold, and the local twin is generated from it.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from tuner.config import ConfigError

REPO = Path(__file__).resolve().parent.parent.parent


def load_launcher_config(path: str) -> dict[str, Any]:
    full = Path(path) if Path(path).is_absolute() else REPO / path
    try:
        return dict(yaml.safe_load(full.read_text()))
    except (OSError, yaml.YAMLError, TypeError, ValueError) as exc:
        raise ConfigError(f"cluster.launcher_config={path!r} cannot be read: {exc}") from exc


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
