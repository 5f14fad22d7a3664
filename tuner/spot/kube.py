"""A Kubernetes node's labels, for a worker pod to hand to Ray (``tuner.spot.pod``).

A pod cannot see its node's labels through the downward API, so the pod reads its node
(``NODE_NAME``, from the downward API) from the API server with its service account
(``get nodes``: ``cluster/k8s/rbac.yaml``), and passes zone, region and capacity type to
Ray through the variables Ray reads its default node labels from on Kubernetes.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import ssl
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Optional

log = logging.getLogger(__name__)

SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")
API_TIMEOUT_S = 5.0
K8S_TO_RAY_ENV = {  # Kubernetes node label -> the variable Ray reads its default node label from
    "topology.kubernetes.io/zone": "RAY_NODE_ZONE",
    "topology.kubernetes.io/region": "RAY_NODE_REGION",
    "karpenter.sh/capacity-type": "RAY_NODE_MARKET_TYPE",
}


def in_cluster_api() -> Optional[str]:
    """The API server's URL inside a pod (the variables the kubelet sets); None elsewhere."""
    host, port = os.environ.get("KUBERNETES_SERVICE_HOST"), os.environ.get("KUBERNETES_SERVICE_PORT")
    if not host or not port:
        return None
    return f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"


def node_labels(api: str, node_name: str, account: Path = SERVICE_ACCOUNT) -> dict[str, str]:
    """The node's labels, read with the pod's service account token (and CA, over HTTPS)."""
    headers = {"Accept": "application/json"}
    token = account / "token"
    if token.exists():
        headers["Authorization"] = f"Bearer {token.read_text().strip()}"
    ca = account / "ca.crt"
    context = ssl.create_default_context(cafile=str(ca)) if api.startswith("https") and ca.exists() else None
    request = urllib.request.Request(f"{api}/api/v1/nodes/{node_name}", headers=headers)
    with urllib.request.urlopen(request, timeout=API_TIMEOUT_S, context=context) as response:
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
    except (OSError, ValueError, urllib.error.URLError, http.client.HTTPException) as exc:
        log.warning("node labels not read (%s): zone and market unknown to the cost ledger", exc)
        return {}
    return {env: found[label] for label, env in K8S_TO_RAY_ENV.items() if label in found}
