"""The Pareto front: the points no other point beats on every objective at once."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import TypeVar

K = TypeVar("K", bound=Hashable)


def dominates(a: Sequence[float], b: Sequence[float], modes: Sequence[str]) -> bool:
    """``a`` is at least as good as ``b`` on every objective and better on one."""
    signs = [1.0 if m == "max" else -1.0 for m in modes]
    at_least = all(s * x >= s * y for s, x, y in zip(signs, a, b))
    return at_least and any(s * x > s * y for s, x, y in zip(signs, a, b))


def front(points: Mapping[K, Sequence[float]], modes: Sequence[str]) -> list[K]:
    """The keys of the non-dominated points, in the order given (O(n^2): a search has few trials)."""
    return [k for k, p in points.items() if not any(dominates(q, p, modes) for q in points.values())]
