"""A Ray worker pod's main process: ``python -m tuner.spot.pod --grace-s 90 -- ray start ... --block``.

On Kubernetes a spot interruption reaches the pod as an eviction: Karpenter, warned by the cloud,
drains the node, and the kubelet sends the pod's main process SIGTERM, then SIGKILL when the pod's
termination grace period ends. KubeRay sets no grace period and starts ``ray start`` under a shell;
Ray's own drain on SIGTERM (when the signal reaches it) lasts a fixed 30 s, whatever the grace
period or a metadata notice says, and without it the pod's end is a crash to Ray. This wrapper is
the pod's main process instead (``cluster/k8s/raycluster.yaml``): it starts the command, finds the
Ray node it started, and turns the first SIGTERM into Ray's drain of that node, reason PREEMPTION,
deadline the grace period's end less a margin, the drain ``tuner.spot.agent`` makes of a metadata
notice; trials there take their drain checkpoint and resume elsewhere. At the deadline (or when
the node is gone) it stops Ray and exits 0. With ``--provider`` it also polls the instance
metadata, as the agent does on VMs: whichever notice comes first drains, once. Ray's own
drain-on-SIGTERM is turned off in the child, so that there is one drain, with the pod's deadline.

A preStop hook would also run before SIGTERM, inside the same grace period, but the kubelet waits
for it to return before it signals, and a hook that drained and returned at once would leave Ray to
die of the SIGTERM that follows; being the main process lets one program hold the node up exactly
until the deadline and then stop it.

Before starting the command it hands Ray its Kubernetes node's zone, region and capacity type
(``tuner.spot.kube``), so that the cost ledger and placement see the same node labels as on VMs.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Optional

import psutil

from tuner.spot import kube, notices
from tuner.spot.agent import Agent
from tuner.spot.drain import OnceDrain
from tuner.spot.notices import MetadataSource, Notice

log = logging.getLogger(__name__)

GRACE_S = 90  # the pods' terminationGracePeriodSeconds: AWS's 2-minute notice less Karpenter's reaction
DRAIN_MARGIN_S = 10.0  # the drain's deadline is this long before the grace period ends: Ray stops cleanly
NODE_START_WARN_S = 300.0  # no raylet under the command after this long is logged (the search goes on)
STOP_TIMEOUT_S = 10.0  # Ray stops within this of its SIGTERM, or is killed
POLL_S = 0.2
NO_RAY_DRAIN_ON_SIGTERM = {"RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0"}


def raylet_of(root: psutil.Process) -> Optional[tuple[str, str]]:
    """(node id, GCS address) of the raylet among ``root``'s descendants, once it runs."""
    try:
        procs = root.children(recursive=True)
    except psutil.NoSuchProcess:
        return None
    for proc in procs:
        try:
            args = proc.cmdline()
        except psutil.Error:
            continue
        if args and Path(args[0]).name == "raylet":
            flags = dict(a.lstrip("-").split("=", 1) for a in args[1:] if a.startswith("--") and "=" in a)
            if "node_id" in flags and "gcs-address" in flags:
                return flags["node_id"], flags["gcs-address"]
    return None


def exit_status(code: int) -> int:
    """A child's return code as a shell reports it (killed by signal N: 128 + N)."""
    return code if code >= 0 else 128 - code


class Pod:
    """The command as a child; SIGTERM becomes one drain, a wait until its deadline, and Ray's stop."""

    def __init__(self, command: list[str], grace_s: float, margin_s: float, env: dict[str, str]) -> None:
        self.command, self.grace_s, self.margin_s, self.env = command, grace_s, margin_s, env
        self.terminated = threading.Event()
        self.signals, self.sigterm_s = 0, 0.0
        self.drain: Optional[OnceDrain] = None

    def on_sigterm(self, *_: Any) -> None:
        self.signals += 1
        if self.signals == 1:
            self.sigterm_s = time.time()
            self.terminated.set()
        else:
            log.warning("SIGTERM again (%d): the drain already under way stands", self.signals)

    def _find_node(self, root: psutil.Process) -> Optional[OnceDrain]:
        found = raylet_of(root)
        if found is None:
            return None
        log.info("Ray node %s up (GCS %s)", found[0][:12], found[1])
        return OnceDrain(gcs_address=found[1], node_id=found[0])

    def _hold_until(self, child: subprocess.Popen[bytes], deadline_s: float) -> None:
        """Keep Ray up until the deadline, or until Ray itself is gone (a drained idle node exits)."""
        root = psutil.Process(child.pid)
        while time.time() < deadline_s and child.poll() is None and raylet_of(root) is not None:
            time.sleep(POLL_S)

    def run(self, source: Optional[MetadataSource] = None, interval_s: float = notices.DEFAULT_POLL_INTERVAL_S) -> int:
        """Run the command until SIGTERM (then drain, hold, stop: 0) or its own exit (its status). With
        ``source``, the instance metadata is polled too once the node is up."""
        child = subprocess.Popen(self.command, env=self.env)
        root, started, warned = psutil.Process(child.pid), time.monotonic(), False
        stop_watching = threading.Event()
        while child.poll() is None and not self.terminated.wait(POLL_S):
            if self.drain is None:
                self.drain = self._find_node(root)
                if self.drain is not None and source is not None:
                    agent = Agent(source=source, drain=self.drain, interval_s=interval_s)
                    threading.Thread(
                        target=agent.run, args=(stop_watching,), name="tuner-metadata", daemon=True
                    ).start()
                elif self.drain is None and not warned and time.monotonic() - started > NODE_START_WARN_S:
                    warned = True
                    log.error("no raylet under the command after %.0f s: still looking", NODE_START_WARN_S)
        stop_watching.set()
        if not self.terminated.is_set():
            code = exit_status(child.returncode)
            log.error("the command exited with %s before any SIGTERM", code)
            return code
        self.drain = self.drain or self._find_node(root)  # the node may have come up since the last look
        deadline_s = self.sigterm_s + self.grace_s - self.margin_s
        if self.drain is not None:
            self.drain(Notice("kubernetes", "terminate", deadline_s, "pod SIGTERM"))
            first = self.drain.drained
            self._hold_until(child, min(deadline_s, first.deadline_s or deadline_s) if first else deadline_s)
        self._stop(child)
        log.info("Ray stopped; exiting")
        return 0

    @staticmethod
    def _stop(child: subprocess.Popen[bytes]) -> None:
        if child.poll() is None:
            child.terminate()
            try:
                child.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tuner.spot.pod", description=__doc__.splitlines()[0])
    p.add_argument("--grace-s", type=float, default=GRACE_S, help="the pod's terminationGracePeriodSeconds")
    p.add_argument("--margin-s", type=float, default=DRAIN_MARGIN_S, help="drain deadline before the grace end")
    p.add_argument("--provider", choices=sorted(notices.PROVIDERS), help="also poll this cloud's instance metadata")
    p.add_argument("--endpoint", help="metadata base URL (default: the provider's link-local address)")
    p.add_argument("--interval-s", type=float, default=notices.DEFAULT_POLL_INTERVAL_S)
    p.add_argument("--kube-api", default=kube.in_cluster_api(), help="API server to read the node's labels from")
    p.add_argument("command", nargs=argparse.REMAINDER, help="-- the command that starts Ray (with --block)")
    return p


def main(argv: Optional[list[str]] = None) -> int:
    p = _parser()
    args = p.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        p.error("give the command that starts Ray after --")
    if not 0 <= args.margin_s < args.grace_s:
        p.error(f"--margin-s {args.margin_s:g} must be below --grace-s {args.grace_s:g}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s tuner.spot.pod %(levelname)s %(message)s")
    labels = kube.ray_label_env(args.kube_api, os.environ.get("NODE_NAME"))
    pod = Pod(command, args.grace_s, args.margin_s, {**os.environ, **labels, **NO_RAY_DRAIN_ON_SIGTERM})
    signal.signal(signal.SIGTERM, pod.on_sigterm)
    source = notices.make_source(args.provider, args.endpoint) if args.provider else None
    return pod.run(source, args.interval_s)


if __name__ == "__main__":
    sys.exit(main())
