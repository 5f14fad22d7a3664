"""Ending a search from outside, gracefully: a file that appears (``run.stop_file``).

Ctrl-C needs the driver's terminal and leaves the search interrupted (resumable, exit 130); a stop file
can be created from anywhere that sees the driver's disk (another shell, a job scheduler, a test that
has seen the event it waited for), and ends the search as done: running trials stop after the result
they just reported, no new trial starts, the summary prints and the exit status is as for a finished
search.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ray.tune.stopper import Stopper


class StopFile(Stopper):
    """Stops every trial, and the search, once ``path`` exists (checked at each result: one ``stat``)."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)
        self.tripped = False

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        return self.stop_all()

    def stop_all(self) -> bool:
        if not self.tripped and self.path.exists():
            self.tripped = True
            print(f"stop file {self.path} exists (run.stop_file): stopping the search after the results in hand")
        return self.tripped
