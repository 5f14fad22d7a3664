"""Spot first, on-demand when a deadline needs it, on the local twin of cluster/aws.yaml, through the CLI.

The twin's spot types have capacity, then lose all of it (their maximum drops to 0, as the
trace injector does), then get it back, while a search runs; the driver steers the twin's
autoscaler config the way it steers a ``ray up`` head's (``cluster.autoscaler_config``):
(i) while spot has capacity no trial runs on on-demand; (ii) once a waiting trial's slack is
gone it starts on the on-demand type, within a bounded time measured here; (iii) with spot
back, new trials go to spot and the on-demand node is drained and released; (iv) an
on-demand base (``min_workers``) stays up all along.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import REPO, cli_env
from tests.tooling import TUNER_RUN
from tuner.cluster.launcher import load_launcher_config
from tuner.cluster.twin import LocalTwin, twin_config
from tuner.config import ClusterConfig
from tuner.cost.fallback import worker_types_by_market

pytestmark = pytest.mark.slow

ON_DEMAND = "ondemand_g5"


def start_twin(tmp_path: Path, base: int) -> tuple[LocalTwin, str]:
    """The twin, from a copy of cluster/aws.yaml whose on-demand type keeps ``base`` nodes."""
    launcher = load_launcher_config("cluster/aws.yaml")
    launcher["available_node_types"][ON_DEMAND]["min_workers"] = base
    path = tmp_path / "aws.yaml"
    path.write_text(yaml.safe_dump(launcher))
    cfg = ClusterConfig(name="local_spot", launcher_config=str(path), max_workers_per_type=1, include_dashboard=False)
    twin = LocalTwin(twin_config(launcher, cfg), cfg)
    twin.start()
    return twin, str(path)


def spot_capacity(twin: LocalTwin, launcher: str, available: bool) -> None:
    spot, _ = worker_types_by_market(load_launcher_config(launcher), {})
    twin.autoscaler.update_types({t: {"max_workers": int(available)} for t in spot})


def search(launcher: str, twin: LocalTwin, out: Path, *extra: str, steps: int = 1500) -> subprocess.Popen[str]:
    args = [
        *TUNER_RUN,
        "--config-dir",
        "examples/conf",
        "+search=regression",
        "search.space=tests.spaces:regression",
        "search.resources.gpu=1",
        f"search.workload.steps={steps}",
        f"search.workload.eval_every={steps // 10}",
        "search.tune.max_concurrent_trials=1",
        f"search.scheduler.grace_period={steps}",
        "cluster.address=auto",
        f"cluster.launcher_config={launcher}",
        f"cluster.autoscaler_config={twin.config_path}",
        "fallback.deadline_factor=1.2",
        "fallback.restart_s=5",
        "fallback.expected_trial_s=20",
        "run.max_failures=-1",
        "tracking=none",
        f"output_dir={out}",
        *extra,
    ]
    return subprocess.Popen(args, cwd=REPO, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def results(out: Path) -> list[dict[str, Any]]:
    rows = []
    for path in (out / "ray_results" / "regression").glob("trial_*/result.json"):
        rows += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return sorted(rows, key=lambda r: r["wall_s"])


def read_until(proc: subprocess.Popen[str], pattern: str, lines: list[str], timeout_s: float = 300) -> float:
    """Read the CLI's lines until one matches; the time it came."""
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout_s
    for line in proc.stdout:
        lines.append(line)
        if re.search(pattern, line):
            return time.time()
        assert time.monotonic() < deadline, "".join(lines)[-3000:]
    raise AssertionError("".join(lines)[-3000:])


@pytest.fixture
def twin(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[tuple[LocalTwin, str]]:
    cluster, launcher = start_twin(tmp_path, base=request.param)
    try:
        yield cluster, launcher
    finally:
        cluster.stop()


@pytest.mark.parametrize("twin", [0], indirect=True)
def test_spot_first_on_demand_when_the_deadline_needs_it_and_back(twin: tuple[LocalTwin, str], tmp_path: Path) -> None:
    cluster, launcher = twin
    # Long enough that the first trial is still training when its node goes (~1 ms a step here).
    proc, lines = search(launcher, cluster, tmp_path, "search.tune.num_samples=3", steps=15000), []
    try:
        read_until(proc, r"trial  1/3 \w+  step +1500/", lines)  # (i) running, on spot
        spot_capacity(cluster, launcher, available=False)  # every spot type loses its capacity: the node goes
        lost_at = time.time()
        read_until(proc, r"capacity: a trial waited \d+ s for spot .* on-demand opened", lines)
        read_until(proc, r"trial  1/3 \w+  step +\d+/", lines)  # training again, on on-demand
        resumed_s = time.time() - lost_at
        spot_capacity(cluster, launcher, available=True)  # spot is back
        out, _ = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    out = "".join(lines) + out
    assert proc.returncode == 0 and "3 of 3 trials finished, 0 failed." in out, out[-3000:]
    assert "capacity: no waiting trial needs on-demand: spot first again; 1 on-demand node(s) drained" in out
    rows = results(tmp_path)
    first = rows[0]["trial_id"]
    markets = [(r["trial_id"], r["market"]) for r in rows if not r.get("checkpoint_only")]
    assert markets[0] == (first, "spot")  # (i)
    assert (first, "on-demand") in markets  # (ii): it finished on the on-demand node
    assert {m for t, m in markets if t != first} == {"spot"}  # (iii): the next trials went to spot
    assert resumed_s < 90, resumed_s  # measured: capacity lost -> the trial trains on on-demand
    print(json.dumps({"lost_to_training_on_on_demand_s": round(resumed_s, 1)}))


@pytest.mark.parametrize("twin", [1], indirect=True)
def test_an_on_demand_base_is_kept(twin: tuple[LocalTwin, str], tmp_path: Path) -> None:
    import ray

    cluster, launcher = twin
    proc = search(launcher, cluster, tmp_path, "search.tune.num_samples=2")
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out[-3000:]
    ray.init(address="auto", logging_level="ERROR", log_to_driver=False)
    try:
        groups = [n["Labels"].get("ray.io/node-group") for n in ray.nodes() if n["Alive"]]
    finally:
        ray.shutdown()
    assert groups.count(ON_DEMAND) == 1, groups  # the base: kept after the search, never drained away
