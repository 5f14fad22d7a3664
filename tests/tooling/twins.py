"""The local twin of a few of cluster/aws.yaml's worker types, for benchmarks and tests that compare types."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import yaml

from tuner.cluster.launcher import load_launcher_config
from tuner.cluster.twin import LocalTwin, twin_config
from tuner.config import ClusterConfig


@contextlib.contextmanager
def twin_of(types: Sequence[str], workdir: Path, **cluster: Any) -> Iterator[tuple[LocalTwin, Path]]:
    """The twin of cluster/aws.yaml's worker ``types`` only, one node each (``cluster``: more ClusterConfig
    fields), and the launcher config it was made from (written to ``workdir``); stopped at the end."""
    launcher = load_launcher_config("cluster/aws.yaml")
    head = launcher["head_node_type"]
    launcher["available_node_types"] = {
        n: t for n, t in launcher["available_node_types"].items() if n in (head, *types)
    }
    path = workdir / f"aws-{'-'.join(types)}.yaml"
    path.write_text(yaml.safe_dump(launcher))
    cfg = ClusterConfig(
        name="local_spot", launcher_config=str(path), max_workers_per_type=1, include_dashboard=False, **cluster
    )
    twin = LocalTwin(twin_config(launcher, cfg), cfg)
    twin.start()
    try:
        yield twin, path
    finally:
        twin.stop()
