"""What the user reads: a progress line per result and a final table of the best trials."""

from __future__ import annotations

import sys
import time
from typing import Any, Iterable, Optional, TextIO

from ray.tune import Callback
from ray.tune.experiment import Trial


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1e-2 or abs(value) >= 1e4 else f"{value:.4g}"
    return str(value)


def format_params(params: dict[str, Any]) -> str:
    return " ".join(f"{k}={_fmt(v)}" for k, v in sorted(params.items()))


class ProgressPrinter(Callback):
    """One line per reported epoch, one when a trial starts, stops or fails."""

    def __init__(self, metric: str, max_epochs: int, num_samples: int, stream: Optional[TextIO] = None) -> None:
        self.metric, self.max_epochs, self.num_samples = metric, max_epochs, num_samples
        self._stream = stream
        self._index: dict[str, int] = {}
        self._upload_failing: set[str] = set()

    def __getstate__(self) -> dict[str, Any]:  # Tune pickles callbacks; streams don't pickle
        return {k: v for k, v in self.__dict__.items() if k != "_stream"}

    def _print(self, trial: Trial, text: str) -> None:
        n = self._index.setdefault(trial.trial_id, len(self._index) + 1)
        stream = getattr(self, "_stream", None) or sys.stdout
        print(f"{time.strftime('%H:%M:%S')} trial {n:>2}/{self.num_samples} {trial.trial_id}  {text}", file=stream, flush=True)

    def on_trial_start(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        self._print(trial, f"start   {format_params(trial.config)}")

    def on_trial_recover(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        self._print(trial, "retry   (node lost or error): resuming from its latest checkpoint")

    def on_trial_result(self, iteration: int, trials: list[Trial], trial: Trial, result: dict, **info: Any) -> None:
        epoch = result.get("epoch", result.get("training_iteration"))
        self._upload_state(trial, result)
        if result.get("mid_epoch"):
            self._print(
                trial,
                f"checkpoint ({result.get('checkpoint_reason')}) at epoch {epoch} step {result.get('step')}"
                f"  preemptions {result.get('preemptions', 0)}  lost {_fmt(result.get('lost_work_s', 0.0))} s",
            )
            return
        self._print(
            trial,
            f"epoch {epoch:>3}/{self.max_epochs}  {self.metric} {_fmt(result.get(self.metric))}"
            f"  val_loss {_fmt(result.get('val_loss'))}  train_loss {_fmt(result.get('train_loss'))}"
            f"  {_fmt(result.get('epoch_time_s', 0.0))} s/epoch",
        )

    def _upload_state(self, trial: Trial, result: dict) -> None:
        """Say once when a trial's checkpoints stop reaching storage, and once when they do again."""
        if result.get("upload_failures") and trial.trial_id not in self._upload_failing:
            self._upload_failing.add(trial.trial_id)
            self._print(trial, "WARNING checkpoint upload failed: storage unreachable? training goes on, retrying")
        elif not result.get("upload_failures") and trial.trial_id in self._upload_failing:
            self._upload_failing.discard(trial.trial_id)
            self._print(trial, f"checkpoint upload works again (checkpoint at epoch {result.get('epoch')})")

    def on_trial_complete(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        last = trial.last_result or {}
        epochs = last.get("epoch", 0)
        how = "done    " if epochs >= self.max_epochs else "stopped "
        reason = "" if epochs >= self.max_epochs else " (early stopping)"
        self._print(trial, f"{how}after {epochs} epochs{reason}, best {self.metric} {_fmt(last.get('best_' + self.metric, last.get(self.metric)))}")

    def on_trial_error(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        self._print(trial, f"FAILED  see {trial.local_path or trial.path}/error.txt")


def results_table(rows: Iterable[dict[str, Any]], columns: list[str]) -> str:
    """A plain aligned text table."""
    rows = list(rows)
    cells = [[_fmt(r.get(c, "")) for c in columns] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    line = "  ".join(c.ljust(w) for c, w in zip(columns, widths))
    out = [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in cells]
    return "\n".join(out)


def cost_columns(ledger: Any, trial_id: str) -> dict[str, Any]:
    cost = ledger.cost_of(trial_id)
    if not cost.priced:
        return {"cost_usd": "unpriced", "on_demand_usd": "unpriced", "saved_%": ""}
    return {"cost_usd": cost.cost_usd, "on_demand_usd": cost.on_demand_cost_usd, "saved_%": round(cost.savings_pct, 1)}


def cost_summary(ledger: Any, totals: dict[str, float]) -> str:
    """One paragraph: spend, baseline, savings, what preemptions cost, and any caveat."""
    lines = [
        f"cost: ${totals['cost_usd']:.4f} vs ${totals['on_demand_cost_usd']:.4f} on-demand "
        f"({totals['savings_pct']:.1f}% saved), {totals['gpu_hours']:.4f} GPU-hours, "
        f"{int(totals['preemptions'])} preemptions costing ${totals['lost_work_cost_usd']:.4f} of redone work"
    ]
    if "head_cost_usd" in totals:
        lines.append(f"      head ${totals['head_cost_usd']:.4f}, campaign ${totals['campaign_cost_usd']:.4f}")
    if totals.get("head_unpriced"):
        lines.append(f"      head {ledger.head_instance_type}: unpriced (not in the price catalog; pricing.source=aws)")
    if "utilization_pct" in totals:
        lines.append(f"      cluster utilization {totals['utilization_pct']:.0f}% (trial-attributed / node cost)")
    if totals["unpriced_trials"]:
        lines.append(f"      {int(totals['unpriced_trials'])} trial(s) UNPRICED: instance type or price unknown")
    if ledger.assumed_used:
        lines.append(
            f"      nodes without instance labels were priced as one {ledger.cfg.assumed_instance_type} "
            f"({ledger.cfg.assumed_market}, {ledger.cfg.region}) per trial: a local run, not a bill"
        )
    return "\n".join(lines)
