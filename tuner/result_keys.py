"""The keys of a trial's result beyond what the trainer reports: the trial side (``tuner.trial``) adds them to every
report, the driver side (ledger, budget, placement, console, tracking, check, report) reads them, and MLflow stores
them under the same names. One home, so that the two sides cannot drift apart; a trainer may not report them itself."""

from __future__ import annotations

# Progress, added to every result by the session.
ITERATION = "iteration"  # report() calls so far (checkpoints between reports do not count)
TRAIN_TIME_S = "train_time_s"  # seconds of training in this trial, over all its attempts, restores excluded
WALL_S = "wall_s"  # the result's time.time()
WORLD_SIZE = "world_size"  # workers in the attempt that reported
# 1 once the trainer has called step() or should_checkpoint(): notices can checkpoint between reports
STEP_HOOK = "step_hook"

# Recovery counters, carried across the trial's attempts by its heartbeat.
PREEMPTIONS = "preemptions"  # attempts ended by a lost node (noticed or not)
RESTARTS = "restarts"  # attempts started after the first
LOST_WORK_S = "lost_work_s"  # worker-seconds of training redone after restores
RECOVERY_S = "recovery_s"  # seconds from the last attempt's end to this attempt's first step
COUNTERS = (PREEMPTIONS, RESTARTS, LOST_WORK_S, RECOVERY_S)

# Checkpoints.
CHECKPOINT_ONLY = "checkpoint_only"  # 1 on a result that only carries a checkpoint taken between reports
CHECKPOINT_REASON = "checkpoint_reason"  # why this result's checkpoint was taken (trial.runtime.REASONS)
CHECKPOINT_INTERVAL_S = "checkpoint_interval_s"  # the interval the checkpoint policy chose
CHECKPOINT_WRITE_S = "checkpoint_write_s"  # seconds the checkpoint before this one took to save and upload
UPLOAD_FAILURES = "upload_failures"  # checkpoint uploads that failed and were retried
REPORTED_AGAIN = "reported_again"  # 1 on a checkpoint's result sent again after a restart (the driver never got it)

# Where the attempt runs (from the node's labels; the ledger prices by them).
NODE_ID = "node_id"
NODE_GROUP = "node_group"
INSTANCE_TYPE = "instance_type"
MARKET = "market"
ZONE = "zone"
REGION = "region"
ATTEMPT_STARTED_S = "attempt_started_s"
LOCATION = (NODE_ID, NODE_GROUP, INSTANCE_TYPE, MARKET, ZONE, REGION, ATTEMPT_STARTED_S)
WORKER_NODES = "worker_nodes"  # every worker's node id in this attempt, comma-separated (the ledger prices each)

# Cost, added by the driver's ledger (per trial; the search's totals use the same names).
COST_USD = "cost_usd"
ON_DEMAND_COST_USD = "on_demand_cost_usd"  # the same node-hours at on-demand prices
SAVINGS_PCT = "savings_pct"
LOST_WORK_COST_USD = "lost_work_cost_usd"  # what the redone work cost
GPU_HOURS = "gpu_hours"
LEDGER_OBJECTIVES = (COST_USD, GPU_HOURS)  # ledger keys a search may optimise

PLATFORM_KEYS = frozenset(
    (
        ITERATION,
        TRAIN_TIME_S,
        WALL_S,
        WORLD_SIZE,
        STEP_HOOK,
        *COUNTERS,
        CHECKPOINT_ONLY,
        CHECKPOINT_REASON,
        CHECKPOINT_INTERVAL_S,
        CHECKPOINT_WRITE_S,
        UPLOAD_FAILURES,
        REPORTED_AGAIN,
        *LOCATION,
        WORKER_NODES,
        *LEDGER_OBJECTIVES,
    )
)
