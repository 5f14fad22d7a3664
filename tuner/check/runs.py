"""Running a resume check: one configuration of a search, three times on the local twin.

The twin (``tuner.cluster.twin``) is started once for the three runs. Each run is the real driver
(``tuner.run.driver.execute``) with one trial: undisturbed, then with a spot notice on the trial's node,
then with its node killed without notice once the trial has trained past a checkpoint. Faults are
placed by the trial's progress (a report at a fraction of the run's budget in ``time_attr``), never by
the clock. With ``check.budget_s`` the undisturbed run is stopped (``run.stop_file``) after a sixth of
it, and the other two at the step it reached.
"""

from __future__ import annotations

import contextlib
import dataclasses
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import optuna
import torch
from hydra.utils import instantiate
from ray.tune import Callback

from tuner import _ray
from tuner.check import fixed
from tuner.check.compare import NOTICE_LEAD_S, judge, loss_of, notice_fit, render, reports, steps_hooked
from tuner.cluster.launcher import load_launcher_config
from tuner.cluster.twin import LocalTwin, twin_config
from tuner.config import (
    SCHEDULERS,
    CheckConfig,
    ClusterConfig,
    ConfigError,
    SearchConfig,
    StorageConfig,
    TrackingConfig,
    TuneSettings,
)
from tuner.result_keys import CHECKPOINT_WRITE_S, NODE_GROUP, NODE_ID, TRAIN_TIME_S
from tuner.run.build import load_space
from tuner.run.driver import execute
from tuner.trial import checkpoint
from tuner.trial.heartbeat import wait_trained_past

TWIN_CLUSTERS = ("local", "local_spot")  # the check runs on the twin; a real cluster would be billed
POLL_S = 0.05
FAULT_GUARD_S = 600.0  # a hang guard on waiting for a fault's point; the search ending first ends the wait
MIN_AFTER_FAULT_S = 5.0  # training left after a fault's point: a notice or a kill takes a second or two to land


class Results(Callback):
    """Every result the driver receives, in order."""

    def __init__(self) -> None:
        self.results: list[dict[str, Any]] = []

    def on_trial_result(
        self, iteration: int, trials: list[Any], trial: Any, result: dict[str, Any], **info: Any
    ) -> None:
        self.results.append(dict(result))


@dataclass
class Run:
    """One of the three runs: what the driver received, its exit status, and where its checkpoints are."""

    kind: str
    status: int
    results: list[dict[str, Any]]
    storage: Path
    wall_s: float
    fault_at: Optional[float] = None  # the time_attr value at which the fault was placed
    notes: list[str] = field(default_factory=list)


def first_suggestion(search: SearchConfig) -> dict[str, Any]:
    """The configuration the search's sampler suggests first (what its first trial would train)."""

    space = load_space(search.space)
    study = optuna.create_study(sampler=instantiate(search.searcher))
    trial = study.ask()
    try:
        extra = space(trial) or {}
    except Exception as exc:
        raise ConfigError(
            f"search.space={search.space!r} cannot draw a configuration ({type(exc).__name__}: {exc}): "
            "fix the space, or give the configuration as check.params"
        ) from exc
    return {**trial.params, **extra}


def _wait(done: threading.Event, found: Callable[[], Optional[Mapping[str, Any]]]) -> Optional[Mapping[str, Any]]:
    deadline = time.monotonic() + FAULT_GUARD_S
    while not done.is_set() and time.monotonic() < deadline:
        if (hit := found()) is not None:
            return hit
        time.sleep(POLL_S)
    return None


class Checker:
    """The twin and the three runs of one configuration."""

    def __init__(self, settings: CheckConfig, params: dict[str, Any], workdir: Path) -> None:
        self.settings, self.params, self.workdir = settings, params, workdir
        assert settings.search is not None
        self.search = settings.search
        launcher = settings.check.launcher_config
        self.cluster = ClusterConfig(
            name="local_spot",
            launcher_config=launcher,
            max_workers_per_type=1,
            include_dashboard=settings.search.resources.width != (1, 1),
        )
        self.twin = LocalTwin(twin_config(load_launcher_config(launcher), self.cluster), self.cluster)

    def __enter__(self) -> Checker:
        address = self.twin.start()
        _ray.use_local_token()
        self.cluster = dataclasses.replace(
            self.cluster, name="local", address=address, autoscaler_config=str(self.twin.config_path)
        )
        return self

    def __exit__(self, *exc: Any) -> None:
        self.twin.stop()

    def config(self, kind: str, until: Optional[float]) -> CheckConfig:
        """The search, one trial of the configuration checked, in a directory of its own."""
        out = self.workdir / kind
        budget = self.search.max_t if until is None else int(until)
        search = dataclasses.replace(
            self.search,
            space=fixed.SPACE,
            scheduler=SCHEDULERS["fifo"](),
            max_t=budget,
            tune=TuneSettings(num_samples=1, max_concurrent_trials=1),
        )
        return dataclasses.replace(
            self.settings,
            name=f"check-{kind}",
            output_dir=str(out),
            search=search,
            cluster=self.cluster,
            storage=StorageConfig(path=str(out / "ray_results")),
            tracking=TrackingConfig(enabled=False),
            run=dataclasses.replace(self.settings.run, stop_file=str(out / "STOP")),
        )

    def run(self, kind: str, until: Optional[float] = None, stop_after_s: Optional[float] = None) -> Run:
        """One run: ``kind`` undisturbed | notice | kill; it ends at ``until`` (time_attr) or after
        ``stop_after_s`` of training, whichever is given, else where the trainer ends."""

        cfg = self.config(kind, until)
        recorder, done = Results(), threading.Event()
        stop_file = Path(str(cfg.run.stop_file))
        time_attr, budget = self.search.time_attr, float(until if until is not None else self.search.max_t)
        run = Run(kind, 0, recorder.results, Path(cfg.storage.path), 0.0)

        def at(fraction: float) -> Callable[[], Optional[Mapping[str, Any]]]:
            return lambda: next(
                (r for r in reports(recorder.results) if float(r.get(time_attr, 0)) >= fraction * budget), None
            )

        def watch() -> None:
            try:
                place_fault_and_stop()
            except Exception as exc:  # the fault could not be placed (the run ended first, the twin refused): said
                run.notes.append(f"{type(exc).__name__}: {exc}")

        def place_fault_and_stop() -> None:
            if kind == "notice":
                hit = _wait(done, at(self.settings.check.notice_at))
                if hit is not None:
                    run.fault_at = float(hit[time_attr])
                    self.twin.reclaim(hit[NODE_ID], hit[NODE_GROUP], notice_s=self.settings.check.notice_s)
            elif kind == "kill":
                hit = _wait(done, at(self.settings.check.kill_at))
                if hit is not None:
                    run.fault_at = float(hit[time_attr])
                    wait_trained_past(hit["trial_id"], float(hit[TRAIN_TIME_S]), lambda: not done.is_set())
                    self.twin.reclaim(hit[NODE_ID], hit[NODE_GROUP])
            stopped = _wait(
                done,
                lambda: next(
                    (
                        r
                        for r in reports(recorder.results)
                        if (until is not None and float(r.get(time_attr, 0)) >= until)
                        or (stop_after_s is not None and float(r.get(TRAIN_TIME_S, 0)) >= stop_after_s)
                    ),
                    None,
                ),
            )
            if stopped is not None:
                stop_file.touch()

        fixed.PARAMS.clear()
        fixed.PARAMS.update(self.params)
        watcher = threading.Thread(target=watch, daemon=True)
        started = time.monotonic()
        watcher.start()
        log = Path(cfg.output_dir) / "driver.log"  # the run's own console: a line per report, kept out of the check's
        log.parent.mkdir(parents=True, exist_ok=True)
        try:
            with log.open("w") as stream, contextlib.redirect_stdout(stream):
                run.status = execute(cfg, observers=[recorder])
        finally:
            done.set()
            watcher.join(FAULT_GUARD_S)
        run.wall_s = time.monotonic() - started
        return run


def newest_state(storage: Path) -> tuple[Any, int]:
    """The newest checkpoint's state dict (None for a directory a framework wrote) and its size in bytes."""
    manifests = sorted(storage.rglob(checkpoint.MANIFEST_FILE), key=lambda p: p.stat().st_mtime)
    if not manifests:
        return None, 0
    directory = manifests[-1].parent
    size = sum(p.stat().st_size for p in directory.rglob("*") if p.is_file())
    state_path = directory / checkpoint.STATE_FILE
    state = torch.load(state_path, map_location="cpu", weights_only=False) if state_path.is_file() else None
    return state, size


def write_time_s(results: Sequence[Mapping[str, Any]]) -> float:
    """The slowest checkpoint write the platform measured in a run."""
    return max((float(r.get(CHECKPOINT_WRITE_S, 0.0)) for r in results), default=0.0)


def scratch() -> Path:
    return Path(tempfile.mkdtemp(prefix="tuner-check-"))


def _params(params: Mapping[str, Any]) -> str:
    return " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(params.items()))


def _fault_line(name: str, run: Run, time_attr: str, what: str) -> str:
    if run.fault_at is None:
        return f"  {name:<12} never came: the run ended before its {time_attr} reached the fault's point"
    loss = loss_of(run.results, time_attr)
    return (
        f"  {name:<12} at {time_attr} {run.fault_at:g}{what}: {loss.units:.3g} {time_attr}s redone "
        f"({loss.lost_s:.2f} s of training), {loss.preemptions} preemption(s), recovery {loss.recovery_s:.1f} s"
    )


def run_check(settings: CheckConfig) -> int:
    """The three runs, the measures and the verdict on the console; 0 when the resumed runs are identical."""
    search = settings.search
    assert search is not None
    if settings.cluster.name not in TWIN_CLUSTERS or settings.cluster.address is not None:
        raise ConfigError(
            f"tuner.check runs on the local twin, not on cluster={settings.cluster.name}"
            f"{f' (address {settings.cluster.address})' if settings.cluster.address else ''}: its nodes "
            "would be killed and billed; drop the cluster settings"
        )
    params = dict(settings.check.params) or first_suggestion(search)
    where = "check.params" if settings.check.params else "the space's first suggestion"
    time_attr, budget = search.time_attr, settings.check.budget_s
    print(
        f"resume check of search {search.name!r}: {_params(params)} ({where}), on the local twin of "
        f"{settings.check.launcher_config}"
    )
    workdir = scratch()
    print(f"  (each run's own console: {workdir}/<run>/driver.log)")
    with Checker(settings, params, workdir) as checker:
        base = checker.run("undisturbed", stop_after_s=budget / 6 if budget else None)
        rows = reports(base.results)
        if base.status != 0 or not rows:
            print(
                f"error: the undisturbed run failed (exit {base.status}): make the search run first "
                f"(python -m tuner.run +search={search.name})"
            )
            return 2
        until = float(rows[-1][time_attr]) if budget else None
        trained_s = float(rows[-1].get(TRAIN_TIME_S, 0.0))
        left_s = (1 - max(settings.check.notice_at, settings.check.kill_at)) * trained_s
        if left_s < MIN_AFTER_FAULT_S:
            print(
                f"error: the trial trained {trained_s:.1f} s in all, so only {left_s:.1f} s are left after the faults' "
                f"points (at least {MIN_AFTER_FAULT_S:g} s are needed for a notice or a kill to land): give it more "
                "work (its steps or epochs), or a large step count with --budget SECONDS"
            )
            return 2
        print(
            f"  {'undisturbed':<12} {time_attr} {float(rows[-1][time_attr]):g} in {len(rows)} reports "
            f"({base.wall_s:.0f} s)"
        )
        notice = checker.run("notice", until)
        print(_fault_line("spot notice", notice, time_attr, f" ({settings.check.notice_s:g} s notice)"))
        kill = checker.run("kill", until)
        print(_fault_line("node killed", kill, time_attr, ", past its last checkpoint"))
    state, size = newest_state(base.storage)
    write_s = write_time_s(base.results)
    fits = notice_fit(write_s, settings.checkpoint.drain_poll_interval_s)
    too_slow = [cloud for cloud, ok in fits.items() if not ok]
    print(
        f"  {'checkpoint':<12} {size / 1e6:.3g} MB, written in {write_s:.3g} s: "
        + (
            f"too slow for the notice of {', '.join(too_slow)}"
            if too_slow
            else "fits the notice of " + ", ".join(f"{c} ({NOTICE_LEAD_S[c]:g} s)" for c in fits)
        )
    )
    if not steps_hooked(base.results):
        print(
            "  note: the trainer never calls session.step: a notice is taken only at its next report (the steps "
            "redone above); call session.step(state) at every step to save at once"
        )
    failed = [
        run
        for run in (notice, kill)
        if run.status != 0 or run.fault_at is None or loss_of(run.results, time_attr).preemptions < 1
    ]
    verdict = judge(
        base.results,
        {"after a spot notice": notice.results, "after a node kill": kill.results},
        time_attr,
        settings.check.tolerance,
        state,
        settings.checkpoint.rng,
    )
    print(render(verdict, base.results, time_attr, settings.check.tolerance))
    for run in failed:
        print(
            f"INCOMPLETE: the {run.kind} run "
            + (
                f"failed (exit {run.status})"
                if run.status
                else "was not interrupted by its fault (the trial ended first?)"
            )
            + "".join(f"; {note}" for note in run.notes)
        )
    return 0 if verdict.identical and not failed else 1
