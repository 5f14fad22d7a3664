"""The driver (``python -m tuner.run``): composes a search, runs it on Ray Tune, reports and tracks it."""
