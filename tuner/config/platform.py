"""The platform's schema: where trials run, where state lives, tracking, checkpoints, cost.

Each node mirrors the keyword arguments of the API it feeds (``ray.init``, ``RunConfig``,
``FailureConfig``, ``CheckpointConfig``); the defaults here are the only ones, and the
YAML files in ``conf/`` select and override them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Optional

from tuner.config.base import require
from tuner.config.search import SearchConfig

_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$")
POLICIES = ("periodic", "adaptive")
# Interruptions that come without a usable notice (host failures, a notice lost): an assumption, since no
# shipped trace records them apart; the planner shows how the adaptive policy's cost moves with it.
UNNOTICED_FRACTION = 0.1
# Shared by the live platform and the planner's replay of it, so that both assume the same.
RESTART_S = 90.0  # after a lost node: a new node, the trial process, its checkpoint restored
# A GPU instance's launch to Ray running on it (EC2 launch to SSH ~26 s, a Karpenter GPU node Ready at 35 s and a pod
# on it at 65 s, then `ray start`: docs/spot.md, "Replacement ahead of the loss"): an estimate, not a measurement.
GPU_BOOT_S = 60.0
AWS_NOTICE_S = 120.0
TWIN_NOTICE_S = 4.0  # the twin's notice: AWS's, time-compressed like the twin's traces
TWIN_BOOT_S = GPU_BOOT_S * TWIN_NOTICE_S / AWS_NOTICE_S  # the twin's node boot, compressed the same way
# How long before a noticed node's deadline its trials' next node is asked for: a launch (GPU_BOOT_S) and a margin
# for a slow one. Asked for earlier, the new node is paid while the trial still trains on the old one (on AWS's
# 120 s notice, 60 s of a second node per preemption: docs/benchmarks.md, "Cost"); a shorter notice: at once.
REPLACEMENT_LEAD_S = GPU_BOOT_S + 30.0
DEADLINE_FACTOR = 1.5  # a trial's deadline: this x its run on on-demand capacity (the fallback keeps it)
MIN_INTERVAL_S = 60.0  # bounds on the adaptive checkpoint interval
MAX_INTERVAL_S = 14400.0
STORAGE_KINDS = ("local", "s3")
PRICE_SOURCES = ("catalog", "aws")
CLOUD_CLUSTERS = ("aws", "k8s")  # nodes that do not share the driver's disk
MARKETS = ("spot", "on-demand")
PLACEMENT_BY = ("throughput", "price")


@dataclass
class CheckpointConfig:
    """When trials checkpoint (``tuner.trial.policy``); a drain notice always checkpoints at once."""

    policy: str = "periodic"  # periodic | adaptive (Young/Daly: sqrt(2 C / lambda))
    every_reports: int = 1  # periodic: with every N-th report
    every_s: Optional[float] = None  # periodic: also after this many training seconds, between reports
    min_interval_s: float = MIN_INTERVAL_S  # adaptive: bounds on the chosen interval
    max_interval_s: float = MAX_INTERVAL_S
    interruption_rate_per_h: Optional[float] = None  # adaptive: lambda; None = observed rate, else Spot Advisor bucket
    # adaptive: a drain notice's lead time (AWS 120 s, GCP 30 s); a write that fits loses nothing
    notice_s: float = 120.0
    unnoticed_fraction: float = UNNOTICED_FRACTION  # adaptive: interruptions that come without a usable notice
    observed_rates: Optional[str] = None  # adaptive: interruption_rates.csv from `python -m tuner.report`
    min_observed_node_hours: float = 100.0  # adaptive: an observed rate is used once this many node-hours back it
    observed_rates_per_h: dict[str, float] = field(default_factory=dict)  # "type@zone" -> lambda; the driver fills it
    final_margin_s: float = 10.0  # on a drain with a deadline: checkpoint again this long before it
    drain_poll_interval_s: float = 0.5  # how often a trial asks the GCS whether its node is draining
    # on a notice, once another node has room for the trial: checkpoint and move there at once, not at the deadline
    move: bool = True
    rng: bool = True  # record every worker's RNG states with each checkpoint; Checkpoint.load() puts them back

    def __post_init__(self) -> None:
        require(self.policy in POLICIES, f"checkpoint.policy={self.policy!r}: use {' or '.join(POLICIES)}")
        require(self.every_reports > 0, "checkpoint.every_reports must be > 0")
        require(self.every_s is None or self.every_s > 0, "checkpoint.every_s must be > 0")
        require(0 < self.min_interval_s <= self.max_interval_s, "checkpoint: need 0 < min_interval_s <= max_interval_s")
        require(
            self.interruption_rate_per_h is None or self.interruption_rate_per_h > 0,
            "checkpoint.interruption_rate_per_h must be > 0",
        )
        require(self.min_observed_node_hours >= 0, "checkpoint.min_observed_node_hours must be >= 0")
        require(0 <= self.unnoticed_fraction <= 1, "checkpoint.unnoticed_fraction must be in [0, 1]")
        require(self.notice_s > 0, "checkpoint.notice_s must be > 0")


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
    autoscaler_config: Optional[str] = None  # the file the running autoscaler reads (aws: the head's); the twin's own
    # local_spot: torch threads of a trial per worker type, the twin's stand-in for its GPU's speed
    # (others: the trial's CPUs)
    torch_threads: dict[str, int] = field(default_factory=dict)
    # local_spot: seconds from a node's launch to Ray on it (a cloud's boot, compressed like the notice), and per
    # worker type where it differs
    boot_s: float = TWIN_BOOT_S
    boot_s_per_type: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        require(self.boot_s >= 0 and all(v >= 0 for v in self.boot_s_per_type.values()), "cluster.boot_s must be >= 0")


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
        require(self.kind in STORAGE_KINDS, f"storage.kind={self.kind!r}: use {' or '.join(STORAGE_KINDS)}")
        if self.kind == "s3":
            require(bool(self.bucket), "storage.bucket is required with storage=s3 (e.g. storage.bucket=my-ckpts)")
            require(
                bool(_BUCKET_RE.match(self.bucket or "")),
                f"storage.bucket={self.bucket!r} is not a valid S3 bucket name (3-63 chars: a-z 0-9 . -)",
            )
            require(
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
    stop_file: Optional[str] = None  # once this file exists, the search ends as done (tuner.run.stop)
    allow_failed_trials: bool = False  # exit 0 when some trials failed (and others finished); else 1

    def __post_init__(self) -> None:
        require(self.max_failures >= -1, "run.max_failures must be >= -1 (-1 = retry forever)")
        require(self.num_to_keep > 0, "run.num_to_keep must be > 0")


@dataclass
class PricingConfig:
    """Where prices come from (``tuner.pricing``)."""

    source: str = "catalog"  # catalog (shipped, offline) | aws (EC2 spot history + Pricing API, cached)
    cache_ttl_s: float = 3600.0
    region: str = "us-east-1"  # for nodes without a region label (cost, checkpoint policy), and the price guard

    def __post_init__(self) -> None:
        require(self.source in PRICE_SOURCES, f"pricing.source={self.source!r}: use {' or '.join(PRICE_SOURCES)}")


@dataclass
class CostConfig:
    """How the cost ledger prices trials (``tuner.cost``)."""

    assumed_instance_type: str = "g5.xlarge"  # nodes without an instance-type label (local runs; adaptive policy)
    assumed_market: str = "spot"

    def __post_init__(self) -> None:
        require(self.assumed_market in MARKETS, f"cost.assumed_market: use {' or '.join(MARKETS)}")


@dataclass
class BudgetConfig:
    """``tuner.cost.budget``: a ceiling on a search's spend."""

    max_usd: Optional[float] = None  # stop starting trials once committed + projected spend would exceed it

    def __post_init__(self) -> None:
        require(self.max_usd is None or self.max_usd > 0, f"budget.max_usd={self.max_usd}: must be > 0")


@dataclass
class PriceGuardConfig:
    """Spot price limits checked during a search (``tuner.price_guard``); the cluster's max price is the hard
    ceiling."""

    enabled: bool = False
    interval_s: float = 300.0  # how often current spot prices are checked
    # per type: +price_guard.max_usd_per_hour={g5.xlarge:0.6}
    max_usd_per_hour: dict[str, float] = field(default_factory=dict)
    max_fraction_of_on_demand: Optional[float] = None  # for watched types without their own limit
    instance_types: list[str] = field(default_factory=list)  # watched; empty = the limited types, else the cluster's
    zones: list[str] = field(default_factory=list)  # empty = the whole region
    enforce: bool = False  # keep new trials off a type while it is over its limit (a label selector)

    def __post_init__(self) -> None:
        require(self.interval_s > 0, "price_guard.interval_s must be > 0")
        require(
            all(v > 0 for v in (self.max_usd_per_hour or {}).values()),
            "price_guard.max_usd_per_hour: limits must be > 0",
        )
        require(
            self.max_fraction_of_on_demand is None or self.max_fraction_of_on_demand > 0,
            "price_guard.max_fraction_of_on_demand must be > 0",
        )
        require(
            not self.enabled or bool(self.max_usd_per_hour) or self.max_fraction_of_on_demand is not None,
            "price_guard.enabled needs a limit: price_guard.max_usd_per_hour or price_guard.max_fraction_of_on_demand",
        )


@dataclass
class FallbackConfig:
    """Spot first, on-demand when a waiting trial's deadline needs it (``tuner.cost.fallback``: Can't Be Late)."""

    enabled: bool = True  # on clusters with spot and on-demand worker types and an autoscaler config to steer
    deadline_factor: float = DEADLINE_FACTOR  # a trial's deadline: its queueing time + this x its on-demand run
    restart_s: float = RESTART_S  # a new node, the trial process, its checkpoint restored
    return_margin_s: float = 0.0  # back to spot only with this much slack beyond one restart
    expected_trial_s: float = 600.0  # a trial's run on on-demand capacity, until trials have measured theirs
    interval_s: float = 2.0  # how often the driver applies the rule

    def __post_init__(self) -> None:
        require(self.deadline_factor >= 1.0, "fallback.deadline_factor must be >= 1")
        require(
            min(self.restart_s, self.return_margin_s) >= 0 and self.expected_trial_s > 0, "fallback: times must be >= 0"
        )
        require(self.interval_s > 0, "fallback.interval_s must be > 0")


@dataclass
class PlacementConfig:
    """Each new trial on the spot type with the lowest expected cost per unit of training (``tuner.cost.placement``)."""

    enabled: bool = True  # on clusters whose launcher config has two or more priced spot worker types
    by: str = "throughput"  # throughput: measured seconds per unit x price; price: the spot price alone
    explore_speedup: float = 2.0  # an unmeasured type is tried while it would win even this many times faster
    wait_s: float = 120.0  # a trial waiting this long for its type marks the type short: new trials go elsewhere

    def __post_init__(self) -> None:
        require(self.by in PLACEMENT_BY, f"placement.by={self.by!r}: use {' or '.join(PLACEMENT_BY)}")
        require(self.explore_speedup >= 1.0, "placement.explore_speedup must be >= 1")
        require(self.wait_s > 0, "placement.wait_s must be > 0")


@dataclass
class ReplacementConfig:
    """Capacity asked for ahead of a noticed node's loss, for its trials' restarts (``tuner.cost.replacement``)."""

    enabled: bool = True  # on clusters with an autoscaler (a launcher config: local_spot, aws, k8s)
    lead_s: float = REPLACEMENT_LEAD_S  # asked this long before the node's deadline (at the notice if it gives less)

    def __post_init__(self) -> None:
        require(self.lead_s >= 0, "replacement.lead_s must be >= 0")


@dataclass
class LivenessConfig:
    """How the driver tells a search that cannot progress from one that waits (``tuner.run.liveness``)."""

    stall_timeout_s: float = 45.0  # nothing running or pending, trials left, the searcher suggests none: exit
    status_interval_s: float = 60.0  # while trials wait for capacity: a line saying what they wait for

    def __post_init__(self) -> None:
        require(self.stall_timeout_s > 0 and self.status_interval_s > 0, "liveness: timeouts must be > 0")


@dataclass
class Config:
    """``python -m tuner.run``: one search and the platform around it."""

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
    liveness: LivenessConfig = field(default_factory=LivenessConfig)
    fallback: FallbackConfig = field(default_factory=FallbackConfig)
    placement: PlacementConfig = field(default_factory=PlacementConfig)
    replacement: ReplacementConfig = field(default_factory=ReplacementConfig)

    def __post_init__(self) -> None:
        require(
            self.cluster.name not in CLOUD_CLUSTERS or self.storage.kind == "s3",
            f"cluster={self.cluster.name} needs shared checkpoint storage: add storage=s3 storage.bucket=NAME",
        )
        # Ray Train's placement-group cleaner asks the State API (the dashboard) whether a trial's controller is
        # gone; without it, every finished multi-worker trial would keep its workers' resources reserved.
        require(
            self.search is None or self.search.resources.width == (1, 1) or self.cluster.include_dashboard,
            "search.resources.workers > 1 needs Ray's dashboard (Ray Train uses its State API): "
            "drop cluster.include_dashboard=false",
        )


@dataclass
class CheckSettings:
    """``python -m tuner.check``: where its faults go and what counts as the same result."""

    notice_at: float = 0.3  # the spot notice comes at this fraction of the run's time_attr budget
    kill_at: float = 0.5  # the hard node kill: at this fraction, once the trial has trained past a checkpoint
    notice_s: float = TWIN_NOTICE_S  # the notice's lead on the twin (time-compressed: AWS gives 120 s, GCP/Azure 30 s)
    tolerance: float = 0.0  # relative difference allowed per metric (for trainers nondeterministic on purpose)
    # about this long in all: the runs end at the step the first reaches in a sixth of it
    budget_s: Optional[float] = None
    # the configuration checked; default: the space's first suggestion
    params: dict[str, Any] = field(default_factory=dict)
    launcher_config: str = "cluster/aws.yaml"  # the worker types of the twin it runs on

    def __post_init__(self) -> None:
        require(
            0 < self.notice_at < 1 and 0 < self.kill_at < 1, "check.notice_at and check.kill_at: fractions in (0, 1)"
        )
        require(self.notice_s > 0, "check.notice_s must be > 0")
        require(self.tolerance >= 0, "check.tolerance must be >= 0")
        require(self.budget_s is None or self.budget_s > 0, "check.budget_s must be > 0")


@dataclass
class CheckConfig(Config):
    """``python -m tuner.check``: a search's config, and where the check's faults go."""

    check: CheckSettings = field(default_factory=CheckSettings)
