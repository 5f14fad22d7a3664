"""The spot-notice agent, one per spot worker node: ``python -m tuner.spot.agent``.

    python -m tuner.spot.agent --provider aws                      # on an AWS spot worker
    python -m tuner.spot.agent --provider gcp --endpoint http://127.0.0.1:8999 --node-id HEX

Started by the cluster config on every spot worker (``cluster/node_start.sh``). It polls
the instance metadata and, on a termination notice, drains its Ray node with reason
PREEMPTION and the notice's deadline (``tuner.spot.drain``). Off-cloud (no metadata
service) it idles quietly. Exits 0 on SIGTERM; exits 2 with one line on bad arguments.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Optional

import ray

from tuner import _ray
from tuner.spot import drain as drains
from tuner.spot import labels as node_labels
from tuner.spot import notices
from tuner.spot.notices import (
    MetadataError,
    MetadataSource,
    MetadataUnavailable,
    Notice,
)

log = logging.getLogger(__name__)


@dataclass
class Agent:
    """Poll a metadata source; drain this node on a termination notice (once)."""

    source: MetadataSource
    drain: Callable[[Notice], bool]
    interval_s: float = notices.DEFAULT_POLL_INTERVAL_S
    drain_on_rebalance: bool = False
    node: dict[str, str] = field(default_factory=dict)  # node id, instance type, zone: for the log
    drained: Optional[Notice] = None
    errors: int = 0
    _warned_unavailable: bool = False

    def _describe(self, notice: Notice) -> str:
        remaining = notice.remaining_s
        when = f"deadline in {remaining:.0f} s" if remaining is not None else "no deadline"
        where = " ".join(f"{k}={v}" for k, v in self.node.items())
        return f"{notice.provider} {notice.action} notice ({notice.detail}) for {where}: {when}"

    def step(self) -> Optional[Notice]:
        """One poll; drains when due. Errors are logged and never drain."""
        try:
            notice = self.source.poll()
        except MetadataUnavailable as exc:
            if not self._warned_unavailable:
                self._warned_unavailable = True
                log.info("no %s metadata service (%s): idling", self.source.provider, exc)
            return None
        except MetadataError as exc:
            self.errors += 1
            log.warning("metadata poll failed, will retry: %s", exc)
            return None
        if notice is None or self.drained is not None:
            return notice
        if notice.action == "rebalance" and not self.drain_on_rebalance:
            log.warning("%s; not draining (drain_on_rebalance is off)", self._describe(notice))
            return notice
        log.warning("%s; draining this Ray node", self._describe(notice))
        if self.drain(notice):
            self.drained = notice
        return notice

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            started = time.monotonic()
            self.step()
            stop.wait(max(0.0, self.interval_s - (time.monotonic() - started)))


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tuner.spot.agent", description=__doc__.splitlines()[0])
    p.add_argument("--provider", choices=sorted(notices.PROVIDERS), required=True)
    p.add_argument("--endpoint", help="metadata base URL (default: the provider's link-local address)")
    p.add_argument("--interval-s", type=float, default=notices.DEFAULT_POLL_INTERVAL_S)
    p.add_argument("--address", default="auto", help="Ray GCS address (default: the local cluster)")
    p.add_argument("--node-id", help="Ray node to drain (default: the node on this host's IP)")
    p.add_argument("--drain-on-rebalance", action="store_true", help="also drain on an AWS rebalance recommendation")
    return p


def _own_node(address: str, node_id: Optional[str]) -> tuple[str, dict[str, str]]:
    """This host's Ray node id and its labels (instance type, zone, market)."""

    nodes = _ray.node_info(address)
    if node_id:
        if node_id not in nodes:
            raise SystemExit(f"error: --node-id {node_id} is not a node of the cluster at {address}")
        return node_id, nodes[node_id]["labels"]
    ip = ray.util.get_node_ip_address()
    mine = [nid for nid, info in nodes.items() if info["ip"] == ip and info["alive"]]
    if len(mine) != 1:
        raise SystemExit(f"error: {len(mine)} live Ray nodes on {ip}: pass --node-id")
    return mine[0], nodes[mine[0]]["labels"]


def main(argv: Optional[list[str]] = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s tuner.spot.agent %(levelname)s %(message)s")
    address = _ray.bootstrap_address(args.address)
    node_id, labels = _own_node(address, args.node_id)
    node = {
        "node": node_id[:12],
        "instance_type": labels.get(node_labels.INSTANCE_TYPE, "?"),
        "zone": labels.get(node_labels.ZONE, "?"),
    }

    agent = Agent(
        source=notices.make_source(args.provider, args.endpoint),
        drain=drains.OnceDrain(address, node_id),
        interval_s=args.interval_s,
        drain_on_rebalance=args.drain_on_rebalance,
        node=node,
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    log.info("watching %s metadata every %.1f s for node %s", args.provider, args.interval_s, node_id)
    agent.run(stop)
    return 0


if __name__ == "__main__":
    sys.exit(main())
