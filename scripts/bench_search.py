"""Search efficiency: TPE + ASHA against random search without early stopping, same trial budget.

    python scripts/bench_search.py [--model mlp|resnet] [--seeds 0 1 2] [--trials 16] [--epochs 20] [--target 0.98]

Both run through the platform (``tuner.run.execute``) on the MLP (or ResNet) digits search,
2 trials at a time, for each seed: TPE (seeded, 4 random start-up trials) with ASHA (grace 2,
reduction 2) vs random sampling (the same sampler with every trial a start-up trial)
with no early stopping. Compute to target = the training seconds all trials had spent
when a first result reached ``--target`` validation accuracy (on a GPU: GPU-hours).
Prints JSON with per-seed figures, the medians and their ratio (target <= 0.50).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tuner.chaos import ResultRecorder, experiment  # noqa: E402
from tuner.config import Config  # noqa: E402
from tuner.run import execute  # noqa: E402


def compute_to_target(results: list[dict[str, Any]], target: float) -> Optional[float]:
    """Training seconds spent by all trials when the first result reached ``target`` (None: never)."""
    spent: dict[str, float] = {}
    for r in sorted(results, key=lambda r: r["wall_s"]):
        spent[r["trial_id"]] = r["train_time_s"]
        if r.get("val_acc", 0.0) >= target:
            return sum(spent.values())
    return None


def search(root: str, name: str, seed: int, args: argparse.Namespace, tpe_asha: bool) -> dict[str, Any]:
    cfg: Config = experiment(name, f"{root}/{name}", args.epochs, space=f"search_spaces.{args.model}:space",
                             model=args.model, num_samples=args.trials, concurrency=2, output_dir=f"{root}/{name}")  # fmt: skip
    s = cfg.search
    s.searcher.seed = seed
    s.searcher.n_startup_trials = 4 if tpe_asha else args.trials  # all start-up trials = random sampling
    s.scheduler.grace_period = 2 if tpe_asha else args.epochs  # grace = max epochs: no early stopping
    s.scheduler.reduction_factor = 2
    recorder = ResultRecorder()
    assert execute(cfg, observers=[recorder]) == 0
    last = {r["trial_id"]: r for r in recorder.results}
    return {
        "compute_to_target_s": compute_to_target(recorder.results, args.target),
        "total_train_s": round(sum(r["train_time_s"] for r in last.values()), 2),
        "best_val_acc": max(r.get("best_val_acc", r["val_acc"]) for r in last.values()),
        "epochs_trained": sum(int(r["epoch"]) for r in last.values()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["mlp", "resnet"], default="mlp")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--target", type=float, default=0.98)
    args = parser.parse_args()
    runs: dict[str, list[dict[str, Any]]] = {"tpe_asha": [], "random_no_stopping": []}
    with tempfile.TemporaryDirectory() as root, contextlib.redirect_stdout(sys.stderr):
        for seed in args.seeds:
            runs["tpe_asha"].append(search(root, f"tpe{seed}", seed, args, tpe_asha=True))
            runs["random_no_stopping"].append(search(root, f"random{seed}", seed, args, tpe_asha=False))

    def median(kind: str) -> Optional[float]:
        values = [r["compute_to_target_s"] for r in runs[kind]]
        return None if None in values else statistics.median(values)

    tpe, rnd = median("tpe_asha"), median("random_no_stopping")
    print(json.dumps({
        **vars(args), "search": f"{args.model} (digits), 2 trials at a time, 1 CPU each", "runs": runs,
        "median_compute_to_target_s": {"tpe_asha": tpe, "random_no_stopping": rnd},
        "tpe_asha_vs_random": None if None in (tpe, rnd) else round(tpe / rnd, 3), "target_ratio": 0.5,
    }, indent=1))  # fmt: skip


if __name__ == "__main__":
    main()
