"""Ending a search before its trials are done, as a finished search ends (summary, exit status).

- ``run.stop_file``: Ctrl-C needs the driver's terminal and leaves the search interrupted (resumable,
  exit 130); a stop file can be created from anywhere that sees the driver's disk (another shell, a job
  scheduler, a test that has seen the event it waited for): running trials stop after the result they just
  reported, no new trial starts, the summary prints.
- A report the search cannot use (``tuner.trial.runtime.ReportError``: the metric, an objective or the
  time attribute missing, a value that is not a number) fails the same way on every attempt of every
  trial: the search stops at the first one with one line that says what to fix (exit 2), instead of
  retrying each trial ``run.max_failures`` times. So does a trainer that raises before its first report
  in a trial's first attempt and again in its retry (a node lost meanwhile is not counted).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any, Optional

from ray.tune import Callback
from ray.tune.experiment import Trial
from ray.tune.stopper import Stopper

from tuner.run.console import trainer_error
from tuner.trial.runtime import ReportError

EARLY_FAILURES = 2  # a trial's first attempt and its one retry, both failing before any report


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


class FailFast(Callback):
    """Watches trial failures for the errors every attempt of every trial would repeat; ``stopper`` then ends the
    search at once. ``error``: the line that says what to fix."""

    def __init__(self) -> None:
        self.error: Optional[str] = None
        self.stopper = _Tripped(self)
        self.reported: set[str] = set()  # trials that have reported at least once
        self.early: Counter[str] = Counter()  # per trial: attempts the trainer failed before any report

    def on_trial_result(
        self, iteration: int, trials: list[Trial], trial: Trial, result: dict[str, Any], **info: Any
    ) -> None:
        self.reported.add(trial.trial_id)

    def _check(self, trial: Trial) -> None:
        line = trainer_error(trial)
        if self.error is not None or line is None:  # a lost node is not the trainer's error: Tune retries it
            return
        if line.startswith(f"{ReportError.__name__}:"):
            self.error = f"a trial's report cannot be used, so no trial can finish: {line}"
        elif trial.trial_id not in self.reported:
            self.early[trial.trial_id] += 1
            if self.early[trial.trial_id] >= EARLY_FAILURES:
                self.error = f"the trainer failed before its first report, on its retry too: {line}"

    def on_trial_recover(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        self._check(trial)

    def on_trial_error(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        self._check(trial)


class _Tripped(Stopper):
    def __init__(self, watch: FailFast) -> None:
        self.watch = watch

    @property
    def tripped(self) -> bool:
        return self.watch.error is not None

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        return self.tripped

    def stop_all(self) -> bool:
        return self.tripped
