"""Capacity asked for at a spot notice, and the trial moved as soon as it is up, on the local twin whose nodes take a
boot time (``cluster.boot_s``).

One MLP trial on the twin's g5 type (the cheaper) gets a notice once it has reported epoch 3; the twin takes the node
at the notice's deadline. With the defaults (``replacement.enabled``, ``checkpoint.move``), the trial's next place
(g6: the placement's choice without the reclaimed type) boots during the notice, the trial checkpoints and moves there
as soon as it is up (a pause, not a failure), and no request stands after the search. Without either (the platform
before them), nothing is up when the node goes and the restart waits for a node's boot: its GPU-idle gap is longer.
The notice (10 s) is longer than the boot (3 s) and a fake node's start: the AWS case (120 s against about a minute),
compressed.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from tests.conftest import REPO

_spec = importlib.util.spec_from_file_location("bench_preemption", REPO / "scripts" / "bench_preemption.py")
bench = importlib.util.module_from_spec(_spec)  # type: ignore[arg-type]
_spec.loader.exec_module(bench)  # type: ignore[union-attr]

pytestmark = pytest.mark.slow

BOOT_S, NOTICE_S = 3.0, 10.0


def test_a_notice_starts_the_replacement_and_the_trial_moves_there_before_its_node_goes(tmp_path: Path) -> None:
    with bench.two_type_twin(tmp_path, BOOT_S) as (twin, launcher):
        moved = bench.gap_run(twin, launcher, tmp_path, "moved", "ask_and_move", NOTICE_S)
        waited = bench.gap_run(twin, launcher, tmp_path, "waited", "wait_for_loss", NOTICE_S)
    for run in (moved, waited):
        assert run["status"] == 0 and run["preemptions"] == 1, run  # a move is counted as a preemption
        assert run["lost_work_s"] < 0.01, run  # nothing redone (clock resolution)
        assert run["standing_request_after"] == [], run  # nothing left standing after the search
        assert run["from"] == "g5.xlarge" and run["to"] == "g6.xlarge", run
    assert moved["asked_at_notice"] == 1 and waited["asked_at_notice"] == 0
    assert moved["moved"] and moved["spare_nodes_at_loss"] == ["spot_g6"], moved  # booted during the notice
    assert not waited["moved"] and waited["spare_nodes_at_loss"] == [], waited
    assert moved["idle_gap_s"] < waited["idle_gap_s"], (moved, waited)
