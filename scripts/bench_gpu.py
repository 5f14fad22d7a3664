"""GPU check of the training loop (no Ray needed): speed, exact resume, GPU sharing.

Prints one JSON object. Baselines are measured in the same run: the CPU epoch time
next to the GPU one, and one trial alone on the GPU next to N trials sharing it
(what ``search.resources.gpu=1/N`` does under Ray Tune).

    python scripts/bench_gpu.py [--epochs 10] [--share 4]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tuner.trial import checkpoint  # noqa: E402
from workloads.classify import ClassifySettings, Trial  # noqa: E402
from workloads.data import load  # noqa: E402

# The best configuration of an earlier default +search=resnet run (README, Results: lr 0.144, width 32, batch 32).
PARAMS = {
    "lr": 0.144,
    "weight_decay": 1.2e-4,
    "momentum": 0.8656,
    "batch_size": 32,
    "depth": 8,
    "width": 32,
    "label_smoothing": 0.0877,
}
HEAVY = {**PARAMS, "depth": 20, "batch_size": 128}


def train(params: dict[str, Any], epochs: int, device: str) -> tuple[list[dict[str, Any]], float]:
    workload = ClassifySettings(model="resnet", epochs=epochs, seed=0)
    trial = Trial(params, workload, load(workload.data), torch.device(device))
    start = time.perf_counter()
    history = [trial.run_epoch() for _ in range(epochs)]
    if device == "cuda":
        torch.cuda.synchronize()
    return history, time.perf_counter() - start


def resume_is_exact(device: str, epochs: int = 4) -> dict[str, Any]:
    workload = ClassifySettings(model="resnet", epochs=epochs, seed=1)
    data = load(workload.data)
    keys = ("train_loss", "val_loss", "val_acc")
    straight = Trial(PARAMS, workload, data, torch.device(device))
    full = [[m[k] for k in keys] for m in (straight.run_epoch() for _ in range(epochs))]
    first = Trial(PARAMS, workload, data, torch.device(device))
    head = [[m[k] for k in keys] for m in (first.run_epoch() for _ in range(epochs // 2))]
    with tempfile.TemporaryDirectory() as d:
        checkpoint.write(d, first.state(), {}, rng=[checkpoint.rng_state()])
        resumed = Trial(PARAMS, workload, data, torch.device(device))
        resumed.load_state(checkpoint.Checkpoint(d).load())
    tail = [[m[k] for k in keys] for m in (resumed.run_epoch() for _ in range(epochs - epochs // 2))]
    diff = max(abs(a - b) for ra, rb in zip(head + tail, full) for a, b in zip(ra, rb))
    return {"exact": head + tail == full, "max_abs_diff": diff}


def _worker(epochs: int, queue: mp.Queue[Any]) -> None:
    torch.set_num_threads(1)
    _, seconds = train(HEAVY, epochs, "cuda")
    queue.put(seconds)


def shared_gpu(n: int, epochs: int) -> dict[str, Any]:
    """n trial processes on one GPU vs one alone: aggregate throughput ratio."""
    ctx = mp.get_context("spawn")

    def wall(procs: int) -> float:
        queue = ctx.Queue()
        start = time.perf_counter()
        workers = [ctx.Process(target=_worker, args=(epochs, queue)) for _ in range(procs)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        return time.perf_counter() - start

    alone, together = wall(1), wall(n)
    return {
        "trials": n,
        "epochs_each": epochs,
        "wall_alone_s": alone,
        "wall_shared_s": together,
        "throughput_ratio": (n * epochs / together) / (epochs / alone),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--share", type=int, default=4)
    args = parser.parse_args()
    torch.set_num_threads(1)  # a trial with resources {cpu: 1}
    report: dict[str, Any] = {"torch": torch.__version__, "cuda": torch.cuda.is_available()}
    _, cpu_s = train(HEAVY, 2, "cpu")
    report["resnet20_epoch_cpu_1thread_s"] = cpu_s / 2
    report["resume_exact_cpu"] = resume_is_exact("cpu")
    if torch.cuda.is_available():
        report["device"] = torch.cuda.get_device_name(0)
        train(HEAVY, 1, "cuda")  # warm-up: CUDA context, cuDNN
        _, gpu_s = train(HEAVY, 2, "cuda")
        report["resnet20_epoch_gpu_s"] = gpu_s / 2
        report["gpu_speedup_vs_1_cpu"] = (cpu_s / 2) / (gpu_s / 2)
        history, seconds = train(PARAMS, args.epochs, "cuda")
        report["best_config_on_gpu"] = {"epochs": args.epochs, "seconds": seconds, "val_acc": history[-1]["val_acc"]}
        report["resume_exact_cuda"] = resume_is_exact("cuda")
        report["shared_gpu"] = shared_gpu(args.share, 3)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
