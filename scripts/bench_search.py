"""Search efficiency: TPE + ASHA against random search without early stopping, same trial budget.

    python scripts/bench_search.py [--model mlp|resnet] [--space MODULE:FUNCTION] [--seeds 0 1 ... 9]
                                   [--trials 32] [--epochs 20] [--target 0.98]
                                   [--targets 0.97 0.975 0.98 0.985]

Both run through the platform (``tuner.run.driver.execute``) on digits, 2 trials at a time, by
default the MLP over ``search_spaces.mlp:wide`` (ranges before anyone knows the good
region, where most random draws under-train or diverge in 20 epochs). For each of 10
seeds (with 3, the median still swings with which 3):
TPE at the platform's defaults (seeded, 10 random start-up trials, Optuna's own default)
with ASHA at the platform's defaults (grace 1, reduction factor 3) vs random sampling
(the same sampler, every trial a start-up trial) with no early stopping.

Compute to target = the training seconds all trials had spent when a first result
reached the target validation accuracy (on a GPU: GPU-hours). TPE + ASHA is adaptive,
so its figure is the run as it happened. Random search's trials are independent draws,
so the order they ran in is chance: its figure is the median over 1000 shuffled orders
of the same trials, replayed 2 at a time from their recorded learning curves (the run as
it happened is reported too). A search that never reaches a target is ``censored``:
random search then counts its whole budget (a lower bound, so the ratio is an upper
bound), TPE + ASHA counts as never. The bar (<= 0.50, medians over seeds) is judged at
``--target``; ``--targets`` shows how the ratio moves with the target's difficulty, which
``random_trials_reaching`` gives: the share of random draws that reach it in the budget.
"""

from __future__ import annotations

import argparse
import contextlib
import heapq
import json
import math
import random
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.tooling.chaos import ResultRecorder  # noqa: E402
from tests.tooling.searches import experiment  # noqa: E402
from tuner.config import SCHEDULERS, Config  # noqa: E402
from tuner.run.driver import execute  # noqa: E402

MAX_RATIO = 0.5
Curve = list[tuple[float, float]]  # per epoch: (training seconds so far, val_acc)


def compute_to_target(results: list[dict[str, Any]], target: float) -> Optional[float]:
    """Training seconds spent by all trials when the first result reached ``target``, in the order
    the results came (None: never)."""
    spent: dict[str, float] = {}
    for r in sorted(results, key=lambda r: r["wall_s"]):
        spent[r["trial_id"]] = r["train_time_s"]
        if r.get("val_acc", 0.0) >= target:
            return sum(spent.values())
    return None


def replay(curves: list[Curve], target: float, slots: int) -> Optional[float]:
    """``compute_to_target`` of these trials run in this order, ``slots`` at a time, from their curves."""
    pending = iter(range(len(curves)))
    events: list[tuple[float, int, int]] = []  # (training clock at the end of an epoch, trial, epoch)
    spent: dict[int, float] = {}

    def start(at_s: float) -> None:
        if (i := next(pending, None)) is not None:
            heapq.heappush(events, (at_s + curves[i][0][0], i, 0))

    for _ in range(slots):
        start(0.0)
    while events:
        at_s, i, epoch = heapq.heappop(events)
        spent[i], val_acc = curves[i][epoch]
        if val_acc >= target:
            return sum(spent.values())
        if epoch + 1 < len(curves[i]):
            heapq.heappush(events, (at_s + curves[i][epoch + 1][0] - spent[i], i, epoch + 1))
        else:
            start(at_s)
    return None


def reaches(curve: Curve, target: float) -> bool:
    return any(val_acc >= target for _, val_acc in curve)


def learning_curves(results: list[dict[str, Any]]) -> list[Curve]:
    curves: dict[str, Curve] = {}
    for r in sorted(results, key=lambda r: r["wall_s"]):
        curves.setdefault(r["trial_id"], []).append((r["train_time_s"], r.get("val_acc", 0.0)))
    return list(curves.values())


def median_over_orders(curves: list[Curve], target: float, slots: int, orders: int = 1000) -> Optional[float]:
    """Median compute to ``target`` over shuffled orders of the same independent trials (None: none reach it)."""
    if not any(reaches(c, target) for c in curves):
        return None
    rng, shuffled = random.Random(0), list(curves)
    spent = []
    for _ in range(orders):
        rng.shuffle(shuffled)
        spent.append(replay(shuffled, target, slots))
    reached = [s for s in spent if s is not None]
    return statistics.median(reached) if reached else None


def search(root: str, name: str, seed: int, args: argparse.Namespace, tpe_asha: bool) -> dict[str, Any]:
    cfg: Config = experiment(
        name,
        f"{root}/{name}",
        args.epochs,
        space=args.space,
        model=args.model,
        num_samples=args.trials,
        concurrency=2,
        output_dir=f"{root}/{name}",
    )
    s = cfg.search
    assert s is not None
    s.searcher.seed = seed
    if not tpe_asha:
        s.searcher.n_startup_trials = args.trials  # all start-up trials = random sampling
    asha = SCHEDULERS["asha"]
    s.scheduler = asha() if tpe_asha else asha(grace_period=args.epochs)  # grace = max: no stopping
    recorder = ResultRecorder()
    assert execute(cfg, observers=[recorder]) == 0
    last = {r["trial_id"]: r for r in recorder.results}
    total_s = sum(r["train_time_s"] for r in last.values())
    curves = learning_curves(recorder.results)

    def or_whole_budget(spent: dict[str, Optional[float]]) -> dict[str, float]:
        return {t: total_s if v is None else round(v, 3) for t, v in spent.items()}

    as_run = {str(t): compute_to_target(recorder.results, t) for t in args.targets}
    run = {
        "compute_to_target_s": or_whole_budget(as_run),
        "censored": [t for t, spent in as_run.items() if spent is None],
        "total_train_s": round(total_s, 2),
        "best_val_acc": max(r.get("best_val_acc", r["val_acc"]) for r in last.values()),
        "epochs_trained": sum(len(c) for c in curves),
    }
    if not tpe_asha:
        over_orders = {str(t): median_over_orders(curves, t, s.tune.max_concurrent_trials) for t in args.targets}
        run["compute_to_target_over_orders_s"] = or_whole_budget(over_orders)
        run["trials_reaching"] = {str(t): sum(reaches(c, t) for c in curves) for t in args.targets}
    return run


def median_over_seeds(runs: list[dict[str, Any]], target: str, key: str, censored_is_never: bool) -> Optional[float]:
    """Median over seeds; a censored run counts as never (None) or at its whole budget (a lower bound)."""
    values = [math.inf if censored_is_never and target in r["censored"] else r[key][target] for r in runs]
    median = statistics.median(values)
    return median if math.isfinite(median) else None


def ratio(a: Optional[float], b: Optional[float]) -> Optional[float]:
    return None if a is None or b is None else round(a / b, 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["mlp", "resnet"], default="mlp")
    parser.add_argument(
        "--space", help="search space (default: search_spaces.mlp:wide for mlp, the model's own otherwise)"
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=list(range(10)))
    parser.add_argument("--trials", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--target", type=float, default=0.98, help="validation accuracy the bar is judged at")
    parser.add_argument("--targets", type=float, nargs="+", default=[0.97, 0.975, 0.98, 0.985])
    args = parser.parse_args()
    args.space = args.space or (
        "search_spaces.mlp:wide" if args.model == "mlp" else f"search_spaces.{args.model}:space"
    )
    args.targets = sorted(set(args.targets) | {args.target})
    runs: dict[str, list[dict[str, Any]]] = {"tpe_asha": [], "random_no_stopping": []}
    with tempfile.TemporaryDirectory() as root, contextlib.redirect_stdout(sys.stderr):
        for seed in args.seeds:
            runs["tpe_asha"].append(search(root, f"tpe{seed}", seed, args, tpe_asha=True))
            runs["random_no_stopping"].append(search(root, f"random{seed}", seed, args, tpe_asha=False))
    by_target = {}
    for target in map(str, args.targets):
        tpe = median_over_seeds(runs["tpe_asha"], target, "compute_to_target_s", censored_is_never=True)
        rnd = median_over_seeds(
            runs["random_no_stopping"], target, "compute_to_target_over_orders_s", censored_is_never=False
        )
        rnd_as_run = median_over_seeds(
            runs["random_no_stopping"], target, "compute_to_target_s", censored_is_never=False
        )
        reaching = sum(r["trials_reaching"][target] for r in runs["random_no_stopping"])
        by_target[target] = {
            "median_compute_to_target_s": {
                "tpe_asha": tpe,
                "random_no_stopping": rnd,
                "random_no_stopping_as_run": rnd_as_run,
            },
            "tpe_asha_vs_random": ratio(tpe, rnd),
            "tpe_asha_vs_random_as_run": ratio(tpe, rnd_as_run),
            "random_trials_reaching": round(reaching / (args.trials * len(args.seeds)), 3),
        }
    at_bar = by_target[str(args.target)]["tpe_asha_vs_random"]
    print(
        json.dumps(
            {
                **vars(args),
                "search": f"{args.model} over {args.space} (digits), 2 trials at a time, 1 CPU each",
                "runs": runs,
                "by_target": by_target,
                "bar": {
                    "target": args.target,
                    "max_ratio": MAX_RATIO,
                    "ratio": at_bar,
                    "met": at_bar is not None and at_bar <= MAX_RATIO,
                },
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
