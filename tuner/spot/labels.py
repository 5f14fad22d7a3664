"""Ray node labels the platform reads (set by the cluster config at node start)."""

MARKET = "ray.io/market-type"  # "spot" | "on-demand"
ZONE = "ray.io/availability-zone"
REGION = "ray.io/availability-region"
NODE_GROUP = "ray.io/node-group"  # the cluster config's worker type name
INSTANCE_TYPE = "tuner.io/instance-type"  # e.g. g5.xlarge; no well-known Ray label exists
TORCH_THREADS = "tuner.io/torch-threads"  # local twin only: a trial's torch threads there, its stand-in for GPU speed
