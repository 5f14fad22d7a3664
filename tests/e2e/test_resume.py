"""A resumed search always finishes: restored from a deliberately inconsistent copy of its state, after a
Ctrl-C (once: saved and resumable; twice: stopped at once, still resumable)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
import ray.cloudpickle as cloudpickle

from tests.conftest import REPO, cli_env, run_cli
from tests.e2e.test_cli import kill_driver_mid_search, long_search
from tests.tooling import TUNER_RUN

pytestmark = pytest.mark.slow


def newest(paths) -> Path:
    return max(paths, key=lambda p: p.stat().st_mtime)


@pytest.mark.parametrize("damage", ["ghost", "missing"])
def test_restore_from_an_inconsistent_copy_finishes_with_exactly_num_samples(damage: str, tmp_path: Path) -> None:
    """The state a half-failed sync leaves: the search generator's counter one behind the trial list, and
    the searcher either holding a slot for a trial no list knows (the hang once seen in CI) or gone."""
    num_samples, epochs = 4, 15
    args = long_search(tmp_path, num_samples, epochs)
    finished, _ = kill_driver_mid_search(args)
    experiment = tmp_path / "ray_results" / "mlp"
    generator = newest(experiment.glob("search_gen_state-*.json"))
    state = cloudpickle.loads(generator.read_bytes())
    state["counter"] -= 1
    generator.write_bytes(cloudpickle.dumps(state))
    searcher = newest(experiment.glob("searcher-state-*.pkl"))
    if damage == "ghost":
        saved = cloudpickle.loads(searcher.read_bytes())
        saved["live"]["d15abfa0"] = saved["study"].ask()  # max_concurrent_trials=1: this slot blocked everything
        searcher.write_bytes(cloudpickle.dumps(saved))
    else:
        for path in experiment.glob("searcher-state-*.pkl"):
            path.unlink()
    proc = run_cli(args, timeout_s=300)
    out = proc.stdout
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"{num_samples} of {num_samples} trials finished, 0 failed." in out
    for trial_id in finished:
        assert f"{trial_id}  start" not in out, f"finished trial {trial_id} was run again"
    all_ids = set(re.findall(r"trial +\d+/\d+ (\w+)  ", out)) | finished
    assert len(all_ids) == num_samples, all_ids


def start(args: list[str]) -> subprocess.Popen:
    """The CLI in its own process group, as a terminal runs it (Ctrl-C goes to the whole group)."""
    return subprocess.Popen(
        [*TUNER_RUN, *args],
        cwd=REPO,
        env=cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def read_until(proc: subprocess.Popen, pattern: str, lines: list[str], timeout_s: float = 300) -> None:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout_s  # a hang guard: checked at each line
    for line in proc.stdout:
        lines.append(line)
        if re.search(pattern, line):
            return
        assert time.monotonic() < deadline, f"no line matching {pattern!r} in {timeout_s} s"
    raise AssertionError("".join(lines)[-3000:])


@pytest.mark.parametrize("presses", [1, 2])
def test_ctrl_c_says_how_to_resume_and_the_same_command_does(presses: int, tmp_path: Path) -> None:
    num_samples, epochs = 2, 20
    args = long_search(tmp_path, num_samples, epochs)
    proc, lines = start(args), []
    read_until(proc, r"trial +1/\d+ \w+  epoch +3/", lines)
    started = time.monotonic()
    for press in range(1, presses + 1):
        os.killpg(proc.pid, signal.SIGINT)
        if press < presses:
            read_until(proc, r"Stop signal received", lines)  # Tune's line: the first press has reached it
    out, _ = proc.communicate(timeout=120)
    out = "".join(lines) + out
    assert proc.returncode == 130, out[-3000:]
    command = "python -m tuner.run " + " ".join(args)
    if presses == 1:
        assert re.search(rf"search interrupted: \d of {num_samples} trials done; the same command resumes it:", out), (
            out[-3000:]
        )
        assert "trials finished" not in out  # not summarised as if it were done
    else:
        assert "stopped at once; the same command resumes from the state saved last" in out, out[-3000:]
        assert time.monotonic() - started < 30
    assert command in out
    assert "Tuner.restore(" not in out and "FileNotFoundError" not in out and "Traceback" not in out, out[-3000:]
    resumed = run_cli(args, timeout_s=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Resuming search 'mlp'" in resumed.stdout
    assert f"{num_samples} of {num_samples} trials finished, 0 failed." in resumed.stdout
