"""The twin's "cloud": Ray's fake multi-node provider, whose nodes take a boot time to come up.

A fake node is a raylet started on this machine in a second or two; a cloud GPU instance takes about a minute
from launch to Ray running on it (``tuner.config.platform.GPU_BOOT_S``). Without that wait the twin hides the
cost that capacity requested at a spot notice saves. The autoscaler launches nodes on threads of its own, so a
launch that waits out its boot delays that launch only; the node counts as launching (pending) meanwhile.
``provider.boot_s`` in the twin's autoscaler config: ``{worker type: seconds, "*": every other type}``.

A node whose Ray has exited is gone, as an instance is once the cloud takes it back: Ray's raylet exits by itself
when its node was drained and has gone idle (a trial that moved off a node with a notice leaves it so), and a
fault may kill a raylet. Without that, the fake provider would keep listing the node, the autoscaler would count it
as still launching, and the node type's capacity would be held by a node that never comes.
"""

from __future__ import annotations

import time
from typing import Any

from ray.autoscaler.tags import TAG_RAY_USER_NODE_TYPE

from tuner import _ray

EVERY_TYPE = "*"


def boot_s(provider_config: dict[str, Any], node_type: str) -> float:
    delays = provider_config.get("boot_s", {})
    return float(delays.get(node_type, delays.get(EVERY_TYPE, 0.0)))


class BootingProvider(_ray.fake_node_provider()):  # type: ignore[misc]
    def non_terminated_nodes(self, tag_filters: dict[str, str]) -> list[str]:
        for node_id in _ray.fake_nodes_without_ray(self):
            self.terminate_node(node_id)
        return list(super().non_terminated_nodes(tag_filters))

    def create_node_with_resources_and_labels(
        self, node_config: dict[str, Any], tags: dict[str, str], count: int, resources: Any, labels: Any
    ) -> Any:
        time.sleep(boot_s(self.provider_config, tags[TAG_RAY_USER_NODE_TYPE]))
        return super().create_node_with_resources_and_labels(node_config, tags, count, resources, labels)
