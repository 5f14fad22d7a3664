"""Faults injected on a running cluster the way they happen: a spot notice (the Ray drain the agent sends)
and a node that vanishes (its raylet killed)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from tuner import _ray
from tuner.spot.drain import drain_node


def raylet_pid(node_id: str) -> int:
    flag = f"--node_id={node_id}".encode()
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().split(b"\0")
        except OSError:  # the process ended meanwhile
            continue
        if args and args[0].endswith(b"raylet") and flag in args:
            found.append(int(cmdline.parent.name))
    (pid,) = found
    return pid


def kill_node(node_id: str) -> None:
    """SIGKILL the node's raylet: the node is gone without notice, as a reclaimed spot instance is."""
    os.kill(raylet_pid(node_id), signal.SIGKILL)


def notice_then_kill(node_id: str, notice_s: float, address: str = "auto") -> None:
    """A spot notice for the node (drain with reason PREEMPTION and the deadline), then the node goes at it."""
    assert drain_node(_ray.bootstrap_address(address), node_id, "test spot notice", time.time() + notice_s)
    time.sleep(notice_s)
    kill_node(node_id)
