"""The searcher: Optuna's ask-and-tell behind Tune's Searcher interface, restored consistently.

Tune keeps a search's state in three files (the trial list, the search generator's
counters, the searcher's pickle) that one background sync uploads; a sync that fails
half-way can leave storage with a newer trial list beside an older searcher. Restoring
them as they are can leave a trial "live" in the searcher that no longer exists, and then
the search waits forever for a slot. So on every restore the searcher's view is rebuilt
from the restored trial list, the one record Tune resumes the trials from: the number of
trials created, the live ones (which hold the concurrency slots), and what Optuna was told.
"""

from __future__ import annotations

import logging
import math
import pickle
import threading
from collections.abc import Callable, Sequence
from typing import Any, Optional

import optuna
from ray import cloudpickle
from ray.tune import ExperimentAnalysis
from ray.tune.experiment import Trial
from ray.tune.search import Searcher, SearchGenerator

from tuner import _ray
from tuner.result_keys import ITERATION

log = logging.getLogger(__name__)

Space = Callable[[optuna.Trial], Optional[dict[str, Any]]]
optuna.logging.set_verbosity(optuna.logging.WARNING)  # one line per trial from Optuna would drown ours


def finite_values(result: Optional[dict[str, Any]], metrics: Sequence[str]) -> Optional[list[float]]:
    """The result's value of each metric, or None when one is missing or not finite."""
    values = [(result or {}).get(m) for m in metrics]
    if any(not isinstance(v, (int, float)) or not math.isfinite(v) for v in values):
        return None
    return [float(v) for v in values]  # type: ignore[arg-type]


def full_budget_values(
    result: Optional[dict[str, Any]], metrics: Sequence[str], time_attr: str, max_t: float
) -> Optional[list[float]]:
    """A multi-objective trial's values, comparable only once it trained its whole budget (a trial stopped
    early had its cost cut short with its training); None otherwise."""
    if float((result or {}).get(time_attr, 0)) < max_t:
        return None
    return finite_values(result, metrics)


_LOCKS = (type(threading.Lock()), type(threading.RLock()))


class _LockPickler(pickle.Pickler):
    """Pickles a study whose sampler holds a lock (Optuna 5's NSGA-II does): a new lock on load."""

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, _LOCKS):
            return (threading.RLock if "RLock" in type(obj).__name__ else threading.Lock), ()
        return NotImplemented


class OptunaSearcher(Searcher):
    """A define-by-run Optuna space searched by any Optuna sampler, ``max_concurrent`` trials at a time.

    ``metrics``/``modes`` of length > 1: a multi-objective study (NSGA-II, TPE). There a trial the
    scheduler stopped before ``max_t`` of ``time_attr`` is told as pruned: its cost was cut short with
    its training, and told as complete it would crowd the Pareto front with cheap, unfinished trials."""

    def __init__(
        self,
        space: Space,
        metrics: Sequence[str],
        modes: Sequence[str],
        sampler: Any,
        max_concurrent: int,
        time_attr: str = ITERATION,
        max_t: float = 0.0,
    ) -> None:
        super().__init__(metric=metrics[0], mode=modes[0])
        self.space, self.metrics, self.max_concurrent = space, list(metrics), max_concurrent
        self.time_attr, self.max_t = time_attr, max_t
        directions = ["maximize" if m == "max" else "minimize" for m in modes]
        self.study = optuna.create_study(sampler=sampler, directions=directions)
        self.live: dict[str, optuna.Trial] = {}  # Tune trial id -> the Optuna trial it runs
        self.told: set[str] = set()

    def set_search_properties(
        self, metric: Optional[str], mode: Optional[str], config: dict[str, Any], **spec: Any
    ) -> bool:
        return True  # metric and mode come from the search config, already set

    def _ask(self, params: Optional[dict[str, Any]] = None) -> tuple[optuna.Trial, dict[str, Any]]:
        if params is not None:
            self.study.enqueue_trial(params, skip_if_exists=False)
        trial = self.study.ask()
        fixed = self.space(trial) or {}
        return trial, {**trial.params, **fixed}

    def suggest(self, trial_id: str) -> Optional[dict[str, Any]]:
        if len(self.live) >= self.max_concurrent:
            return None  # Tune asks again at its next step
        trial, config = self._ask()
        self.live[trial_id] = trial
        return config

    def _values(self, result: Optional[dict[str, Any]]) -> Optional[list[float]]:
        if len(self.metrics) > 1:
            return full_budget_values(result, self.metrics, self.time_attr, self.max_t)  # stopped early: pruned
        return finite_values(result, self.metrics)

    def on_trial_complete(self, trial_id: str, result: Optional[dict[str, Any]] = None, error: bool = False) -> None:
        trial = self.live.pop(trial_id, None)
        if trial is None or trial_id in self.told:
            return
        self._tell(trial, self._values(result), error)
        self.told.add(trial_id)

    def _tell(self, trial: optuna.Trial, values: Optional[list[float]], error: bool) -> None:
        if values is None:
            state = optuna.trial.TrialState.FAIL if error else optuna.trial.TrialState.PRUNED
            self.study.tell(trial, state=state)
        else:
            self.study.tell(trial, values if len(values) > 1 else values[0])

    def reconcile(self, trials: Sequence[Trial]) -> None:
        """Make the searcher agree with Tune's restored trial list (see the module's docstring)."""
        known = {t.trial_id: t for t in trials}
        for trial_id in [tid for tid in self.live if tid not in known]:
            log.warning("searcher: trial %s was suggested but is in no restored trial list; dropped", trial_id)
            self.study.tell(self.live.pop(trial_id), state=optuna.trial.TrialState.FAIL)
        for t in trials:
            if t.trial_id in self.told:
                continue
            if t.status == Trial.TERMINATED:
                trial = self.live.pop(t.trial_id, None) or self._ask(t.config)[0]
                self._tell(trial, self._values(t.last_result), error=False)
                self.told.add(t.trial_id)
            elif t.trial_id not in self.live:  # unfinished (errored ones resume too): it holds a slot
                self.live[t.trial_id] = self._ask(t.config)[0]

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as f:
            _LockPickler(f).dump(dict(self.__dict__))

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            self.__dict__.update(pickle.load(f))


class ConsistentSearch(SearchGenerator):
    """Tune's search generator whose restore ends with the searcher reconciled to the trial list.

    It restores its own counters and the searcher separately (either file may be missing or stale),
    then takes the number of trials created and the searcher's view from the trial list."""

    searcher: OptunaSearcher

    def has_checkpoint(self, dirpath: str) -> bool:
        return True  # restore_from_dir rebuilds whatever is missing

    def restore_from_dir(self, dirpath: str) -> None:
        saved = _ray.search_generator_state_files(self, dirpath)
        if saved:
            self.set_state({k: v for k, v in cloudpickle.loads(saved[-1].read_bytes()).items() if ":" not in k})
        else:
            log.warning("no search generator state in %s: the search finishes the trials it has", dirpath)
        try:
            self.searcher.restore_from_dir(dirpath)
        except (RuntimeError, OSError, EOFError, pickle.UnpicklingError, KeyError) as exc:
            log.warning("searcher state in %s is unreadable (%s); rebuilding it from the trial list", dirpath, exc)
        _ray.quiet_experiment_analysis()  # it also reads every trial's results, absent from this directory
        trials = ExperimentAnalysis(dirpath).trials
        state = self.get_state()
        counter, finished = _ray.SEARCH_GENERATOR_COUNTER, _ray.SEARCH_GENERATOR_FINISHED
        if state[counter] != len(trials):
            log.warning(
                "searcher: %d trials created by its saved counter, %d in the trial list; using the list",
                state[counter],
                len(trials),
            )
        self.set_state({**state, counter: len(trials), finished: state[finished] or not saved})
        self.searcher.reconcile(trials)
