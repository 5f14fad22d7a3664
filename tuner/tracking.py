"""MLflow tracking as a Tune callback: one parent run per search, one child run per trial.

Runs are found again by tags (``tuner.experiment_path``, ``tuner.trial_id``), so a
retried trial or a resumed search continues its own runs instead of duplicating
them. Tracking is never fatal: an unreachable server gives one warning and the
search goes on; the summary says how many updates were lost.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any, Callable, Optional

from ray.tune import Callback
from ray.tune.experiment import Trial

from tuner.config import TrackingConfig

log = logging.getLogger(__name__)

TAG_EXPERIMENT = "tuner.experiment_path"
TAG_TRIAL = "tuner.trial_id"
TAG_CHECKPOINT = "tuner.checkpoint"
TAG_PARENT = "mlflow.parentRunId"
# Numeric results worth a chart; Tune's bookkeeping fields are left out.
EPOCH_KEYS = ("train_loss", "val_loss", "val_acc", "best_val_acc", "lr", "epoch_time_s", "train_time_s")
INTERRUPTION_KEYS = ("preemptions", "restarts", "lost_work_s", "recovery_s", "checkpoint_interval_s")


def _numeric(result: dict[str, Any]) -> dict[str, float]:
    """Metrics to log: a mid-epoch (checkpoint-only) result repeats the last epoch's, so only its counters."""
    keys = INTERRUPTION_KEYS if result.get("mid_epoch") else EPOCH_KEYS + INTERRUPTION_KEYS
    return {
        k: float(result[k]) for k in keys if isinstance(result.get(k), (int, float)) and math.isfinite(float(result[k]))
    }


def ui_command(tracking_uri: str) -> str:
    """The command that opens the MLflow UI on this store."""
    if tracking_uri.startswith(("http://", "https://")):
        return f"open {tracking_uri}"
    return f"mlflow ui --host 127.0.0.1 --backend-store-uri {tracking_uri}"


class MLflowTracker(Callback):
    """Mirror a Tune experiment into MLflow from the driver."""

    def __init__(
        self, cfg: TrackingConfig, experiment_path: str, params: dict[str, Any], resume: bool, ledger: Any = None
    ) -> None:
        self.cfg = cfg
        self.ledger = ledger  # a tuner.cost.CostLedger: its per-trial costs go on the child runs
        self.experiment_path = experiment_path
        self.params = params
        self.resume = resume
        self.client: Any = None
        self.parent_id: Optional[str] = None
        self.experiment_id: Optional[str] = None
        self._children: dict[str, str] = {}
        self.failed_calls = 0
        self._warned = False

    # -- plumbing ---------------------------------------------------------------
    def _call(self, what: str, fn: Callable[[], Any]) -> Any:
        """Run one MLflow call; on failure warn once, count it, and carry on."""
        if self.client is None:
            return None
        try:
            return fn()
        except Exception as exc:  # any transport or server error must not stop tuning
            self.failed_calls += 1
            if not self._warned:
                self._warned = True
                log.warning(
                    "MLflow at %s failed (%s: %s); tuning continues, tracking updates are being skipped",
                    self.cfg.tracking_uri,
                    what,
                    str(exc).splitlines()[0][:200],
                )
            return None

    def connect(self) -> bool:
        """Open the store and the parent run; False (with one warning) when unreachable."""
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(self.cfg.request_timeout_s))
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
        from mlflow.tracking import MlflowClient

        try:
            client = MlflowClient(tracking_uri=self.cfg.tracking_uri)
            experiment = client.get_experiment_by_name(self.cfg.experiment_name)
            local_store = not self.cfg.tracking_uri.startswith(("http://", "https://", "databricks"))
            artifacts = Path(self.cfg.artifact_location).absolute().as_uri() if local_store else None
            self.experiment_id = (
                experiment.experiment_id
                if experiment
                else client.create_experiment(self.cfg.experiment_name, artifact_location=artifacts)
            )
        except Exception as exc:
            log.warning(
                "MLflow at %s is unreachable (%s); the search runs without tracking",
                self.cfg.tracking_uri,
                str(exc).splitlines()[0][:200],
            )
            return False
        self.client = client
        self.parent_id = self._find_parent() if self.resume else None
        if self.parent_id is None:
            run = client.create_run(
                self.experiment_id, run_name=self.cfg.experiment_name, tags={TAG_EXPERIMENT: self.experiment_path}
            )
            self.parent_id = run.info.run_id
            self._call("log search params", lambda: self._log_params(self.parent_id, self.params))
        else:
            self._call("reopen parent run", lambda: client.update_run(self.parent_id, status="RUNNING"))
        return True

    def _find_parent(self) -> Optional[str]:
        runs = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.`{TAG_EXPERIMENT}` = '{self.experiment_path}'",
            order_by=["attributes.start_time DESC"],
            max_results=1,
        )
        return runs[0].info.run_id if runs else None

    def _log_params(self, run_id: str, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        self.client.log_batch(run_id, params=[Param(k, str(v)[:6000]) for k, v in params.items()])

    def _child(self, trial: Trial) -> Optional[str]:
        if trial.trial_id in self._children:
            return self._children[trial.trial_id]

        def find_or_create() -> str:
            runs = self.client.search_runs(
                [self.experiment_id],
                filter_string=f"tags.`{TAG_TRIAL}` = '{trial.trial_id}' and tags.`{TAG_PARENT}` = '{self.parent_id}'",
                max_results=1,
            )
            if runs:
                return runs[0].info.run_id
            run = self.client.create_run(
                self.experiment_id,
                run_name=str(trial),
                tags={TAG_TRIAL: trial.trial_id, TAG_PARENT: self.parent_id},
            )
            self._log_params(run.info.run_id, trial.config)
            return run.info.run_id

        run_id = self._call("open trial run", find_or_create)
        if run_id:
            self._children[trial.trial_id] = run_id
        return run_id

    # -- Tune callback hooks ----------------------------------------------------
    def on_trial_start(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        run_id = self._child(trial)
        if run_id:
            self._call("mark trial running", lambda: self.client.update_run(run_id, status="RUNNING"))

    def on_trial_result(self, iteration: int, trials: list[Trial], trial: Trial, result: dict, **info: Any) -> None:
        run_id = self._child(trial)
        if not run_id:
            return
        from mlflow.entities import Metric

        step = int(result.get("epoch", result.get("training_iteration", 0)))
        ts = int(result.get("timestamp", 0) * 1000)
        metrics = [Metric(k, v, ts, step) for k, v in _numeric(result).items()]
        self._call("log metrics", lambda: self.client.log_batch(run_id, metrics=metrics))

    def _finish(self, trial: Trial, status: str) -> None:
        run_id = self._child(trial)
        if not run_id:
            return
        ckpt = trial.checkpoint
        if ckpt is not None:
            scheme = "s3://" if type(ckpt.filesystem).__name__ == "S3FileSystem" else ""
            self._call("tag checkpoint", lambda: self.client.set_tag(run_id, TAG_CHECKPOINT, scheme + ckpt.path))
        if self.ledger is not None:
            from mlflow.entities import Metric, RunTag

            metrics = [Metric(k, v, 0, 0) for k, v in self.ledger.trial_metrics(trial.trial_id).items()]
            tags = [RunTag(k, v) for k, v in self.ledger.trial_tags(trial.trial_id).items()]
            self._call("log trial cost", lambda: self.client.log_batch(run_id, metrics=metrics, tags=tags))
        self._call("close trial run", lambda: self.client.set_terminated(run_id, status))

    def on_trial_complete(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        self._finish(trial, "FINISHED")

    def on_trial_error(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        self._finish(trial, "FAILED")

    def close(self, summary: dict[str, float], status: str) -> None:
        """Log the search's totals (and the cost ledger as CSV + plot) on the parent run and close it."""
        if self.client is None or self.parent_id is None:
            return
        import tempfile

        from mlflow.entities import Metric

        parent = self.parent_id
        metrics = [Metric(k, float(v), 0, 0) for k, v in summary.items()]
        self._call("log summary", lambda: self.client.log_batch(parent, metrics=metrics))
        if self.ledger is not None and self.ledger.trials:
            with tempfile.TemporaryDirectory() as d:
                ledger_csv, plot = Path(d) / "cost_ledger.csv", Path(d) / "accuracy_vs_cost.png"
                ledger_csv.write_text(self.ledger.csv())
                self.ledger.plot(str(plot))
                for path in (ledger_csv, plot):
                    self._call("log artifact", lambda p=path: self.client.log_artifact(parent, str(p)))
        self._call("close search run", lambda: self.client.set_terminated(parent, status))
