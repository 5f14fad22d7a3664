"""Node chaos at a chosen intensity: random worker kills (some after a spot notice) during a real search.

    python scripts/chaos.py [--kills 3] [--seed 7] [--notice-fraction 0.5] [--span-epochs 2] [--epochs 10]

Runs the ResNet search (4 trials, 2 at a time) twice on a local multi-node Ray cluster:
undisturbed, then with the kills; prints a table and JSON. `data lost` counts trials that
did not finish or finished with other final metrics than the undisturbed run: it must be 0.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
from pathlib import Path

from ray.cluster_utils import Cluster

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.tooling.chaos import node_chaos
from tests.tooling.searches import experiment  # noqa: E402
from tuner.config import RunSettings  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=3)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--notice-fraction", type=float, default=0.5)
    parser.add_argument("--span-epochs", type=int, default=2, help="most epochs a victim trains before its kill")
    parser.add_argument("--epochs", type=int, default=16)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as root, contextlib.redirect_stdout(sys.stderr):
        cfg = experiment(
            "chaos",
            root,
            epochs=args.epochs,
            space="search_spaces.resnet:space",
            num_samples=4,
            concurrency=2,
            output_dir=root,
            run=RunSettings(max_failures=args.kills),
        )
        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
        try:
            report = node_chaos(
                cluster,
                cfg,
                kills=args.kills,
                seed=args.seed,
                notice_fraction=args.notice_fraction,
                span_epochs=args.span_epochs,
                workers=2,
            )
        finally:
            cluster.shutdown()
    print("| kills | notices | trials finished | trials interrupted | preemptions seen | lost work (s) | data lost |")
    print("|---|---|---|---|---|---|---|")
    print(
        f"| {report['kills']} | {report['notices']} | {report['trials_finished']}/{report['trials']} | "
        f"{report['trials_interrupted']} | {report['preemptions_seen_by_trials']} | {report['lost_work_s']} | "
        f"{report['data_lost']} |"
    )
    print(json.dumps(report))


if __name__ == "__main__":
    main()
