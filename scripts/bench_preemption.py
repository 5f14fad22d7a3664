"""Preemption goodput: one search, run three times in one invocation, on a local multi-node cluster.

    python scripts/bench_preemption.py [--preemptions 2] [--epochs 40] [--checkpoint-every 4] [--notice-s 4]
    python scripts/bench_preemption.py --gap [--boot-s 2 6] [--repeats 3]

1. no preemptions (the baseline), 2. k preemptions with a spot notice (the agent
drains the node, the trial checkpoints at once), 3. k preemptions without notice
(the node just dies). Prints JSON: goodput = useful training seconds / all training
seconds, lost work and recovery per preemption, wall time relative to the baseline.

``--gap``: the GPU-idle gap of a noticed preemption (from the last step on the reclaimed node to the first on the
next) on the local twin, whose nodes take ``boot_s`` to come up, with and without capacity asked for at the notice
(``replacement.enabled``): per boot time, the median over ``--repeats`` notices of each arm, and their ratio.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ray
from ray.cluster_utils import Cluster

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


from tests.tooling.chaos import NodeChaos, ResultRecorder  # noqa: E402
from tests.tooling.searches import experiment  # noqa: E402
from tests.tooling.twins import twin_of  # noqa: E402
from tuner import _ray  # noqa: E402
from tuner.cluster.twin import FAST_FAILURE_DETECTION, LocalTwin  # noqa: E402
from tuner.config import CheckpointConfig, ClusterConfig, ReplacementConfig, RunSettings  # noqa: E402
from tuner.config.platform import TWIN_NOTICE_S  # noqa: E402
from tuner.result_keys import CHECKPOINT_ONLY, NODE_GROUP, NODE_ID, TRAIN_TIME_S, WALL_S  # noqa: E402
from tuner.run.driver import execute  # noqa: E402
from tuner.spot.labels import NODE_GROUP as NODE_GROUP_LABEL  # noqa: E402

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


GAP_TYPES = ("spot_g5", "spot_g6")  # the trial starts on g5 (cheaper); its replacement goes to g6
GAP_FAULT_EPOCH = 3  # the notice comes once the trial has reported this epoch
GAP_REPORTS_AFTER = 2  # the run stops once the trial has reported this often on the next node
GAP_IDLE_TIMEOUT_S = 6.0  # idle nodes go soon: each run starts without a spare node (a standing request keeps its own)
GAP_GUARD_S = 600.0  # a hang guard on each wait; the search ending first ends the wait
FOREVER_EPOCHS = 100_000  # the run ends by its stop file, not by its epochs


def stays(results: list[dict[str, Any]], node_id: str) -> tuple[float, float]:
    """When the trial last trained on ``node_id`` and first trained on the next node (unix seconds).

    The last result on the old node carries its training seconds; the trial resumes from the notice's checkpoint,
    which holds them, so its first step on the new node came as many seconds before its first result there as it
    trained in between. Holds, the node's loss, the restart and the restore fall between the two."""
    old = [r for r in results if r[NODE_ID] == node_id]
    new = [r for r in results[results.index(old[-1]) :] if r[NODE_ID] != node_id]
    return old[-1][WALL_S], new[0][WALL_S] - (new[0][TRAIN_TIME_S] - old[-1][TRAIN_TIME_S])


@contextlib.contextmanager
def two_type_twin(root: Path, boot_s: float) -> Iterator[tuple[LocalTwin, Path]]:
    """The twin of cluster/aws.yaml's spot_g5 and spot_g6, one node each, every node taking ``boot_s`` to come up."""
    with twin_of(GAP_TYPES, root, boot_s=boot_s, idle_timeout_minutes=GAP_IDLE_TIMEOUT_S / 60) as (twin, path):
        _ray.use_local_token()
        yield twin, path


def _wait_for(done: threading.Event, found: Any) -> Any:
    deadline = time.monotonic() + GAP_GUARD_S
    while not done.is_set() and time.monotonic() < deadline:
        if (hit := found()) is not None:
            return hit
        done.wait(0.05)
    return None


GAP_ARMS = {  # (replacement.enabled, checkpoint.move)
    "wait_for_loss": (False, False),  # the platform before: the trial holds to the deadline, a node boots after
    "ask_at_notice": (True, False),  # capacity asked for at the notice; the trial still holds to the deadline
    "ask_and_move": (True, True),  # asked, and the trial moves as soon as the new node has room (the default)
}


def gap_run(twin: LocalTwin, launcher: Path, root: Path, name: str, arm: str, notice_s: float) -> dict[str, Any]:
    """One search of one MLP trial on the twin: a notice on its node once it has reported ``GAP_FAULT_EPOCH``,
    stopped once it has reported ``GAP_REPORTS_AFTER`` times on the next node. ``arm``: one of ``GAP_ARMS``."""
    ask, move = GAP_ARMS[arm]
    recorder, done, stop_file = ResultRecorder(), threading.Event(), root / name / "STOP"
    fault: dict[str, Any] = {}
    workers_gone = _wait_for(
        threading.Event(),
        lambda: (
            True
            if not any(
                n["alive"] and NODE_GROUP_LABEL in n["labels"] for n in _ray.node_info(str(twin.address)).values()
            )
            else None
        ),
    )
    assert workers_gone, f"the twin's idle workers were not removed in {GAP_GUARD_S:.0f} s"

    def reports() -> list[dict[str, Any]]:
        return [r for r in recorder.results if not r.get(CHECKPOINT_ONLY)]

    def inject() -> None:
        hit = _wait_for(done, lambda: next((r for r in reports() if r["epoch"] >= GAP_FAULT_EPOCH), None))
        if hit is None:
            return
        fault.update(hit)
        twin.reclaim(hit[NODE_ID], hit[NODE_GROUP], notice_s=notice_s)
        fault["lost_s"] = time.time()
        fault["spare_nodes_at_loss"] = [  # worker nodes up the moment the reclaimed one is gone
            n["labels"][NODE_GROUP_LABEL]
            for n in _ray.node_info(str(twin.address)).values()
            if n["alive"] and NODE_GROUP_LABEL in n["labels"]
        ]

        def moved() -> list[dict[str, Any]] | None:
            after = [r for r in reports() if r[NODE_ID] != hit[NODE_ID] and r[WALL_S] > hit[WALL_S]]
            return after if len(after) >= GAP_REPORTS_AFTER else None

        if _wait_for(done, moved) is not None:
            stop_file.touch()

    cfg = experiment(
        name,
        str(root),
        FOREVER_EPOCHS,
        space="search_spaces.mlp:space",
        model="mlp",
        cluster=ClusterConfig(
            name="local",
            address=twin.address,
            launcher_config=str(launcher),
            autoscaler_config=str(twin.config_path),
        ),
        replacement=ReplacementConfig(enabled=ask),
        checkpoint=CheckpointConfig(move=move),
        run=RunSettings(stop_file=str(stop_file)),
        output_dir=str(root / name),
    )
    injector = threading.Thread(target=inject, daemon=True)
    injector.start()
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        status = execute(cfg, observers=[recorder])
    done.set()
    injector.join()
    sys.stderr.write(printed.getvalue())
    ray.init(address=twin.address, logging_level="ERROR", log_to_driver=False)
    try:
        standing = _ray.standing_resource_request()
    finally:
        ray.shutdown()
    final = reports()[-1]
    last_s, first_s = stays(recorder.results, fault[NODE_ID]) if fault else (0.0, 0.0)
    return {
        "status": status,
        "preemptions": final["preemptions"],
        "from": fault.get("instance_type"),
        "to": final["instance_type"],
        "idle_gap_s": first_s - last_s if fault else None,  # the GPU-idle gap: training on neither node
        "spare_nodes_at_loss": fault.get("spare_nodes_at_loss"),
        "lost_work_s": final["lost_work_s"],
        "asked_at_notice": printed.getvalue().count("got a notice: asked the autoscaler"),
        "moved": any(r.get("checkpoint_reason") == "move" for r in recorder.results),
        "ran_on_before_loss": bool(fault) and first_s < fault["lost_s"],  # trained on the next node meanwhile
        "standing_request_after": standing,
    }


def gap_bench(boot_times_s: list[float], repeats: int, notice_s: float) -> dict[str, Any]:
    """Per boot time: the idle gap of ``repeats`` noticed preemptions in each arm of ``GAP_ARMS``."""
    report: dict[str, Any] = {"notice_s": notice_s, "repeats": repeats, "boots": {}}
    for boot_s in boot_times_s:
        arms: dict[str, list[dict[str, Any]]] = {arm: [] for arm in GAP_ARMS}
        with tempfile.TemporaryDirectory() as tmp, two_type_twin(Path(tmp), boot_s) as (twin, launcher):
            for i in range(repeats):
                for arm in GAP_ARMS:
                    arms[arm].append(gap_run(twin, launcher, Path(tmp), f"{arm}-{i}", arm, notice_s))
        medians = {arm: statistics.median(r["idle_gap_s"] for r in runs) for arm, runs in arms.items()}
        report["boots"][str(boot_s)] = {
            "median_idle_gap_s": medians,
            "vs_wait_for_loss": {arm: m / medians["wait_for_loss"] for arm, m in medians.items()},
            "runs": arms,
        }
    return report


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--gap", action="store_true", help="the idle gap of a noticed preemption on the twin")
    parser.add_argument("--boot-s", type=float, nargs="+", default=[2.0, 6.0], help="the twin's node boot times")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--preemptions", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--checkpoint-every", type=int, default=4, help="periodic checkpoint every N epochs")
    parser.add_argument(
        "--notice-s", type=float, default=TWIN_NOTICE_S, help="notice time (time-compressed: AWS gives 120 s)"
    )
    parser.add_argument("--out", help="also write the JSON report to this file")
    args = parser.parse_args()
    if args.gap:
        with contextlib.redirect_stdout(sys.stderr):
            gaps = gap_bench(args.boot_s, args.repeats, args.notice_s)
        text = json.dumps(gaps, indent=2)
        if args.out:
            Path(args.out).write_text(text + "\n")
        print(text)
        return
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
