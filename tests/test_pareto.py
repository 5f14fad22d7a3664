"""The Pareto front, by hand."""

from tuner.pareto import dominates, front


def test_the_front_keeps_what_nothing_beats_on_every_objective() -> None:
    points = {"a": (0.9, 3.0), "b": (0.8, 1.0), "c": (0.7, 2.0), "d": (0.9, 4.0), "e": (0.95, 5.0)}
    assert front(points, ["max", "min"]) == ["a", "b", "e"]  # c: b is better and cheaper; d: a is as good, cheaper
    assert front(points, ["min", "max"]) == ["c", "d", "e"]


def test_equal_points_both_stay_and_one_objective_is_the_best() -> None:
    assert front({"a": (1.0, 2.0), "b": (1.0, 2.0)}, ["min", "min"]) == ["a", "b"]
    assert not dominates((1.0, 2.0), (1.0, 2.0), ["min", "min"])
    assert front({"a": (3.0,), "b": (1.0,), "c": (2.0,)}, ["min"]) == ["b"]
