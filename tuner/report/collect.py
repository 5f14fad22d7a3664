"""Reading the cost ledgers of finished searches from an MLflow store."""

from __future__ import annotations

import io
import os
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from tuner.config import ConfigError, ReportConfig
from tuner.run.tracking import TAG_EXPERIMENT, TAG_PARENT

LEDGER_ARTIFACT = "cost_ledger.csv"
SECONDS_PER_DAY = 86400.0


@dataclass(frozen=True)
class Search:
    """One search: an MLflow parent run with a ledger."""

    experiment: str
    run_id: str
    start_s: float
    end_s: float


def collect(cfg: ReportConfig) -> tuple[list[Search], pd.DataFrame]:
    """Every finished search in the store (chosen experiments, time window) and all their ledger rows,
    each row tagged with its search's ``run_id`` and ``experiment``."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    client = MlflowClient(tracking_uri=cfg.tracking.tracking_uri)
    try:
        experiments = client.search_experiments()
    except MlflowException as exc:
        raise ConfigError(
            f"MLflow store {cfg.tracking.tracking_uri} cannot be read: {str(exc).splitlines()[0]}"
        ) from exc
    known = {e.name: e.experiment_id for e in experiments}
    unknown = [name for name in cfg.experiments if name not in known]
    if unknown:
        raise ConfigError(
            f"experiments={unknown}: not in {cfg.tracking.tracking_uri} (there: {', '.join(sorted(known))})"
        )
    ids = [known[n] for n in cfg.experiments] if cfg.experiments else list(known.values())
    names = {v: k for k, v in known.items()}
    query = f"tags.`{TAG_EXPERIMENT}` != ''"
    if cfg.since_days is not None:
        query += f" and attributes.start_time >= {int((time.time() - cfg.since_days * SECONDS_PER_DAY) * 1000)}"
    searches, frames = [], []
    for run in client.search_runs(ids, filter_string=query, max_results=10000):
        if TAG_PARENT in run.data.tags:
            continue
        try:
            text = Path(client.download_artifacts(run.info.run_id, LEDGER_ARTIFACT)).read_text()
        except (MlflowException, OSError):
            continue  # a search still running, or one that never priced anything
        search = Search(
            names[run.info.experiment_id],
            run.info.run_id,
            run.info.start_time / 1000.0,
            (run.info.end_time or int(time.time() * 1000)) / 1000.0,
        )
        searches.append(search)
        frames.append(
            pd.read_csv(io.StringIO(text), dtype={"trial_id": str, "node_id": str, "zone": str}).assign(
                run_id=search.run_id, experiment=search.experiment
            )
        )
    rows = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    return sorted(searches, key=lambda s: s.start_s), rows
