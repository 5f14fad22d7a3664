"""The CLI end to end, in subprocesses, against real Ray, SeaweedFS and MLflow servers."""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from tests.conftest import (
    FAST,
    REPO,
    cli_env,
    free_port,
    run_cli,
    screenshot,
    start_mlflow_server,
    stop,
)
from tests.tooling import TUNER_RUN
from tuner.cli import CONF_DIR, available_searches
from tuner.run.tracking import (
    FRONT_ROW_COLOUR,
    TAG_CHECKPOINT,
    TAG_PARENT,
    TAG_PARETO,
    TAG_TRIAL,
)
from tuner.trial import checkpoint

pytestmark = pytest.mark.slow

FRONT_ROW_RGB = tuple(int(FRONT_ROW_COLOUR[i : i + 2], 16) for i in (1, 3, 5))
TINY = ["search.tune.num_samples=2", "search.workload.epochs=2", "search.scheduler.grace_period=2"]


def runs_of(uri: str, experiment: str) -> tuple[list, list]:
    """(parent runs, child runs) of an MLflow experiment."""
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None, f"no MLflow experiment {experiment}"
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if TAG_PARENT not in r.data.tags]
    children = [r for r in runs if TAG_PARENT in r.data.tags]
    return parents, children


def assert_tracked(uri: str, experiment: str, num_trials: int, epochs: int) -> None:
    parents, children = runs_of(uri, experiment)
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert len(children) == num_trials
    assert len({c.data.tags[TAG_TRIAL] for c in children}) == num_trials  # no duplicates
    client = MlflowClient(tracking_uri=uri)
    for child in children:
        assert child.data.tags[TAG_PARENT] == parents[0].info.run_id
        assert {"lr", "batch_size"} <= set(child.data.params)
        assert child.data.tags.get(TAG_CHECKPOINT), "child run has no checkpoint location"
        history = client.get_metric_history(child.info.run_id, "val_acc")
        steps = sorted({m.step for m in history})  # a resumed trial may redo (re-log) a step
        assert steps == list(range(1, len(steps) + 1)) and len(steps) <= epochs
        assert child.info.status == "FINISHED"


@pytest.mark.parametrize("search", available_searches())
def test_every_search_smoke_runs(search: str, tmp_path: Path) -> None:
    proc = run_cli([f"+search={search}", f"output_dir={tmp_path}", *FAST, *TINY])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 of 2 trials finished, 0 failed." in proc.stdout
    assert "WARNING" not in proc.stdout + proc.stderr, proc.stderr[-3000:]  # nothing to worry a user on a clean run
    assert re.search(r"trial  1/2 \w+  epoch   1/2  val_acc", proc.stdout)
    assert f"mlflow ui --host 127.0.0.1 --backend-store-uri sqlite:///{tmp_path}/mlflow.db" in proc.stdout
    assert_tracked(f"sqlite:///{tmp_path}/mlflow.db", search, num_trials=2, epochs=2)
    objectives = OmegaConf.load(CONF_DIR / "search" / f"{search}.yaml").get("objectives")
    if objectives:
        assert_pareto_front_shown(proc.stdout, tmp_path, search, dict(objectives))


def assert_pareto_front_shown(stdout: str, tmp_path: Path, search: str, objectives: dict[str, str]) -> None:
    """A multi-objective search: Optuna was told every objective (the ledger's cost among them), the console
    and MLflow mark the same Pareto front, and the printed link opens the trials table in the MLflow UI."""
    front = re.search(
        r"Pareto front of val_acc \(max\), (.+), last reported values: (\d) of the 2 trials that trained", stdout
    )
    assert front and front.group(1) == ", ".join(f"{k} ({m})" for k, m in objectives.items()), stdout[-2000:]
    (state,) = (tmp_path / "ray_results" / search).glob("searcher-state-*.pkl")
    study = pickle.loads(state.read_bytes())["study"]
    assert [len(t.values) for t in study.trials] == [1 + len(objectives)] * 2
    if "cost_usd" in objectives:
        assert all(t.values[1] > 0 for t in study.trials)  # priced by the ledger (the assumed instance type here)
    parents, children = runs_of(f"sqlite:///{tmp_path}/mlflow.db", search)
    marked = [c for c in children if c.data.tags.get(TAG_PARETO) == "true"]
    assert len(marked) == int(front.group(2)) >= 1
    link = re.search(
        r"all trials: +http://127.0.0.1:5000(/#/experiments/\d+/runs/(\w+)/artifactPath/trials.html)", stdout
    )
    assert link and link.group(2) == parents[0].info.run_id
    port = free_port()
    server = start_mlflow_server(tmp_path, port)  # the store the search wrote, as `mlflow ui` would serve it
    try:
        # A loaded machine can leave the page's bundles and artifact fetch unfinished at the first shot's
        # budget: shoot again with a longer one until the table is there (bounded, each shot up to 2 min).
        for wait_ms in (20_000, 60_000, 120_000):
            pixels = screenshot(
                f"http://127.0.0.1:{port}{link.group(1)}", tmp_path / "mlflow.png", 1400, 1000, wait_ms=wait_ms
            )
            shaded = (np.abs(pixels - np.array(FRONT_ROW_RGB)) <= 2).all(axis=2)  # the front's rows in the table
            if shaded.any(axis=1).sum() >= 15 * len(marked):
                break
    finally:
        stop(server)
    assert shaded.any(axis=1).sum() >= 15 * len(marked), "the MLflow UI did not render the trials table"


def test_s3_storage_holds_checkpoints_and_experiment_state(s3_server, tmp_path: Path) -> None:
    bucket = s3_server.make_bucket()
    args = [
        "+search=mlp",
        f"output_dir={tmp_path}",
        *FAST,
        *TINY,
        "storage=s3",
        f"storage.bucket={bucket}",
        "storage.prefix=team/exp",
        f"storage.endpoint_url={s3_server.endpoint_url}",
    ]
    proc = run_cli(args, env=s3_server.env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    keys = s3_server.keys(bucket)
    root = "team/exp/mlp/"
    assert any(re.fullmatch(root + r"experiment_state-.*\.json", k) for k in keys), keys
    assert root + "tuner.pkl" in keys
    assert any(k.startswith(root + "searcher-state") for k in keys), keys
    states = [k for k in keys if re.fullmatch(root + r"trial_\w+/checkpoint_\d+/state\.pt", k)]
    manifests = [k for k in keys if k.endswith("/manifest.json")]
    assert states and len(states) == len(manifests)
    assert not (tmp_path / "ray_results").exists()  # nothing kept only on local disk
    # The secret key is in no stored object and in no output.
    client = s3_server.client()
    secret = s3_server.secret_key.encode()
    for key in keys:
        assert secret not in client.get_object(Bucket=bucket, Key=key)["Body"].read(), key
    assert s3_server.secret_key not in proc.stdout + proc.stderr
    # ... nor in anything written locally: MLflow's store and artifacts, Hydra's config and logs, Ray's logs.
    for root in (tmp_path, Path("/tmp/ray/session_latest/logs")):
        for path in root.rglob("*"):
            if path.is_file():
                assert secret not in path.read_bytes(), path


def test_tracking_server(mlflow_server, tmp_path: Path) -> None:
    name = f"server-{tmp_path.name}"
    args = ["+search=mlp", f"output_dir={tmp_path}", f"name={name}", *FAST, *TINY]
    proc = run_cli([*args, f"tracking.tracking_uri={mlflow_server.uri}"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_tracked(mlflow_server.uri, name, num_trials=2, epochs=2)


EPOCH_LINE = re.compile(r"trial +\d+/\d+ \w+  epoch")


def read_until_seen(
    driver: subprocess.Popen, lines: list[str], needles: list[str], epochs_after: int, timeout_s: float = 300
) -> int:
    """Read the driver's output into ``lines`` until every needle has appeared and ``epochs_after`` epoch lines
    came after the last of them (a fault's end placed by what the search has done, not by the clock).
    Returns the epoch lines read. The time limit is a hang guard only."""
    assert driver.stdout is not None
    deadline, missing, after, epochs = time.monotonic() + timeout_s, set(needles), 0, 0
    for line in driver.stdout:
        lines.append(line)
        missing = {n for n in missing if n not in line}
        if EPOCH_LINE.search(line):
            epochs += 1
            after += not missing
        if not missing and after >= epochs_after:
            return epochs
        assert time.monotonic() < deadline, f"still waiting for {sorted(missing)} after {timeout_s} s"
    raise AssertionError(
        f"the search ended before {sorted(missing) or f'{epochs_after} epochs'}: " + "".join(lines)[-3000:]
    )


def test_mlflow_outage_mid_search_loses_nothing(tmp_path: Path) -> None:
    """Stop the tracking server mid-search, start it again: every update kept meanwhile reaches it."""
    port, workdir = free_port(), tmp_path / "mlflow"
    workdir.mkdir()
    server = start_mlflow_server(workdir, port)
    uri = f"http://127.0.0.1:{port}"
    num_samples, epochs = 6, 40  # long enough to outlast the server's restart (seconds), after the outage's events
    args = [*long_search(tmp_path / "run", num_samples, epochs), f"tracking.tracking_uri={uri}", "name=outage"]
    driver = subprocess.Popen(
        [*TUNER_RUN, *args],
        cwd=REPO,
        env=cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    try:
        assert driver.stdout is not None
        for line in driver.stdout:
            lines.append(line)
            if re.search(r"trial +1/\d+ \w+  epoch +3/", line):
                break
        stop(server)  # the outage: trials keep reporting meanwhile, until the driver has said so and a few more epochs
        read_until_seen(driver, lines, [f"MLflow at {uri} is unreachable"], epochs_after=3)
        server = start_mlflow_server(workdir, port)
        lines += driver.stdout.readlines()
        driver.wait(timeout=300)
    finally:
        if driver.poll() is None:
            driver.kill()
        out = "".join(lines)
    try:
        assert driver.returncode == 0, out[-3000:]
        assert f"MLflow at {uri} is unreachable" in out and f"MLflow at {uri} is back" in out, [
            line for line in out.splitlines() if "tuner" in line or "MLflow" in line
        ]
        assert "not logged" not in out
        assert_tracked(uri, "outage", num_trials=num_samples, epochs=epochs)
        client = MlflowClient(tracking_uri=uri)
        for child in runs_of(uri, "outage")[1]:
            steps = {m.step for m in client.get_metric_history(child.info.run_id, "val_acc")}
            assert steps == set(range(1, epochs + 1)), "epochs logged during the outage are missing"
    finally:
        stop(server)


def test_unreachable_tracking_server_warns_once_and_search_completes(tmp_path: Path) -> None:
    uri = f"http://127.0.0.1:{free_port()}"
    proc = run_cli(["+search=mlp", f"output_dir={tmp_path}", *FAST, *TINY, f"tracking.tracking_uri={uri}"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout + proc.stderr
    assert out.count(f"MLflow at {uri} is unreachable") == 1
    assert "2 of 2 trials finished" in proc.stdout


def kill_driver_mid_search(args: list[str], env: dict[str, str] | None = None) -> tuple[set[str], str]:
    """Run the CLI; SIGKILL it (and its Ray processes: the head is gone) once two trials have
    finished and a third has trained a few epochs. Returns (finished trial ids, interrupted trial id)."""
    driver = subprocess.Popen(
        [*TUNER_RUN, *args],
        cwd=REPO,
        env=cli_env(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    finished: set[str] = set()
    running: dict[str, int] = {}
    deadline = time.monotonic() + 300
    assert driver.stdout is not None
    for line in driver.stdout:
        if m := re.search(r"trial +\d+/\d+ (\w+)  (done|stopped)", line):
            finished.add(m.group(1))
            running.pop(m.group(1), None)
        elif m := re.search(r"trial +\d+/\d+ (\w+)  epoch +(\d+)/", line):
            running[m.group(1)] = int(m.group(2))
        if len(finished) >= 2 and any(e >= 3 for e in running.values()):
            break
        assert time.monotonic() < deadline, "search never reached the kill point"
    os.kill(driver.pid, signal.SIGKILL)
    driver.wait()
    try:
        os.killpg(driver.pid, signal.SIGKILL)  # the head's Ray processes go with it
    except ProcessLookupError:
        pass
    return finished, next(iter(running))


def assert_none_retrained(out: str, finished: set[str]) -> None:
    """A trial that finished before the kill trains nothing again. If the driver died before its state
    recorded the end (Tune saves it every few seconds), the trial restarts once, finds its final
    checkpoint newer than the recorded one, reports that checkpoint's result again and ends."""
    for trial_id in finished:
        epochs = [line for line in out.splitlines() if f"{trial_id}  epoch" in line]
        assert all("reported again from its checkpoint" in line for line in epochs), (
            f"finished trial {trial_id} trained again"
        )


def assert_resumed(out: str, finished: set[str], interrupted: str, num_samples: int, epochs: int) -> None:
    assert "Resuming search 'mlp'" in out
    assert f"{num_samples} of {num_samples} trials finished, 0 failed." in out
    assert_none_retrained(out, finished)
    resumed_epochs = [int(e) for e in re.findall(rf"{interrupted}  epoch +(\d+)/", out)]
    assert resumed_epochs and resumed_epochs[0] > 1, "interrupted trial restarted from scratch"
    assert resumed_epochs[-1] == epochs


def long_search(tmp_path: Path, num_samples: int, epochs: int) -> list[str]:
    return [
        "+search=mlp",
        f"output_dir={tmp_path}",
        *FAST,
        f"search.tune.num_samples={num_samples}",
        "search.tune.max_concurrent_trials=1",
        f"search.workload.epochs={epochs}",
        f"search.scheduler.grace_period={epochs}",  # no early stopping: every trial runs all epochs
    ]


def test_killed_driver_resumes_whole_search(tmp_path: Path) -> None:
    """SIGKILL the driver mid-search; the same command finishes it with exactly num_samples trials."""
    num_samples, epochs = 5, 25
    args = long_search(tmp_path, num_samples, epochs)
    finished, interrupted = kill_driver_mid_search(args)
    proc = run_cli(args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_resumed(proc.stdout, finished, interrupted, num_samples, epochs)
    assert_tracked(f"sqlite:///{tmp_path}/mlflow.db", "mlp", num_trials=num_samples, epochs=epochs)


KILL_POINTS = REPO / "tests" / "e2e" / "killpoints"


@pytest.mark.parametrize(
    "point, nth, s3",
    [
        ("checkpoint_upload", 30, True),  # trial 2 is mid-way through uploading its 10th checkpoint to S3
        ("trial_done", 2, True),  # trial 2 just ended (the searcher was told); nothing about its end is saved
        ("checkpoint_saved", 22, True),  # trial 2 has two checkpoints in S3; the saved state names neither
        ("trial_start", 3, False),  # trial 3's process is up: the saved state must already know the trial
    ],
)
def test_driver_killed_at_a_precise_point_resumes(point: str, nth: int, s3: bool, s3_server, tmp_path: Path) -> None:
    num_samples, epochs = 4, 20
    args = long_search(tmp_path, num_samples, epochs)
    env: dict[str, str] = {}
    if s3:
        bucket = s3_server.make_bucket()
        args += ["storage=s3", f"storage.bucket={bucket}", f"storage.endpoint_url={s3_server.endpoint_url}"]
        env = s3_server.env
    kill_dir = tmp_path / "kill"
    kill_dir.mkdir()
    killed = subprocess.run(
        [*TUNER_RUN, *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env=cli_env(
            {**env, "PYTHONPATH": str(KILL_POINTS), "TUNER_KILL_AT": f"{point}:{nth}", "TUNER_KILL_DIR": str(kill_dir)}
        ),
        start_new_session=True,
    )
    assert killed.returncode == -signal.SIGKILL and (kill_dir / "killed").exists(), killed.stdout[-2000:]
    finished = set(re.findall(r"trial +\d+/\d+ (\w+)  done", killed.stdout))
    proc = run_cli(args, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "Resuming search 'mlp'" in out and f"{num_samples} of {num_samples} trials finished, 0 failed." in out
    assert_none_retrained(out, finished)
    started = set(re.findall(r"trial +\d+/\d+ (\w+)  start", killed.stdout))
    assert len(started | set(re.findall(r"trial +\d+/\d+ (\w+)  ", out))) == num_samples, "a started trial was lost"
    for trial_id in set(re.findall(r"trial +\d+/\d+ (\w+)  epoch", killed.stdout)) - finished:
        resumed = [int(e) for e in re.findall(rf"{trial_id}  epoch +(\d+)/", out)]
        assert not resumed or resumed[0] > 1, f"interrupted trial {trial_id} restarted from scratch"
    assert_tracked(f"sqlite:///{tmp_path}/mlflow.db", "mlp", num_trials=num_samples, epochs=epochs)


def test_head_loss_restores_from_the_bucket_alone(s3_server, tmp_path: Path) -> None:
    """The head dies with its disk: the same command on a new head resumes from S3 alone."""
    num_samples, epochs = 4, 25
    bucket = s3_server.make_bucket()
    s3 = ["storage=s3", f"storage.bucket={bucket}", f"storage.endpoint_url={s3_server.endpoint_url}"]
    args = [*long_search(tmp_path / "head", num_samples, epochs), *s3]
    finished, interrupted = kill_driver_mid_search(args, env=s3_server.env)
    shutil.rmtree(tmp_path / "head")  # the local experiment directory, MLflow store, logs: all gone
    proc = run_cli(args, env=s3_server.env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_resumed(proc.stdout, finished, interrupted, num_samples, epochs)


def test_s3_outage_mid_search_loses_nothing(s3_server, tmp_path: Path) -> None:
    """Stop the S3 server mid-search until uploads have failed and training went on, start it again: uploads
    resume, and every trial's results and last checkpoint end up in the bucket."""
    num_samples, epochs = 3, 20
    bucket = s3_server.make_bucket()
    args = [
        *long_search(tmp_path, num_samples, epochs),
        "storage=s3",
        f"storage.bucket={bucket}",
        f"storage.endpoint_url={s3_server.endpoint_url}",
        "storage.prefix=team",
        "checkpoint.every_reports=2",
        "name=outage",
    ]
    driver = subprocess.Popen(
        [*TUNER_RUN, *args],
        cwd=REPO,
        env=cli_env(s3_server.env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    epochs_during_outage = 0
    try:
        assert driver.stdout is not None
        for line in driver.stdout:
            lines.append(line)
            if re.search(r"trial +1/\d+ \w+  epoch +3/", line):
                break
        s3_server.stop()
        # The outage lasts until the driver has said uploads fail and the search has trained 5 epochs meanwhile.
        epochs_during_outage = read_until_seen(driver, lines, ["WARNING checkpoint upload failed"], epochs_after=5)
    finally:
        s3_server.start()  # the session's server must come back for the other tests, whatever happened
    try:
        lines += driver.stdout.readlines()
        driver.wait(timeout=300)
    finally:
        if driver.poll() is None:
            driver.kill()
    out = "".join(lines)
    assert driver.returncode == 0, out[-3000:]
    assert epochs_during_outage >= 5, "training stalled while S3 was down"
    assert "WARNING checkpoint upload failed" in out and "checkpoint upload works again" in out
    assert "Traceback" not in out, "storage errors should be one line each"
    assert f"{num_samples} of {num_samples} trials finished, 0 failed." in out
    # Every result and every trial's final checkpoint are in the bucket.
    client, keys = s3_server.client(), s3_server.keys(bucket)
    trials = sorted({k.split("/")[2] for k in keys if k.startswith("team/outage/trial_")})
    assert len(trials) == num_samples, keys
    for trial in trials:
        results = client.get_object(Bucket=bucket, Key=f"team/outage/{trial}/result.json")["Body"].read().decode()
        epochs_seen = {json.loads(r)["epoch"] for r in results.splitlines() if not json.loads(r).get("checkpoint_only")}
        assert epochs_seen == set(range(1, epochs + 1)), f"{trial}: results lost"
        newest = max(
            k for k in keys if k.startswith(f"team/outage/{trial}/checkpoint_") and k.endswith("manifest.json")
        )
        with tempfile.TemporaryDirectory() as directory:
            client.download_file(bucket, newest, f"{directory}/{checkpoint.MANIFEST_FILE}")
            for name in json.loads(Path(directory, checkpoint.MANIFEST_FILE).read_text())["files"]:
                client.download_file(bucket, newest.replace(checkpoint.MANIFEST_FILE, name), f"{directory}/{name}")
            checkpoint.verify(directory)
            assert checkpoint.Checkpoint(directory).load()["progress"]["epoch"] == epochs, (
                f"{trial}: last checkpoint lost"
            )
