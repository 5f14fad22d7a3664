"""``python -m tuner.plan`` end to end: the table, the plot, the CSV and the MLflow run; bad input."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

from mlflow.tracking import MlflowClient

from tests.conftest import REPO, cli_env


def test_plan_cli_writes_tables_plot_and_mlflow_run(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "tuner.plan",
            f"output_dir={tmp_path}",
            "starts=4",
            f"tracking.tracking_uri={uri}",
            "+types.epoch_s={g4dn.xlarge: 60, g5.xlarge: 25}",
        ],
        cwd=tmp_path,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    for market in ("aws-v100", "gcp-h100", "aws-p3-32node"):
        assert f"\n{market} (" in proc.stdout
    rows = list(csv.DictReader((tmp_path / "plan.csv").open()))
    assert len(rows) == 3 * 8 and {r["strategy"] for r in rows} >= {"spot-naive", "at-loss", "platform"}
    assert (tmp_path / "plan.png").stat().st_size > 10_000
    types = {r["instance_type"]: r for r in csv.DictReader((tmp_path / "plan_types.csv").open())}
    assert types["g4dn.xlarge"]["pick"] == "by price" and types["g5.xlarge"]["pick"] == "by cost"
    assert "type choice: by price g4dn.xlarge" in proc.stdout
    client = MlflowClient(tracking_uri=uri)
    (run,) = client.search_runs([client.get_experiment_by_name("tuner-plans").experiment_id])
    assert run.data.params["profile.trials"] == "64" and "aws-v100.platform.savings_pct" in run.data.metrics
    assert run.data.metrics["types.by_cost_vs_by_price"] < 1
    assert {a.path for a in client.list_artifacts(run.info.run_id)} == {"plan.csv", "plan_types.csv", "plan.png"}


def test_plan_bad_input_is_one_line(tmp_path: Path) -> None:
    for args, message in (
        (["markets=[nope]"], "markets=['nope']: choose from"),
        (["profile.trials=0"], "profile: trials, epochs, concurrency must be > 0"),
        (["profile.trails=3"], "Key 'trails' not in 'CampaignProfile'"),
        (["strategies=[{name: x, workers: [2, 1]}]"], "strategy x: workers must be [min, max]"),
        (["+types.epoch_s={nope.xlarge: 3}"], "types.epoch_s names ['nope.xlarge']: no spot price"),
    ):
        proc = subprocess.run(
            [sys.executable, "-m", "tuner.plan", f"output_dir={tmp_path}", "tracking=none", *args],
            cwd=REPO,
            env=cli_env(),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode != 0 and message in proc.stderr, proc.stderr[-1000:]
