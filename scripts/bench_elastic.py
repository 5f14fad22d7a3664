"""An elastic trial [1, 2] against the same trial at fixed width 2, under the same replayed capacity trace.

    python scripts/bench_elastic.py [--steps 2000] [--tick-s 2.0]

The twin: two one-node spot types of cluster/aws.yaml (``spot_g5``, ``spot_g6``; 4 CPUs each, one
worker of 3 CPUs per node, as the elastic tests use it, training on one torch thread: the two nodes
share this machine's two cores). Their capacity follows two slots of the
shipped 32-node AWS p3 trace (``tuner/catalog/traces/cluster-events``), time-compressed as the
planner validation does (one trace minute per ``--tick-s`` seconds), from a tick where one slot stays
up and the other goes down for ``OUTAGE_TICKS`` and comes back: the twin's autoscaler terminates that
node and relaunches it when the trace says so. The trace clock starts when the trial starts.

The same trial (the plain regression example at one fixed configuration, global batch fixed by
gradient accumulation) runs twice through the CLI: ``search.resources.workers=[1,2]`` (on at width 1
while the second node is gone, grown back after) and ``=2`` (waits for both workers). Prints JSON:
per arm the seconds from the trial's start to its end, goodput (steps per second of that time), the
widths it trained at, preemptions, restarts, worker-seconds lost, the final val_loss; and the ratio of
the elastic arm's time to the fixed one's (target <= 0.8) with the val_loss difference.

On this 2-core machine the two twin nodes share the same cores: width 2 is not twice width 1
here, and the JSON says how fast each width trained (steps per second at each width).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import optuna

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.tooling import TUNER_RUN  # noqa: E402
from tests.tooling.traces import TraceInjector  # noqa: E402
from tuner.cluster.launcher import load_launcher_config, worker_types  # noqa: E402
from tuner.cluster.twin import LocalTwin, twin_config  # noqa: E402
from tuner.config import ClusterConfig  # noqa: E402
from tuner.plan.traces import cluster_events  # noqa: E402

TYPES = ("spot_g5", "spot_g6")
SLOTS = {3: "spot_g5", 19: "spot_g6"}  # from tick 215: slot 3 up for 2.5 hours, slot 19 down from +20 to +63 min
FIRST_TICK, TICKS = 215, 150
ARMS = {"elastic": "search.resources.workers=[1,2]", "fixed": "search.resources.workers=2"}


# A wider net and batch than the example's space offers: enough compute per step for a second worker to
# pay for its all-reduce (at the example's sizes a step is mostly Python and gloo, and width 2 is slower).
CONFIG = {"lr": 1e-3, "weight_decay": 1e-4, "batch_size": 256, "layers": 3, "hidden": 1024}


def space(trial: optuna.Trial) -> None:
    for name, value in CONFIG.items():
        trial.suggest_categorical(name, [value])


def cli(out: Path, steps: int, width: str) -> list[str]:
    return [
        *TUNER_RUN,
        "--config-dir",
        "examples/conf",
        "+search=regression",
        "search.space=scripts.bench_elastic:space",
        "search.tune.num_samples=1",
        width,
        "search.resources.cpu=3",
        f"search.workload.steps={steps}",
        "search.workload.eval_every=100",
        f"search.scheduler.grace_period={steps}",
        "cluster.address=auto",
        "cluster.launcher_config=cluster/aws.yaml",
        "run.max_failures=3",
        "tracking=none",
        f"output_dir={out}",
    ]


def reports(out: Path) -> list[dict[str, Any]]:
    rows = []
    for path in (out / "ray_results" / "regression").glob("trial_*/result.json"):
        rows += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return sorted((r for r in rows if not r.get("checkpoint_only")), key=lambda r: r["wall_s"])


def steps_per_s_by_width(rows: list[dict[str, Any]]) -> dict[int, float]:
    """Training speed at each width, from consecutive reports of the same width and attempt."""
    steps: dict[int, float] = {}
    seconds: dict[int, float] = {}
    for a, b in zip(rows, rows[1:]):
        if a["world_size"] == b["world_size"] and b["train_time_s"] > a["train_time_s"] and b["step"] > a["step"]:
            steps[b["world_size"]] = steps.get(b["world_size"], 0) + b["step"] - a["step"]
            seconds[b["world_size"]] = seconds.get(b["world_size"], 0.0) + b["train_time_s"] - a["train_time_s"]
    return {w: round(steps[w] / seconds[w], 1) for w in sorted(steps)}


def run_arm(twin: LocalTwin, out: Path, steps: int, width: str, tick_s: float) -> dict[str, Any]:
    injector = TraceInjector(twin, SLOTS, cluster_events(), FIRST_TICK, tick_s)
    injector.start()
    out.mkdir(parents=True, exist_ok=True)
    log = (out / "driver.log").open("w")
    driver = subprocess.Popen(
        cli(out, steps, width), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    lines: list[str] = []
    started, finished = threading.Event(), threading.Event()
    times: dict[str, float] = {}

    def read() -> None:
        assert driver.stdout is not None
        for line in driver.stdout:
            lines.append(line)
            log.write(line)
            if re.search(r"trial +1/1 \w+  start", line):
                times["start"] = time.monotonic()
                started.set()
            elif re.search(r"trial +1/1 \w+  done", line):
                times["done"] = time.monotonic()
        finished.set()

    threading.Thread(target=read, daemon=True).start()
    try:
        if not started.wait(300):
            raise SystemExit("the trial never started:\n" + "".join(lines)[-3000:])
        injector.run(TICKS, stop=finished)
        injector.restore_all()
        driver.wait(timeout=1800)
    finally:
        if driver.poll() is None:
            driver.kill()
        injector.restore_all()
        log.close()
    if driver.returncode != 0 or "done" not in times:
        raise SystemExit(f"{width}: exit {driver.returncode}\n" + "".join(lines)[-3000:])
    rows = reports(out)
    final = rows[-1]
    wall_s = times["done"] - times["start"]
    return {
        "wall_s": round(wall_s, 1),
        "goodput_steps_per_s": round(final["step"] / wall_s, 1),
        "widths": sorted({r["world_size"] for r in rows}),
        "steps_per_s_by_width": steps_per_s_by_width(rows),
        "preemptions": final.get("preemptions", 0),
        "restarts": final.get("restarts", 0),
        "lost_work_s": round(final.get("lost_work_s", 0.0), 1),
        "recovery_s": round(final.get("recovery_s", 0.0), 1),
        "val_loss": final["val_loss"],
        "step": final["step"],
        "capacity_losses": injector.removals,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--out", type=Path, help="keep each arm's output and driver.log here")
    parser.add_argument("--tick-s", type=float, default=2.0, help="real seconds per trace minute")
    args = parser.parse_args()
    launcher = load_launcher_config("cluster/aws.yaml")
    # With the dashboard: Ray Train's placement-group cleaner asks the State API whether a controller is gone.
    # one core per node: the two nodes share this machine's two
    cfg = ClusterConfig(
        name="local_spot",
        launcher_config="cluster/aws.yaml",
        max_workers_per_type=1,
        torch_threads={t: 1 for t in TYPES},
    )
    twin = LocalTwin(twin_config(launcher, cfg), cfg)
    twin.autoscaler.update_types({t: {"max_workers": 0} for t in worker_types(launcher) if t not in TYPES})
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        twin.start()
        try:
            for arm, width in ARMS.items():
                results[arm] = run_arm(twin, (args.out or Path(tmp)) / arm, args.steps, width, args.tick_s)
        finally:
            twin.stop()
    elastic, fixed = results["elastic"], results["fixed"]
    print(
        json.dumps(
            {
                "trace": {
                    "market": "aws-p3-32node",
                    "slots": SLOTS,
                    "first_tick": FIRST_TICK,
                    "ticks": TICKS,
                    "tick_s": args.tick_s,
                },
                "steps": args.steps,
                **results,
                "elastic_time_vs_fixed": round(elastic["wall_s"] / fixed["wall_s"], 3),
                "val_loss_rel_diff": abs(elastic["val_loss"] - fixed["val_loss"]) / abs(fixed["val_loss"]),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
