"""scripts/bench_search.py's compute-to-target estimators, on hand-made learning curves."""

from __future__ import annotations

import importlib.util

import pytest

from tests.conftest import REPO

_spec = importlib.util.spec_from_file_location("bench_search", REPO / "scripts" / "bench_search.py")
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)

NEVER = [(1.0, 0.5), (2.0, 0.6), (3.0, 0.7), (4.0, 0.8)]  # 1 s per epoch, never reaches 0.9
LATE = [(2.4, 0.8), (4.8, 0.95)]  # 2.4 s per epoch, reaches 0.9 at its 2nd epoch


def test_replay_one_at_a_time_is_the_sum_of_the_trials_before() -> None:
    assert bench.replay([NEVER, LATE], 0.9, slots=1) == pytest.approx(4.0 + 4.8)
    assert bench.replay([LATE, NEVER], 0.9, slots=1) == pytest.approx(4.8)
    assert bench.replay([NEVER, NEVER], 0.9, slots=1) is None


def test_replay_counts_the_trial_running_beside() -> None:
    # Both start at 0: NEVER is done at 4 s, LATE reaches 0.9 at 4.8 s.
    assert bench.replay([NEVER, LATE], 0.9, slots=2) == pytest.approx(4.0 + 4.8)
    # LATE waits for a slot (free at 4 s) and reaches 0.9 at 8.8 s.
    assert bench.replay([NEVER, NEVER, LATE], 0.9, slots=2) == pytest.approx(4.0 + 4.0 + 4.8)
    # The third trial starts at 4 s; training counts at epoch ends, and its first ends after 4.8 s.
    assert bench.replay([LATE, NEVER, NEVER], 0.9, slots=2) == pytest.approx(4.8 + 4.0)


def test_median_over_orders_of_independent_trials() -> None:
    # One at a time, LATE runs first, second or third alike: 4.8, 8.8 or 12.8 s; the median is 8.8.
    assert bench.median_over_orders([NEVER, NEVER, LATE], 0.9, slots=1) == pytest.approx(8.8)
    assert bench.median_over_orders([NEVER, NEVER], 0.9, slots=1) is None


def test_compute_to_target_as_run_follows_the_order_results_came() -> None:
    results = [
        {"trial_id": "a", "wall_s": 1.0, "train_time_s": 1.0, "val_acc": 0.5},
        {"trial_id": "b", "wall_s": 2.0, "train_time_s": 2.0, "val_acc": 0.8},
        {"trial_id": "a", "wall_s": 3.0, "train_time_s": 3.0, "val_acc": 0.95},
        {"trial_id": "b", "wall_s": 4.0, "train_time_s": 4.0, "val_acc": 0.99},
    ]
    assert bench.compute_to_target(results, 0.9) == 3.0 + 2.0
    assert bench.compute_to_target(results, 0.99) == 3.0 + 4.0
    assert bench.compute_to_target(results, 1.0) is None
    assert bench.learning_curves(results) == [[(1.0, 0.5), (3.0, 0.95)], [(2.0, 0.8), (4.0, 0.99)]]
