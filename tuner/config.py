"""Typed schemas for the Hydra config, registered in a ConfigStore.

Hydra validates every composed config against these dataclasses, so a typo in a
key or a value of the wrong type fails at compose time with Hydra's own message.
Semantic checks (a negative budget, a malformed bucket name) live in
``__post_init__`` and run when :func:`to_settings` turns the config into objects.
Each node mirrors the keyword arguments of the API it feeds (``ray.init``,
``TuneConfig``, ``ASHAScheduler``, ``OptunaSearch``, ``RunConfig``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Optional

from omegaconf import MISSING, DictConfig, OmegaConf

_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$")


class ConfigError(ValueError):
    """A config value that composes but cannot work; the message says what to fix."""


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


@dataclass
class DataConfig:
    """Which dataset a workload trains on (``tuner.data.load``)."""

    name: str = "digits"  # digits (bundled with scikit-learn) | cifar10 (downloaded)
    val_fraction: float = 0.2
    split_seed: int = 0
    root: str = "${output_dir}/data"  # download directory for cifar10

    def __post_init__(self) -> None:
        _require(self.name in ("digits", "cifar10"), f"search.workload.data.name={self.name!r}: use digits or cifar10")
        _require(0.0 < self.val_fraction < 1.0, "search.workload.data.val_fraction must be between 0 and 1")


@dataclass
class WorkloadConfig:
    """The fixed (not tuned) part of a trial: model family, data, epochs, seed."""

    model: str = MISSING  # a name in tuner.models.MODELS
    data: DataConfig = field(default_factory=DataConfig)
    epochs: int = 10  # epochs a trial trains if early stopping lets it
    seed: int = 0  # model init and data order; same seed => same result

    def __post_init__(self) -> None:
        _require(self.epochs > 0, f"search.workload.epochs={self.epochs}: must be > 0")


@dataclass
class TuneSettings:
    """Keyword arguments of ``ray.tune.TuneConfig`` (metric/mode come from the search)."""

    num_samples: int = 8
    max_concurrent_trials: int = 2

    def __post_init__(self) -> None:
        _require(self.num_samples > 0, f"search.tune.num_samples={self.num_samples}: must be > 0")
        _require(self.max_concurrent_trials > 0, "search.tune.max_concurrent_trials must be > 0")


@dataclass
class SchedulerConfig:
    """Keyword arguments of ``ray.tune.schedulers.ASHAScheduler`` (max_t = workload.epochs)."""

    grace_period: int = 1
    reduction_factor: float = 3.0
    brackets: int = 1

    def __post_init__(self) -> None:
        _require(self.grace_period > 0, "search.scheduler.grace_period must be > 0")
        _require(self.reduction_factor > 1, "search.scheduler.reduction_factor must be > 1")


@dataclass
class SearcherConfig:
    """Keyword arguments of ``optuna.samplers.TPESampler`` used by ``OptunaSearch``."""

    seed: int = 0
    n_startup_trials: int = 10  # Optuna's default; with 4, some seeds lock onto a mediocre region early


@dataclass
class ResourcesConfig:
    """Resources per trial, as ``tune.with_resources`` takes them (GPU may be fractional)."""

    cpu: float = 1.0
    gpu: float = 0.0

    def __post_init__(self) -> None:
        _require(self.cpu > 0 and self.gpu >= 0, "search.resources: cpu must be > 0 and gpu >= 0")


@dataclass
class SearchConfig:
    """One search: workload, pure search space, objective and budget."""

    name: str = MISSING
    space: str = MISSING  # "module:function", a define-by-run Optuna space
    metric: str = "val_acc"
    mode: str = "max"
    workload: WorkloadConfig = field(default_factory=WorkloadConfig)
    tune: TuneSettings = field(default_factory=TuneSettings)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    searcher: SearcherConfig = field(default_factory=SearcherConfig)
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)

    def __post_init__(self) -> None:
        _require(self.mode in ("min", "max"), f"search.mode={self.mode!r}: use min or max")
        _require(":" in self.space, f"search.space={self.space!r}: write it as module:function")


@dataclass
class CheckpointConfig:
    """When trials checkpoint (``tuner.policy``); a drain notice always checkpoints at once."""

    policy: str = "periodic"  # periodic | adaptive (Young/Daly: sqrt(2 C / lambda))
    every_epochs: int = 1  # periodic: at the end of every N epochs
    every_s: Optional[float] = None  # periodic: also after this many training seconds, mid-epoch
    min_interval_s: float = 60.0  # adaptive: bounds on the chosen interval
    max_interval_s: float = 14400.0
    interruption_rate_per_h: Optional[float] = None  # adaptive: lambda; None = observed rate, else Spot Advisor bucket
    observed_rates: Optional[str] = None  # adaptive: interruption_rates.csv from `python -m tuner.report`
    min_observed_node_hours: float = 100.0  # adaptive: an observed rate is used once this many node-hours back it
    observed_rates_per_h: dict[str, float] = field(default_factory=dict)  # "type@zone" -> lambda; the driver fills it
    assumed_instance_type: str = "g5.xlarge"  # adaptive: for nodes without an instance-type label
    final_margin_s: float = 10.0  # on a drain with a deadline: checkpoint again this long before it
    drain_poll_interval_s: float = 0.5  # how often a trial asks the GCS whether its node is draining

    def __post_init__(self) -> None:
        _require(self.policy in ("periodic", "adaptive"), f"checkpoint.policy={self.policy!r}: use periodic or adaptive")
        _require(self.every_epochs > 0, "checkpoint.every_epochs must be > 0")
        _require(self.every_s is None or self.every_s > 0, "checkpoint.every_s must be > 0")
        _require(0 < self.min_interval_s <= self.max_interval_s, "checkpoint: need 0 < min_interval_s <= max_interval_s")
        _require(
            self.interruption_rate_per_h is None or self.interruption_rate_per_h > 0,
            "checkpoint.interruption_rate_per_h must be > 0",
        )
        _require(self.min_observed_node_hours >= 0, "checkpoint.min_observed_node_hours must be >= 0")


@dataclass
class ClusterConfig:
    """Where trials run; keyword arguments of ``ray.init``."""

    name: str = "local"
    address: Optional[str] = None  # None starts Ray on this machine; "auto" joins a running cluster
    num_cpus: Optional[int] = None
    num_gpus: Optional[int] = None
    include_dashboard: bool = True
    dashboard_host: str = "127.0.0.1"  # Ray's dashboard has no auth: never bind it publicly
    dashboard_port: int = 8265
    launcher_config: Optional[str] = None  # a `ray up` YAML: trials must fit one of its worker types
    max_workers_per_type: int = 2  # local_spot: cap per worker type on this machine
    idle_timeout_minutes: float = 0.5  # local_spot: idle workers are removed after this
    keep_running: bool = False  # local_spot: leave the cluster up after the search (dashboard)
    head_instance_type: Optional[str] = None  # priced into the campaign total (None: this machine, not billed)


@dataclass
class StorageConfig:
    """Where checkpoints and experiment state live (``RunConfig.storage_path``)."""

    kind: str = "local"  # local | s3
    path: str = "${output_dir}/ray_results"  # local directory (kind=local)
    bucket: Optional[str] = None  # kind=s3
    prefix: str = "tuner"
    endpoint_url: Optional[str] = None  # S3-compatible server; None = AWS
    region: Optional[str] = None

    def __post_init__(self) -> None:
        _require(self.kind in ("local", "s3"), f"storage.kind={self.kind!r}: use local or s3")
        if self.kind == "s3":
            _require(bool(self.bucket), "storage.bucket is required with storage=s3 (e.g. storage.bucket=my-ckpts)")
            _require(
                bool(_BUCKET_RE.match(self.bucket or "")),
                f"storage.bucket={self.bucket!r} is not a valid S3 bucket name (3-63 chars: a-z 0-9 . -)",
            )
            _require(
                self.endpoint_url is None or re.match(r"^https?://[^/\s]+/?$", self.endpoint_url) is not None,
                f"storage.endpoint_url={self.endpoint_url!r}: write it as http(s)://host:port",
            )


@dataclass
class TrackingConfig:
    """MLflow tracking; ``tracking_uri`` is any MLflow URI (sqlite file, http server)."""

    enabled: bool = True
    tracking_uri: str = "sqlite:///${output_dir}/mlflow.db"
    experiment_name: str = "${name}"
    request_timeout_s: int = 5
    artifact_location: str = "${output_dir}/mlartifacts"  # for a local (sqlite/file) store; servers use their own


@dataclass
class RunSettings:
    """Keyword arguments of ``RunConfig``/``FailureConfig``/``CheckpointConfig``."""

    max_failures: int = 2  # application errors per trial; preemptions are not counted
    num_to_keep: int = 2  # checkpoints kept per trial
    verbose: int = 0  # Tune's own console output; our progress lines replace it

    def __post_init__(self) -> None:
        _require(self.max_failures >= -1, "run.max_failures must be >= -1 (-1 = retry forever)")
        _require(self.num_to_keep > 0, "run.num_to_keep must be > 0")


@dataclass
class PricingConfig:
    """Where prices come from (``tuner.pricing``)."""

    source: str = "catalog"  # catalog (shipped, offline) | aws (EC2 spot history + Pricing API, cached)
    cache_ttl_s: float = 3600.0

    def __post_init__(self) -> None:
        _require(self.source in ("catalog", "aws"), f"pricing.source={self.source!r}: use catalog or aws")


@dataclass
class CostConfig:
    """How the cost ledger prices trials (``tuner.cost``)."""

    region: str = "us-east-1"  # for nodes without a region label
    assumed_instance_type: str = "g5.xlarge"  # nodes without an instance-type label (local runs)
    assumed_market: str = "spot"

    def __post_init__(self) -> None:
        _require(self.assumed_market in ("spot", "on-demand"), "cost.assumed_market: use spot or on-demand")


@dataclass
class BudgetConfig:
    max_usd: Optional[float] = None  # stop starting trials once committed + projected spend would exceed it

    def __post_init__(self) -> None:
        _require(self.max_usd is None or self.max_usd > 0, f"budget.max_usd={self.max_usd}: must be > 0")


@dataclass
class PriceGuardConfig:
    """Spot price limits checked during a search (``tuner.price_guard``); the cluster's max price is the hard ceiling."""

    enabled: bool = False
    interval_s: float = 300.0  # how often current spot prices are checked
    max_usd_per_hour: dict[str, float] = field(default_factory=dict)  # per type: +price_guard.max_usd_per_hour={g5.xlarge:0.6}
    max_fraction_of_on_demand: Optional[float] = None  # for watched types without their own limit
    instance_types: list[str] = field(default_factory=list)  # watched; empty = the limited types, else the cluster's
    region: str = "us-east-1"
    zones: list[str] = field(default_factory=list)  # empty = the whole region
    enforce: bool = False  # keep new trials off a type while it is over its limit (a label selector)

    def __post_init__(self) -> None:
        _require(self.interval_s > 0, "price_guard.interval_s must be > 0")
        _require(all(v > 0 for v in (self.max_usd_per_hour or {}).values()), "price_guard.max_usd_per_hour: limits must be > 0")
        _require(
            self.max_fraction_of_on_demand is None or self.max_fraction_of_on_demand > 0,
            "price_guard.max_fraction_of_on_demand must be > 0",
        )
        _require(
            not self.enabled or bool(self.max_usd_per_hour) or self.max_fraction_of_on_demand is not None,
            "price_guard.enabled needs a limit: price_guard.max_usd_per_hour or price_guard.max_fraction_of_on_demand",
        )


@dataclass
class Config:
    output_dir: str = "outputs"
    name: str = "${search.name}"  # experiment name: the same name resumes the same search
    search: Optional[SearchConfig] = None  # appended with +search=NAME
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    run: RunSettings = field(default_factory=RunSettings)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    pricing: PricingConfig = field(default_factory=PricingConfig)
    cost: CostConfig = field(default_factory=CostConfig)
    budget: BudgetConfig = field(default_factory=BudgetConfig)
    price_guard: PriceGuardConfig = field(default_factory=PriceGuardConfig)

    def __post_init__(self) -> None:
        _require(
            self.cluster.name != "aws" or self.storage.kind == "s3",
            "cluster=aws needs shared checkpoint storage: add storage=s3 storage.bucket=NAME",
        )


@dataclass
class ReportConfig:
    """``python -m tuner.report``: the spot operations report over an MLflow store."""

    output_dir: str = "outputs"
    # The store the searches logged to; the report is logged there too, as tracking.experiment_name.
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    experiments: list[str] = field(default_factory=list)  # MLflow experiments to include; empty = all
    since_days: Optional[float] = None  # only searches started in the last N days; None = all
    min_node_hours: float = 100.0  # a rate with fewer node-hours behind it is marked as a small sample
    min_projection_days: float = 1.0  # the monthly projection extrapolates from at least this many days

    def __post_init__(self) -> None:
        _require(self.since_days is None or self.since_days > 0, f"since_days={self.since_days}: must be > 0")
        _require(self.min_node_hours >= 0, "min_node_hours must be >= 0")
        _require(self.min_projection_days > 0, "min_projection_days must be > 0")


@dataclass
class CampaignProfile:
    """A tuning campaign as the simulator sees it (``tuner.simulate``)."""

    trials: int = 64
    epochs: int = 50  # epochs each trial trains (after early stopping, on average)
    epoch_s: float = 30.0  # one epoch on one GPU of the market's type
    checkpoint_s: float = 5.0  # one checkpoint write (training stalls meanwhile)
    restart_s: float = 90.0  # get a node, start the trial process, restore its checkpoint
    concurrency: int = 8  # trials at a time, one GPU each

    def __post_init__(self) -> None:
        _require(min(self.trials, self.epochs, self.concurrency) > 0, "profile: trials, epochs, concurrency must be > 0")
        _require(self.epoch_s > 0 and self.checkpoint_s >= 0 and self.restart_s >= 0, "profile: times must be >= 0")


@dataclass
class StrategyConfig:
    """How a campaign uses spot capacity."""

    name: str = "platform"
    checkpoint: str = "adaptive"  # periodic | adaptive (Young/Daly from the zone's observed interruption rate)
    every_s: float = 600.0  # periodic: training seconds between checkpoints
    min_interval_s: float = 60.0  # adaptive: bounds on the interval
    max_interval_s: float = 14400.0
    notice: bool = True  # checkpoint on the interruption notice
    zones: str = "all"  # one (each stream keeps to one zone) | all (the cheapest zone with capacity)
    fallback: bool = True  # on-demand once waiting for spot would miss the deadline
    deadline_factor: float = 1.5  # deadline = this x the on-demand makespan (fallback keeps it)

    def __post_init__(self) -> None:
        _require(self.checkpoint in ("periodic", "adaptive"), f"strategy {self.name}: checkpoint periodic | adaptive")
        _require(self.zones in ("one", "all"), f"strategy {self.name}: zones one | all")
        _require(self.every_s > 0 and 0 < self.min_interval_s <= self.max_interval_s, f"strategy {self.name}: intervals > 0")
        _require(self.deadline_factor >= 1.0, f"strategy {self.name}: deadline_factor must be >= 1")


@dataclass
class PlanConfig:
    """``python -m tuner.plan``: a campaign replayed over real spot traces under several strategies."""

    output_dir: str = "outputs"
    markets: list[str] = field(default_factory=lambda: ["aws-v100", "gcp-h100", "aws-p3-32node"])
    profile: CampaignProfile = field(default_factory=CampaignProfile)
    strategies: list[StrategyConfig] = field(default_factory=lambda: [StrategyConfig()])
    starts: int = 48  # start times spread over each trace; the table shows means
    tracking: TrackingConfig = field(default_factory=TrackingConfig)

    def __post_init__(self) -> None:
        _require(self.starts > 0, "starts must be > 0")
        _require(len({s.name for s in self.strategies}) == len(self.strategies), "strategies need distinct names")


def register() -> None:
    """Register the schema that ``conf/config.yaml`` names first in its defaults."""
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="base_config", node=Config)
    ConfigStore.instance().store(name="report_config", node=ReportConfig)
    ConfigStore.instance().store(name="plan_config", node=PlanConfig)


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
