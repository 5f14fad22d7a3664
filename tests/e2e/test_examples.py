"""Each example (plain loop, Lightning, Hugging Face) on the local twin of cluster/aws.yaml, through the CLI: a
spot notice mid-trial (the drain the agent sends, then the node goes at the deadline) costs at most one step, a
node killed without notice costs at most the work since the last periodic checkpoint, the trial finishes with
the full step count (the plain loop: with the undisturbed run's exact metrics), and its MLflow run is priced.
The runs and the measures are scripts/bench_examples.py's."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.e2e.test_cli import runs_of
from tuner.cluster.twin import LocalTwin
from tuner.trial.heartbeat import EVERY_S as HEARTBEAT_S

pytestmark = pytest.mark.slow

_spec = importlib.util.spec_from_file_location("bench_examples", REPO / "scripts" / "bench_examples.py")
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


@pytest.fixture(scope="module")
def twin() -> Iterator[LocalTwin]:
    with bench.twin() as cluster:
        yield cluster


@pytest.mark.parametrize("example", sorted(bench.EXAMPLES))
def test_an_example_survives_a_notice_and_a_kill_on_the_twin(example: str, twin: LocalTwin, tmp_path: Path) -> None:
    _, time_attr, _ = bench.EXAMPLES[example]
    proc, done = bench.run(example, tmp_path / "chaos", twin)
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert "1 of 1 trials finished, 0 failed." in proc.stdout
    budget = float(proc.stdout.split(f"{time_attr} <= ")[1].split()[0])
    lost = bench.losses(example, proc, done)
    assert lost[time_attr] == budget and lost["preemptions"] == 2, lost  # the full step count, both losses counted
    assert lost["attempts"] == 3, "the trial did not move twice"
    # to the deadline, or moved to a node that had room before it (checkpoint.move)
    assert lost["notice_checkpoints"][:2] in (["drain", "deadline"], ["move"], ["drain", "move"]), lost
    assert lost["lost_after_notice_steps"] <= 1, lost  # at most one step redone after a notice
    interval_s = max(b["train_time_s"] - a["train_time_s"] for a, b in zip(done, done[1:]))
    # At most the work since the last periodic checkpoint; 0 when no heartbeat came after it (Lightning's
    # epochs here take 0.03 s and each checkpoint forces a beat, while beats between come every HEARTBEAT_S).
    assert 0 <= lost["lost_after_kill_s"] <= interval_s + HEARTBEAT_S, (lost, interval_s)
    uri = f"sqlite:///{tmp_path / 'chaos'}/mlflow.db"
    (child,) = runs_of(uri, example)[1]
    m = child.data.metrics
    assert m["cost_usd"] > 0 and m["on_demand_cost_usd"] > m["cost_usd"] and m["preemptions"] == 2
    assert m["lost_work_s"] == pytest.approx(done[-1]["lost_work_s"])
    if example == "regression":  # the plain loop resumes bit-identically
        base, undisturbed = bench.run(example, tmp_path / "undisturbed")
        assert base.returncode == 0, base.stdout[-3000:]
        at_step: dict[float, float] = {}
        for r in done:  # work redone after the kill reports its steps again, with exactly the same values
            assert at_step.setdefault(r["step"], r["val_loss"]) == r["val_loss"], r
        assert [(r["step"], r["val_loss"]) for r in undisturbed] == sorted(at_step.items())
