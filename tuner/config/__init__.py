"""Typed schemas for the Hydra config, registered in a ConfigStore.

Hydra validates every composed config against these dataclasses, so a typo in a key or a
value of the wrong type fails at compose time with Hydra's own message. Semantic checks
(a negative budget, a malformed bucket name) live in ``__post_init__`` and run when
:func:`to_settings` turns the config into objects. The dataclasses hold every default;
the YAML files in ``conf/`` only select and override.
"""

from __future__ import annotations

from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from tuner.config.base import ConfigError, require
from tuner.config.plan import (
    CampaignProfile,
    PlanConfig,
    StrategyConfig,
    TypeChoiceConfig,
)
from tuner.config.platform import (
    BudgetConfig,
    CheckConfig,
    CheckpointConfig,
    CheckSettings,
    ClusterConfig,
    Config,
    CostConfig,
    FallbackConfig,
    LivenessConfig,
    PlacementConfig,
    PriceGuardConfig,
    PricingConfig,
    ReplacementConfig,
    RunSettings,
    StorageConfig,
    TrackingConfig,
)
from tuner.config.report import ReportConfig
from tuner.config.search import (
    SAMPLERS,
    SCHEDULERS,
    ResourcesConfig,
    SearchConfig,
    TuneSettings,
    register_groups,
)

__all__ = [
    "SAMPLERS",
    "SCHEDULERS",
    "BudgetConfig",
    "CampaignProfile",
    "CheckConfig",
    "CheckSettings",
    "CheckpointConfig",
    "ClusterConfig",
    "Config",
    "ConfigError",
    "CostConfig",
    "FallbackConfig",
    "LivenessConfig",
    "PlacementConfig",
    "ReplacementConfig",
    "PlanConfig",
    "PriceGuardConfig",
    "PricingConfig",
    "ReportConfig",
    "ResourcesConfig",
    "RunSettings",
    "SearchConfig",
    "StorageConfig",
    "StrategyConfig",
    "TrackingConfig",
    "TuneSettings",
    "TypeChoiceConfig",
    "register",
    "require",
    "to_settings",
]


def register() -> None:
    """Register the schemas that ``conf/*.yaml`` name first in their defaults, and the search's groups."""

    store = ConfigStore.instance()
    store.store(name="base_config", node=Config)
    store.store(name="check_config", node=CheckConfig)
    store.store(name="report_config", node=ReportConfig)
    store.store(name="plan_config", node=PlanConfig)
    register_groups(store)


def to_settings(cfg: DictConfig | Any) -> Any:
    """Resolve and instantiate the dataclasses, running every semantic check."""
    try:
        settings = OmegaConf.to_object(cfg)
    except ConfigError:
        raise
    except Exception as exc:  # omegaconf reports missing/unresolvable values here
        raise ConfigError(str(exc).splitlines()[0]) from exc
    assert isinstance(settings, (Config, ReportConfig, PlanConfig))
    return settings
