"""Numbers on the console: significant digits, whole numbers in full."""

from __future__ import annotations

import pytest

from tuner.text import fmt, usd


@pytest.mark.parametrize(
    "value,shown",
    [
        (15000.0, "15000"),
        (10500.0, "10500"),
        (0.0, "0"),
        (0.62814, "0.6281"),
        (0.004321, "0.00432"),
        (123456.7, "1.23e+05"),
        (3, "3"),
        ("tpe", "tpe"),
    ],
)
def test_fmt(value: object, shown: str) -> None:
    assert fmt(value) == shown


def test_usd() -> None:
    assert (usd(0.012934), usd(1234.5), usd(None)) == ("$0.0129", "$1,234.50", "-")
