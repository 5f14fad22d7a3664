"""What a spot notice and a hard node loss cost each example trainer, on the local twin of cluster/aws.yaml.

    python scripts/bench_examples.py [--examples regression lightning_cancer hf_tokens] [--notice-s 4]

For each example (plain PyTorch loop, Lightning, Hugging Face) one trial of a fixed
configuration runs through the CLI on the twin (``cluster.address=auto`` against a twin this
script starts): after its first report its node gets a spot notice (the drain the agent
sends; the node goes at the deadline), and once it has reported again elsewhere its new node
is killed without notice half-way to its next report. The baseline in the same run is the
undisturbed trial of the same configuration. Prints JSON per example: lost work after the
notice (seconds and steps of the trainer's own step time), after the kill, recovery time,
the final step count and metric against the baseline's.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Optional

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.e2e.faults import trained_past  # noqa: E402
from tests.tooling import TUNER_RUN  # noqa: E402
from tuner.cluster.launcher import load_launcher_config  # noqa: E402
from tuner.cluster.twin import LocalTwin, twin_config  # noqa: E402
from tuner.config import ClusterConfig  # noqa: E402

EXAMPLES = {  # search: (its fixed configuration, time attribute, a budget long enough to inject into: 10-60 s here)
    "regression": (
        "tests.spaces:regression",
        "step",
        ["search.workload.steps=16000", "search.workload.eval_every=800"],
    ),
    "lightning_cancer": ("tests.spaces:lightning", "epoch", ["search.workload.epochs=200"]),
    "hf_tokens": (
        "tests.spaces:huggingface",
        "step",
        ["search.workload.max_steps=2000", "search.workload.eval_every=100"],
    ),
}


@contextlib.contextmanager
def twin() -> Iterator[LocalTwin]:
    """The twin with one node per worker type (it runs `ray stop --force` at the end: one at a time)."""
    cfg = ClusterConfig(
        name="local_spot", launcher_config="cluster/aws.yaml", max_workers_per_type=1, include_dashboard=False
    )
    cluster = LocalTwin(twin_config(load_launcher_config("cluster/aws.yaml"), cfg), cfg)
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


def rows(experiment: Path) -> list[dict[str, Any]]:
    """The trial's results so far as Tune's result.json in storage has them: enough to time faults by. Not
    the record to judge by: Tune uploads it every few checkpoints, and when a trial restarts after a node
    loss it replaces it with the uploaded copy, so the results between the last upload and the loss drop out."""
    found = []
    for path in experiment.glob("trial_*/result.json"):
        found += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return sorted(found, key=lambda r: r["wall_s"])


def reports(found: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in found if not r.get("checkpoint_only")]


def search_metric(example: str) -> str:
    from omegaconf import OmegaConf

    return str(OmegaConf.load(REPO / "examples" / "conf" / "search" / f"{example}.yaml").metric)


def history(out: Path, example: str, metric: str) -> list[dict[str, float]]:
    """Every report of the run's one trial, in order, as MLflow has them (the driver logs each result it gets;
    a report redone after a restart appears again): what the trial reported and the platform's counters."""
    from mlflow.tracking import MlflowClient

    from tests.e2e.test_cli import runs_of

    uri = f"sqlite:///{out}/mlflow.db"
    (child,) = runs_of(uri, example)[1]
    client = MlflowClient(tracking_uri=uri)
    by_result: dict[tuple[int, int], dict[str, float]] = {}
    for key in child.data.metrics:
        for m in client.get_metric_history(child.info.run_id, key):
            by_result.setdefault((m.timestamp, m.step), {})[key] = m.value
    return [r for _, r in sorted(by_result.items()) if metric in r]  # checkpoints between reports carry no metric


def wait_for(predicate: Callable[[], Any], driver: subprocess.Popen[str], what: str, timeout_s: float = 300) -> Any:
    deadline = time.monotonic() + timeout_s
    while not (found := predicate()):
        if driver.poll() is not None:
            raise RuntimeError(f"the search ended before {what}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.2)
    return found


def run(
    example: str, out: Path, cluster: Optional[LocalTwin] = None, notice_s: float = 4.0
) -> tuple[subprocess.CompletedProcess[str], list[dict[str, Any]]]:
    """One trial of the example on the running twin; with ``cluster`` (the twin) it injects faults: its node
    reclaimed with a notice after its first report, then, once it has reported again elsewhere, its new node
    reclaimed without notice once the trial has trained past that report's checkpoint. Returns the CLI's run and the
    trial's reports (:func:`history`)."""
    space, _, overrides = EXAMPLES[example]
    args = [
        *TUNER_RUN,
        "--config-dir",
        "examples/conf",
        f"+search={example}",
        f"search.space={space}",
        "search.tune.num_samples=1",
        "cluster.address=auto",
        "cluster.launcher_config=cluster/aws.yaml",
        "run.max_failures=2",
        "checkpoint.final_margin_s=1.5",
        f"output_dir={out}",
        *overrides,
    ]
    driver = subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    experiment = out / "ray_results" / example
    try:
        if cluster is not None:
            first = wait_for(lambda: reports(rows(experiment)), driver, "a first report")[0]
            cluster.reclaim(first["node_id"], first["node_group"], notice_s)
            moved = wait_for(
                lambda: [r for r in reports(rows(experiment)) if r["preemptions"] == 1],
                driver,
                "a report after the notice",
            )
            # Killed once it has trained past that report's checkpoint (a heartbeat says so): work a kill loses.
            trained_past(moved[-1]["trial_id"], moved[-1]["train_time_s"], lambda: driver.poll() is None)
            cluster.reclaim(moved[-1]["node_id"], moved[-1]["node_group"])
        output, _ = driver.communicate(timeout=600)
    finally:
        if driver.poll() is None:
            driver.kill()
    proc = subprocess.CompletedProcess(args, int(driver.returncode), output, "")
    return proc, history(out, example, search_metric(example)) if driver.returncode == 0 else []


def losses(example: str, proc: subprocess.CompletedProcess[str], done: list[dict[str, float]]) -> dict[str, Any]:
    """Lost work after the notice and after the kill, in seconds and in the trainer's own steps."""
    _, time_attr, _ = EXAMPLES[example]
    final = done[-1]
    step_s = final["train_time_s"] / final[time_attr]
    after_notice = next(r for r in done if r["preemptions"] == 1)
    killed_s = final["lost_work_s"] - after_notice["lost_work_s"]
    return {
        "step_s": step_s,
        "lost_after_notice_s": after_notice["lost_work_s"],
        "lost_after_notice_steps": after_notice["lost_work_s"] / step_s,
        "lost_after_kill_s": killed_s,
        "recovery_s": final["recovery_s"],
        "preemptions": final["preemptions"],
        "attempts": len(re.findall(r"trial +1/1 \w+  start", proc.stdout)),
        # The console names every checkpoint a notice asked for, on its own or with a report that fell due.
        "notice_checkpoints": re.findall(r"checkpoint \((drain|move|deadline)\)", proc.stdout),
        time_attr: final[time_attr],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", nargs="+", default=sorted(EXAMPLES), choices=sorted(EXAMPLES))
    parser.add_argument("--notice-s", type=float, default=4.0, help="notice (time-compressed: AWS gives 120 s)")
    args = parser.parse_args()
    report: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as root, twin() as cluster:
        for example in args.examples:
            _, time_attr, _ = EXAMPLES[example]
            base, base_done = run(example, Path(root) / f"{example}-undisturbed")
            chaos, chaos_done = run(example, Path(root) / f"{example}-chaos", cluster, notice_s=args.notice_s)
            metric = search_metric(example)
            report[example] = {
                **(losses(example, chaos, chaos_done) if chaos_done else {}),
                "exit": [base.returncode, chaos.returncode],
                f"final_{metric}": chaos_done[-1][metric] if chaos_done else None,
                f"undisturbed_{metric}": base_done[-1][metric] if base_done else None,
                f"undisturbed_{time_attr}": base_done[-1][time_attr] if base_done else None,
            }
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
