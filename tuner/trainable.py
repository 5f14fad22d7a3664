"""The Ray Tune function trainable every workload runs.

Restore the trial's full state if Tune hands us a checkpoint, train
(``tuner.training``), report metrics every epoch and a checkpoint when the policy
says so. Between steps it also reacts to its node being drained for preemption:
an emergency checkpoint at once, another just before the deadline, then it holds
still so that no work is done that the node's loss would throw away.
"""

from __future__ import annotations

import logging
import tempfile
import time
from typing import Any, Callable, Optional

import ray
import torch
from ray import tune

from tuner import checkpoint, preemption
from tuner import labels as node_labels
from tuner.config import CheckpointConfig, WorkloadConfig
from tuner.data import load
from tuner.policy import CheckpointPolicy
from tuner.training import Trial, evaluate

log = logging.getLogger(__name__)

HEARTBEAT_EVERY_S = 0.5  # lost work is measured to this resolution
HOLD_GRACE_S = 30.0  # a drained node that outlives its deadline by this much: train on
UPLOAD_RETRY_S = 2.0  # first wait after a failed checkpoint upload; doubles up to the cap
UPLOAD_RETRY_MAX_S = 15.0
FINAL_UPLOAD_TIMEOUT_S = 900.0  # a finished trial waits this long for storage to take its last checkpoint


def _device() -> torch.device:
    """The GPU Ray assigned to this trial, else the CPU."""
    if ray.get_gpu_ids() and torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


def _assigned_cpus() -> int:
    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1.0)
    return max(1, int(cpus))


def _kept_checkpoints(parent: str, filesystem: Any) -> list[str]:
    """Paths of the ``checkpoint_NNNNNN`` directories under a trial's directory, newest first."""
    import pyarrow.fs

    infos = filesystem.get_file_info(pyarrow.fs.FileSelector(parent, allow_not_found=True))
    names = [i.base_name for i in infos if i.type == pyarrow.fs.FileType.Directory and i.base_name.startswith("checkpoint_")]
    return [f"{parent}/{name}" for name in sorted(names, reverse=True)]


def _older_checkpoints(ckpt: tune.Checkpoint) -> list[tune.Checkpoint]:
    """The trial's other kept checkpoints (``checkpoint_NNNNNN`` siblings), newest first."""
    parent = ckpt.path.rstrip("/").rsplit("/", 1)[0]
    older = [p for p in _kept_checkpoints(parent, ckpt.filesystem) if p < ckpt.path.rstrip("/")]
    return [tune.Checkpoint(p, filesystem=ckpt.filesystem) for p in older]


def existing_checkpoint(recorded: Any) -> Any:
    """The checkpoint Tune recorded for a trial, or the trial's newest complete one if that is gone.

    Tune deletes checkpoints beyond ``num_to_keep`` as new ones arrive; a driver killed
    before it saved its state again restores a trial from a checkpoint deleted meanwhile.
    """
    import pyarrow.fs
    from ray.train._internal.session import _TrainingResult

    ckpt = recorded.checkpoint if isinstance(recorded, _TrainingResult) else None
    if ckpt is None or ckpt.filesystem.get_file_info(ckpt.path).type != pyarrow.fs.FileType.NotFound:
        return recorded
    parent = ckpt.path.rstrip("/").rsplit("/", 1)[0]
    for path in _kept_checkpoints(parent, ckpt.filesystem):
        if ckpt.filesystem.get_file_info(f"{path}/{checkpoint.MANIFEST_FILE}").is_file:
            log.warning("checkpoint %s is gone (deleted after the driver last saved its state); using %s", ckpt.path, path)
            return _TrainingResult(checkpoint=tune.Checkpoint(path, filesystem=ckpt.filesystem), metrics=recorded.metrics)
    return recorded  # nothing better: Tune reports the missing checkpoint


def trainable_class(fn: Callable[[dict[str, Any]], None]) -> type:
    """Tune's trainable class for ``fn`` that restores from an existing checkpoint (see above)."""
    from ray.tune.trainable.function_trainable import wrap_function

    base = wrap_function(fn)

    class SpotTrainable(base):  # type: ignore[misc, valid-type]
        def restore(self, checkpoint_path: Any) -> Any:
            return super().restore(existing_checkpoint(checkpoint_path))

    SpotTrainable.__name__ = SpotTrainable.__qualname__ = base.__name__
    return SpotTrainable


def restore(trial: Trial, ckpt: Optional[tune.Checkpoint]) -> Optional[tune.Checkpoint]:
    """Load the newest intact checkpoint: a corrupt one (bad checksum, missing file) falls back to the one before."""
    if ckpt is None:
        return None
    for candidate in [ckpt, *_older_checkpoints(ckpt)]:
        try:
            with candidate.as_directory() as directory:
                trial.load_state(checkpoint.load(directory))
        except checkpoint.CorruptCheckpointError as exc:
            log.warning("%s; trying the previous checkpoint", exc)
            continue
        if candidate is not ckpt:
            log.warning("restored %s instead of the corrupt newest checkpoint %s", candidate.path, ckpt.path)
        return candidate
    log.error("no intact checkpoint for this trial under %s: starting it from scratch", ckpt.path)
    return None


class Attempt:
    """One attempt of a trial on one node: checkpoints, drain reaction, heartbeat."""

    def __init__(self, trial: Trial, trial_id: str, cfg: CheckpointConfig) -> None:
        context = ray.get_runtime_context()
        self.trial, self.trial_id, self.cfg = trial, trial_id, cfg
        self.node_id = context.get_node_id()
        labels = {k: v[0] if isinstance(v, list) else v for k, v in context.get_node_labels().items()}
        self.policy = CheckpointPolicy.for_node(cfg, labels)
        # Where this work ran, in every result: the cost ledger prices it, users can filter on it.
        self.where = {
            "node_id": self.node_id,
            "node_group": labels.get(node_labels.NODE_GROUP, ""),
            "instance_type": labels.get(node_labels.INSTANCE_TYPE, ""),
            "market": labels.get(node_labels.MARKET, ""),
            "zone": labels.get(node_labels.ZONE, ""),
            "region": labels.get(node_labels.REGION, ""),
            "attempt_started_s": time.time(),
        }
        self.watcher = preemption.DrainWatcher(self.node_id, cfg.drain_poll_interval_s).start()
        self.checkpointed_at_s = trial.progress.train_time_s
        self.drain_checkpointed = self.deadline_checkpointed = False
        self.last_metrics: dict[str, Any] = {}
        self.last_beat = 0.0
        self.upload_failures = 0  # consecutive; > 0 means the newest state is not in storage yet
        self.upload_retry_at_s = 0.0

    def account_restart(self) -> None:
        """Charge the previous attempt's loss: redone training seconds, recovery time."""
        beat = preemption.get_heartbeat(self.trial_id)
        if beat is None:
            return
        p = self.trial.progress
        for key in ("preemptions", "restarts", "lost_work_s", "recovery_s"):  # the heartbeat is newer
            setattr(p, key, max(getattr(p, key), beat.get(key, 0)))
        p.restarts += 1
        p.lost_work_s += max(0.0, beat["train_time_s"] - p.train_time_s)
        # An application error says so in its last heartbeat; a process that just vanished lost its node.
        if not beat.get("error") and (beat.get("node_id") != self.node_id or preemption.node_lost(beat["node_id"])):
            p.preemptions += 1
            p.recovery_s += max(0.0, time.time() - beat["wall_s"])
        log.warning(
            "trial %s restarted (%s); lost %.1f s of training",
            self.trial_id, "preemption" if p.preemptions > beat.get("preemptions", 0) else "error",
            max(0.0, beat["train_time_s"] - p.train_time_s),
        )  # fmt: skip
        self.beat(force=True)

    def beat(self, force: bool = False, error: bool = False) -> None:
        now = time.time()
        if force or now - self.last_beat >= HEARTBEAT_EVERY_S:
            self.last_beat = now
            p = self.trial.progress
            record = {"node_id": self.node_id, "wall_s": now, "train_time_s": p.train_time_s, "error": error}
            preemption.put_heartbeat(self.trial_id, {**record, **self.trial.interruption_metrics()})

    def report(self, metrics: dict[str, Any], with_checkpoint: bool, reason: str = "") -> None:
        """An epoch's result; with its checkpoint when due and storage takes it, never dropped."""
        if with_checkpoint and time.time() >= self.upload_retry_at_s:
            if self.report_with_checkpoint(metrics, reason):
                return
        tune.report({**metrics, **self.where, "wall_s": time.time(), "upload_failures": self.upload_failures})

    def report_final(self, metrics: dict[str, Any]) -> None:
        """The last result goes with its checkpoint: wait out a storage outage (bounded) rather than end without it."""
        give_up_at_s = time.time() + FINAL_UPLOAD_TIMEOUT_S
        while True:
            self.hold(until_s=self.upload_retry_at_s)
            if self.report_with_checkpoint(metrics, "final"):
                return
            if time.time() > give_up_at_s:
                log.error("trial %s: storage unreachable; finishing without its last checkpoint", self.trial_id)
                self.report(metrics, with_checkpoint=False)
                return

    def report_with_checkpoint(self, metrics: dict[str, Any], reason: str) -> bool:
        """Upload a checkpoint with the result; False (and a retry scheduled) while storage is unreachable."""
        started = time.perf_counter()
        metrics = {
            **metrics, **self.where, "wall_s": time.time(), "checkpoint_reason": reason,
            "checkpoint_interval_s": self.policy.interval_s or 0.0, "upload_failures": 0,
        }  # fmt: skip
        try:
            with tempfile.TemporaryDirectory(prefix="tuner-ckpt-") as directory:
                checkpoint.save(directory, self.trial.state())
                tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(directory))
        except (OSError, RuntimeError) as exc:  # pyarrow's S3 errors; Ray's "Unable to set up cluster storage"
            self.upload_failures += 1
            wait_s = min(UPLOAD_RETRY_MAX_S, UPLOAD_RETRY_S * 2 ** (self.upload_failures - 1))
            self.upload_retry_at_s = time.time() + wait_s
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            log.warning(
                "trial %s: checkpoint upload failed (%s); training goes on, retrying in %.0f s",
                self.trial_id, first_line, wait_s,
            )  # fmt: skip
            return False
        if self.upload_failures:
            log.warning("trial %s: checkpoint upload works again after %d failures", self.trial_id, self.upload_failures)
        self.upload_failures = 0
        self.policy.observe_cost(time.perf_counter() - started)
        self.checkpointed_at_s = self.trial.progress.train_time_s
        self.beat(force=True)
        return True

    def mid_epoch_checkpoint(self, reason: str) -> None:
        if not self.last_metrics:  # Tune needs the search metric in every result
            val_loss, val_acc = evaluate(self.trial.model, self.trial.x_val, self.trial.y_val)
            self.trial.model.train()
            self.last_metrics = {"val_loss": val_loss, "val_acc": val_acc, "best_val_acc": val_acc}
        p = self.trial.progress
        metrics = {**self.last_metrics, **self.trial.interruption_metrics(), "epoch": p.epoch, "mid_epoch": 1}
        # A mid-epoch result only carries its checkpoint: if storage refuses it, there is nothing to report.
        self.report_with_checkpoint({**metrics, "step": p.step, "train_time_s": p.train_time_s}, reason)

    def after_step(self) -> None:
        """At a step boundary: react to a drain, keep the checkpoint policy, heartbeat."""
        w = self.watcher
        if w.draining and not self.drain_checkpointed:
            self.drain_checkpointed = True
            self.mid_epoch_checkpoint("drain")
        elif w.draining and w.deadline_s and not self.deadline_checkpointed:
            if w.deadline_s - time.time() <= self.cfg.final_margin_s:
                self.deadline_checkpointed = True
                self.mid_epoch_checkpoint("deadline")
                self.hold(until_s=w.deadline_s + HOLD_GRACE_S)
        elif self.upload_failures and time.time() >= self.upload_retry_at_s:
            self.mid_epoch_checkpoint("retry")
        elif self.policy.due_mid_epoch(self.trial.progress.train_time_s - self.checkpointed_at_s):
            self.mid_epoch_checkpoint("interval")
        self.beat()

    def hold(self, until_s: float) -> None:
        """Do no work the node's loss would discard; train on if the node survives."""
        while time.time() < until_s:
            time.sleep(0.5)
            self.beat()

    def end_epoch(self, metrics: dict[str, Any]) -> None:
        self.last_metrics = metrics
        if self.trial.done:
            self.report_final(metrics)
            return
        since = self.trial.progress.train_time_s - self.checkpointed_at_s
        due = self.policy.due_at_epoch_end(self.trial.progress.epoch, since)
        self.report(metrics, due, reason="epoch" if due else "")

    def close(self) -> None:
        self.watcher.stop()
        preemption.clear_heartbeat(self.trial_id)


def train(params: dict[str, Any], workload: WorkloadConfig, checkpoint_cfg: Optional[CheckpointConfig] = None) -> None:
    """Ray Tune function trainable: ``tune.with_parameters(train, workload=..., checkpoint_cfg=...)``."""
    torch.set_num_threads(_assigned_cpus())
    trial = Trial(params, workload, load(workload.data), _device())
    restore(trial, tune.get_checkpoint())
    attempt = Attempt(trial, tune.get_context().get_trial_id(), checkpoint_cfg or CheckpointConfig())
    attempt.account_restart()
    try:
        while not trial.done:
            attempt.end_epoch(trial.run_epoch(attempt.after_step))
    except Exception:
        attempt.beat(force=True, error=True)  # the next attempt must not count this as a preemption
        raise
    attempt.close()
