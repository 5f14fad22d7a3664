"""Pure search spaces: each module defines ``space(trial)`` for OptunaSearch."""
