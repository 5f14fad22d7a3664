"""The error every config check raises, and the check itself."""

from __future__ import annotations


class ConfigError(ValueError):
    """A config value that composes but cannot work; the message says what to fix."""


def require(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)
