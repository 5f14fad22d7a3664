"""Elastic multi-worker trials on the local twin (CPU, gloo): the plain example's trainer on Ray Train workers,
one per spot node; a notice on a worker's node shrinks the trial to one worker (accumulating two micro-steps),
the twin's capacity comes back and it grows back to two, and it ends where the undisturbed run ends. Only
two one-GPU spot types have capacity (one node each): there is room for two workers, and then for one."""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO, cli_env, run_cli
from tests.e2e.faults import trained_past
from tests.tooling import TUNER_RUN
from tuner.cluster.launcher import load_launcher_config, worker_types
from tuner.cluster.twin import LocalTwin, twin_config
from tuner.config import ClusterConfig
from tuner.trial.elastic import WORKER_GROUP_START_TIMEOUT_S
from tuner.trial.heartbeat import EVERY_S as HEARTBEAT_S

pytestmark = pytest.mark.slow

# 3 of a twin node's 4 CPUs per worker: two workers never share a node. Width [1, 2]. The disturbed runs train
# until the test has seen what it waits for and creates their stop file; the undisturbed run they are compared
# with then trains to the step they stopped at (the trainer's data order and optimiser depend on the step only).
UNTIL_STOPPED = 10_000_000
ELASTIC = ["search.resources.workers=[1,2]", "search.resources.cpu=3", "search.workload.eval_every=500"]
TOLERANCE = 1e-4  # relative, on the validation loss: float sums in another order at width 1 (see README)
GUARD_S = 600  # a hang guard only: every wait below ends on an event


TYPES = ("spot_g5", "spot_g6")  # 4 CPUs each: one worker per node


@pytest.fixture(scope="module")
def twin() -> Iterator[LocalTwin]:
    # With the dashboard: Ray Train's placement-group cleaner asks the State API whether a trial's controller is gone.
    cfg = ClusterConfig(name="local_spot", launcher_config="cluster/aws.yaml", max_workers_per_type=1)
    launcher = load_launcher_config("cluster/aws.yaml")
    cluster = LocalTwin(twin_config(launcher, cfg), cfg)
    cluster.autoscaler.update_types({t: {"max_workers": 0} for t in worker_types(launcher) if t not in TYPES})
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


def cli(
    out: Path, *extra: str, steps: int = UNTIL_STOPPED, max_failures: int = 2, space: str = "regression"
) -> list[str]:
    return [
        *TUNER_RUN,
        "--config-dir",
        "examples/conf",
        "+search=regression",
        f"search.space=tests.spaces:{space}",
        "cluster.address=auto",
        "cluster.launcher_config=cluster/aws.yaml",
        f"run.max_failures={max_failures}",
        "tracking=none",
        f"output_dir={out}",
        f"run.stop_file={out / 'STOP'}",
        *ELASTIC,
        f"search.workload.steps={steps}",
        f"search.scheduler.grace_period={steps}",
        *extra,
    ]


def node_group(node_id: str) -> str:
    from tuner import _ray
    from tuner.spot.labels import NODE_GROUP

    return str(_ray.node_info(_ray.bootstrap_address("auto"))[node_id]["labels"][NODE_GROUP])


def train_workers() -> set[str]:
    """The Ray Train workers alive now (actor ids), by Ray's public state API."""
    from ray.util.state import list_actors

    alive = [("class_name", "=", "RayTrainWorker"), ("state", "=", "ALIVE")]
    actors = list_actors(address=f"http://127.0.0.1:{ClusterConfig().dashboard_port}", filters=alive)  # type: ignore[arg-type]
    return {a.actor_id for a in actors}


def assert_no_placement_group_left(guard_s: float = 60.0) -> None:
    """A search's placement groups go with it (Ray removes a finished job's): any left would hold the twin's
    CPUs from the next search. Polled: Ray removes them shortly after the driver exits."""
    from ray.util.state import list_placement_groups

    address = f"http://127.0.0.1:{ClusterConfig().dashboard_port}"
    deadline = time.monotonic() + guard_s
    while held := [pg for pg in list_placement_groups(address=address) if pg.state != "REMOVED"]:  # type: ignore[arg-type]
        assert time.monotonic() < deadline, [(pg.name, pg.state, pg.creator_job_id, pg.bundles) for pg in held]
        time.sleep(0.5)


def reports(out: Path) -> list[dict[str, Any]]:
    """The trial's reports so far. Tune appends to result.json while the test reads it: the last line may be
    half written, and the next poll reads it whole."""
    rows = []
    for path in (out / "ray_results" / "regression").glob("trial_*/result.json"):
        lines = path.read_text().splitlines()
        rows += [json.loads(line) for line in lines[:-1]]
        with contextlib.suppress(json.JSONDecodeError, IndexError):  # the last line may be half written
            rows.append(json.loads(lines[-1]))
    return sorted((r for r in rows if not r.get("checkpoint_only")), key=lambda r: r["wall_s"])


def undisturbed(steps: int, tmp_path: Path) -> list[dict[str, Any]]:
    """The trial's reports up to ``steps`` with nothing disturbing it: what a disturbed run must match."""
    out = tmp_path / "undisturbed"
    base = subprocess.run(
        cli(out, "search.tune.num_samples=1", steps=steps),
        cwd=REPO,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=GUARD_S,
    )
    assert base.returncode == 0, base.stdout[-3000:]
    rows = reports(out)
    assert rows[-1]["step"] == steps and rows[-1]["preemptions"] == 0, rows[-1]
    return rows


def wait_for_reports(
    out: Path, driver: subprocess.Popen[str], what: str, enough: Callable[[list[dict[str, Any]]], bool]
) -> list[dict[str, Any]]:
    """Poll the trial's reports until ``enough`` of them; fails at once if the driver exits first."""
    deadline = time.monotonic() + GUARD_S
    while not enough(rows := reports(out)):
        assert driver.poll() is None and time.monotonic() < deadline, f"no {what}"
        time.sleep(0.2)
    return rows


def wide_reports(out: Path, driver: subprocess.Popen[str], count: int = 1) -> list[dict[str, Any]]:
    """Wait for ``count`` reports at width 2."""
    rows = wait_for_reports(
        out, driver, "report at width 2", lambda rows: sum(r["world_size"] == 2 for r in rows) >= count
    )
    return [r for r in rows if r["world_size"] == 2]


def stop_and_match(out: Path, driver: subprocess.Popen[str], log: Path, tmp_path: Path) -> list[dict[str, Any]]:
    """Stop the disturbed run (its stop file), then check it against the undisturbed run to the same step:
    the same validation loss at every step both reported. Returns the disturbed run's reports."""
    (out / "STOP").touch()
    driver.wait(timeout=GUARD_S)
    assert driver.returncode == 0, log.read_text()[-4000:]
    assert_no_placement_group_left()
    done = reports(out)
    reference = {r["step"]: r["val_loss"] for r in undisturbed(int(done[-1]["step"]), tmp_path)}
    for r in done:
        if r["step"] in reference:
            assert r["val_loss"] == pytest.approx(reference[r["step"]], rel=TOLERANCE), (r["step"], r["world_size"])
    assert done[-1]["step"] in reference
    return done


def test_a_notice_shrinks_the_trial_and_capacity_grows_it_back(twin: LocalTwin, tmp_path: Path) -> None:
    """A preemption is not a failure: with ``run.max_failures=0`` the trial still finishes. The restart after the
    notice sizes from the nodes that stay, so it costs one worker-group start (not also Ray Train's start
    timeout on the node being reclaimed, as it did before the drain-aware coordinator: 21 s here)."""
    out = tmp_path / "chaos"
    log = tmp_path / "chaos.log"
    with log.open("w") as stream:
        driver = subprocess.Popen(
            cli(out, "search.tune.num_samples=1", max_failures=0),
            cwd=REPO,
            env=cli_env(),
            stdout=stream,
            stderr=subprocess.STDOUT,
            text=True,
        )
    try:
        deadline = time.monotonic() + GUARD_S
        wide = wide_reports(out, driver)
        other = next(n for n in wide[0]["worker_nodes"].split(",") if n != wide[0]["node_id"])
        group = node_group(other)
        before, noticed_s = train_workers(), time.time()
        capacity = twin.reclaim(other, group, notice_s=4.0, back=False)  # rank 1's node, its capacity gone a while
        # Capacity comes back once the trial has restarted with the one worker there is room for (a new worker
        # group of one, whether Ray Train or Tune restarted it): any earlier, the restart could take both nodes.
        while len(now := train_workers()) != 1 or now & before:
            assert driver.poll() is None and time.monotonic() < deadline, "it did not go on at width 1"
            time.sleep(0.5)
        twin.set_max_workers(group, capacity)
        narrow = wait_for_reports(
            out,
            driver,
            "report at width 1",
            lambda rows: any(r["world_size"] == 1 and r["wall_s"] > noticed_s for r in rows),
        )
        narrow_s = max(r["wall_s"] for r in narrow if r["world_size"] == 1)
        wait_for_reports(
            out,
            driver,
            "report at width 2 again",
            lambda rows: any(r["world_size"] == 2 and r["wall_s"] > narrow_s for r in rows),
        )
        done = stop_and_match(out, driver, log, tmp_path)
    finally:
        if driver.poll() is None:
            driver.kill()
    widths = [r["world_size"] for r in done]
    assert 1 in widths and widths[-1] == 2, widths  # shrank, then grew back
    assert done[-1]["preemptions"] == 1  # growing back is a resize, not a preemption
    # The restart after the notice is one start, not also Ray Train's start timeout on the node being reclaimed
    # (which the drain-aware coordinator avoids: tests/test_ray_private.py). A start is measured in this run, on
    # this machine: the first attempt's time before its first report that was not training (node launch included).
    first = done[0]
    start_s = first["time_total_s"] - first["train_time_s"]
    assert done[-1]["recovery_s"] < WORKER_GROUP_START_TIMEOUT_S + start_s, (done[-1]["recovery_s"], start_s)


def test_a_worker_node_killed_without_notice_costs_the_work_since_the_last_checkpoint(
    twin: LocalTwin, tmp_path: Path
) -> None:
    """Rank 1's node terminated with no notice (the twin's cloud kills its raylet) once the trial has trained
    past a checkpoint (a heartbeat says so): the trial restarts from that checkpoint (a failed Ray Train run
    that lost a node, started again by the trial: with ``run.max_failures=0`` it still finishes), charges the
    worker-seconds redone and still matches the undisturbed run."""
    out = tmp_path / "chaos"
    log = tmp_path / "chaos.log"
    with log.open("w") as stream:
        driver = subprocess.Popen(
            cli(out, "search.tune.num_samples=1", max_failures=0),
            cwd=REPO,
            env=cli_env(),
            stdout=stream,
            stderr=subprocess.STDOUT,
            text=True,
        )
    try:
        first, second = wide_reports(out, driver, count=2)[:2]
        trained_past(second["trial_id"], second["train_time_s"], lambda: driver.poll() is None)
        other = next(n for n in second["worker_nodes"].split(",") if n != second["node_id"])
        twin.reclaim(other, node_group(other))  # capacity back once the node is gone
        wait_for_reports(
            out, driver, "report after the restart", lambda rows: any(r.get("restarts", 0) >= 1 for r in rows)
        )
        done = stop_and_match(out, driver, log, tmp_path)
    finally:
        if driver.poll() is None:
            driver.kill()
    final = done[-1]
    assert final["preemptions"] >= 1 and final["restarts"] >= 1, final
    interval_s = max(b["train_time_s"] - a["train_time_s"] for a, b in zip(done, done[1:]))  # a checkpoint each report
    assert 0 < final["lost_work_s"] <= 2 * (interval_s + HEARTBEAT_S), (final["lost_work_s"], interval_s)  # two workers


def test_several_elastic_trials_make_exactly_num_samples(twin: LocalTwin, tmp_path: Path) -> None:
    proc = subprocess.run(
        cli(tmp_path, "search.tune.num_samples=3", "search.tune.max_concurrent_trials=2", steps=400),
        cwd=REPO,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0 and "3 of 3 trials finished, 0 failed." in proc.stdout, proc.stdout[-3000:]
    best = re.search(r"best checkpoint: (\S+)", proc.stdout)
    assert best and Path(best.group(1)).is_dir(), proc.stdout[-1500:]  # the Ray Train run's, rank 0's


def test_an_application_error_still_counts_against_max_failures(twin: LocalTwin, tmp_path: Path) -> None:
    """Every node still there after the run failed: the trainer's own error, retried by Tune once; it came before
    the first report both times, so the search stops there (every attempt would fail so) with one line."""
    proc = subprocess.run(
        cli(tmp_path, "search.tune.num_samples=1", steps=400, max_failures=3, space="regression_bad_lr"),
        cwd=REPO,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    out, last = proc.stdout, [line for line in proc.stderr.splitlines() if line.strip()][-1]
    assert proc.returncode == 2 and "the trainer failed before its first report, on its retry too" in last, (
        out[-3000:] + last
    )
    # The console's line for each of the two failures; there is no third attempt.
    assert len(re.findall(r"  retry +\(", out)) == 2 and "Invalid learning rate" in last, out[-3000:]


def test_more_workers_than_the_cluster_can_ever_have_is_refused() -> None:
    proc = run_cli(
        ["+search=mlp", "cluster=local_spot", "search.resources.workers=[100,100]", "search.resources.cpu=4"]
    )
    assert proc.returncode == 2 and "no worker type fits 100 workers of cpu=4" in proc.stderr, proc.stderr[-2000:]
