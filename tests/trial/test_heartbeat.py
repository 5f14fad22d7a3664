"""What an interruption cost a trial, from its last heartbeat: preemption or not, worker-seconds lost."""

from __future__ import annotations

from typing import Any

import pytest

from tuner.trial.heartbeat import Progress, account_restart, lost_to_preemption


def beat(nodes: list[str], train_time_s: float = 10.0, **extra: Any) -> dict[str, Any]:
    return {
        "node_id": nodes[0],
        "nodes": nodes,
        "train_time_s": train_time_s,
        "world_size": len(nodes),
        "wall_s": 100.0,
        **extra,
    }


def lost(*gone: str):  # type: ignore[no-untyped-def]
    return lambda node: node in gone


@pytest.mark.parametrize(
    "before,now,gone,preempted",
    [
        (["a"], ["b"], (), True),  # one process, now elsewhere: its node went
        (["a", "b"], ["a"], ("b",), True),  # a worker's node lost: shrank
        (["a"], ["a", "b"], (), False),  # capacity came back: grew, nothing was lost to the cloud
        (["a", "b"], ["a", "b"], (), False),  # the same nodes: not a preemption
    ],
)
def test_a_restart_is_a_preemption_only_when_a_node_of_the_trial_went(
    before: list[str], now: list[str], gone: tuple[str, ...], preempted: bool
) -> None:
    progress, was, lost_s = account_restart(Progress(train_time_s=6.0), beat(before), now, 130.0, lost(*gone))
    assert was is preempted and progress.restarts == 1 and progress.preemptions == int(preempted)
    assert lost_s == pytest.approx(4.0 * len(before))  # worker-seconds trained after the checkpoint
    assert progress.recovery_s == (30.0 if preempted else 0.0)


def test_an_application_error_is_never_a_preemption() -> None:
    progress, was, _ = account_restart(Progress(), beat(["a"], error=True), ["b"], 130.0, lost("a"))
    assert not was and progress.preemptions == 0 and progress.restarts == 1


def test_an_error_that_came_with_another_workers_node_lost_is_that_preemption() -> None:
    """Rank 1's node killed without notice: rank 0's collective fails and its last heartbeat says error."""
    progress, was, _ = account_restart(Progress(), beat(["a", "b"], error=True), ["a", "c"], 130.0, lost("b"))
    assert was and progress.preemptions == 1
    progress, was, _ = account_restart(Progress(), beat(["a", "b"], error=True), ["a", "b"], 130.0, lost())
    assert not was and progress.preemptions == 0  # both nodes still there: the trainer's own error


@pytest.mark.parametrize(
    "nodes,error,gone,preempted",
    [
        (["a", "b"], False, ("b",), True),  # a worker's node went (drained or killed)
        (["a", "b"], True, ("b",), True),  # rank 0's collective failed with it
        (["a", "b"], True, ("a",), False),  # rank 0 raised; only its own node is in question
        (["a", "b"], False, (), False),  # every node still there: the run's own failure
    ],
)
def test_lost_to_preemption_decides_whether_a_failed_multi_worker_run_is_retried_uncounted(
    nodes: list[str], error: bool, gone: tuple[str, ...], preempted: bool
) -> None:
    assert lost_to_preemption(beat(nodes, error=error), lost(*gone)) is preempted
