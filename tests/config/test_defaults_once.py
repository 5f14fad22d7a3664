"""Every default once: the dataclass schemas hold them, the YAML files only select and override. A value a YAML file
sets to what its schema already says is a second copy that drifts when the schema changes; this finds them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from omegaconf import DictConfig, ListConfig, OmegaConf

from tuner.config import (
    CheckConfig,
    ClusterConfig,
    PlanConfig,
    ReportConfig,
    SearchConfig,
    StorageConfig,
    StrategyConfig,
    TrackingConfig,
)

REPO = Path(__file__).resolve().parents[2]
# Each YAML file (glob, from the repository root) and the schema of the node it fills.
SCHEMAS: dict[str, type] = {
    "conf/cluster/*.yaml": ClusterConfig,
    "conf/storage/*.yaml": StorageConfig,
    "conf/tracking/*.yaml": TrackingConfig,
    "conf/search/*.yaml": SearchConfig,
    "examples/conf/search/*.yaml": SearchConfig,
    "conf/plan.yaml": PlanConfig,
    "conf/report.yaml": ReportConfig,
    "conf/check.yaml": CheckConfig,
}
LISTED: dict[str, type] = {"strategies": StrategyConfig}  # lists of schema nodes: each entry against its schema
# The key that names a group's option says which option it is, even where it equals the schema's default.
ALLOWED = {
    ("conf/cluster/local.yaml", "name"),
    ("conf/storage/local.yaml", "kind"),
    ("conf/tracking/mlflow.yaml", "enabled"),
}


def files() -> list[tuple[str, type]]:
    return [(str(p.relative_to(REPO)), schema) for glob, schema in SCHEMAS.items() for p in sorted(REPO.glob(glob))]


def repeats(values: Any, defaults: Any, path: str = "") -> list[str]:
    """Dotted keys whose value in ``values`` equals the one in ``defaults`` (interpolations never do)."""
    found: list[str] = []
    for key in values:
        where = f"{path}{key}"
        if key in ("defaults", "hydra") and not path or OmegaConf.is_interpolation(values, key):
            continue
        value = values[key]
        if key in LISTED and isinstance(value, ListConfig):
            default = OmegaConf.structured(LISTED[key])
            found += [r for i, entry in enumerate(value) for r in repeats(entry, default, f"{where}[{i}].")]
        elif not isinstance(defaults, DictConfig) or key not in defaults or OmegaConf.is_missing(defaults, key):
            continue
        elif OmegaConf.is_interpolation(defaults, key):
            continue
        elif isinstance(value, DictConfig) and isinstance(defaults[key], DictConfig):
            found += repeats(value, defaults[key], f"{where}.")
        elif OmegaConf.to_container(OmegaConf.create({"v": value}))["v"] == _plain(defaults, key):
            found.append(where)
    return found


def _plain(node: DictConfig, key: str) -> Any:
    value = node[key]
    return OmegaConf.to_container(value) if isinstance(value, (DictConfig, ListConfig)) else value


@pytest.mark.parametrize("path,schema", files(), ids=[f for f, _ in files()])
def test_a_yaml_file_sets_no_value_its_schema_already_has(path: str, schema: type) -> None:
    found = [
        key for key in repeats(OmegaConf.load(REPO / path), OmegaConf.structured(schema)) if (path, key) not in ALLOWED
    ]
    assert not found, f"{path} repeats its schema's default for: {', '.join(found)}"


def test_a_repeat_is_found() -> None:
    values = OmegaConf.create(
        {
            "starts": 48,
            "markets": ["aws-v100"],
            "profile": {"trials": 64, "epochs": 7},
            "strategies": [{"name": "a", "notice": True}],
        }
    )
    assert repeats(values, OmegaConf.structured(PlanConfig)) == ["starts", "profile.trials", "strategies[0].notice"]
