"""The simulator against reality: on the local twin of cluster/aws.yaml (``cluster=local_spot``),
spot capacity comes and goes as the real 32-node trace says (time-compressed), under a real
search through the CLI: two worker types stand for two trace slots, and the twin's own
autoscaler terminates and relaunches their nodes. The simulator, given the same trace window
and campaign profile (with this machine's restart time, measured in the same run), must predict
the preemptions and the time they cost within 20 %."""

from __future__ import annotations

import re
import statistics
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import REPO, cli_env
from tests.e2e.test_cli import runs_of
from tests.tooling import TUNER_RUN
from tests.tooling.traces import TraceInjector
from tuner.cluster.launcher import load_launcher_config
from tuner.cluster.twin import HEAD_TYPE, LocalTwin, twin_config
from tuner.config import CampaignProfile, ClusterConfig, StrategyConfig
from tuner.plan.simulate import replay
from tuner.plan.traces import Market, ZoneTrace, cluster_events

pytestmark = pytest.mark.slow

SLOTS = {10: "spot_g5", 9: "spot_g6"}  # two slots of the trace: 5 drops between ticks 40 and 165
FIRST_TICK, TICKS = 40, 125
TICK_S = 0.5  # one minute of the trace per half second: capacity is down 4-5.5 s, up 14-22 s between drops
# The trials train until the test stops the search (its stop file) once the traced window (62.5 s) is over and
# both have trained again since (an epoch count would be too short on a fast machine and too long on a slow one).
EPOCHS = 100_000
GUARD_S = 900.0  # the search's time budget, a hang guard only
TOLERANCE = 0.20


def window(market: Market) -> Market:
    """The traced slots over the window, then up for good (as the injector leaves them)."""
    zones = [
        ZoneTrace(
            z.name, z.available[FIRST_TICK : FIRST_TICK + TICKS + 1] + [True] * 100_000, [1.0] * (TICKS + 100_001), 3.0
        )
        for z in (market.zones[i] for i in SLOTS)
    ]
    return Market("window", market.gpu, TICK_S, 0.0, zones, notice_s=0.0, capacity_per_zone=1)


def restarts(client: MlflowClient, children: list[Any], returns_s: list[float]) -> list[float]:
    """Per preemption, this machine's restart time, the part of the recovery that the trace does not
    decide: from capacity back (or from the loss, if a node was free) to training again (the autoscaler
    launching a node, its raylet up, the trial scheduled, its process started, its checkpoint restored).
    The simulator gets their median; what it must predict is the rest: how many preemptions, how long
    each trial waits for capacity, the work lost."""
    found = []
    for child in children:
        epoch_s = {m.step: m.value for m in client.get_metric_history(child.info.run_id, "epoch_time_s")}
        history = sorted(
            client.get_metric_history(child.info.run_id, "recovery_s"), key=lambda m: (m.timestamp, m.step)
        )
        for before, after in zip(history, history[1:]):
            if after.value > before.value:  # the first result of an attempt after a preemption
                recovered_at_s = after.timestamp / 1000 - epoch_s.get(after.step, 0.0)
                back_s = max((t for t in returns_s if t <= recovered_at_s), default=0.0)
                found.append(min(after.value - before.value, recovered_at_s - back_s))
    assert found, "no preemption reached MLflow"
    return found


def local_spot_twin() -> LocalTwin:
    """The twin as ``cluster=local_spot`` builds it, with only the two traced spot types offered."""
    cfg = ClusterConfig(
        name="local_spot", launcher_config="cluster/aws.yaml", max_workers_per_type=1, include_dashboard=False
    )
    twin = LocalTwin(twin_config(load_launcher_config(cfg.launcher_config), cfg), cfg)
    for name in set(twin.config["available_node_types"]) - set(SLOTS.values()) - {HEAD_TYPE}:
        twin.set_max_workers(name, 0)
    return twin


def test_simulator_predicts_the_measured_preemptions_and_lost_time(tmp_path: Path) -> None:
    market = cluster_events()
    twin = local_spot_twin()
    injector = TraceInjector(twin, SLOTS, market, FIRST_TICK, TICK_S)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    try:
        injector.start()
        twin.start()
        driver = subprocess.Popen(
            [
                *TUNER_RUN,
                "+search=resnet",
                "search.space=search_spaces.fixed:resnet8",
                "search.tune.num_samples=2",
                "search.tune.max_concurrent_trials=2",
                f"search.workload.epochs={EPOCHS}",
                f"search.scheduler.grace_period={EPOCHS}",
                f"search.tune.time_budget_s={GUARD_S}",
                f"run.stop_file={tmp_path / 'STOP'}",
                "search.resources.gpu=1",
                "cluster.address=auto",
                "cluster.launcher_config=cluster/aws.yaml",
                f"output_dir={tmp_path}",
                "run.max_failures=-1",
                "name=validation",
            ],
            cwd=REPO,
            env=cli_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        lines: list[str] = []
        started, done, recovered = threading.Event(), threading.Event(), threading.Event()
        trained_after: dict[str, int] = {}  # per trial, its epoch lines since the traced window ended
        window_over = threading.Event()

        def read() -> None:
            assert driver.stdout is not None
            for line in driver.stdout:
                lines.append(line)
                if len(re.findall(r"trial +\d+/2 \w+  start", "".join(lines))) == 2:
                    started.set()
                epoch = re.match(r"\S+ trial +\d+/2 (\w+)  epoch", line)
                if epoch and window_over.is_set():
                    trained_after[epoch.group(1)] = trained_after.get(epoch.group(1), 0) + 1
                    if len(trained_after) == 2 and min(trained_after.values()) >= 2:  # not a result in flight
                        recovered.set()
            done.set()

        threading.Thread(target=read, daemon=True).start()
        assert started.wait(GUARD_S), "".join(lines)[-2000:]
        injector.run(TICKS, stop=done)  # the trace clock starts with the trials
        injector.restore_all()
        window_over.set()
        assert recovered.wait(GUARD_S), "".join(lines)[-2000:]  # both trials train again: every recovery counted
        (tmp_path / "STOP").touch()
        driver.wait(timeout=GUARD_S)
    finally:
        twin.stop()
    out = "".join(lines)
    assert driver.returncode == 0, out[-3000:]
    assert "2 of 2 trials finished, 0 failed." in out

    client = MlflowClient(tracking_uri=uri)
    _, children = runs_of(uri, "validation")
    measured = {
        key: sum(c.data.metrics.get(key, 0.0) for c in children) for key in ("preemptions", "lost_work_s", "recovery_s")
    }
    epoch_s = statistics.median(
        m.value for c in children for m in client.get_metric_history(c.info.run_id, "epoch_time_s")
    )
    restart_s = statistics.median(restarts(client, children, injector.returns_s))
    trained = statistics.median(c.data.metrics["epoch"] for c in children)  # as far as the stop file let them
    profile = CampaignProfile(
        trials=2, epochs=int(trained), epoch_s=epoch_s, checkpoint_s=0.0, restart_s=restart_s, concurrency=2
    )
    strategy = StrategyConfig(checkpoint="periodic", every_s=epoch_s, notice=False, zones="all", fallback=False)
    predicted = replay(window(market), profile, strategy, 0)
    report = {
        "measured": measured,
        "predicted": {
            "preemptions": predicted.preemptions,
            "lost_work_s": predicted.lost_work_s,
            "recovery_s": predicted.recovery_s,
        },
        "removals": injector.removals,
        "epoch_s": epoch_s,
        "restart_s": restart_s,
    }
    print(report)
    assert injector.removals == 5, report
    assert abs(measured["preemptions"] - predicted.preemptions) <= TOLERANCE * predicted.preemptions, report
    lost_measured = measured["lost_work_s"] + measured["recovery_s"]
    lost_predicted = predicted.lost_work_s + predicted.recovery_s
    assert abs(lost_measured - lost_predicted) <= TOLERANCE * lost_predicted, report
