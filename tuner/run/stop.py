"""Ending a search before its trials are done, as a finished search ends (summary, exit status).

- ``run.stop_file``: Ctrl-C needs the driver's terminal and leaves the search interrupted (resumable,
  exit 130); a stop file can be created from anywhere that sees the driver's disk (another shell, a job
  scheduler, a test that has seen the event it waited for): running trials stop after the result they just
  reported, no new trial starts, the summary prints.
- A report the search cannot use (``tuner.trial.runtime.ReportError``: the metric, an objective or the
  time attribute missing, a value that is not a number) fails the same way on every attempt of every
  trial: the search stops at the first one with one line that says what to fix (exit 2), instead of
  retrying each trial ``run.max_failures`` times.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from ray.tune import Callback
from ray.tune.experiment import Trial
from ray.tune.stopper import Stopper

from tuner.run.console import error_line
from tuner.trial.runtime import ReportError


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


class BadReports(Callback):
    """Watches trial failures for a :class:`ReportError`; ``stopper`` then ends the search at once."""

    def __init__(self) -> None:
        self.error: Optional[str] = None  # the first such failure's line
        self.stopper = _Tripped(self)

    def _check(self, trial: Trial) -> None:
        if self.error is None and trial.error_file:
            line = error_line(trial)
            if line.startswith(f"{ReportError.__name__}:"):
                self.error = line

    def on_trial_recover(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        self._check(trial)

    def on_trial_error(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        self._check(trial)


class _Tripped(Stopper):
    def __init__(self, watch: BadReports) -> None:
        self.watch = watch

    @property
    def tripped(self) -> bool:
        return self.watch.error is not None

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        return self.tripped

    def stop_all(self) -> bool:
        return self.tripped
