"""The worker pod's wrapper (tuner.spot.pod) without Ray: SIGTERM stops a command that never started Ray, the
command's own exit is the wrapper's, bad arguments. The drain itself, on Ray nodes of the twin:
tests/e2e/test_k8s.py."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

from tuner.spot.pod import exit_status


def wrapper(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tuner.spot.pod", *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def test_sigterm_stops_a_command_that_never_started_ray() -> None:
    proc = wrapper(
        "--grace-s", "30", "--", sys.executable, "-c", "import time; print('up', flush=True); time.sleep(60)"
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "up"
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0 and time.monotonic() - started < 15, out  # no node to drain: no wait for a deadline


def test_the_commands_own_exit_is_the_wrappers() -> None:
    proc = wrapper("--", sys.executable, "-c", "raise SystemExit(3)")
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 3 and "the command exited with 3 before any SIGTERM" in out


@pytest.mark.parametrize(
    "args,message",
    [([], "give the command that starts Ray after --"), (["--grace-s", "5", "--margin-s", "5", "--", "true"], "below")],
)
def test_bad_arguments(args: list[str], message: str) -> None:
    proc = wrapper(*args)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 2 and message in out.splitlines()[-1]


def test_a_child_killed_by_a_signal_exits_as_a_shell_says() -> None:
    assert exit_status(0) == 0 and exit_status(3) == 3 and exit_status(-9) == 137
