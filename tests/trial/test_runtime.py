"""The trial session behind tuner.session, in-process: what a report carries, when checkpoints are written
(policy, drain notice, deadline, failed uploads), restores, and the errors a trainer gets for bad input."""

from __future__ import annotations

import dataclasses
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional

import pyarrow.fs
import pytest
import torch
from ray import tune

from tuner.config import CheckpointConfig
from tuner.trial import checkpoint, runtime
from tuner.trial.context import TrialContext
from tuner.trial.heartbeat import Heartbeat
from tuner.trial.runtime import Objective, TrialSession

OBJECTIVE = Objective(metric="val_loss", mode="min", time_attr="step", max_t=6)


class Backend(runtime.TuneBackend):
    """Records what the session reports; ``fail_uploads`` makes checkpoint uploads fail like S3 does."""

    def __init__(self, recorded: Optional[str] = None, trial_dir: Optional[Path] = None) -> None:
        self.results: list[dict[str, Any]] = []
        self.recorded, self.trial_dir, self.fail_uploads = recorded, trial_dir, 0

    def recorded_checkpoint(self) -> Any:
        return tune.Checkpoint.from_directory(self.recorded) if self.recorded else None

    def trial_storage(self) -> Optional[tuple[Any, str]]:
        return (pyarrow.fs.LocalFileSystem(), str(self.trial_dir)) if self.trial_dir else None

    def report(self, metrics: dict[str, Any], checkpoint_dir: Optional[str]) -> None:
        if checkpoint_dir and self.fail_uploads:
            self.fail_uploads -= 1
            raise OSError("When uploading: AWS Error NETWORK_CONNECTION: connection refused")
        saved = checkpoint.Checkpoint(checkpoint_dir).load() if checkpoint_dir else None
        self.results.append({**metrics, "saved": saved})


class MemoryHeartbeat(Heartbeat):
    def __init__(self, record: Optional[dict[str, Any]] = None) -> None:
        super().__init__("t1", store=object())
        self.record, self.beats, self.sent = record, 0, []

    def read(self) -> Optional[dict[str, Any]]:
        return self.record

    def beat(self, record: dict[str, Any], force: bool = False) -> None:
        self.beats += 1
        self.sent.append(record)

    def clear(self) -> None:
        self.record = None


class Drains:
    """What the GCS says about draining nodes, set by the test."""

    def __init__(self) -> None:
        self.nodes: dict[str, int] = {}

    def __call__(self) -> dict[str, int]:
        return self.nodes


def session(
    backend: Backend,
    drains: Optional[Drains] = None,
    beat: Optional[MemoryHeartbeat] = None,
    room: Optional[Callable[[], bool]] = None,
    **cfg: Any,
) -> TrialSession:
    watcher = runtime.DrainWatcher("node-a", interval_s=0.01, probe=drains or Drains(), room=room)
    return TrialSession(
        OBJECTIVE,
        CheckpointConfig(**cfg),
        TrialContext("t1", "node-a"),
        backend,
        {},
        "g5.xlarge",
        "us-east-1",
        watcher=watcher,
        heartbeat=beat or MemoryHeartbeat(),
    )


def wait_until(predicate: Any) -> None:
    deadline = time.monotonic() + 5
    while not predicate():
        assert time.monotonic() < deadline
        time.sleep(0.01)


def test_reports_carry_metrics_counters_and_where_and_checkpoints_follow_the_policy() -> None:
    backend = Backend()
    with session(backend, every_reports=2) as s:
        for step in range(1, 7):
            s.report({"step": step, "val_loss": 1.0 / step, "lr": torch.tensor(0.1)}, checkpoint={"step": step})
    assert [r["step"] for r in backend.results] == [1, 2, 3, 4, 5, 6]
    assert [r["saved"] is not None for r in backend.results] == [False, True, False, True, False, True]
    last = backend.results[-1]
    assert last["checkpoint_reason"] == "final" and last["iteration"] == 6 and last["lr"] == pytest.approx(0.1)
    assert last["node_id"] == "node-a" and last["preemptions"] == 0 and last["train_time_s"] >= 0


def test_a_checkpoint_given_as_a_function_is_built_only_when_due() -> None:
    built: list[int] = []
    backend = Backend()
    with session(backend, every_reports=3) as s:
        for step in range(1, 4):
            s.report({"step": step, "val_loss": 1.0}, checkpoint=lambda step=step: built.append(step) or {"step": step})
    assert built == [3]


def test_should_checkpoint_for_report_asks_about_the_report_about_to_be_made() -> None:
    """Loops that write their own checkpoints (Hugging Face) ask before the report whether it carries one."""
    with session(Backend(), every_reports=2) as s:
        assert not s.should_checkpoint() and not s.should_checkpoint(for_report=True)  # report 1 of every 2
        s.report({"step": 1, "val_loss": 1.0})
        assert not s.should_checkpoint() and s.should_checkpoint(for_report=True)  # report 2 is due one


def test_a_directory_the_loop_wrote_is_saved_when_given_as_a_path(tmp_path) -> None:
    written = tmp_path / "framework-checkpoint"
    written.mkdir()
    (written / "weights.bin").write_bytes(b"abc")
    backend = Backend()
    backend.report = lambda metrics, checkpoint_dir: backend.results.append(  # type: ignore[method-assign]
        {**metrics, "files": sorted(p.name for p in Path(checkpoint_dir).iterdir()) if checkpoint_dir else None}
    )
    with session(backend) as s:
        s.save(written)
    assert "weights.bin" in backend.results[0]["files"]


def test_the_context_has_rays_getters_beside_its_attributes() -> None:
    ctx = runtime.TrialContext("t1", "node-a", world_rank=1, world_size=2, local_rank=1, max_workers=2)
    assert (ctx.get_trial_id(), ctx.get_node_id()) == ("t1", "node-a")
    assert (ctx.get_world_rank(), ctx.get_world_size(), ctx.get_local_rank()) == (1, 2, 1)


def test_a_notice_that_falls_due_at_a_report_is_saved_with_it_once_and_named(monkeypatch) -> None:
    """A loop that checkpoints only with its reports (or a notice at an epoch's last batch): the report's
    checkpoint is the drain checkpoint, recorded as such, and the next step does not save it again."""
    monkeypatch.setattr(runtime, "HOLD_GRACE_S", 0.0)
    backend, drains = Backend(), Drains()
    with session(backend, drains, final_margin_s=0.5) as s:
        drains.nodes["node-a"] = int((time.time() + 60.0) * 1000)
        wait_until(lambda: s.watcher.draining)
        s.report({"step": 1, "val_loss": 0.9}, checkpoint={"step": 1})
        s.step(lambda: {"step": 1.5})
    assert [(r["checkpoint_reason"], r["saved"]["step"]) for r in backend.results if r["saved"]] == [("drain", 1)]


def test_a_drain_notice_checkpoints_at_the_next_step_then_once_more_before_the_deadline(monkeypatch) -> None:
    monkeypatch.setattr(runtime, "HOLD_GRACE_S", 0.0)
    backend, drains = Backend(), Drains()
    with session(backend, drains, final_margin_s=0.5) as s:
        s.report({"step": 1, "val_loss": 0.9}, checkpoint={"step": 1})
        s.step(lambda: {"step": 1.5})
        drains.nodes["node-a"] = int((time.time() + 1.0) * 1000)
        wait_until(lambda: s.watcher.draining)
        s.step(lambda: {"step": 2})  # the notice: a checkpoint at once
        s.step(lambda: {"step": 3})  # nothing new until the deadline nears
        started = time.time()
        while not s.deadline_checkpointed:
            s.step(lambda: {"step": 4})
        held_s = time.time() - started
    between = [r for r in backend.results if r.get("checkpoint_only")]
    assert [(r["checkpoint_reason"], r["saved"]["step"]) for r in between] == [("drain", 2), ("deadline", 4)]
    assert between[0]["val_loss"] == 0.9 and between[0]["step"] == 1  # the last report's metrics ride along
    assert 0.4 < held_s < 3  # it held still until the deadline instead of training on


def test_room_on_another_node_during_a_notice_moves_the_trial_at_its_next_step(monkeypatch) -> None:
    """Once another node has room, the trial checkpoints to move and holds: the driver pauses it there
    (tuner.cost.replacement.MoveOnNotice); it does not train on to the deadline."""
    monkeypatch.setattr(runtime, "HOLD_GRACE_S", 0.0)
    backend, drains, room = Backend(), Drains(), [False]
    with session(backend, drains, room=lambda: room[0], final_margin_s=0.1) as s:
        s.report({"step": 1, "val_loss": 0.9}, checkpoint={"step": 1})
        drains.nodes["node-a"] = int((time.time() + 1.0) * 1000)
        wait_until(lambda: s.watcher.draining)
        s.step(lambda: {"step": 2})  # the notice, no room yet: the drain checkpoint
        room[0] = True
        wait_until(lambda: s.watcher.room_elsewhere)
        started = time.time()
        s.step(lambda: {"step": 3})  # room: checkpoint to move, then hold until the pause (here: the deadline)
        held_s = time.time() - started
    between = [r for r in backend.results if r.get("checkpoint_only")]
    assert [(r["checkpoint_reason"], r["saved"]["step"]) for r in between] == [("drain", 2), ("move", 3)]
    assert 0.5 < held_s < 3 and not s.deadline_checkpointed


def test_room_that_comes_while_holding_at_the_deadline_moves_the_same_state(monkeypatch) -> None:
    monkeypatch.setattr(runtime, "HOLD_GRACE_S", 0.0)
    backend, drains, room = Backend(), Drains(), [False]
    with session(backend, drains, room=lambda: room[0], final_margin_s=5.0) as s:
        drains.nodes["node-a"] = int((time.time() + 2.0) * 1000)
        wait_until(lambda: s.watcher.draining)
        s.step(lambda: {"step": 1})  # the drain checkpoint
        threading.Timer(0.3, lambda: room.__setitem__(0, True)).start()
        s.step(lambda: {"step": 2})  # the deadline checkpoint; the hold ends when room comes: moved from there
    between = [r for r in backend.results if r.get("checkpoint_only")]
    assert [(r["checkpoint_reason"], r["saved"]["step"]) for r in between] == [
        ("drain", 1),
        ("deadline", 2),
        ("move", 2),
    ]


@pytest.mark.parametrize("moving", [True, False])
def test_an_attempt_paused_to_move_is_no_error_and_its_heartbeat_stays_for_the_next(moving: bool) -> None:
    """Tune ends a paused trial's thread with SystemExit: after a checkpoint to move, the next attempt must count a
    preemption from the heartbeat; any other stop (the driver interrupted) stays what it was, not a preemption."""
    beat = MemoryHeartbeat()
    with pytest.raises(SystemExit), session(Backend(), beat=beat) as s:
        s.report({"step": 1, "val_loss": 0.9})
        s.moving = moving
        beat.record = {"node_id": "node-a"}  # what the store holds by now
        raise SystemExit(0)
    assert beat.sent[-1]["error"] is not moving and beat.record is not None


def test_a_node_lost_while_holding_after_its_deadline_checkpoint_lost_no_training(monkeypatch) -> None:
    """Lost work is what a heartbeat's training seconds hold past the checkpoint resumed from: the platform's
    work around a checkpoint (here a slow bookkeeping step) is not training. CI once measured 1.2 steps lost
    after a notice that way, on a loop of 1 ms steps that had trained nothing after its deadline checkpoint."""
    monkeypatch.setattr(runtime, "HOLD_GRACE_S", 0.6)
    backend, drains, beat = Backend(), Drains(), MemoryHeartbeat()
    with session(backend, drains, beat, final_margin_s=0.5) as s:
        monkeypatch.setattr(s.policy, "observe_cost", lambda *_, **__: time.sleep(0.05))
        drains.nodes["node-a"] = int((time.time() + 0.6) * 1000)
        wait_until(lambda: s.watcher.draining)
        while not s.deadline_checkpointed:
            before = len(beat.sent)
            s.step(lambda: {"step": 1})
    held = beat.sent[before:-1]  # from the write to the end of the hold; the last beat is the step's own
    (saved,) = [r for r in backend.results if r.get("checkpoint_reason") == "deadline"]
    assert len(held) >= 2 and {b["train_time_s"] for b in held} == {saved["train_time_s"]}, (held, saved)


def test_a_failed_upload_is_retried_and_training_goes_on(monkeypatch) -> None:
    monkeypatch.setattr(runtime, "UPLOAD_RETRY_S", 0.05)
    backend = Backend()
    backend.fail_uploads = 1
    with session(backend) as s:
        s.report({"step": 1, "val_loss": 0.5}, checkpoint={"step": 1})
        assert backend.results[-1]["saved"] is None and backend.results[-1]["upload_failures"] == 1
        wait_until(lambda: time.time() >= s.upload_retry_at_s)  # the retry is due
        s.step(lambda: {"step": 1.5})
    assert backend.results[-1]["checkpoint_reason"] == "retry" and backend.results[-1]["upload_failures"] == 0


def test_the_last_checkpoint_waits_out_a_storage_outage(monkeypatch) -> None:
    monkeypatch.setattr(runtime, "UPLOAD_RETRY_S", 0.01)
    backend = Backend()
    backend.fail_uploads = 3
    with session(backend) as s:
        s.report({"step": 6, "val_loss": 0.1}, checkpoint={"step": 6})
    assert backend.results[-1]["saved"] == {"step": 6} and backend.results[-1]["checkpoint_reason"] == "final"


@pytest.mark.parametrize(
    "metrics,error,message",
    [
        ({"step": 1, "val_loss": "0.5"}, TypeError, "metric 'val_loss' is str '0.5': report numbers only"),
        ({"step": 1, "val_loss": torch.ones(3)}, TypeError, "metric 'val_loss' is not a single number"),
        ({"step": 1, "loss": 0.5}, ValueError, r"'val_loss' missing \(reported: loss, step\)"),
        ({"step": 1, "val_loss": 0.5, "preemptions": 2}, ValueError, "'preemptions' is reported by the platform"),
    ],
)
def test_bad_reports_are_one_clear_error(metrics: dict, error: type, message: str) -> None:
    with session(Backend()) as s, pytest.raises(error, match=message):
        s.report(metrics)


def test_a_report_without_an_objective_the_trainer_must_report_is_one_clear_error() -> None:
    s = TrialSession(
        dataclasses.replace(OBJECTIVE, reported=("train_loss",)),
        CheckpointConfig(),
        TrialContext("t1", "node-a"),
        Backend(),
        {},
        "g5.xlarge",
        "us-east-1",
        heartbeat=MemoryHeartbeat(),
    )
    with (
        s,
        pytest.raises(
            ValueError, match=r"'train_loss' missing \(reported: step, val_loss\): the search's metric, objectives"
        ),
    ):
        s.report({"step": 1, "val_loss": 0.5})


def test_a_state_that_cannot_be_saved_fails_the_trial_clearly() -> None:
    with session(Backend()) as s, pytest.raises(checkpoint.CheckpointStateError, match="cannot be saved"):
        s.report({"step": 6, "val_loss": 0.1}, checkpoint={"lock": threading.Lock()})


def test_results_say_whether_the_loop_calls_the_step_hook() -> None:
    """The console warns (once) when it does not: a notice can then only checkpoint at the next report."""
    backend = Backend()
    with session(backend) as s:
        s.report({"step": 1, "val_loss": 0.5})
        s.step(lambda: {})
        s.report({"step": 2, "val_loss": 0.5})
    assert [r["step_hook"] for r in backend.results] == [0, 1]


def test_outside_a_trial_the_calls_say_how_to_run_them() -> None:
    from tuner import session as api

    with pytest.raises(RuntimeError, match="inside a trial only: run the trainer through `python -m tuner.run`"):
        api.report({"step": 1})


def test_restore_gives_the_state_and_charges_the_lost_attempt(tmp_path) -> None:
    backend = Backend()
    with session(backend) as s:
        s.report({"step": 2, "val_loss": 0.4}, checkpoint={"w": torch.ones(2), "step": 2})
        trained_s = s.train_time_s()
    # Tune would hand the next attempt the checkpoint it recorded; here: the one just written, kept on disk.
    kept = tmp_path / "checkpoint_000000"
    checkpoint.write(
        kept,
        {"w": torch.ones(2), "step": 2},
        {"trial_id": "t1", "progress": {"train_time_s": trained_s, "reports": 1}, "metrics": {"step": 2.0}},
    )
    beat = MemoryHeartbeat(
        {
            "node_id": "node-gone",
            "wall_s": time.time() - 3,
            "train_time_s": trained_s + 5.0,
            "error": False,
            "preemptions": 0,
            "restarts": 0,
            "lost_work_s": 0,
            "recovery_s": 0,
        }
    )
    resumed = Backend(recorded=str(kept))
    with session(resumed, beat=beat) as s:
        assert s.get_checkpoint().load()["step"] == 2
        assert (s.progress.preemptions, s.progress.restarts, s.progress.reports) == (1, 1, 1)
        assert s.progress.lost_work_s == pytest.approx(5.0) and s.progress.recovery_s >= 3
        s.report({"step": 3, "val_loss": 0.3})
    assert resumed.results[-1]["iteration"] == 2 and resumed.results[-1]["lost_work_s"] == pytest.approx(5.0)


def test_a_checkpoint_whose_result_never_reached_tune_is_reported_again(tmp_path) -> None:
    """The node went between writing the deadline checkpoint and Tune taking its result: the next attempt
    resumes from it and sends that result again, with the checkpoint, so Tune records it."""
    trial_dir = tmp_path / "trial"
    progress = {"train_time_s": 2.0, "reports": 2}
    checkpoint.write(
        trial_dir / "checkpoint_000000",
        {"step": 1},
        {"trial_id": "t1", "progress": progress, "metrics": {"step": 1.0}, "reason": "drain", "between_reports": True},
    )
    checkpoint.write(
        trial_dir / "checkpoint_000001",
        {"step": 2},
        {
            "trial_id": "t1",
            "progress": progress,
            "metrics": {"step": 2.0, "val_loss": 0.2},
            "reason": "deadline",
            "between_reports": True,
            "step_hook": True,
        },
    )
    backend = Backend(recorded=str(trial_dir / "checkpoint_000000"))
    with session(backend) as s:
        assert s.get_checkpoint().load() == {"step": 2}
        s.report({"step": 3, "val_loss": 0.1})
    again, report = backend.results
    assert again["checkpoint_reason"] == "deadline" and again["checkpoint_only"] == 1 and again["saved"] == {"step": 2}
    assert again["iteration"] == 2 and again["val_loss"] == 0.2 and again["step_hook"] == 1  # no warning about step()
    assert again["reported_again"] == 1  # the console says nothing was trained for it
    assert report["iteration"] == 3 and "checkpoint_only" not in report and "reported_again" not in report


def test_a_checkpoint_tune_never_recorded_is_found_in_the_trial_directory(tmp_path) -> None:
    """The driver was killed before its saved state named any checkpoint of a running trial: the restarted
    trial resumes from the newest one in its directory, not from scratch, and reports it again."""
    trial_dir = tmp_path / "trial"
    for step in (1, 2):
        checkpoint.write(
            trial_dir / f"checkpoint_{step - 1:06d}",
            {"step": step},
            {
                "trial_id": "t1",
                "progress": {"train_time_s": float(step), "reports": step},
                "metrics": {"step": float(step), "val_loss": 1.0 / step},
            },
        )
    backend = Backend(trial_dir=trial_dir)
    with session(backend) as s:
        assert s.get_checkpoint().load() == {"step": 2}
        s.report({"step": 3, "val_loss": 0.1})
    again, report = backend.results
    assert again["reported_again"] == 1 and again["iteration"] == 2 and again["saved"] == {"step": 2}
    assert report["iteration"] == 3
    with session(fresh := Backend(trial_dir=tmp_path / "never-written")) as s:  # a new trial: nothing to find
        assert s.get_checkpoint() is None
        s.report({"step": 1, "val_loss": 0.5})
    assert fresh.results[0]["iteration"] == 1


class KeepingBackend(Backend):
    """Keeps a copy of every checkpoint the session uploads (``checkpoint_00000N``), as storage would."""

    def __init__(self, root: Path, recorded: Optional[str] = None) -> None:
        super().__init__(recorded)
        self.root, self.kept = root, 0

    def report(self, metrics: dict[str, Any], checkpoint_dir: Optional[str]) -> None:
        if checkpoint_dir:
            self.kept += 1
            shutil.copytree(checkpoint_dir, self.root / f"checkpoint_{self.kept:06d}")
        self.results.append(dict(metrics))


def readme_trainer(steps: int) -> None:
    """The README's sample, followed literally (state = model + optimizer + step), on a model with dropout
    and a data order drawn from the global RNG: nothing in it saves or restores an RNG."""
    from tuner import session as api

    torch.manual_seed(0)
    x, y = torch.randn(64, 4), torch.randn(64, 1)
    model = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Dropout(0.5), torch.nn.Linear(16, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    step = 0
    ckpt = api.get_checkpoint()
    if ckpt is not None:
        state = ckpt.load()
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        step = state["step"]

    def state() -> dict[str, Any]:
        return {"model": model.state_dict(), "opt": opt.state_dict(), "step": step}

    while step < steps:
        idx = torch.randperm(64)[:16]  # the global RNG's shuffle
        loss = ((model(x[idx]) - y[idx]) ** 2).mean()  # and its dropout masks
        opt.zero_grad()
        loss.backward()
        opt.step()
        step += 1
        api.step(state)
        api.report({"step": step, "val_loss": loss.item()}, checkpoint=state)


@pytest.mark.parametrize("rng", [True, False])
def test_the_readme_sample_resumes_bit_identically_because_checkpoints_hold_the_rng(rng: bool, tmp_path: Path) -> None:
    """Resumed from its step-3 checkpoint, the trainer reports exactly what the uninterrupted run reported; with
    ``checkpoint.rng=false`` (the platform saving no RNG) it does not: the dropout masks and shuffles differ."""
    whole = KeepingBackend(tmp_path / "whole")
    with session(whole, rng=rng):
        readme_trainer(6)
    # its only one
    shutil.copytree(tmp_path / "whole" / "checkpoint_000003", tmp_path / "storage" / "checkpoint_000003")
    resumed = KeepingBackend(tmp_path / "resumed", recorded=str(tmp_path / "storage" / "checkpoint_000003"))
    torch.manual_seed(12345)  # whatever the new process's RNGs hold
    with session(resumed, rng=rng):
        readme_trainer(6)
    after = [(r["step"], r["val_loss"]) for r in whole.results if r["step"] > 3]
    assert [r["step"] for r in resumed.results] == [4, 5, 6]
    assert ([(r["step"], r["val_loss"]) for r in resumed.results] == after) is rng
