"""Campaign profile for the planner, measured on this machine's GPU: one epoch and one checkpoint.

    python scripts/bench_profile.py [--depth 20] [--batch-size 128] [--steps 100]

Trains the platform's ResNet (``tuner.training.Trial``) on CIFAR-10-shaped data
(50,000 random 3x32x32 images: the shape sets the cost, not the pixels) and times
``--steps`` steps, scaled to a full epoch, then one full-state checkpoint write
(``tuner.trial.checkpoint.write``). The CPU is measured in the same run as the baseline
(fewer steps, scaled). Prints JSON with ``profile.epoch_s`` and
``profile.checkpoint_s`` for ``python -m tuner.plan`` on this GPU type.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tuner.trial import checkpoint  # noqa: E402
from workloads.classify import ClassifySettings, Trial  # noqa: E402
from workloads.data import Dataset  # noqa: E402

CIFAR_TRAIN, CIFAR_VAL = 50_000, 10_000


def cifar_shaped() -> Dataset:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(CIFAR_TRAIN + CIFAR_VAL, 3, 32, 32, generator=g)
    y = torch.randint(0, 10, (CIFAR_TRAIN + CIFAR_VAL,), generator=g)
    return Dataset(x[:CIFAR_TRAIN], y[:CIFAR_TRAIN], x[CIFAR_TRAIN:], y[CIFAR_TRAIN:], 10)


def measure(device: str, params: dict[str, Any], steps: int) -> dict[str, float]:
    trial = Trial(params, ClassifySettings(model="resnet", epochs=1, seed=0), cifar_shaped(), torch.device(device))
    done = [0]

    class Enough(Exception):
        pass

    def after_step() -> None:
        done[0] += 1
        if done[0] == 5 and device == "cuda":
            torch.cuda.synchronize()
            started[0] = time.perf_counter()  # after warm-up (cuDNN autotune, allocator)
        if done[0] >= steps + (5 if device == "cuda" else 0):
            raise Enough

    started = [time.perf_counter()]
    try:
        trial.train_epoch(after_step)
    except Enough:
        pass
    if device == "cuda":
        torch.cuda.synchronize()
    step_s = (time.perf_counter() - started[0]) / steps
    with tempfile.TemporaryDirectory() as directory:
        t0 = time.perf_counter()
        checkpoint.write(directory, trial.state(), {})
        checkpoint_s = time.perf_counter() - t0
        size_mb = sum(p.stat().st_size for p in Path(directory).iterdir()) / 1e6
    return {
        "step_s": step_s,
        "epoch_s": step_s * trial.steps_per_epoch,
        "checkpoint_s": checkpoint_s,
        "checkpoint_mb": size_mb,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depth", type=int, default=20)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--cpu-steps", type=int, default=5)
    args = parser.parse_args()
    params = {
        "lr": 0.1,
        "weight_decay": 5e-4,
        "momentum": 0.9,
        "batch_size": args.batch_size,
        "depth": args.depth,
        "width": args.width,
        "label_smoothing": 0.0,
    }
    report: dict[str, Any] = {**vars(args), "data": "CIFAR-10-shaped (50k x 3x32x32)"}
    report["cpu"] = measure("cpu", params, args.cpu_steps)
    if torch.cuda.is_available():
        report["gpu_name"] = torch.cuda.get_device_name(0)
        report["cuda"] = measure("cuda", params, args.steps)
        report["gpu_vs_cpu_speedup"] = report["cpu"]["epoch_s"] / report["cuda"]["epoch_s"]
        report["profile"] = {
            "epoch_s": round(report["cuda"]["epoch_s"], 2),
            "checkpoint_s": round(report["cuda"]["checkpoint_s"], 3),
        }
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
