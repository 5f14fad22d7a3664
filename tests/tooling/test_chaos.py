"""How a chaos run is judged: which node removals interrupted which trial, on hand-made timelines."""

from __future__ import annotations

from typing import Any

from tests.tooling.chaos import interruptions_by_trial, timeline

EPOCHS = 3


def result(trial_id: str, node_id: str, epoch: int, wall_s: float, **extra: Any) -> dict[str, Any]:
    return {"trial_id": trial_id, "node_id": node_id, "epoch": epoch, "wall_s": wall_s, **extra}


def removal(node_id: str, time_s: float, event: str = "killed") -> dict[str, Any]:
    return {"event": event, "node_id": node_id, "time_s": time_s}


def test_a_removal_interrupts_the_trial_last_seen_on_its_node() -> None:
    results = [
        result("a", "n1", 1, 1.0),
        result("b", "n2", 1, 1.5),
        result("a", "n3", 2, 10.0),
        result("a", "n3", 3, 11.0),
        result("b", "n2", 3, 12.0),
    ]
    assert interruptions_by_trial([removal("n1", 5.0)], results, EPOCHS) == {"a": 1}


def test_a_trial_interrupted_twice_counts_twice() -> None:
    results = [result("a", "n1", 1, 1.0), result("a", "n2", 2, 8.0), result("a", "n3", 3, 15.0)]
    log = [removal("n1", 5.0, "preempted"), removal("n2", 10.0), {"event": "notice", "node_id": "n1", "time_s": 1.0}]
    assert interruptions_by_trial(log, results, EPOCHS) == {"a": 2}


def test_removals_after_a_trial_finished_or_left_interrupt_nothing() -> None:
    results = [
        result("a", "n1", 3, 2.0),  # finished on n1 before n1 went
        result("b", "n2", 1, 1.0),
        result("b", "n4", 2, 6.0),
        result("b", "n4", 3, 9.0),  # left n2 for n4
        result("c", "n5", 2, 1.0),
        result("c", "n5", 3, 3.0, checkpoint_only=1),
        result("c", "n6", 3, 8.0),
    ]
    log = [removal("n1", 4.0), removal("n2", 7.0), removal("n5", 3.5)]
    # c's mid-epoch checkpoint in its last epoch is not a finish: the removal at 3.5 s interrupted it
    assert interruptions_by_trial(log, results, EPOCHS) == {"c": 1}


def test_timeline_shows_each_move_and_removal_from_the_first_result() -> None:
    results = [
        result("a", "node1xxxxx", 1, 100.0),
        result("a", "node1xxxxx", 2, 101.0),
        result("a", "node2xxxxx", 3, 109.0),
    ]
    log = [
        removal("node0xxxxx", 90.0, "removed"),  # the end of an earlier run
        {"event": "notice", "node_id": "node1xxxxx", "time_s": 102.0},
        removal("node1xxxxx", 106.0, "preempted"),
    ]
    assert timeline(log, results) == {
        "placements": {"a": [["node1xxx", 0.0, 1], ["node2xxx", 9.0, 3]]},
        "removals": [["preempted", "node1xxx", 6.0]],
    }
