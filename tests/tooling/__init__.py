"""Test tooling (not installed with the product): fault injection for tests, benchmarks and ``scripts/chaos.py``,
and the CLI command as a user runs it."""

import sys

TUNER_RUN = (sys.executable, "-m", "tuner.run")  # the CLI as a user runs it, in this environment
