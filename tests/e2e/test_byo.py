"""Bring your own training: a user's package and search YAMLs in a directory outside this checkout, run with
``--config-dir``; bad trainers refused before anything starts or failing their trial with one line; the same
search on the local twin with the code shipped to its workers, directly and as a Ray job."""

from __future__ import annotations

import contextlib
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import BIN, FAST, cli_env, free_port
from tests.e2e import user_repo
from tests.e2e.test_cli import runs_of
from tests.tooling import TUNER_RUN
from tuner.cluster.launcher import load_launcher_config
from tuner.cluster.twin import LocalTwin, twin_config
from tuner.config import ClusterConfig

pytestmark = pytest.mark.slow

# No early stopping: how each trial ends is its case's doing, not the order in which trials happened to report.
CASES = ["+search=cases", "search/scheduler=fifo"]
RAY_DEFAULT_AGENT_PORT = 52365  # ray start --dashboard-agent-listen-port's default


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return user_repo.write(tmp_path_factory.mktemp("users-own-repo"))


def run_in(repo: Path, args: list[str], timeout_s: float = 600, elsewhere: bool = False) -> subprocess.CompletedProcess:
    """The CLI as the user runs it: from their repository, with their configs. ``elsewhere``: from another
    directory, the repository on the driver's Python path only (so that Ray's workers, which would get the
    driver's working directory, can import the package only from what the platform ships)."""
    cwd, env = (repo.parent, cli_env({"PYTHONPATH": str(repo)})) if elsewhere else (repo, cli_env())
    return subprocess.run(
        [*TUNER_RUN, "--config-dir", str(repo / "conf"), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )


def test_a_users_search_runs_from_its_own_repository(repo: Path, tmp_path: Path) -> None:
    proc = run_in(repo, ["+search=mine", f"output_dir={tmp_path}", *FAST])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "3 of 3 trials finished, 0 failed." in proc.stdout
    assert re.search(r"trial  1/3 \w+  iteration   1/6  mse [\d.]+  slope [-\d.]+  shipped 0", proc.stdout), proc.stdout
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    _, children = runs_of(uri, "mine")
    client = MlflowClient(tracking_uri=uri)
    reached = []
    for child in children:  # every metric the trainer reported, at every report (until ASHA stopped it), plus the cost
        steps = [m.step for m in client.get_metric_history(child.info.run_id, "mse")]
        assert steps == list(range(1, len(steps) + 1))
        assert {"slope", "cost_usd", "preemptions"} <= set(child.data.metrics)
        reached.append(len(steps))
    assert max(reached) == 6


def test_a_trainer_written_the_ordinary_way_gets_the_workload_as_keywords(repo: Path, tmp_path: Path) -> None:
    proc = run_in(
        repo,
        [
            "+search=mine",
            "search.trainer=mypkg.train:fit_keywords",
            "search.tune.num_samples=1",
            f"output_dir={tmp_path}",
            *FAST,
        ],
    )
    assert proc.returncode == 0 and "1 of 1 trials finished, 0 failed." in proc.stdout, proc.stderr[-3000:]
    assert re.search(r"trial  1/1 \w+  iteration   6/6  mse", proc.stdout), proc.stdout[-2000:]
    bad = run_in(repo, ["+search=mine", "search.trainer=mypkg.train:fit_keywords", "+search.workload.epochs=3"])
    lines = [line for line in bad.stderr.splitlines() if line.strip()]
    assert bad.returncode == 2 and lines[-1] == (
        "error: search.workload.epochs: mypkg.train:fit_keywords takes no such keyword (it takes: iterations, seed)"
    ), bad.stderr[-2000:]


@pytest.mark.parametrize(
    "trainer,message",
    [
        ("mypkg.nope:fit", r"search.trainer='mypkg.nope:fit' cannot be imported \(No module named 'mypkg.nope'\)"),
        ("mypkg.train:NOT_A_FUNCTION", "search.trainer='mypkg.train:NOT_A_FUNCTION' is a int, not a function"),
        ("mypkg.train:wrong_signature", r"must accept \(config, settings\), its signature is \(config\)"),
    ],
)
def test_a_trainer_that_cannot_be_called_is_refused_before_anything_starts(
    repo: Path, trainer: str, message: str
) -> None:
    proc = run_in(repo, ["+search=mine", f"search.trainer={trainer}"], timeout_s=120)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and re.search(message, lines[-1]), proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and "Starting search" not in proc.stdout


def test_a_trainer_that_goes_wrong_fails_its_trial_with_the_line_that_says_why(repo: Path, tmp_path: Path) -> None:
    proc = run_in(repo, [*CASES, f"output_dir={tmp_path}", "run.max_failures=1", *FAST])
    out = proc.stdout
    assert proc.returncode == 1, proc.stderr[-3000:]  # one trial (no_step_hook) finished, two failed
    assert "1 of 3 trials finished, 2 failed." in out, out[-3000:]
    raised = r"ValueError: bad batch 2 \(at mypkg/cases\.py:\d+ in helper\)"
    last = [line for line in proc.stderr.splitlines() if line.strip()][-1]
    assert re.fullmatch(rf"error: 2 of 3 trials failed; the first: ({raised}|CheckpointStateError: .*)", last), last
    # counted against run.max_failures=1: retried once
    assert re.search(rf"retry +\({raised}; traceback in \S+\)", out), out
    # no Ray traceback
    assert "Trial task failed" not in proc.stderr and "\x1b[" not in proc.stderr, proc.stderr[-3000:]
    expected = [
        raised,
        r"CheckpointStateError: checkpoint state cannot be saved by torch\.save "
        r"\(TypeError: cannot pickle '_thread\.lock'",
    ]
    failed = [line for line in out.splitlines() if "FAILED" in line]
    for pattern in expected:
        assert any(re.search(pattern, line) for line in failed), (pattern, failed)
    assert out.count("WARNING the trainer never calls tuner.session.step()") == 1
    _, children = runs_of(f"sqlite:///{tmp_path}/mlflow.db", "cases")
    failed_runs = [c for c in children if c.info.status == "FAILED"]
    errors = [c.data.tags.get("tuner.error", "") for c in failed_runs]
    assert len(errors) == 2 and any(re.search(raised, e) for e in errors), errors
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    for child in failed_runs:  # the whole traceback is an artifact of the trial's run
        assert "error.txt" in [a.path for a in client.list_artifacts(child.info.run_id)], child.info.run_id


def test_failed_trials_can_be_allowed(repo: Path, tmp_path: Path) -> None:
    proc = run_in(repo, [*CASES, f"output_dir={tmp_path}", "run.max_failures=0", "run.allow_failed_trials=true", *FAST])
    assert proc.returncode == 0 and "1 of 3 trials finished, 2 failed." in proc.stdout, proc.stderr[-3000:]
    assert "(run.allow_failed_trials=true: exit 0 all the same)" in proc.stderr


def test_a_trainer_that_raises_before_its_first_report_stops_the_search_after_one_retry(
    repo: Path, tmp_path: Path
) -> None:
    proc = run_in(
        repo,
        [
            *CASES,
            "search.space=mypkg.cases:raises_at_once",
            "search.tune.max_concurrent_trials=1",
            f"output_dir={tmp_path}",
            "run.max_failures=3",
            *FAST,
        ],
    )
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert re.fullmatch(
        r"error: the trainer failed before its first report, on its retry too: ValueError: bad batch 1 "
        r"\(at mypkg/cases\.py:\d+ in helper\)",
        lines[-1],
    ), lines[-1]
    starts = re.findall(r"trial +\d+/3 (\w+)  start ", proc.stdout)
    assert len(starts) == 2 and len(set(starts)) == 1, proc.stdout  # the first trial and its one retry; no other


@pytest.mark.parametrize(
    "space, message",
    [
        (
            "no_metric",
            r"ReportError: tuner\.session\.report: 'loss' missing \(reported: iteration_loss\).* "
            r"\(at mypkg/cases\.py:\d+ in fit\)",
        ),
        ("text_metric", r"ReportError: tuner\.session\.report: metric 'loss' is str 'low': report numbers only"),
    ],
)
def test_a_report_the_search_cannot_use_stops_the_search_at_once_in_one_line(
    repo: Path, tmp_path: Path, space: str, message: str
) -> None:
    """The same error would come on every attempt of every trial: no retries, no more trials, exit 2."""
    proc = run_in(
        repo,
        [
            *CASES,
            f"search.space=mypkg.cases:{space}",
            "search.tune.num_samples=4",
            "search.tune.max_concurrent_trials=1",
            f"output_dir={tmp_path}",
            "run.max_failures=3",
            *FAST,
        ],
    )
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and re.search(message, lines[-1]), proc.stderr[-3000:]
    assert lines[-1].startswith("error: a trial's report cannot be used"), lines[-1]
    assert len(re.findall(r"trial +\d+/4 \w+  start", proc.stdout)) == 1, proc.stdout[-3000:]  # no other trial started
    assert "trials finished" not in proc.stdout


@pytest.fixture(scope="module")
def twin() -> Iterator[str]:
    """The local twin of cluster/aws.yaml, its dashboard (and job server) on 127.0.0.1; yields the job address. The
    job server needs the head's agent: it must start although Ray's default port for it is taken."""
    port = free_port()
    cfg = ClusterConfig(
        name="local_spot", launcher_config="cluster/aws.yaml", max_workers_per_type=1, dashboard_port=port
    )
    cluster = LocalTwin(twin_config(load_launcher_config("cluster/aws.yaml"), cfg), cfg)
    with contextlib.ExitStack() as held:
        # Ray's default agent port held, as another Ray cluster on the machine holds it (if one does, it stays so).
        with contextlib.suppress(OSError):
            held.enter_context(socket.create_server(("0.0.0.0", RAY_DEFAULT_AGENT_PORT)))
        cluster.start()
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            cluster.stop()


ON_THE_TWIN = ["+search=mine", "cluster.address=auto", "cluster.launcher_config=cluster/aws.yaml", "tracking=mlflow"]


def shipped(uri: str) -> list[float]:
    return [c.data.metrics["shipped"] for c in runs_of(uri, "mine")[1]]


def test_on_the_twin_the_users_code_travels_to_the_workers(repo: Path, twin: str, tmp_path: Path) -> None:
    proc = run_in(repo, [*ON_THE_TWIN, f"output_dir={tmp_path}"], elsewhere=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert f"shipping to the cluster (runtime_env py_modules): {repo / 'mypkg'}" in proc.stdout
    assert "3 of 3 trials finished, 0 failed." in proc.stdout
    assert shipped(f"sqlite:///{tmp_path}/mlflow.db") == [1.0, 1.0, 1.0]  # imported from Ray's copy, not the repo


def test_ray_job_submit_runs_the_users_search_on_the_twin(repo: Path, twin: str, tmp_path: Path) -> None:
    """The documented way to start a search on a cluster: Ray's Jobs API, the user's repo as working dir."""
    submit = [
        str(BIN / "ray"),
        "job",
        "submit",
        "--address",
        twin,
        "--working-dir",
        str(repo),
        "--",
        sys.executable,
        "-m",
        "tuner.run",
        "--config-dir",
        "conf",
        *ON_THE_TWIN,
        f"output_dir={tmp_path}",
    ]
    auth = {"RAY_AUTH_MODE": "token"}  # the twin's token is in ~/.ray/auth_token, as `ray start` left it
    proc = subprocess.run(submit, env=cli_env(auth), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0 and "3 of 3 trials finished, 0 failed." in proc.stdout, (
        proc.stdout[-3000:] + proc.stderr
    )
    job_id = re.search(r"Job '(raysubmit_\w+)' succeeded", proc.stdout + proc.stderr)
    assert job_id, proc.stdout[-2000:]
    status = subprocess.run(
        [str(BIN / "ray"), "job", "status", "--address", twin, job_id.group(1)],
        env=cli_env(auth),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert status.returncode == 0 and f"Job '{job_id.group(1)}' succeeded" in status.stdout + status.stderr, status
    assert "shipping to the cluster" not in proc.stdout  # the job's working_dir carried the code
    assert shipped(f"sqlite:///{tmp_path}/mlflow.db") == [1.0, 1.0, 1.0]
