"""What the user reads while a search runs: one line per trial event, and the cost paragraph.

Plain lines, one per result (not a redrawn table, as Ray's reporter, tqdm or rich would
give): they read the same in a terminal, in CI logs and in ``ray job logs``, and each
line can be grepped by trial id.
"""

from __future__ import annotations

import sys
import time
from typing import Any, Optional, TextIO

from ray.tune import Callback
from ray.tune.experiment import Trial

from tuner.config import SearchConfig
from tuner.result_keys import (
    CHECKPOINT_ONLY,
    CHECKPOINT_REASON,
    REPORTED_AGAIN,
    STEP_HOOK,
    TRAIN_TIME_S,
    UPLOAD_FAILURES,
)
from tuner.text import fmt, params, usd
from tuner.trial.runtime import NOTICE_REASONS, user_metrics
from tuner.trial.trainer import summary_from_error_text

SHOWN_METRICS = 3  # besides the search's metric


def _error_text(trial: Trial) -> str:
    path = trial.error_file
    try:
        return open(path).read() if path else ""
    except OSError:
        return ""


def trainer_error(trial: Trial) -> Optional[str]:
    """The trainer's own line, when the trial's last failure was the trainer raising (not a lost node)."""
    return summary_from_error_text(_error_text(trial))


def error_summary(text: str) -> str:
    """A failed trial's error text as one line: the trainer's own (file and line), else the text's last line (the
    exception Ray raised; the first is Tune's "Failure # N" header)."""
    summary = summary_from_error_text(text)
    if summary:
        return summary
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:200] if lines else "(no error text)"


def error_line(trial: Trial) -> str:
    """The one line of a failed trial's error file."""
    return error_summary(_error_text(trial))


class ProgressPrinter(Callback):
    """A line when a trial starts, reports, checkpoints between reports, retries, stops or fails."""

    def __init__(self, search: SearchConfig, ledger: Any, stream: Optional[TextIO] = None) -> None:
        self.ledger = ledger  # the cost ledger also keeps each trial's best metric
        self.metric, self.time_attr = search.metric, search.time_attr
        self.max_t, self.num_samples = search.max_t, search.tune.num_samples
        self._stream = stream
        self._index: dict[str, int] = {}
        self._upload_failing: set[str] = set()
        self._trained_s: dict[str, float] = {}  # train_time_s at each trial's previous result
        self._warned_unhooked = False

    def __getstate__(self) -> dict[str, Any]:  # Tune pickles callbacks; streams don't pickle
        return {k: v for k, v in self.__dict__.items() if k != "_stream"}

    def _print(self, trial: Trial, text: str) -> None:
        n = self._index.setdefault(trial.trial_id, len(self._index) + 1)
        stream = getattr(self, "_stream", None) or sys.stdout
        print(
            f"{time.strftime('%H:%M:%S')} trial {n:>2}/{self.num_samples} {trial.trial_id}  {text}",
            file=stream,
            flush=True,
        )

    def on_trial_start(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        self._print(trial, f"start   {params(trial.config)}")

    def on_trial_recover(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        why = f"{error_line(trial)}; traceback in {trial.error_file}" if trial.error_file else "node lost"
        self._print(trial, f"retry   ({why}): resuming from its latest checkpoint")

    def on_trial_result(
        self, iteration: int, trials: list[Trial], trial: Trial, result: dict[str, Any], **info: Any
    ) -> None:
        self._upload_state(trial, result)
        progress = f"{self.time_attr} {fmt(result.get(self.time_attr, 0)):>3}/{fmt(self.max_t)}"
        if result.get(CHECKPOINT_ONLY):
            self._print(
                trial,
                f"checkpoint ({result.get('checkpoint_reason')}) at {progress}, between reports"
                f"  preemptions {result.get('preemptions', 0)}  lost {fmt(result.get('lost_work_s', 0.0))} s",
            )
            return
        if not result.get(STEP_HOOK) and not self._warned_unhooked:
            self._warned_unhooked = True
            self._print(
                trial,
                "WARNING the trainer never calls tuner.session.step() (or should_checkpoint()): a spot "
                "notice can only checkpoint at its next report",
            )
        metrics = user_metrics(result)
        value = metrics.get(self.metric)
        others = [k for k in metrics if k not in (self.metric, self.time_attr)][:SHOWN_METRICS]
        trained = float(result.get(TRAIN_TIME_S, 0.0))
        took = trained - self._trained_s.get(trial.trial_id, 0.0)
        self._trained_s[trial.trial_id] = trained
        if result.get(REPORTED_AGAIN):  # nothing was trained for it: it comes from the restored checkpoint
            self._print(
                trial,
                f"{progress}  {self.metric} {fmt(value)}  reported again from its checkpoint "
                "(saved, but its result never reached the driver)",
            )
            return
        notice = result.get(CHECKPOINT_REASON) if result.get(CHECKPOINT_REASON) in NOTICE_REASONS else None
        self._print(
            trial,
            f"{progress}  {self.metric} {fmt(value)}  "
            + "  ".join(f"{k} {fmt(metrics[k])}" for k in others)
            + f"  {fmt(took)} s"
            + (f"  checkpoint ({notice})" if notice else ""),
        )

    def _upload_state(self, trial: Trial, result: dict[str, Any]) -> None:
        """Say once when a trial's checkpoints stop reaching storage, and once when they do again."""
        if result.get(UPLOAD_FAILURES) and trial.trial_id not in self._upload_failing:
            self._upload_failing.add(trial.trial_id)
            self._print(trial, "WARNING checkpoint upload failed: storage unreachable? training goes on, retrying")
        elif not result.get(UPLOAD_FAILURES) and trial.trial_id in self._upload_failing:
            self._upload_failing.discard(trial.trial_id)
            self._print(trial, f"checkpoint upload works again (at {self.time_attr} {result.get(self.time_attr)})")

    def on_trial_complete(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        last = trial.last_result or {}
        reached = last.get(self.time_attr, 0)
        how = "done    " if reached >= self.max_t else "stopped "
        why = "" if reached >= self.max_t else " (early stopping)"
        self._print(
            trial,
            f"{how}at {self.time_attr} {fmt(reached)}{why}, best {self.metric} {fmt(self.ledger.best(trial.trial_id))}",
        )

    def on_trial_error(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        self._print(trial, f"FAILED  {error_line(trial)}  (see {trial.error_file})")


def cost_columns(ledger: Any, trial_id: str) -> dict[str, Any]:
    cost = ledger.cost_of(trial_id)
    if not cost.priced:
        return {"cost": "unpriced", "on_demand": "unpriced", "saved_%": ""}
    return {
        "cost": usd(cost.cost_usd),
        "on_demand": usd(cost.on_demand_cost_usd),
        "saved_%": round(cost.savings_pct, 1),
    }


def cost_summary(ledger: Any, totals: dict[str, float]) -> str:
    """One paragraph: spend, baseline, savings, what preemptions cost, and any caveat."""
    lines = [
        f"cost: {usd(totals['cost_usd'])} vs {usd(totals['on_demand_cost_usd'])} on-demand "
        f"({totals['savings_pct']:.1f}% saved), {fmt(totals['gpu_hours'])} GPU-hours, "
        f"{int(totals['preemptions'])} preemptions costing {usd(totals['lost_work_cost_usd'])} of redone work"
    ]
    if "head_cost_usd" in totals:
        lines.append(f"      head {usd(totals['head_cost_usd'])}, campaign {usd(totals['campaign_cost_usd'])}")
    if totals.get("head_unpriced"):
        lines.append(f"      head {ledger.head_instance_type}: unpriced (not in the price catalog; pricing.source=aws)")
    if "utilization_pct" in totals:
        lines.append(f"      cluster utilization {totals['utilization_pct']:.0f}% (trial-attributed / node cost)")
    if totals["unpriced_trials"]:
        lines.append(f"      {int(totals['unpriced_trials'])} trial(s) UNPRICED: instance type or price unknown")
    if ledger.assumed_used:
        lines.append(
            f"      nodes without instance labels were priced as one {ledger.cfg.assumed_instance_type} "
            f"({ledger.cfg.assumed_market}, {ledger.region}) per trial: a local run, not a bill"
        )
    return "\n".join(lines)
