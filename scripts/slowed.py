"""Run a command as on a slower machine: everything it starts shares one CPU with busy loops.

    python scripts/slowed.py -- python -m pytest -m slow        # the slow tests, slowed
    python scripts/slowed.py --calibrate                        # how much slower a training step gets (JSON)

The command and every process it starts (Ray's raylets, trial processes, servers) inherit an affinity
to one CPU, and ``--hogs`` busy loops (default 1) run on that CPU at the same priority, so the scheduler
gives the command's processes a share of one core instead of all of them. A trial step then takes at
least twice as long (``--calibrate`` measures a ResNet-8 training step on a digits-shaped batch both ways, in
fresh processes). Linux only (``os.sched_setaffinity``); no cgroup or root needed.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CALIBRATION_STEPS = 30
STEP_PROBE = f"""
import time, torch
from workloads.models.resnet import ResNet
torch.manual_seed(0)
torch.set_num_threads(1)
x, y = torch.randn(32, 1, 8, 8), torch.randint(0, 10, (32,))  # a digits batch's shape
model, loss = ResNet(depth=8, width=16, in_channels=1, num_classes=10), torch.nn.CrossEntropyLoss()
opt = torch.optim.SGD(model.parameters(), lr=0.1)
def step():
    opt.zero_grad(); loss(model(x), y).backward(); opt.step()
step()
started = time.perf_counter()
for _ in range({CALIBRATION_STEPS}):
    step()
print((time.perf_counter() - started) / {CALIBRATION_STEPS})
"""


def _spin(cpu: int) -> None:
    os.sched_setaffinity(0, {cpu})
    while True:
        pass


@contextmanager
def slowed(hogs: int) -> Iterator[int]:
    """This process (and what it starts from now on) on one CPU, with ``hogs`` busy loops beside it."""
    cpu = min(os.sched_getaffinity(0))
    before = os.sched_getaffinity(0)
    spinners = [multiprocessing.Process(target=_spin, args=(cpu,), daemon=True) for _ in range(hogs)]
    for spinner in spinners:
        spinner.start()
    os.sched_setaffinity(0, {cpu})
    try:
        yield cpu
    finally:
        os.sched_setaffinity(0, before)
        for spinner in spinners:
            spinner.terminate()
            spinner.join()


def step_s() -> float:
    """Seconds per ResNet-8 training step, measured in a fresh process (as a trial's would be)."""
    out = subprocess.run([sys.executable, "-c", STEP_PROBE], cwd=REPO, capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hogs", type=int, default=1, help="busy loops sharing the command's CPU")
    parser.add_argument("--calibrate", action="store_true", help="measure the slowdown of a training step")
    parser.add_argument("command", nargs="*", help="the command to run slowed (after --)")
    args = parser.parse_args()
    if args.calibrate:
        normal = step_s()
        with slowed(args.hogs):
            slow = step_s()
        print(json.dumps({"hogs": args.hogs, "step_s": normal, "slowed_step_s": slow, "slowdown": slow / normal}))
        return 0
    if not args.command:
        parser.error("give a command after --, or --calibrate")
    started = time.monotonic()
    with slowed(args.hogs) as cpu:
        print(f"slowed: {' '.join(args.command)} on CPU {cpu} with {args.hogs} busy loop(s)", file=sys.stderr)
        status = subprocess.call(args.command)
    print(f"slowed: exit {status} after {time.monotonic() - started:.0f} s", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
