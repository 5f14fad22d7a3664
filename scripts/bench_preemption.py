"""Preemption goodput: one search, run three times in one invocation, on a local multi-node cluster.

    python scripts/bench_preemption.py [--preemptions 2] [--epochs 40] [--checkpoint-every 4] [--notice-s 4]

1. no preemptions (the baseline), 2. k preemptions with a spot notice (the agent
drains the node, the trial checkpoints at once), 3. k preemptions without notice
(the node just dies). Prints JSON: goodput = useful training seconds / all training
seconds, lost work and recovery per preemption, wall time relative to the baseline.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import ray
from ray.cluster_utils import Cluster

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.tooling.chaos import NodeChaos, ResultRecorder  # noqa: E402
from tests.tooling.searches import experiment  # noqa: E402
from tuner.cluster.twin import FAST_FAILURE_DETECTION  # noqa: E402
from tuner.config import CheckpointConfig, ClusterConfig, RunSettings  # noqa: E402
from tuner.run.driver import execute  # noqa: E402

STEPS_PER_EPOCH = 45  # 1437 training images / 32


def run(
    cluster: Cluster, root: str, name: str, args: argparse.Namespace, k: int, notice_s: float | None
) -> dict[str, Any]:
    epochs = args.epochs
    chaos = NodeChaos(cluster)
    for _ in range(2 + k):  # spare capacity for every preemption (nodes can only be added from the main thread)
        chaos.add_node(num_cpus=1)
    recorder = ResultRecorder()
    at_epochs = [round(epochs * (i + 1) / (2 * k)) + 1 for i in range(k)]  # in the first half, mid-interval

    finished = threading.Event()

    def inject() -> None:
        seen = 0  # results before the last injection: the trial must report again first
        for epoch in at_epochs:
            while not any(r.get("epoch", 0) >= epoch for r in recorder.results[seen:]):
                if finished.wait(0.05):
                    return
            time.sleep(0.5 * recorder.results[-1]["epoch_time_s"])  # mid-epoch
            victim = recorder.results[-1]["node_id"]
            if notice_s:
                chaos.preempt(victim, notice_s)
            else:
                chaos.kill(victim)
            seen = len(recorder.results)

    started = time.perf_counter()
    injector = threading.Thread(target=inject, daemon=True)
    injector.start()
    cfg = experiment(
        name,
        root,
        epochs,
        run=RunSettings(max_failures=-1),  # preemptions are free anyway; this also retries errors
        checkpoint=CheckpointConfig(every_reports=args.checkpoint_every, final_margin_s=1.5),
        cluster=ClusterConfig(address=cluster.address),
    )
    status = execute(cfg, observers=[recorder])
    wall_s = time.perf_counter() - started
    finished.set()
    injector.join()
    chaos.close()
    final = [r for r in recorder.results if not r.get("checkpoint_only")][-1]
    lost = [
        b["lost_work_s"] - a["lost_work_s"]
        for a, b in zip(recorder.results, recorder.results[1:])
        if b["preemptions"] > a["preemptions"]
    ]
    recovery = [
        b["recovery_s"] - a["recovery_s"]
        for a, b in zip(recorder.results, recorder.results[1:])
        if b["preemptions"] > a["preemptions"]
    ]
    useful = final["train_time_s"]
    step_s = useful / (epochs * STEPS_PER_EPOCH)
    return {
        "status": status,
        "epochs_done": final["epoch"],
        "preemptions": final["preemptions"],
        "wall_s": wall_s,
        "useful_train_s": useful,
        "lost_work_s": final["lost_work_s"],
        "goodput": useful / (useful + final["lost_work_s"]),
        "median_lost_work_per_preemption_s": statistics.median(lost) if lost else 0.0,
        "median_lost_work_per_preemption_steps": (statistics.median(lost) / step_s) if lost else 0.0,
        "median_recovery_s": statistics.median(recovery) if recovery else None,
        "final_val_acc": final["val_acc"],
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--preemptions", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--checkpoint-every", type=int, default=4, help="periodic checkpoint every N epochs")
    parser.add_argument("--notice-s", type=float, default=4.0, help="notice time (time-compressed: AWS gives 120 s)")
    parser.add_argument("--out", help="also write the JSON report to this file")
    args = parser.parse_args()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "_system_config": FAST_FAILURE_DETECTION})
    report: dict[str, Any] = {**vars(args)}
    try:
        with tempfile.TemporaryDirectory() as root, contextlib.redirect_stdout(sys.stderr):  # Ray's log lines
            report["baseline"] = run(cluster, root, "baseline", args, 0, None)
            report["with_notice"] = run(cluster, root, "notice", args, args.preemptions, args.notice_s)
            report["without_notice"] = run(cluster, root, "no-notice", args, args.preemptions, None)
    finally:
        ray.shutdown()
        cluster.shutdown()
    for key in ("with_notice", "without_notice"):
        report[key]["wall_vs_baseline"] = report[key]["wall_s"] / report["baseline"]["wall_s"]
        report[key]["same_final_val_acc_as_baseline"] = (
            report[key]["final_val_acc"] == report["baseline"]["final_val_acc"]
        )
    text = json.dumps(report, indent=2)
    if args.out:  # Ray's own node-death messages also reach stdout; the file holds only the report
        Path(args.out).write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
