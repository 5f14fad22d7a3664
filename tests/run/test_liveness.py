"""The driver's watch on its own progress: waiting is said once a minute, a stall ends the search, a trial no
node can hold is refused before anything starts."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from ray.tune.experiment import Trial

from tuner.config import ConfigError, LivenessConfig
from tuner.run.liveness import SearchStalled, Watchdog, check_capacity


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def trial(status: str, bundle: dict[str, float] | None = None) -> Any:
    return SimpleNamespace(status=status, placement_group_factory=SimpleNamespace(bundles=[bundle or {"CPU": 1.0}]))


def watchdog(clock: Clock, lines: list[str], num_samples: int = 4) -> Watchdog:
    return Watchdog(
        LivenessConfig(stall_timeout_s=30, status_interval_s=60),
        num_samples,
        free=lambda: {"CPU": 0.0, "GPU": 0.0, "memory": 1e9},
        say=lines.append,
        clock=clock,
    )


def test_a_search_that_suggests_nothing_while_trials_remain_stalls_within_the_timeout() -> None:
    clock, lines = Clock(), []
    dog = watchdog(clock, lines)
    done = [trial(Trial.TERMINATED), trial(Trial.ERROR)]
    dog.on_step_end(0, done)
    clock.now = 29
    dog.on_step_end(1, done)  # a pause between trials is not a stall
    clock.now = 31
    with pytest.raises(SearchStalled, match=r"2 of 4 trials done, none running or pending.*run the same command again"):
        dog.on_step_end(2, done)


def test_progress_resets_the_stall_clock_and_a_finished_search_never_stalls() -> None:
    clock, lines = Clock(), []
    dog = watchdog(clock, lines, num_samples=2)
    dog.on_step_end(0, [trial(Trial.TERMINATED)])
    clock.now = 20
    dog.on_step_end(1, [trial(Trial.TERMINATED), trial(Trial.RUNNING)])
    clock.now = 45
    dog.on_step_end(2, [trial(Trial.TERMINATED), trial(Trial.TERMINATED)])  # all created, all done
    clock.now = 500
    dog.on_step_end(3, [trial(Trial.TERMINATED), trial(Trial.TERMINATED)])
    assert dog.unfinished == 0


def test_waiting_for_capacity_is_said_once_a_minute_with_what_waits_for_what() -> None:
    clock, lines = Clock(), []
    dog = watchdog(clock, lines)
    waiting = [
        trial(Trial.PENDING, {"CPU": 1.0, "GPU": 1.0}),
        trial(Trial.PENDING, {"CPU": 1.0, "GPU": 1.0}),
        trial(Trial.RUNNING),
    ]
    for now in range(0, 150, 5):
        clock.now = now
        dog.on_step_end(now, waiting)
    assert len(lines) == 2  # at 60 s and 120 s
    assert lines[0] == "waiting for capacity (60 s): 2 trial(s) pending (2 x cpu=1 gpu=1), 1 running; free now: nothing"
    assert dog.statuses[Trial.PENDING] == 2 and dog.unfinished == 3  # the last view: what an interrupt leaves


def test_a_trial_no_node_can_hold_is_refused_before_the_search_starts() -> None:
    nodes = [
        {"Alive": True, "Resources": {"CPU": 2.0, "memory": 1e9}},
        {"Alive": False, "Resources": {"CPU": 8.0, "GPU": 1.0}},
    ]
    check_capacity({"CPU": 1.0, "GPU": 0.0}, 1, nodes, "this machine")
    check_capacity({"CPU": 1.0, "GPU": 0.0}, 2, nodes, "this machine")  # two workers fit the 2 CPUs
    with pytest.raises(ConfigError, match=r"no node of this machine fits a trial needing cpu=1 gpu=1 \(nodes: cpu=2\)"):
        check_capacity({"CPU": 1.0, "GPU": 1.0}, 1, nodes, "this machine")  # the dead node does not count
    with pytest.raises(ConfigError, match="fits 3 workers of cpu=1"):
        check_capacity({"CPU": 1.0, "GPU": 0.0}, 3, nodes, "this machine")
