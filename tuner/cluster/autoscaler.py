"""The autoscaler's config file, changed while the cluster runs (Ray's autoscaler re-reads it every update).

On the local twin the file is the twin's own (its spot types' ``max_workers`` are the "cloud's"
capacity, which fault injection moves); on a ``ray up`` head it is
``~/ray_bootstrap_config.yaml``. Changes are read-modify-write under a file lock, so the
fault injector and the driver's capacity rule never lose each other's changes, and the new
file replaces the old one atomically: the autoscaler never reads half a file.
"""

from __future__ import annotations

import fcntl
import json
from pathlib import Path
from typing import Any

import yaml


class AutoscalerConfig:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).expanduser()

    def read(self) -> dict[str, Any]:
        return dict(yaml.safe_load(self.path.read_text()))  # JSON is YAML too

    def write(self, config: dict[str, Any]) -> None:
        staged = self.path.with_suffix(".tmp")
        is_yaml = self.path.suffix in (".yaml", ".yml")
        staged.write_text(yaml.safe_dump(config, sort_keys=False) if is_yaml else json.dumps(config))
        staged.replace(self.path)

    def update_types(self, changes: dict[str, dict[str, Any]]) -> None:
        """``{node_type: {"max_workers": n, "priority": p, ...}}``; the cluster-wide ``max_workers`` follows."""
        with open(self.path.with_suffix(".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            config = self.read()
            types = config["available_node_types"]
            for name, fields in changes.items():
                types[name].update(fields)
            head = config.get("head_node_type")
            config["max_workers"] = sum(int(t.get("max_workers", 0)) for n, t in types.items() if n != head)
            self.write(config)
