"""``python -m tuner.agent``: the spot-notice agent, one per spot worker node.

    python -m tuner.agent --provider aws                      # on an AWS spot worker
    python -m tuner.agent --provider gcp --endpoint http://127.0.0.1:8999 --node-id HEX

Started by the cluster config on every spot worker. Off-cloud (no metadata service)
it idles quietly. Exits 0 on SIGTERM; exits 2 with one line on bad arguments.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from typing import Optional

from tuner import labels as node_labels
from tuner import preemption


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tuner.agent", description=__doc__.splitlines()[0])
    p.add_argument("--provider", choices=sorted(preemption.PROVIDERS), required=True)
    p.add_argument("--endpoint", help="metadata base URL (default: the provider's link-local address)")
    p.add_argument("--interval-s", type=float, default=preemption.DEFAULT_POLL_INTERVAL_S)
    p.add_argument("--address", default="auto", help="Ray GCS address (default: the local cluster)")
    p.add_argument("--node-id", help="Ray node to drain (default: the node on this host's IP)")
    p.add_argument("--drain-on-rebalance", action="store_true", help="also drain on an AWS rebalance recommendation")
    return p


def _own_node(address: str, node_id: Optional[str]) -> tuple[str, dict[str, str]]:
    """This host's Ray node id and its labels (instance type, zone, market)."""
    import ray

    nodes = preemption.node_info(address)
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
    logging.basicConfig(level=logging.INFO, format="%(asctime)s tuner.agent %(levelname)s %(message)s")
    from ray._private import services

    address = services.canonicalize_bootstrap_address_or_die(args.address)
    node_id, labels = _own_node(address, args.node_id)
    node = {
        "node": node_id[:12],
        "instance_type": labels.get(node_labels.INSTANCE_TYPE, "?"),
        "zone": labels.get(node_labels.ZONE, "?"),
    }

    def drain(notice: preemption.Notice) -> bool:
        return preemption.drain_node(address, node_id, f"{notice.provider} spot {notice.action}", notice.deadline_s)

    agent = preemption.Agent(
        source=preemption.make_source(args.provider, args.endpoint),
        drain=drain,
        interval_s=args.interval_s,
        drain_on_rebalance=args.drain_on_rebalance,
        node=node,
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    logging.getLogger(__name__).info(
        "watching %s metadata every %.1f s for node %s", args.provider, args.interval_s, node_id
    )
    agent.run(stop)
    return 0


if __name__ == "__main__":
    sys.exit(main())
