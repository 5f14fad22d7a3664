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

Before starting the command it reads its Kubernetes node's labels (zone, region, capacity type) and
hands them to Ray through Ray's own environment variables, so that the cost ledger and placement
see the same node labels as on VMs.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import psutil

from tuner.spot import drain as drains
from tuner.spot import notices
from tuner.spot.agent import Agent
from tuner.spot.notices import Notice

log = logging.getLogger(__name__)

GRACE_S = 90  # the pods' terminationGracePeriodSeconds: AWS's 2-minute notice less Karpenter's reaction
DRAIN_MARGIN_S = 10.0  # the drain's deadline is this long before the grace period ends: Ray stops cleanly
NODE_START_TIMEOUT_S = 300.0  # the command's raylet is up within this
STOP_TIMEOUT_S = 10.0  # Ray stops within this of its SIGTERM, or is killed
POLL_S = 0.2
SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")
K8S_TO_RAY_ENV = {  # Kubernetes node label -> the variable Ray reads its default node label from
    "topology.kubernetes.io/zone": "RAY_NODE_ZONE",
    "topology.kubernetes.io/region": "RAY_NODE_REGION",
    "karpenter.sh/capacity-type": "RAY_NODE_MARKET_TYPE",
}
NO_RAY_DRAIN_ON_SIGTERM = {"RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0"}


def in_cluster_api() -> Optional[str]:
    host, port = os.environ.get("KUBERNETES_SERVICE_HOST"), os.environ.get("KUBERNETES_SERVICE_PORT")
    return f"https://{host}:{port}" if host and port else None


def node_labels(api: str, node_name: str, account: Path = SERVICE_ACCOUNT, timeout_s: float = 5.0) -> dict[str, str]:
    """The Kubernetes node's labels, read with the pod's service account (``get nodes``, cluster/k8s/rbac.yaml)."""
    headers = {"Accept": "application/json"}
    token = account / "token"
    if token.exists():
        headers["Authorization"] = f"Bearer {token.read_text().strip()}"
    ca = account / "ca.crt"
    context = ssl.create_default_context(cafile=str(ca)) if api.startswith("https") and ca.exists() else None
    request = urllib.request.Request(f"{api}/api/v1/nodes/{node_name}", headers=headers)
    with urllib.request.urlopen(request, timeout=timeout_s, context=context) as response:
        body: Any = json.loads(response.read())
    found = body.get("metadata", {}).get("labels") if isinstance(body, dict) else None
    if not isinstance(found, dict):
        raise ValueError(f"node {node_name}: the API server's answer has no metadata.labels")
    return {str(k): str(v) for k, v in found.items()}


def ray_label_env(api: Optional[str], node_name: Optional[str], account: Path = SERVICE_ACCOUNT) -> dict[str, str]:
    """Ray's label variables from the node's labels; none (with one warning) when they cannot be read."""
    if not api or not node_name:
        return {}
    try:
        found = node_labels(api, node_name, account)
    except (OSError, ValueError, urllib.error.URLError) as exc:
        log.warning("node labels not read (%s): zone and market unknown to the cost ledger", exc)
        return {}
    return {env: found[label] for label, env in K8S_TO_RAY_ENV.items() if label in found}


@dataclass
class OnceDrain:
    """Drains the node for the first notice that comes (SIGTERM or metadata); later ones are logged, not sent."""

    gcs_address: str
    node_id: str
    drained: Optional[Notice] = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, notice: Notice) -> bool:
        with self._lock:
            if self.drained is not None:
                log.warning("%s %s: the node is already draining; not drained again", notice.provider, notice.action)
                return True
            message = f"{notice.provider} {notice.action}: {notice.detail}".strip(": ")
            if drains.drain_node(self.gcs_address, self.node_id, message, notice.deadline_s):
                self.drained = notice
                left = notice.remaining_s
                log.warning("drained Ray node %s (%s), deadline in %.0f s", self.node_id[:12], message, left or 0.0)
            return self.drained is not None


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


class Pod:
    """The command as a child; SIGTERM becomes one drain, a wait until its deadline, and Ray's stop."""

    def __init__(self, command: list[str], grace_s: float, margin_s: float, env: dict[str, str]) -> None:
        self.command, self.grace_s, self.margin_s, self.env = command, grace_s, margin_s, env
        self.terminated = threading.Event()
        self.signals, self.sigterm_s = 0, 0.0
        self.drain: Optional[OnceDrain] = None
        self.child: Optional[subprocess.Popen[bytes]] = None

    def on_sigterm(self, *_: Any) -> None:
        self.signals += 1
        if self.signals == 1:
            self.sigterm_s = time.time()
            self.terminated.set()
        else:
            log.warning("SIGTERM again (%d): the drain already under way stands", self.signals)

    def _wait_for_node(self) -> Optional[OnceDrain]:
        assert self.child is not None
        deadline = time.monotonic() + NODE_START_TIMEOUT_S
        root = psutil.Process(self.child.pid)
        while time.monotonic() < deadline and self.child.poll() is None and not self.terminated.is_set():
            found = raylet_of(root)
            if found:
                log.info("Ray node %s up (GCS %s)", found[0][:12], found[1])
                return OnceDrain(gcs_address=found[1], node_id=found[0])
            time.sleep(POLL_S)
        if self.child.poll() is None and not self.terminated.is_set():
            log.error("no raylet under the command after %.0f s: SIGTERM will stop it undrained", NODE_START_TIMEOUT_S)
        return None

    def _stop_child(self) -> None:
        assert self.child is not None
        if self.child.poll() is None:
            self.child.terminate()
            try:
                self.child.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.child.kill()
                self.child.wait()

    def _hold_until(self, deadline_s: float) -> None:
        """Keep Ray up until the deadline, or until Ray itself is gone (a drained idle node exits)."""
        assert self.child is not None
        while time.time() < deadline_s and self.child.poll() is None:
            if self.drain is not None and raylet_of(psutil.Process(self.child.pid)) is None:
                return
            self.terminated.wait(POLL_S)

    def run(self, watch: Optional[Agent] = None) -> int:
        """Run the command; with ``watch``, poll the instance metadata too once the node is up."""
        self.child = subprocess.Popen(self.command, env=self.env)
        self.drain = self._wait_for_node()
        stop_watching = threading.Event()
        if watch is not None and self.drain is not None:
            watch.drain = self.drain
            threading.Thread(target=watch.run, args=(stop_watching,), name="tuner-metadata", daemon=True).start()
        while self.child.poll() is None and not self.terminated.wait(POLL_S):
            pass
        stop_watching.set()
        if not self.terminated.is_set():
            code = self.child.returncode
            log.error("the command exited with %s before any SIGTERM", code)
            return int(code or 1)
        deadline_s = self.sigterm_s + self.grace_s - self.margin_s
        if self.drain is not None:
            self.drain(Notice("kubernetes", "terminate", deadline_s, "pod SIGTERM (eviction)"))
            drained = self.drain.drained
            self._hold_until(min(deadline_s, drained.deadline_s or deadline_s) if drained else deadline_s)
        self._stop_child()
        log.info("Ray stopped; exiting")
        return 0


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tuner.spot.pod", description=__doc__.splitlines()[0])
    p.add_argument("--grace-s", type=float, default=GRACE_S, help="the pod's terminationGracePeriodSeconds")
    p.add_argument("--margin-s", type=float, default=DRAIN_MARGIN_S, help="drain deadline before the grace end")
    p.add_argument("--provider", choices=sorted(notices.PROVIDERS), help="also poll this cloud's instance metadata")
    p.add_argument("--endpoint", help="metadata base URL (default: the provider's link-local address)")
    p.add_argument("--interval-s", type=float, default=notices.DEFAULT_POLL_INTERVAL_S)
    p.add_argument("--kube-api", default=in_cluster_api(), help="API server to read the node's labels from")
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
    env = {**os.environ, **ray_label_env(args.kube_api, os.environ.get("NODE_NAME")), **NO_RAY_DRAIN_ON_SIGTERM}
    pod = Pod(command, args.grace_s, args.margin_s, env)
    signal.signal(signal.SIGTERM, pod.on_sigterm)
    watch = None
    if args.provider:
        source = notices.make_source(args.provider, args.endpoint)
        watch = Agent(source=source, drain=lambda _: False, interval_s=args.interval_s)
    return pod.run(watch)


if __name__ == "__main__":
    sys.exit(main())
