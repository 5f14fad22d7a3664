"""What price-performance placement saves against placement by price alone, on the local twin.

    python scripts/bench_placement.py [--trials 8] [--epochs 12]

The twin setup: two spot types of cluster/aws.yaml, ``spot_g5`` (g5.xlarge, the cheaper by the
catalog's spot price) and ``spot_g6`` (g6.xlarge, about 2.5 % dearer), one node each; the twin
gives ``spot_g6`` two torch threads per trial and ``spot_g5`` one (``cluster.torch_threads``: the
twin's stand-in for a faster GPU; not a claim about A10G against L4). The same ResNet search
(random sampler, fixed seed, no early stopping, one trial at a time: every arm trains exactly
the same trials) runs three times through the CLI on that twin: ``placement.by=throughput``
(the default), ``placement.by=price``, and ``placement.enabled=false`` (Ray places trials on any
node). Prints JSON: each arm's total trial cost from the ledger (MLflow), the types its trials ran
on, its best val_acc; and the ratios of the throughput arm's cost to the others' (target: <= 0.85
against price alone).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.tooling import TUNER_RUN  # noqa: E402
from tests.tooling.twins import twin_of  # noqa: E402
from tuner.cluster.twin import LocalTwin  # noqa: E402

TYPES = ("spot_g5", "spot_g6")
TORCH_THREADS = {"spot_g6": 2}  # the faster type; spot_g5 keeps one thread
ARMS = {"throughput": ["placement.by=throughput"], "price": ["placement.by=price"], "none": ["placement.enabled=false"]}


def twin(workdir: Path) -> contextlib.AbstractContextManager[tuple[LocalTwin, Path]]:
    """The twin of cluster/aws.yaml's two types, one node each, spot_g6 with two torch threads per trial."""
    return twin_of(TYPES, workdir, torch_threads=TORCH_THREADS)


def search(
    cluster: LocalTwin, launcher: Path, out: Path, trials: int, epochs: int, *extra: str
) -> subprocess.CompletedProcess[str]:
    args = [
        *TUNER_RUN,
        "+search=resnet",
        "search.space=tests.spaces:resnet_wide",
        "search/searcher=random",
        "search/scheduler=fifo",
        f"search.tune.num_samples={trials}",
        "search.tune.max_concurrent_trials=1",
        f"search.workload.epochs={epochs}",
        "search.resources.gpu=1",
        "cluster.address=auto",
        f"cluster.launcher_config={launcher}",
        f"cluster.autoscaler_config={cluster.config_path}",
        f"output_dir={out}",
        *extra,
    ]
    return subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=1200)


def outcome(out: Path) -> dict[str, Any]:
    """The arm as MLflow has it: per trial its type, epochs, cost and val_acc; the search's totals."""
    from tests.e2e.test_cli import runs_of

    (parent,), children = runs_of(f"sqlite:///{out}/mlflow.db", "resnet")
    rows = []
    for child in children:
        m, tags = child.data.metrics, child.data.tags
        rows.append(
            {
                "instance_type": tags.get("tuner.instance_types", ""),
                "placement": tags.get("tuner.placement"),
                "epochs": m.get("epoch", 0.0),
                "cost_usd": m.get("cost_usd", 0.0),
                "val_acc": m.get("val_acc"),
                "depth": float(child.data.params["depth"]),
                "lr": float(child.data.params["lr"]),
                "start_s": child.info.start_time / 1000,
            }
        )
    return {
        "cost_usd": parent.data.metrics["cost_usd"],
        "best_val_acc": max(r["val_acc"] for r in rows),
        "trials": rows,
    }


def cost_per_epoch(arms: dict[str, dict[str, Any]]) -> dict[str, float]:
    """Measured over every arm: USD per epoch of each type, for the deeper and the shallower nets alike."""
    totals: dict[str, list[float]] = {}
    for arm in arms.values():
        for r in arm["trials"]:
            if r["instance_type"] and "," not in r["instance_type"]:
                acc = totals.setdefault(f"{r['instance_type']} depth {r['depth']:g}", [0.0, 0.0])
                acc[0], acc[1] = acc[0] + r["cost_usd"], acc[1] + r["epochs"]
    return {k: usd / epochs for k, (usd, epochs) in sorted(totals.items()) if epochs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    args = parser.parse_args()
    arms: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-placement-") as tmp, twin(Path(tmp)) as (cluster, launcher):
        for arm in args.arms:
            out = Path(tmp) / arm
            proc = search(cluster, launcher, out, args.trials, args.epochs, *ARMS[arm])
            if proc.returncode != 0:
                raise SystemExit(f"arm {arm} failed ({proc.returncode}):\n{proc.stdout[-3000:]}{proc.stderr[-2000:]}")
            arms[arm] = outcome(out)
            arms[arm]["placement_lines"] = [line for line in proc.stdout.splitlines() if line.startswith("placement:")]
    base = arms.get("throughput", {}).get("cost_usd")
    report = {
        "setup": {"types": list(TYPES), "torch_threads": TORCH_THREADS, "trials": args.trials, "epochs": args.epochs},
        "arms": arms,
        "usd_per_epoch_measured": cost_per_epoch(arms),
        "cost_ratio": {f"throughput/{a}": base / arms[a]["cost_usd"] for a in arms if a != "throughput" and base},
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
