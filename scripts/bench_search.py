"""Search efficiency: TPE + ASHA against random search without early stopping, same trial budget.

    python scripts/bench_search.py [--model mlp|resnet] [--space MODULE:FUNCTION] [--seeds 0 1 2]
                                   [--trials 32] [--epochs 20] [--targets 0.96 0.97 0.975 0.98]

Both run through the platform (``tuner.run.execute``) on digits, 2 trials at a time, by
default the MLP over ``search_spaces.mlp:wide`` (ranges before anyone knows the good
region, where most random draws under-train or diverge in 20 epochs). For each seed:
TPE (seeded, 4 random start-up trials) with ASHA at the platform's defaults (grace 1,
reduction factor 3) vs random sampling (the same sampler, every trial a start-up trial)
with no early stopping. Compute to target = the training seconds all trials had spent
when a first result reached each target validation accuracy (on a GPU: GPU-hours),
all computed from the same runs. A search that never reaches a target is ``censored``
there: random search counts its whole budget (a lower bound, so the ratio is an upper
bound), TPE + ASHA counts as never. Prints JSON with per-seed figures and, per target,
the medians over seeds and their ratio (the issue's bar: <= 0.50).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tuner.chaos import ResultRecorder, experiment  # noqa: E402
from tuner.config import Config, SchedulerConfig  # noqa: E402
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
    cfg: Config = experiment(name, f"{root}/{name}", args.epochs, space=args.space,
                             model=args.model, num_samples=args.trials, concurrency=2, output_dir=f"{root}/{name}")  # fmt: skip
    s = cfg.search
    s.searcher.seed = seed
    s.searcher.n_startup_trials = 4 if tpe_asha else args.trials  # all start-up trials = random sampling
    s.scheduler = SchedulerConfig() if tpe_asha else SchedulerConfig(grace_period=args.epochs)  # grace = max: no stopping
    recorder = ResultRecorder()
    assert execute(cfg, observers=[recorder]) == 0
    last = {r["trial_id"]: r for r in recorder.results}
    total_s = sum(r["train_time_s"] for r in last.values())
    reached = {str(t): compute_to_target(recorder.results, t) for t in args.targets}
    return {
        "compute_to_target_s": {t: total_s if spent is None else round(spent, 3) for t, spent in reached.items()},
        "censored": [t for t, spent in reached.items() if spent is None],
        "total_train_s": round(total_s, 2),
        "best_val_acc": max(r.get("best_val_acc", r["val_acc"]) for r in last.values()),
        "epochs_trained": sum(int(r["epoch"]) for r in last.values()),
    }


def median_to_target(runs: list[dict[str, Any]], target: str, censored_is_never: bool) -> Optional[float]:
    """Median over seeds; a censored run counts as never (None) or at its whole budget (a lower bound)."""
    values = [math.inf if censored_is_never and target in r["censored"] else r["compute_to_target_s"][target] for r in runs]
    median = statistics.median(values)
    return median if math.isfinite(median) else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["mlp", "resnet"], default="mlp")
    parser.add_argument("--space", help="search space (default: search_spaces.mlp:wide for mlp, the model's own otherwise)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--trials", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--targets", type=float, nargs="+", default=[0.96, 0.97, 0.975, 0.98])
    args = parser.parse_args()
    args.space = args.space or ("search_spaces.mlp:wide" if args.model == "mlp" else f"search_spaces.{args.model}:space")
    runs: dict[str, list[dict[str, Any]]] = {"tpe_asha": [], "random_no_stopping": []}
    with tempfile.TemporaryDirectory() as root, contextlib.redirect_stdout(sys.stderr):
        for seed in args.seeds:
            runs["tpe_asha"].append(search(root, f"tpe{seed}", seed, args, tpe_asha=True))
            runs["random_no_stopping"].append(search(root, f"random{seed}", seed, args, tpe_asha=False))
    by_target = {}
    for target in map(str, args.targets):
        tpe = median_to_target(runs["tpe_asha"], target, censored_is_never=True)
        rnd = median_to_target(runs["random_no_stopping"], target, censored_is_never=False)
        ratio = None if tpe is None or rnd is None else round(tpe / rnd, 3)
        by_target[target] = {"median_compute_to_target_s": {"tpe_asha": tpe, "random_no_stopping": rnd},
                             "tpe_asha_vs_random": ratio}  # fmt: skip
    print(json.dumps({
        **vars(args), "search": f"{args.model} over {args.space} (digits), 2 trials at a time, 1 CPU each",
        "runs": runs, "by_target": by_target, "target_ratio": 0.5,
    }, indent=1))  # fmt: skip


if __name__ == "__main__":
    main()
