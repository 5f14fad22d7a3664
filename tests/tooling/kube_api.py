"""A Kubernetes API server's node endpoint on 127.0.0.1 (``GET /api/v1/nodes/NAME``), with bearer-token auth:
what a worker pod's wrapper (``tuner.spot.pod``) reads its node's labels from."""

from __future__ import annotations

import json
from typing import Any, Optional

from tests.tooling.local_http import LocalHttpServer


class KubeApi(LocalHttpServer):
    """``nodes``: name -> labels; ``mode``: ok | malformed (injected failure); ``token``: None takes any caller."""

    content_type = "application/json"

    def __init__(self, token: Optional[str]) -> None:
        super().__init__()
        self.token, self.mode = token, "ok"
        self.nodes: dict[str, dict[str, str]] = {}

    def answer(self, method: str, path: str, headers: Any) -> tuple[int, str]:
        status, body = self._node(path, headers)
        return status, json.dumps(body)

    def _node(self, path: str, headers: Any) -> tuple[int, dict[str, Any]]:
        if self.token is not None and headers.get("Authorization") != f"Bearer {self.token}":
            return 401, {"kind": "Status", "reason": "Unauthorized"}
        name = path.removeprefix("/api/v1/nodes/")
        if not path.startswith("/api/v1/nodes/") or name not in self.nodes:
            return 404, {"kind": "Status", "reason": "NotFound"}
        if self.mode == "malformed":
            return 200, {"kind": "Node", "metadata": {"name": name}}
        return 200, {"kind": "Node", "metadata": {"name": name, "labels": self.nodes[name]}}
