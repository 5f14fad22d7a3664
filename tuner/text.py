"""How numbers, money and tables read on the console (the driver, the report and the planner share it)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Optional


def fmt(value: Any) -> str:
    """Numbers with 4 significant digits (3 for very small or large ones), whole ones (a step, an epoch)
    in full; anything else as is."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e12:
        return str(int(value))
    if isinstance(value, float):
        return f"{value:.3g}" if value != 0 and (abs(value) < 1e-2 or abs(value) >= 1e4) else f"{value:.4g}"
    return str(value)


def usd(value: Optional[float]) -> str:
    """Money with significant digits: $0.00391 for a small run, $1,234.56 for a large one, - when unknown."""
    if value is None:
        return "-"
    return f"${value:,.2f}" if abs(value) >= 1 else f"${value:.3g}"


def params(values: dict[str, Any]) -> str:
    return " ".join(f"{k}={fmt(v)}" for k, v in sorted(values.items()))


def table(rows: Iterable[dict[str, Any]], columns: list[str]) -> str:
    """A plain left-aligned text table, numbers formatted by :func:`fmt`."""
    cells = [[fmt(r.get(c, "")) for c in columns] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths)), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip() for row in cells]
    return "\n".join(lines)
