"""``python -m tuner.check`` end to end on the local twin: a trainer that resumes exactly is found identical, one
that does not is caught with its cause named; bad input is one line before anything starts."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, cli_env

pytestmark = pytest.mark.slow

# The trainers' own step counts are far larger than the check needs: --budget bounds the runs by time.
LONG = ["search.workload.steps=10000000", "--budget", "60"]  # the check uses no early stopping (fifo)

BROKEN = '''
"""A loop that forgets its optimizer: Adam's moments restart at zero after a resume."""

import torch
from torch import nn

from tuner import session


def space(trial):
    trial.suggest_float("lr", 1e-3, 1e-2, log=True)


def fit(config, settings):
    torch.manual_seed(0)
    x, y = torch.randn(256, 8), torch.randn(256, 1)
    model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Dropout(0.2), nn.Linear(32, 1))
    opt = torch.optim.Adam(model.parameters(), lr=config["lr"])
    step = 0
    ckpt = session.get_checkpoint()
    if ckpt is not None:
        state = ckpt.load()
        model.load_state_dict(state["model"])
        step = state["step"]

    def state():
        return {"model": model.state_dict(), "step": step}

    while step < settings["steps"]:
        idx = torch.randperm(256)[:32]
        loss = ((model(x[idx]) - y[idx]) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        step += 1
        session.step(state)
        if step % 200 == 0:
            session.report({"step": step, "loss": loss.item()}, checkpoint=state)
'''

BROKEN_YAML = """# Run with: python -m tuner.check --config-dir conf +search=broken
name: broken
trainer: mypkg.broken:fit
space: mypkg.broken:space
metric: loss
mode: min
time_attr: step
max_t: ${.workload.steps}
workload:
  steps: 2000
"""


def check(args: list[str], cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tuner.check", *args],
        cwd=cwd,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=900,
    )


def test_the_plain_example_resumes_identically_through_a_notice_and_a_kill() -> None:
    proc = check(["--config-dir", "examples/conf", "+search=regression", *LONG])
    out = proc.stdout
    assert proc.returncode == 0, out[-3000:] + proc.stderr[-2000:]
    assert "IDENTICAL: the resumed runs reported what the undisturbed run did, step, val_loss at each of" in out, out
    assert "WARNING" not in proc.stderr, proc.stderr[-2000:]  # nothing to worry a user on a clean check
    print(out[out.find("resume check of search") :])  # the check's own report, in the test's output
    notice = re.search(r"spot notice +at step (\d+) \(4 s notice\): ([\d.e+-]+) steps redone .* 1 preemption", out)
    kill = re.search(r"node killed +at step (\d+), past its last checkpoint: ([\d.e+-]+) steps redone \((\S+) s", out)
    assert notice and kill, out
    assert float(notice.group(2)) <= 1  # a noticed preemption redoes at most a step
    assert float(kill.group(3)) >= 0  # at most the work since the last checkpoint (here one every 20 ms of steps)
    assert re.search(
        r"checkpoint +[\d.e+-]+ MB, written in [\d.e+-]+ s: fits the notice of AWS \(120 s\), GCP \(30 s\)", out
    )


def test_a_trainer_that_forgets_its_optimizer_is_caught_with_the_cause_named(tmp_path: Path) -> None:
    (tmp_path / "mypkg").mkdir()
    (tmp_path / "mypkg" / "__init__.py").write_text("")
    (tmp_path / "mypkg" / "broken.py").write_text(BROKEN.lstrip())
    (tmp_path / "conf" / "search").mkdir(parents=True)
    (tmp_path / "conf" / "search" / "broken.yaml").write_text(BROKEN_YAML)
    proc = check(["--config-dir", "conf", "+search=broken", *LONG], cwd=tmp_path)
    out = proc.stdout
    print(out[out.find("resume check of search") :])
    assert proc.returncode == 1, out[-3000:] + proc.stderr[-2000:]
    assert re.search(
        r"DIVERGED after a (spot notice|node kill): at step \d+, loss [\d.e+-]+ resumed vs [\d.e+-]+ undisturbed", out
    ), out
    assert "likely cause: the checkpoint holds no optimizer state" in out, out


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["+search=mlp", "cluster=aws", "storage=s3", "storage.bucket=my-ckpts"],
            "tuner.check runs on the local twin, not on cluster=aws",
        ),
        (
            ["+search=mlp", "search.space=tests.spaces:raising_space"],
            "search.space='tests.spaces:raising_space' cannot draw a configuration",
        ),
    ],
)
def test_bad_input_is_one_line(args: list[str], message: str) -> None:
    proc = check(args)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and lines[-1].startswith(f"error: {message}"), proc.stderr[-2000:]
