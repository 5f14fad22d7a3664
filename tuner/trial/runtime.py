"""The trial session behind ``tuner.session``: one per trial attempt and worker.

It restores the newest intact checkpoint, charges the previous attempt's loss (from the
heartbeat), decides when a checkpoint is due (a drain notice, the notice's deadline, the
checkpoint policy, a failed upload to retry), writes checkpoints with their manifest,
keeps storage outages from stopping training, measures the training seconds behind each
state and adds where the work ran to every result. The trainer only sees the calls of
``tuner.session``.

Longer than most modules (~370 lines) because the session is one state machine: the
checkpoint decision, the training clock it pauses and the upload retries share its state.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional, Protocol, Union

from ray import tune
from ray.tune.result import AUTO_RESULT_KEYS

from tuner import _ray
from tuner.config import CheckpointConfig
from tuner.result_keys import (
    ATTEMPT_STARTED_S,
    CHECKPOINT_ONLY,
    COUNTERS,
    INSTANCE_TYPE,
    ITERATION,
    MARKET,
    NODE_GROUP,
    NODE_ID,
    PLATFORM_KEYS,
    REGION,
    REPORTED_AGAIN,
    STEP_HOOK,
    TRAIN_TIME_S,
    UPLOAD_FAILURES,
    WALL_S,
    WORKER_NODES,
    WORLD_SIZE,
    ZONE,
)
from tuner.spot import labels as node_labels
from tuner.spot.drain import DrainWatcher, node_lost, own_resources, room_elsewhere
from tuner.trial import checkpoint as ckpt
from tuner.trial.context import TrialContext
from tuner.trial.heartbeat import Heartbeat, Progress, account_restart
from tuner.trial.policy import CheckpointPolicy

log = logging.getLogger(__name__)

HOLD_GRACE_S = 30.0  # a drained node that outlives its deadline by this much: train on
HOLD_POLL_S = 0.1  # while holding still: how often the hold looks again (the drain watcher's own poll is slower)
UPLOAD_RETRY_S = 2.0  # first wait after a failed checkpoint upload; doubles up to the cap
UPLOAD_RETRY_MAX_S = 15.0
FINAL_UPLOAD_TIMEOUT_S = 900.0  # the last checkpoint waits this long for storage to take it

TUNE_KEYS = frozenset(AUTO_RESULT_KEYS) | {"trial_id", "experiment_tag", "done", "should_checkpoint"}
# A state dict, or a directory the loop wrote itself (a path: pathlib.Path, or a str naming one).
State = Union[Mapping[str, Any], os.PathLike[str], str]
# Why a checkpoint is due, least to most urgent: workers of one trial take the most urgent of theirs.
# "move": a notice came and another node has room now: checkpoint, hold, and let the driver move the trial there.
REASONS: tuple[Optional[str], ...] = (None, "interval", "report", "retry", "drain", "move", "deadline")
NOTICE_REASONS = ("drain", "move", "deadline")  # the checkpoints a spot notice asks for
MOVE = "move"
NO_DEADLINE = float("inf")


def user_metrics(result: Mapping[str, Any]) -> dict[str, float]:
    """What the trainer reported (numbers) in a result, without Tune's and the platform's own keys."""
    return {
        k: float(v)
        for k, v in result.items()
        if k not in PLATFORM_KEYS and k not in TUNE_KEYS and isinstance(v, (int, float)) and not isinstance(v, bool)
    }


@dataclass(frozen=True)
class Objective:
    """What the search optimises, as the trial side needs it: the keys every report must carry."""

    metric: str
    mode: str
    time_attr: str
    max_t: float
    reported: tuple[str, ...] = ()  # further objectives the trainer itself must report


class Backend(Protocol):
    """How results and checkpoints reach Tune: directly, or through Ray Train's workers
    (``tuner.trial.elastic.TrainBackend``, where every rank must take the same decisions)."""

    def recorded_checkpoint(self) -> Any: ...

    def trial_storage(self) -> Optional[tuple[Any, str]]: ...

    def report(self, metrics: dict[str, Any], checkpoint_dir: Optional[str]) -> None: ...

    def agree(self, code: int, deadline_s: float) -> tuple[int, float]: ...

    def gather(self, value: Any) -> list[Any]: ...


class TuneBackend:
    """A single-worker trial: a Tune function trainable; its decisions are its own."""

    def recorded_checkpoint(self) -> Any:
        return tune.get_checkpoint()

    def trial_storage(self) -> Optional[tuple[Any, str]]:
        return _ray.trial_storage()

    def report(self, metrics: dict[str, Any], checkpoint_dir: Optional[str]) -> None:
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None)

    def agree(self, code: int, deadline_s: float) -> tuple[int, float]:
        return code, deadline_s

    def gather(self, value: Any) -> list[Any]:
        return [value]


_CURRENT: Optional[TrialSession] = None


def current() -> TrialSession:
    if _CURRENT is None:
        raise RuntimeError("tuner.session works inside a trial only: run the trainer through `python -m tuner.run`")
    return _CURRENT


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


class ReportError(TypeError, ValueError):
    """A report the search cannot use (a key it needs missing, a value that is not a number): every attempt of
    every trial would fail the same way, so the driver stops the search at once (``tuner.run.liveness``)."""


def numeric(metrics: Mapping[str, Any]) -> dict[str, float]:
    """Metrics as floats; anything else is refused with the key that is wrong."""
    out: dict[str, float] = {}
    for key, value in metrics.items():
        if not isinstance(key, str):
            raise ReportError(f"tuner.session.report: metric names must be strings, got {key!r}")
        if key in PLATFORM_KEYS:
            raise ReportError(f"tuner.session.report: {key!r} is reported by the platform itself: rename your metric")
        if isinstance(value, bool) or not hasattr(value, "__float__"):
            raise ReportError(
                f"tuner.session.report: metric {key!r} is {type(value).__name__} {value!r:.40}: report numbers only"
            )
        try:
            out[key] = float(value)
        except (TypeError, ValueError) as exc:  # e.g. a tensor of more than one element
            raise ReportError(
                f"tuner.session.report: metric {key!r} is not a single number ({first_line(exc)})"
            ) from exc
    return out


class TrialSession:
    """One attempt of one trial on one worker."""

    def __init__(
        self,
        objective: Objective,
        cfg: CheckpointConfig,
        context: TrialContext,
        backend: Backend,
        labels: Mapping[str, str],
        assumed_instance_type: str,
        assumed_region: str,
        watcher: Optional[DrainWatcher] = None,
        heartbeat: Optional[Heartbeat] = None,
    ) -> None:
        self.objective, self.cfg, self.context, self.backend = objective, cfg, context, backend
        self.policy = CheckpointPolicy.for_node(cfg, dict(labels), assumed_instance_type, assumed_region)
        self.where = {
            NODE_ID: context.node_id,
            NODE_GROUP: labels.get(node_labels.NODE_GROUP, ""),
            INSTANCE_TYPE: labels.get(node_labels.INSTANCE_TYPE, ""),
            MARKET: labels.get(node_labels.MARKET, ""),
            ZONE: labels.get(node_labels.ZONE, ""),
            REGION: labels.get(node_labels.REGION, ""),
            ATTEMPT_STARTED_S: time.time(),
        }
        self.progress = Progress()
        self.checkpoint: Optional[ckpt.Checkpoint] = None
        self.last_metrics: dict[str, float] = {}
        self.checkpointed_at_s = 0.0
        self.drain_checkpointed = self.deadline_checkpointed = self.move_checkpointed = False
        self.moving = False  # a checkpoint to move was sent: Tune may stop the attempt (SystemExit) from here on
        self.deadline_s: Optional[float] = None  # the drain deadline the workers agreed on
        self.nodes: list[str] = [context.node_id]  # every worker's node in this attempt
        self.hooked = False  # the trainer calls step()/should_checkpoint(): the console warns when it does not
        self.upload_failures = 0  # consecutive; > 0 means the newest state is not in storage yet
        self.upload_retry_at_s = 0.0
        self._clock_s: Optional[float] = None  # perf_counter when the current training stretch began
        self._dir = Path(tempfile.mkdtemp(prefix="tuner-trial-"))
        # A single-worker trial moves to a free node during a notice (the driver pauses it: tuner.cost.replacement);
        # the workers of a multi-worker trial stay with their Ray Train run.
        if watcher is None:
            moves = context.max_workers == 1 and cfg.move
            room = room_elsewhere(context.node_id, own_resources) if moves else None
            watcher = DrainWatcher(context.node_id, cfg.drain_poll_interval_s, room=room)
        self.watcher = watcher
        self.heartbeat = heartbeat or Heartbeat(context.trial_id)

    # -- lifecycle ------------------------------------------------------------------------------------
    def __enter__(self) -> TrialSession:
        global _CURRENT
        self.watcher.start()
        self.nodes = self.backend.gather(self.context.node_id)
        unreported = self._restore()
        _CURRENT = self
        self._clock_s = time.perf_counter()
        if unreported is not None:
            self._report_again(*unreported)
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        global _CURRENT
        _CURRENT = None
        self._pause()
        if exc is not None:
            # The next attempt must not count an error as a preemption; a pause to move (Tune ends the attempt's
            # thread with SystemExit) is one.
            self.beat(force=True, error=not (isinstance(exc, SystemExit) and self.moving))
        else:
            self.heartbeat.clear()
        self.watcher.stop()
        shutil.rmtree(self._dir, ignore_errors=True)

    def _restore(self) -> Optional[tuple[Path, dict[str, Any]]]:
        """Load the newest intact checkpoint and charge the lost attempt; returns the checkpoint and its
        record when Tune never got its result (it must be reported again)."""
        recorded = self.backend.recorded_checkpoint()
        if recorded is not None:
            restored = ckpt.fetch_newest_intact(recorded, self._dir, self.context.trial_id)
        else:  # none recorded: a driver killed before its saved state named one
            restored = ckpt.fetch_unrecorded(self.backend.trial_storage(), self._dir, self.context.trial_id)
        meta: dict[str, Any] = {}
        if restored is not None:
            self.checkpoint = ckpt.Checkpoint(str(restored.path), rank=self.context.world_rank, rng=self.cfg.rng)
            meta = ckpt.read_meta(restored.path)
            self.progress = Progress.from_dict(meta.get("progress", {}))
            self.last_metrics = dict(meta.get("metrics", {}))
            self.hooked = bool(meta.get(STEP_HOOK, False))  # the same trainer: it will call step() again
        self.checkpointed_at_s = self.progress.train_time_s
        unreported = (restored.path, meta) if restored is not None and restored.unreported else None
        beat = self.heartbeat.read() if self.context.is_main else None  # rank 0 keeps the trial's books
        if beat is None:
            return unreported
        if meta.get("trial_id", self.context.trial_id) != self.context.trial_id:
            # Another trial's state (PBT's exploit): not a restart of this one; keep its own counters.
            for key in COUNTERS:
                setattr(self.progress, key, beat.get(key, 0))
            return unreported
        self.progress, preempted, lost_s = account_restart(self.progress, beat, self.nodes, time.time(), node_lost)
        log.warning(
            "trial %s restarted (%s); lost %.1f s of training",
            self.context.trial_id,
            "preemption" if preempted else "error",
            lost_s,
        )
        self.beat(force=True)
        return unreported

    def _report_again(self, local: Path, meta: dict[str, Any]) -> None:
        """Send the result of a checkpoint Tune never got (its node went first), with the checkpoint:
        Tune records it (the next restart and ``num_to_keep`` count it) and its metrics are not lost."""
        log.warning(
            "trial %s: reporting again the %s checkpoint its last node wrote just before it went",
            self.context.trial_id,
            meta.get("reason") or "last",
        )
        result = self._result(bool(meta.get("between_reports", True)), str(meta.get("reason") or ""))
        self._send({**result, REPORTED_AGAIN: 1}, str(local))

    # -- the training clock ---------------------------------------------------------------------------
    def train_time_s(self) -> float:
        running = time.perf_counter() - self._clock_s if self._clock_s is not None else 0.0
        return self.progress.train_time_s + running

    def _pause(self) -> None:
        if self._clock_s is not None:
            self.progress.train_time_s = self.train_time_s()
            self._clock_s = None

    @contextlib.contextmanager
    def _paused(self) -> Iterator[None]:
        """The platform's own work (reports, checkpoint writes and their bookkeeping, holds) is not training:
        lost work is the training seconds a heartbeat holds past the checkpoint resumed from, so a node lost
        while the trial holds still after its deadline checkpoint must have lost nothing. Nests."""
        running = self._clock_s is not None
        self._pause()
        try:
            yield
        finally:
            if running:
                self._clock_s = time.perf_counter()

    # -- the calls of tuner.session -------------------------------------------------------------------
    def get_checkpoint(self) -> Optional[ckpt.Checkpoint]:
        return self.checkpoint

    def due(self, report: Optional[int] = None) -> Optional[str]:
        """Why a checkpoint is due now (the most urgent reason of any worker of the trial), or None.
        ``report``: the index of the report it would go with, if any (the policy's every-N-reports)."""
        w, now = self.watcher, time.time()
        since_s = self.train_time_s() - self.checkpointed_at_s
        if w.draining and w.room_elsewhere and not self.move_checkpointed:
            reason: Optional[str] = MOVE
        elif w.draining and not self.drain_checkpointed:
            reason = "drain"
        elif (
            w.draining
            and w.deadline_s
            and not self.deadline_checkpointed
            and w.deadline_s - now <= self.cfg.final_margin_s
        ):
            reason = "deadline"
        elif self.upload_failures and now >= self.upload_retry_at_s:
            reason = "retry"
        elif report is not None and self.policy.due_at_report(report, since_s):
            reason = "report"
        elif self.policy.due_between_reports(since_s):
            reason = "interval"
        else:
            reason = None
        code, deadline_s = self.backend.agree(REASONS.index(reason), w.deadline_s or NO_DEADLINE)
        if deadline_s != NO_DEADLINE:
            self.deadline_s = deadline_s
        return REASONS[code]

    def should_checkpoint(self, for_report: bool = False) -> bool:
        self.hooked = True
        self.beat()
        return self.due(self.progress.reports + 1 if for_report else None) is not None

    def step(self, state: Callable[[], State]) -> None:
        self.hooked = True
        reason = self.due()
        if reason is not None:
            self._checkpoint_between_reports(state(), reason)
        self.beat()

    def save(self, state: State) -> None:
        self.hooked = True
        self._checkpoint_between_reports(state, self.due() or "requested")

    def report(self, metrics: Mapping[str, Any], checkpoint: Union[State, Callable[[], State], None] = None) -> None:
        values = numeric(metrics)
        required = [self.objective.metric, *self.objective.reported]
        required += [self.objective.time_attr] if self.objective.time_attr != ITERATION else []
        missing = [k for k in required if k not in values]
        if missing:
            raise ReportError(
                f"tuner.session.report: {' and '.join(repr(k) for k in missing)} missing (reported: "
                f"{', '.join(sorted(values)) or 'nothing'}): the search's metric, objectives and time_attr must be "
                "in every report"
            )
        self.progress.reports += 1
        self.last_metrics = values
        final = {**values, ITERATION: self.progress.reports}[self.objective.time_attr] >= self.objective.max_t
        reason = "final" if final else self.due(self.progress.reports)  # a notice's reason is kept when it comes here
        if checkpoint is not None and reason is not None and (final or time.time() >= self.upload_retry_at_s):
            state = checkpoint() if callable(checkpoint) else checkpoint
            with self._paused():
                if self._persist(state, reason, between_reports=False, wait=final):
                    self._hold_for_deadline(reason, state)
                    return
        self._send(self._result(between_reports=False), None)

    # -- internals ------------------------------------------------------------------------------------
    def _result(self, between_reports: bool, reason: str = "") -> dict[str, Any]:
        p = self.progress
        result: dict[str, Any] = {
            **self.last_metrics,
            **self.where,
            **p.counters(),
            ITERATION: p.reports,
            WALL_S: time.time(),
            TRAIN_TIME_S: self.train_time_s(),
            UPLOAD_FAILURES: self.upload_failures,
            WORLD_SIZE: self.context.world_size,
            WORKER_NODES: ",".join(self.nodes),
            STEP_HOOK: int(self.hooked),
        }
        if between_reports:
            result[CHECKPOINT_ONLY] = 1
        if reason:  # with the write time of the checkpoint before (this one's is measured once it is uploaded)
            result.update(
                checkpoint_reason=reason,
                checkpoint_interval_s=self.policy.interval_s or 0.0,
                checkpoint_write_s=self.policy.last_cost_s,
            )
        return result

    def _send(self, result: dict[str, Any], checkpoint_dir: Optional[str]) -> None:
        with self._paused():
            self.backend.report(result, checkpoint_dir)
            self.beat()

    def _checkpoint_between_reports(self, state: State, reason: str) -> None:
        with self._paused():
            self._persist(state, reason, between_reports=True, wait=False)
            self._hold_for_deadline(reason, state)

    def _hold_for_deadline(self, reason: str, state: State) -> None:
        """After the checkpoint just before a notice's deadline, train no further on a node about to go; after the
        checkpoint to move, none that the move would discard (the driver pauses the trial meanwhile). Room on
        another node that comes while holding at the deadline is taken too: the same state, checkpointed to move."""
        if reason == "deadline" and self.deadline_s:
            self._hold(self.deadline_s + HOLD_GRACE_S, until=lambda: self.watcher.room_elsewhere)
            if not (self.watcher.room_elsewhere and self._persist(state, MOVE, between_reports=True, wait=False)):
                return
        elif reason != MOVE:
            return
        self._hold(until_s=(self.deadline_s or time.time()) + HOLD_GRACE_S)

    def _persist(self, state: State, reason: str, between_reports: bool, wait: bool) -> bool:
        """Write and upload a checkpoint with a result; False (a retry scheduled) while storage refuses it.
        ``wait``: the last checkpoint of a trial waits out an outage (bounded) rather than go missing."""
        give_up_at_s = time.time() + FINAL_UPLOAD_TIMEOUT_S
        self.moving |= reason == MOVE  # its report may not return: the driver pauses the trial once it has it
        while True:
            if self._try_persist(state, reason, between_reports):
                return True
            if not wait or time.time() > give_up_at_s:
                if wait:
                    log.error(
                        "trial %s: storage unreachable; finishing without its last checkpoint", self.context.trial_id
                    )
                return False
            self._hold(until_s=self.upload_retry_at_s)

    def _try_persist(self, state: State, reason: str, between_reports: bool) -> bool:
        with self._paused():
            started = time.perf_counter()
            directory = Path(tempfile.mkdtemp(prefix="ckpt-", dir=self._dir))
            try:
                meta = {
                    "trial_id": self.context.trial_id,
                    "progress": asdict(self.progress),
                    "metrics": self.last_metrics,
                    "reason": reason,
                    "between_reports": between_reports,
                    STEP_HOOK: self.hooked,
                }
                rngs = self.backend.gather(ckpt.rng_state()) if self.cfg.rng else None  # each rank's draws differ
                if self.context.is_main:  # the state is the same on every rank (data-parallel): rank 0 writes it
                    ckpt.write(directory, state, meta, rngs)
                # A result that carries its checkpoint got through: no upload is failing any more.
                self.backend.report(
                    {**self._result(between_reports, reason), UPLOAD_FAILURES: 0},
                    str(directory) if self.context.is_main else None,
                )
            except (OSError, RuntimeError) as exc:  # pyarrow's S3 errors; Ray's "Unable to set up cluster storage"
                self.upload_failures += 1
                wait_s = min(UPLOAD_RETRY_MAX_S, UPLOAD_RETRY_S * 2 ** (self.upload_failures - 1))
                self.upload_retry_at_s = time.time() + wait_s
                log.warning(
                    "trial %s: checkpoint upload failed (%s); training goes on, retrying in %.0f s",
                    self.context.trial_id,
                    first_line(exc),
                    wait_s,
                )
                return False
            finally:
                shutil.rmtree(directory, ignore_errors=True)
            if self.upload_failures:
                log.warning(
                    "trial %s: checkpoint upload works again after %d failures",
                    self.context.trial_id,
                    self.upload_failures,
                )
            self.upload_failures = 0
            self.policy.observe_cost(time.perf_counter() - started, notice_usable=self.hooked)
            self.checkpointed_at_s = self.progress.train_time_s
            # decided after the notice was seen: it holds the state to keep
            self.drain_checkpointed |= reason in ("drain", MOVE)
            self.move_checkpointed |= reason == MOVE
            self.deadline_checkpointed |= reason == "deadline"
            self.beat(force=True)
            return True

    def _hold(self, until_s: float, until: Callable[[], bool] = lambda: False) -> None:
        """Do no work the node's loss would discard; train on if the node survives (or ``until`` says so)."""
        with self._paused():
            while time.time() < until_s and not until():
                time.sleep(HOLD_POLL_S)
                self.beat()

    def beat(self, force: bool = False, error: bool = False) -> None:
        if not self.context.is_main:
            return
        record = {
            NODE_ID: self.context.node_id,
            "nodes": self.nodes,
            WORLD_SIZE: self.context.world_size,
            TRAIN_TIME_S: self.train_time_s(),
            "error": error,
            **self.progress.counters(),
        }
        self.heartbeat.beat(record, force=force)
