"""How often do the resume tests fail or hang? Run each of them N times, in turn, on this machine.

    python scripts/resume_loop.py [--repeats 20] [--timeout-s 900] [--tests head-loss kill-mid-search ...]

The tests: the head lost with its disk (restored from S3 alone), and the driver killed with
SIGKILL mid-search, mid-way through a checkpoint upload to S3, just after a trial ended (the
searcher told, nothing about its end saved yet), just after a trial's checkpoint reached S3
(the saved state names none of its checkpoints), and just after a trial's process started.
Each run is a fresh pytest process (its own SeaweedFS server and Ray); a run that outlives ``--timeout-s`` counts as
a hang. Prints JSON: per test, passes, failures, hangs, and the wall time of each run.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
KILL = "tests/e2e/test_cli.py::test_driver_killed_at_a_precise_point_resumes"
TESTS = {
    "head-loss": "tests/e2e/test_cli.py::test_head_loss_restores_from_the_bucket_alone",
    "kill-mid-search": "tests/e2e/test_cli.py::test_killed_driver_resumes_whole_search",
    "kill-mid-upload": f"{KILL}[checkpoint_upload-30-True]",
    "kill-after-trial-done": f"{KILL}[trial_done-2-True]",
    "kill-after-checkpoint": f"{KILL}[checkpoint_saved-22-True]",
    "kill-at-trial-start": f"{KILL}[trial_start-3-False]",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--timeout-s", type=float, default=900)
    parser.add_argument("--tests", nargs="+", default=list(TESTS), choices=list(TESTS))
    args = parser.parse_args()
    counts: dict[str, dict[str, int]] = {name: {"passed": 0, "failed": 0, "hung": 0} for name in args.tests}
    walls_s: dict[str, list[float]] = {name: [] for name in args.tests}
    for _ in range(args.repeats):  # round-robin: a noisy spell on the machine hits every test alike
        for name, outcome in counts.items():
            started = time.monotonic()
            try:
                proc = subprocess.run(
                    [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", TESTS[name]],
                    cwd=REPO,
                    capture_output=True,
                    text=True,
                    timeout=args.timeout_s,
                )
                outcome["passed" if proc.returncode == 0 else "failed"] += 1
                if proc.returncode != 0:
                    print(proc.stdout[-3000:], file=sys.stderr)
            except subprocess.TimeoutExpired:
                outcome["hung"] += 1
                subprocess.run([str(Path(sys.executable).parent / "ray"), "stop", "--force"], capture_output=True)
            walls_s[name].append(round(time.monotonic() - started, 1))
            print(name, outcome, walls_s[name], file=sys.stderr, flush=True)
    report = {name: {**counts[name], "walls_s": walls_s[name]} for name in args.tests}
    print(json.dumps({**vars(args), "results": report}, indent=1))


if __name__ == "__main__":
    main()
