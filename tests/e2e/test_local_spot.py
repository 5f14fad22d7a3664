"""cluster=local_spot: the twin of cluster/aws.yaml under Ray's fake multi-node autoscaler.

The CLI starts the twin; trials request fake GPUs; the autoscaler launches spot worker
types for them; a worker raylet is killed mid-trial and the trial finishes elsewhere.
The twin stops only its own processes at the end: another Ray cluster on the machine keeps running.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import cli_env, run_cli
from tests.tooling import TUNER_RUN
from tests.tooling.chaos import nodes_in_use

pytestmark = pytest.mark.slow

EPOCHS = 12
ARGS = [
    "+search=resnet",
    "cluster=local_spot",
    "cluster.include_dashboard=false",
    "cluster.max_workers_per_type=1",
    "tracking=none",
    "search.resources.cpu=1",
    "search.resources.gpu=1",
    "search.tune.num_samples=3",
    "search.tune.max_concurrent_trials=2",
    f"search.workload.epochs={EPOCHS}",
    f"search.scheduler.grace_period={EPOCHS}",
]


def results_of(experiment: Path) -> list[dict]:
    rows = []
    for path in experiment.glob("trial_*/result.json"):
        rows += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return rows


def kill_worker_raylet(node_group_prefix: str = "spot_") -> str:
    """SIGKILL the raylet of one live worker node of the twin that is running a trial (one of its GPUs
    is taken: killing an idle node would interrupt nothing), the way a spot instance vanishes."""
    import ray

    ray.init(address="auto", log_to_driver=False, logging_level="ERROR")
    try:
        node = next(
            n
            for n in nodes_in_use("GPU").values()
            if n["Labels"].get("ray.io/node-group", "").startswith(node_group_prefix)
        )
    finally:
        ray.shutdown()
    flag = f"--node_id={node['NodeID']}".encode()
    raylets = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().split(b"\0")
        except OSError:  # the process ended meanwhile
            continue
        if args and args[0].endswith(b"raylet") and flag in args:
            raylets.append(int(cmdline.parent.name))
    (pid,) = raylets
    os.kill(pid, signal.SIGKILL)
    return node["NodeID"]


def wait_until_only_the_head_is_left(timeout_s: float) -> bool:
    """True once every worker node has been removed by the autoscaler (idle timeout: 30 s)."""
    import ray

    ray.init(address="auto", log_to_driver=False, logging_level="ERROR")
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            alive = [n for n in ray.nodes() if n["Alive"] and n["Labels"].get("ray.io/node-group")]
            if not alive:
                return True
            time.sleep(2)
        return False
    finally:
        ray.shutdown()


def test_autoscaled_spot_workers_run_every_trial_and_survive_a_lost_node(tmp_path: Path) -> None:
    # keep_running: the twin outlives the driver so the test can watch idle workers go away.
    cmd = [*TUNER_RUN, *ARGS, f"output_dir={tmp_path}", "cluster.keep_running=true"]
    driver = subprocess.Popen(
        cmd, cwd=tmp_path, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    lines: list[str] = []
    killed: list[str] = []
    errors: list[BaseException] = []
    killed_at: list[float] = []

    def read() -> None:
        assert driver.stdout is not None
        for line in driver.stdout:
            lines.append(line)
            if not killed and not errors and re.search(rf"epoch +2/{EPOCHS}", line):
                try:
                    killed.append(kill_worker_raylet())
                    killed_at.append(time.time())
                except BaseException as exc:  # surfaced by the assertion below
                    errors.append(exc)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        driver.wait(timeout=600)
        reader.join(10)
        idle_workers_gone = wait_until_only_the_head_is_left(timeout_s=150)
    finally:
        if driver.poll() is None:
            driver.kill()
        subprocess.run([str(Path(sys.executable).parent / "ray"), "stop", "--force"], capture_output=True)
    out = "".join(lines)
    assert driver.returncode == 0, out[-4000:]
    assert killed and not errors, errors
    assert "3 of 3 trials finished, 0 failed." in out
    assert "retry" in out  # the trial on the lost node was resumed
    # the console's lines, no Ray traceback
    assert "Trial task failed" not in out and "Traceback" not in out, out[-4000:]
    rows = results_of(tmp_path / "ray_results" / "resnet")
    groups = {r["node_group"] for r in rows}
    assert all(g.startswith(("spot_", "ondemand_")) for g in groups), groups  # never the head
    assert len(groups) >= 2, groups  # the autoscaler launched more than one worker type
    assert all(r["market"] in ("spot", "on-demand") and r["instance_type"] for r in rows)
    before = {r["node_id"] for r in rows if r["wall_s"] <= killed_at[0]}
    assert {r["node_id"] for r in rows} - before, "no replacement node was launched"
    assert idle_workers_gone, "idle workers were not removed after the idle timeout"
    lost = [r for r in rows if r["node_id"] == killed[0]]
    resumed_trials = {r["trial_id"] for r in lost}
    for trial in resumed_trials:
        epochs = [r["epoch"] for r in rows if r["trial_id"] == trial and not r.get("checkpoint_only")]
        assert max(epochs) == EPOCHS and any(r["node_id"] != killed[0] for r in rows if r["trial_id"] == trial)


def test_trial_bigger_than_every_worker_type_fails_fast(tmp_path: Path) -> None:
    started = time.monotonic()
    proc = run_cli(["+search=mlp", "cluster=local_spot", "search.resources.gpu=8", f"output_dir={tmp_path}"])
    assert proc.returncode == 2 and "no worker type fits a trial needing cpu=1 gpu=8" in proc.stderr
    assert time.monotonic() - started < 60  # an error, not a hang


def test_aws_cluster_needs_s3(tmp_path: Path) -> None:
    proc = run_cli(["+search=mlp", "cluster=aws", f"output_dir={tmp_path}"])
    assert proc.returncode == 2 and "cluster=aws needs shared checkpoint storage" in proc.stderr


def test_unknown_cluster_name() -> None:
    proc = run_cli(["+search=mlp", "cluster=gke"])
    assert proc.returncode == 1 and "Could not find 'cluster/gke'" in proc.stderr


TINY_SPOT = [
    "+search=mlp",
    "cluster=local_spot",
    "search.resources.gpu=1",
    "search.tune.num_samples=1",
    "search.workload.epochs=2",
    "search.scheduler.grace_period=2",
    "tracking=none",
]


def test_the_twin_stops_only_what_it_started(tmp_path: Path) -> None:
    """An unrelated Ray cluster on other ports (a user's, another search's) still answers after a local_spot
    search has run to the end and stopped its twin."""
    import ray.util

    from tests.conftest import free_port
    from tuner.cluster.twin import cluster_processes, session_dir

    other = f"{ray.util.get_node_ip_address()}:{free_port()}"
    subprocess.run(
        [
            str(Path(sys.executable).parent / "ray"),
            "start",
            "--head",
            f"--port={other.split(':')[1]}",
            "--num-cpus=1",
            "--include-dashboard=false",
        ],
        check=True,
        capture_output=True,
        env=cli_env(),
    )
    try:
        proc = run_cli([*TINY_SPOT, "cluster.include_dashboard=false", f"output_dir={tmp_path}"])
        assert proc.returncode == 0 and "1 of 1 trials finished, 0 failed." in proc.stdout, proc.stderr[-3000:]
        probe = f"import ray; ray.init(address={other!r}, logging_level='ERROR'); print(ray.cluster_resources()['CPU'])"
        # `ray start` turned token auth on (its token in ~/.ray/auth_token): say so, whatever ran before.
        auth = {"RAY_AUTH_MODE": "token"}
        answer = subprocess.run(
            [sys.executable, "-c", probe], capture_output=True, text=True, env=cli_env(auth), timeout=120
        )
        assert answer.returncode == 0 and answer.stdout.strip().splitlines()[-1] == "1.0", answer.stderr[-2000:]
    finally:
        # By its session directory too: the GCS's own command line names its port, not its address.
        for p in cluster_processes(other, session_dir(int(other.split(":")[1]))):
            p.kill()


def test_a_second_twin_while_one_holds_the_dashboard_port_is_refused_in_one_line(tmp_path: Path) -> None:
    from tuner.cluster.launcher import load_launcher_config
    from tuner.cluster.twin import LocalTwin, twin_config
    from tuner.config import ClusterConfig

    cfg = ClusterConfig(name="local_spot", launcher_config="cluster/aws.yaml", max_workers_per_type=1)
    first = LocalTwin(twin_config(load_launcher_config("cluster/aws.yaml"), cfg), cfg)
    first.start()
    try:
        proc = run_cli([*TINY_SPOT, f"output_dir={tmp_path}"])
        assert proc.returncode == 2, proc.stderr[-3000:]
        assert proc.stderr.strip().splitlines()[-1].startswith("error: cluster=local_spot: 127.0.0.1:8265 is taken"), (
            proc.stderr
        )
    finally:
        first.stop()
