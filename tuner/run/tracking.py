"""MLflow tracking as a Tune callback: one parent run per search, one child run per trial.

Runs are found again by tags (``tuner.experiment_path``, ``tuner.trial_id``), so a
retried trial or a resumed search continues its own runs instead of duplicating
them. Tracking is never fatal: an unreachable server gives one warning and the
search goes on; the summary says how many updates were lost.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Optional

import pandas as pd
from ray.tune import Callback
from ray.tune.experiment import Trial

from tuner.config import TrackingConfig
from tuner.result_keys import (
    CHECKPOINT_INTERVAL_S,
    CHECKPOINT_ONLY,
    COST_USD,
    LOST_WORK_S,
    ON_DEMAND_COST_USD,
    PREEMPTIONS,
    RECOVERY_S,
    RESTARTS,
    SAVINGS_PCT,
    TRAIN_TIME_S,
    WALL_S,
)
from tuner.run.console import error_line
from tuner.run.storage import checkpoint_uri
from tuner.text import fmt
from tuner.trial.runtime import user_metrics

log = logging.getLogger(__name__)

TAG_EXPERIMENT = "tuner.experiment_path"
TAG_TRIAL = "tuner.trial_id"
TAG_CHECKPOINT = "tuner.checkpoint"
TAG_PARENT = "mlflow.parentRunId"
TAG_ERROR = "tuner.error"
RETRY_S = 2.0  # while MLflow is unreachable, the sender tries again this often
UI_DEFAULT_URL = "http://127.0.0.1:5000"  # mlflow ui's default host and port
TRIALS_TABLE = "trials.html"  # on the parent run: every trial's objectives, cost, savings, preemptions
FRONT_ROW_COLOUR = "#ffd2d2"  # the Pareto front's rows in the trials table
TAG_PARETO = "tuner.pareto"  # "true" on the runs of a multi-objective search's Pareto front
PLATFORM_METRICS = (PREEMPTIONS, RESTARTS, LOST_WORK_S, RECOVERY_S, CHECKPOINT_INTERVAL_S, TRAIN_TIME_S)

_opening: dict[str, threading.Thread] = {}  # tracking URI -> the thread opening its store (open_store_early)


def open_store_early(cfg: TrackingConfig) -> None:
    """Open the tracking store on a thread while Ray starts: a new SQLite store runs its schema migrations,
    seconds the driver would otherwise spend after Ray is up. MLflow keeps the store by URI, so
    ``MLflowTracker.connect`` (which waits for this thread) finds it open; an error is left for it to report."""
    if not cfg.enabled or cfg.tracking_uri in _opening:
        return

    def open_store() -> None:
        from mlflow.tracking import MlflowClient

        with contextlib.suppress(Exception):
            MlflowClient(tracking_uri=cfg.tracking_uri)

    _opening[cfg.tracking_uri] = threading.Thread(target=open_store, name="mlflow-open", daemon=True)
    _opening[cfg.tracking_uri].start()


def _numeric(result: dict[str, Any]) -> dict[str, float]:
    """Metrics to log: everything the trainer reported, and the platform's counters. A result that only
    carries a checkpoint taken between reports repeats the last report's metrics: only its counters."""
    values = {} if result.get(CHECKPOINT_ONLY) else user_metrics(result)
    values.update({k: float(result[k]) for k in PLATFORM_METRICS if isinstance(result.get(k), (int, float))})
    return {k: v for k, v in values.items() if math.isfinite(v)}


def experiment_id(client: Any, cfg: TrackingConfig) -> str:
    """``cfg.experiment_name``'s id, creating it if missing (artifacts beside a local store; servers keep their own)."""
    experiment = client.get_experiment_by_name(cfg.experiment_name)
    if experiment is not None:
        return str(experiment.experiment_id)
    local_store = not cfg.tracking_uri.startswith(("http://", "https://", "databricks"))
    artifacts = Path(cfg.artifact_location).absolute().as_uri() if local_store else None
    return str(client.create_experiment(cfg.experiment_name, artifact_location=artifacts))


def ui_command(tracking_uri: str) -> str:
    """The command that opens the MLflow UI on this store."""
    if tracking_uri.startswith(("http://", "https://")):
        return f"open {tracking_uri}"
    return f"mlflow ui --host 127.0.0.1 --backend-store-uri {tracking_uri}"


def ui_url(tracking_uri: str) -> str:
    """Where the MLflow UI of this store answers: the server itself, or ``mlflow ui``'s default address."""
    return tracking_uri.rstrip("/") if tracking_uri.startswith(("http://", "https://")) else UI_DEFAULT_URL


class MLflowTracker(Callback):
    """Mirror a Tune experiment into MLflow from the driver."""

    def __init__(
        self,
        cfg: TrackingConfig,
        experiment_path: str,
        params: dict[str, Any],
        resume: bool,
        time_attr: str,
        ledger: Any = None,
    ) -> None:
        self.cfg, self.time_attr = cfg, time_attr
        self.ledger = ledger  # a tuner.cost.CostLedger: its per-trial costs go on the child runs
        self.experiment_path = experiment_path
        self.params = params
        self.resume = resume
        self.client: Any = None
        self.parent_id: Optional[str] = None
        self.experiment_id: Optional[str] = None
        self._children: dict[str, str] = {}
        # Updates wait here, in order, until the sender thread gets them through (the driver's loop never
        # waits on MLflow); while the server is unreachable they stay, and go when it is back.
        self._outbox: deque[tuple[str, Optional[Trial], Callable[[str], Any]]] = deque()
        self._down = False
        self._sender: Optional[threading.Thread] = None
        self._wake = threading.Event()
        self._stopping = False

    def __getstate__(self) -> dict[str, Any]:  # Tune pickles its callbacks with the experiment
        return {**self.__dict__, "client": None, "_outbox": deque(), "_sender": None, "_wake": None}

    # -- plumbing ---------------------------------------------------------------
    @property
    def unsent(self) -> list[str]:
        """What could not be logged (after :meth:`close`: lost for good)."""
        return [what for what, _, _ in self._outbox]

    def _submit(self, what: str, trial: Optional[Trial], op: Callable[[str], Any]) -> None:
        """Queue one update of the parent run (trial None) or of a trial's run; send all that can go."""
        if self.client is None:
            return
        self._outbox.append((what, trial, op))
        if self._sender is None:
            self._flush()
        else:
            self._wake.set()

    def _send(self) -> None:
        """The sender thread: flush on every new update, retry every RETRY_S while the server is down."""
        while not self._stopping:
            self._wake.wait(RETRY_S)
            self._wake.clear()
            self._flush()

    def _stop_sender(self) -> None:
        if self._sender is not None:
            self._stopping = True
            self._wake.set()
            self._sender.join()
            self._sender = None

    def _flush(self) -> bool:
        while self._outbox:
            what, trial, op = self._outbox[0]
            try:
                op(self._child(trial) if trial is not None else str(self.parent_id))
            except Exception as exc:  # any transport or server error must not stop tuning
                if not self._down:
                    self._down = True
                    log.warning(
                        "MLflow at %s is unreachable (%s: %s); tuning continues, updates are kept until it is back",
                        self.cfg.tracking_uri,
                        what,
                        str(exc).splitlines()[0][:200],
                    )
                return False
            self._outbox.popleft()
        if self._down:
            self._down = False
            log.warning("MLflow at %s is back: sent the updates kept during the outage", self.cfg.tracking_uri)
        return True

    def connect(self) -> bool:
        """Open the store and the parent run; False (with one warning) when unreachable."""
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(self.cfg.request_timeout_s))
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
        logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)  # one warning of ours, not one per retry
        from mlflow.tracking import MlflowClient

        if (opening := _opening.pop(self.cfg.tracking_uri, None)) is not None:
            opening.join()

        try:
            client = MlflowClient(tracking_uri=self.cfg.tracking_uri)
            self.experiment_id = experiment_id(client, self.cfg)
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
            self._submit("log search params", None, lambda rid: self._log_params(rid, self.params))
        else:
            self._submit("reopen search run", None, lambda rid: client.update_run(rid, status="RUNNING"))
        self._sender = threading.Thread(target=self._send, name="mlflow-sender", daemon=True)
        self._sender.start()
        return True

    def _find_parent(self) -> Optional[str]:
        runs = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.`{TAG_EXPERIMENT}` = '{self.experiment_path}'",
            order_by=["attributes.start_time DESC"],
            max_results=1,
        )
        return runs[0].info.run_id if runs else None

    def _log_artifact(self, run_id: str, path: str) -> None:
        self.client.log_artifact(run_id, path)

    def _tag_run(self, parent_id: str, trial_id: str, key: str, value: str = "true") -> None:
        run_id = self._found(trial_id)
        if run_id is not None:
            self.client.set_tag(run_id, key, value)

    def _log_params(self, run_id: str, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        self.client.log_batch(run_id, params=[Param(k, str(v)[:6000]) for k, v in params.items()])

    def _found(self, trial_id: str) -> Optional[str]:
        """The trial's run, by this tracker's memory or by tag (after a retry or a driver restart)."""
        if trial_id not in self._children:
            runs = self.client.search_runs(
                [self.experiment_id],
                filter_string=f"tags.`{TAG_TRIAL}` = '{trial_id}' and tags.`{TAG_PARENT}` = '{self.parent_id}'",
                max_results=1,
            )
            if not runs:
                return None
            self._children[trial_id] = runs[0].info.run_id
        return self._children[trial_id]

    def _child(self, trial: Trial) -> str:
        """The trial's run: found again, else created."""
        if self._found(trial.trial_id) is None:
            run_id = self.client.create_run(
                self.experiment_id, run_name=str(trial), tags={TAG_TRIAL: trial.trial_id, TAG_PARENT: self.parent_id}
            ).info.run_id
            self._log_params(run_id, trial.config)
            self._children[trial.trial_id] = run_id
        return self._children[trial.trial_id]

    # -- Tune callback hooks ----------------------------------------------------
    def on_trial_start(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        self._submit("mark trial running", trial, lambda rid: self.client.update_run(rid, status="RUNNING"))

    def on_trial_result(
        self, iteration: int, trials: list[Trial], trial: Trial, result: dict[str, Any], **info: Any
    ) -> None:
        from mlflow.entities import Metric

        step = int(result.get(self.time_attr, result.get("training_iteration", 0)))
        ts = int(result.get(WALL_S, result.get("timestamp", 0)) * 1000)  # Tune's timestamp is whole seconds
        metrics = [Metric(k, v, ts, step) for k, v in _numeric(result).items()]
        self._submit("log metrics", trial, lambda rid: self.client.log_batch(rid, metrics=metrics))

    def _finish(self, trial: Trial, status: str) -> None:
        uri = checkpoint_uri(trial.checkpoint, trial.last_result or {}, self.experiment_path)
        if uri is not None:
            self._submit("tag checkpoint", trial, lambda rid: self.client.set_tag(rid, TAG_CHECKPOINT, uri))
        if self.ledger is not None:
            from mlflow.entities import Metric, RunTag

            metrics = [Metric(k, v, 0, 0) for k, v in self.ledger.trial_metrics(trial.trial_id).items()]
            tags = [RunTag(k, v) for k, v in self.ledger.trial_tags(trial.trial_id).items()]
            self._submit("log trial cost", trial, lambda rid: self.client.log_batch(rid, metrics=metrics, tags=tags))
        self._submit("close trial run", trial, lambda rid: self.client.set_terminated(rid, status))

    def tag_trial(self, trial: Trial, tags: dict[str, str]) -> None:
        """Tags on the trial's run (e.g. where the placement put it, and why)."""
        from mlflow.entities import RunTag

        batch = [RunTag(k, v[:5000]) for k, v in tags.items()]
        self._submit("tag trial", trial, lambda rid: self.client.log_batch(rid, tags=batch))

    def record_event(self, tags: dict[str, str], metrics: dict[str, float]) -> None:
        """Tags and timestamped metrics on the parent run (e.g. price guard events)."""
        from mlflow.entities import Metric, RunTag

        now_ms = int(time.time() * 1000)
        batch = {
            "metrics": [Metric(k, v, now_ms, 0) for k, v in metrics.items()],
            "tags": [RunTag(k, v) for k, v in tags.items()],
        }
        self._submit("log event", None, lambda rid: self.client.log_batch(rid, **batch))

    def on_trial_complete(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        self._finish(trial, "FINISHED")

    def on_trial_error(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        line = error_line(trial)
        self._submit("tag error", trial, lambda rid: self.client.set_tag(rid, TAG_ERROR, line))
        if trial.error_file and os.path.isfile(trial.error_file):  # the whole traceback, beside its one line
            self._submit("log error.txt", trial, functools.partial(self._log_artifact, path=trial.error_file))
        self._finish(trial, "FAILED")

    def links(self) -> list[str]:
        """Console lines that lead to this search in the MLflow UI: the experiment's runs page (MLflow 3
        opens an experiment on its GenAI overview) and the parent run's table of every trial."""
        if self.experiment_id is None or self.parent_id is None:
            return []
        base = f"{ui_url(self.cfg.tracking_uri)}/#/experiments/{self.experiment_id}"
        return [
            f"MLflow:         {ui_command(self.cfg.tracking_uri)}",
            f"  runs:         {base}/runs",
            f"  all trials:   {base}/runs/{self.parent_id}/artifactPath/{TRIALS_TABLE}",
        ]

    def close(
        self,
        summary: dict[str, float],
        status: str,
        told: Optional[dict[str, dict[str, float]]] = None,
        front: Sequence[str] = (),
    ) -> None:
        """Log the search's totals (and the cost ledger as CSV + plot, the trials' table, a multi-objective
        search's Pareto front: ``told`` objective values per trial, ``front`` its trials) on the parent run
        and close it."""
        if self.client is None or self.parent_id is None:
            return

        self._stop_sender()  # what is still queued goes out now, in order, from this thread
        from mlflow.entities import Metric

        metrics = [Metric(k, float(v), 0, 0) for k, v in summary.items()]
        self._submit("log search totals", None, lambda rid: self.client.log_batch(rid, metrics=metrics))
        for trial_id in front:  # looked up when sent: runs of trials from before a driver restart too
            self._submit("tag Pareto front", None, functools.partial(self._tag_run, trial_id=trial_id, key=TAG_PARETO))
        if self.ledger is not None and self.ledger.trials:
            with tempfile.TemporaryDirectory() as d:
                files = {name: Path(d) / name for name in ("cost_ledger.csv", "metric_vs_cost.png", TRIALS_TABLE)}
                files["cost_ledger.csv"].write_text(self.ledger.csv())
                self.ledger.plot(str(files["metric_vs_cost.png"]), marked=list(front) if front else None)
                files[TRIALS_TABLE].write_text(self.trials_table(told or {}, front))
                for path in files.values():
                    self._submit(f"log {path.name}", None, functools.partial(self._log_artifact, path=str(path)))
        self._submit("close search run", None, lambda rid: self.client.set_terminated(rid, status))

    def trials_table(self, told: dict[str, dict[str, float]], front: Sequence[str]) -> str:
        """Every trial of the search in one HTML table, a Pareto front first: what a comparison needs."""

        columns = [COST_USD, ON_DEMAND_COST_USD, SAVINGS_PCT, PREEMPTIONS, LOST_WORK_S]
        rows = []
        for trial_id in self.ledger.trials:
            metrics = self.ledger.trial_metrics(trial_id)
            rows.append(
                {
                    "trial": trial_id,
                    **({"pareto": trial_id in front} if told else {}),
                    **{k: v for k, v in told.get(trial_id, {}).items() if k not in columns},
                    f"best {self.ledger.metric}": self.ledger.best(trial_id),
                    **{k: metrics.get(k) for k in columns},
                    "instance_types": self.ledger.cost_of(trial_id).instance_types,
                }
            )
        table = pd.DataFrame(rows)
        if told:
            table = table.sort_values("pareto", ascending=False, kind="stable")
        shade = f"background-color: {FRONT_ROW_COLOUR}"
        styled = table.style.apply(lambda row: [shade if row.get("pareto") else ""] * len(row), axis=1)
        styled = styled.format(lambda v: fmt(v) if isinstance(v, float) else v, na_rep="").hide(axis="index")
        styled = styled.set_table_styles([{"selector": "td, th", "props": "padding: 2px 8px; font-family: sans-serif"}])
        return str(styled.to_html())
