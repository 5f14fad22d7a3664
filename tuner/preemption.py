"""Spot interruption notices -> Ray node drains -> trials that checkpoint at once.

Three parts, one home:

- metadata pollers for AWS IMDSv2, GCP and Azure Scheduled Events, each turning the
  provider's answer into a :class:`Notice` (or ``None``);
- :class:`Agent`, the per-node loop of ``python -m tuner.agent``: poll, and on a
  termination notice drain this Ray node with reason PREEMPTION and the notice's
  deadline (the GCS DrainNode RPC that Ray's own autoscaler uses). Ray then places
  nothing new on the node and Tune does not charge the trial's failure to
  ``max_failures``;
- :class:`DrainWatcher`, used inside a trial: a background thread that asks the GCS
  which nodes are draining about twice a second, so the training loop checks a
  cached value at every step instead of sending an RPC per step.

Ray's drain and draining-node APIs are private; they are wrapped here and only here.
"""

from __future__ import annotations

import email.utils
import json
import logging
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable, Optional, Protocol

log = logging.getLogger(__name__)

AWS_NOTICE_S = 120  # AWS: two minutes between the notice and the interruption
GCP_NOTICE_S = 30  # GCP: about 30 s (ACPI shutdown follows)
DEFAULT_POLL_INTERVAL_S = 5.0  # what AWS advises for instance-action
HTTP_TIMEOUT_S = 2.0
DRAIN_REASON = "DRAIN_NODE_REASON_PREEMPTION"


@dataclass(frozen=True)
class Notice:
    """An interruption notice: ``action`` is "terminate" or "rebalance"."""

    provider: str
    action: str
    deadline_s: Optional[float]  # unix time the instance goes away, if known
    detail: str = ""

    @property
    def remaining_s(self) -> Optional[float]:
        return None if self.deadline_s is None else max(0.0, self.deadline_s - time.time())


class MetadataError(RuntimeError):
    """A metadata answer we cannot trust (5xx, malformed, timeout): retry, never drain."""


class MetadataUnavailable(MetadataError):
    """No metadata service at all (off-cloud): the agent idles quietly."""


class MetadataSource(Protocol):
    provider: str

    def poll(self) -> Optional[Notice]: ...


def _http(
    method: str, url: str, headers: dict[str, str], timeout_s: float = HTTP_TIMEOUT_S
) -> tuple[int, str, dict[str, str]]:
    """(status, body, headers); 404 is an answer, not an error."""
    request = urllib.request.Request(url, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return response.status, response.read().decode("utf-8", "replace"), dict(response.headers)
    except urllib.error.HTTPError as exc:
        if exc.code >= 500:
            raise MetadataError(f"{method} {url}: HTTP {exc.code}") from exc
        return exc.code, exc.read().decode("utf-8", "replace"), dict(exc.headers or {})
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, ConnectionRefusedError) or "refused" in str(exc.reason).lower():
            raise MetadataUnavailable(f"{url}: no metadata service ({exc.reason})") from exc
        raise MetadataError(f"{method} {url}: {exc.reason}") from exc
    except (TimeoutError, OSError) as exc:
        raise MetadataError(f"{method} {url}: {exc}") from exc


def _json(body: str, what: str) -> Any:
    try:
        return json.loads(body)
    except ValueError as exc:
        raise MetadataError(f"malformed {what}: {body[:80]!r}") from exc


def _iso_time(text: Any, what: str) -> float:
    try:
        return datetime.fromisoformat(str(text).replace("Z", "+00:00")).timestamp()
    except ValueError as exc:
        raise MetadataError(f"malformed time in {what}: {text!r}") from exc


@dataclass
class AwsImds:
    """AWS IMDSv2: a session token, then spot/instance-action and the rebalance recommendation."""

    base_url: str = "http://169.254.169.254"
    token_ttl_s: int = 21600
    provider: str = "aws"
    _token: Optional[str] = field(default=None, repr=False)
    _token_expiry_s: float = 0.0

    def _get_token(self) -> str:
        if self._token is None or time.time() > self._token_expiry_s - 60:
            status, body, _ = _http(
                "PUT",
                f"{self.base_url}/latest/api/token",
                {"X-aws-ec2-metadata-token-ttl-seconds": str(self.token_ttl_s)},
            )
            if status != 200 or not body.strip():
                raise MetadataError(f"IMDSv2 token request answered HTTP {status}")
            self._token, self._token_expiry_s = body.strip(), time.time() + self.token_ttl_s
        return self._token

    def _get(self, path: str) -> tuple[int, str]:
        for attempt in range(2):
            status, body, _ = _http("GET", f"{self.base_url}{path}", {"X-aws-ec2-metadata-token": self._get_token()})
            if status == 401 and attempt == 0:  # token expired or revoked: fetch a new one once
                self._token = None
                continue
            return status, body
        raise MetadataError(f"IMDSv2 refused a fresh token for {path}")

    def poll(self) -> Optional[Notice]:
        status, body = self._get("/latest/meta-data/spot/instance-action")
        if status == 200:
            doc = _json(body, "spot/instance-action")
            if not isinstance(doc, dict) or "action" not in doc or "time" not in doc:
                raise MetadataError(f"spot/instance-action without action/time: {body[:80]!r}")
            return Notice("aws", "terminate", _iso_time(doc["time"], "instance-action"), f"action={doc['action']}")
        if status != 404:
            raise MetadataError(f"spot/instance-action answered HTTP {status}")
        status, body = self._get("/latest/meta-data/events/recommendations/rebalance")
        if status == 200:
            doc = _json(body, "rebalance recommendation")
            if not isinstance(doc, dict) or "noticeTime" not in doc:
                raise MetadataError(f"rebalance recommendation without noticeTime: {body[:80]!r}")
            return Notice("aws", "rebalance", None, f"noticeTime={doc['noticeTime']}")
        if status != 404:
            raise MetadataError(f"rebalance recommendation answered HTTP {status}")
        return None


@dataclass
class GcpMetadata:
    """GCP: ``instance/preempted`` turns TRUE about 30 s before the VM stops."""

    base_url: str = "http://metadata.google.internal"
    provider: str = "gcp"

    def poll(self) -> Optional[Notice]:
        status, body, _ = _http(
            "GET", f"{self.base_url}/computeMetadata/v1/instance/preempted", {"Metadata-Flavor": "Google"}
        )
        if status != 200:
            raise MetadataError(f"instance/preempted answered HTTP {status}")
        value = body.strip().upper()
        if value == "TRUE":
            return Notice("gcp", "terminate", time.time() + GCP_NOTICE_S, "instance/preempted=TRUE")
        if value != "FALSE":
            raise MetadataError(f"instance/preempted is neither TRUE nor FALSE: {body[:40]!r}")
        return None


@dataclass
class AzureScheduledEvents:
    """Azure: a Scheduled Event of type Preempt, with its NotBefore time."""

    base_url: str = "http://169.254.169.254"
    provider: str = "azure"

    def poll(self) -> Optional[Notice]:
        status, body, _ = _http(
            "GET", f"{self.base_url}/metadata/scheduledevents?api-version=2020-07-01", {"Metadata": "true"}
        )
        if status != 200:
            raise MetadataError(f"scheduledevents answered HTTP {status}")
        doc = _json(body, "scheduledevents")
        events = doc.get("Events") if isinstance(doc, dict) else None
        if not isinstance(events, list):
            raise MetadataError(f"scheduledevents without an Events list: {body[:80]!r}")
        for event in events:
            if isinstance(event, dict) and event.get("EventType") == "Preempt":
                not_before = event.get("NotBefore") or ""
                try:
                    deadline = email.utils.parsedate_to_datetime(not_before).timestamp() if not_before else None
                except (TypeError, ValueError) as exc:
                    raise MetadataError(f"malformed NotBefore: {not_before!r}") from exc
                return Notice("azure", "terminate", deadline, f"EventId={event.get('EventId')}")
        return None


PROVIDERS: dict[str, Callable[..., MetadataSource]] = {
    "aws": AwsImds,
    "gcp": GcpMetadata,
    "azure": AzureScheduledEvents,
}


def make_source(provider: str, base_url: Optional[str] = None) -> MetadataSource:
    if provider not in PROVIDERS:
        raise ValueError(f"unknown provider {provider!r}; use one of {', '.join(PROVIDERS)}")
    return PROVIDERS[provider](base_url=base_url) if base_url else PROVIDERS[provider]()


# -- Ray side -------------------------------------------------------------------


def drain_node(gcs_address: str, node_id: str, message: str, deadline_s: Optional[float]) -> bool:
    """Ask the GCS to drain ``node_id`` for preemption; True when accepted."""
    import ray
    from ray.core.generated import autoscaler_pb2

    deadline_ms = int(deadline_s * 1000) if deadline_s else 0
    client = ray._raylet.GcsClient(address=gcs_address)
    accepted, error = client.drain_node(
        node_id, autoscaler_pb2.DrainNodeReason.Value(DRAIN_REASON), message, deadline_ms
    )
    if not accepted:
        log.error("drain of node %s refused: %s", node_id, error)
    return bool(accepted)


def draining_nodes() -> dict[str, int]:
    """``{node_id_hex: deadline_ms}`` of nodes being drained (0 = no deadline)."""
    from ray._private.state import state

    return dict(state.get_draining_nodes())


def node_info(gcs_address: str) -> dict[str, dict[str, Any]]:
    """``{node_id_hex: {"ip", "alive", "labels"}}`` for every node the GCS knows."""
    import ray

    client = ray._raylet.GcsClient(address=gcs_address)
    out = {}
    for node_id, info in client.get_all_node_info().items():
        out[node_id.hex()] = {
            "ip": info.node_manager_address,
            "alive": info.state == 0,  # GcsNodeInfo.ALIVE
            "labels": dict(info.labels),
        }
    return out


class DrainWatcher:
    """Caches whether this trial's node is draining; the training loop reads ``deadline_s``."""

    def __init__(self, node_id: str, interval_s: float = 0.5, probe: Callable[[], dict[str, int]] = draining_nodes):
        self.node_id, self.interval_s, self._probe = node_id, interval_s, probe
        self.draining = False
        self.deadline_s: Optional[float] = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tuner-drain-watcher", daemon=True)

    def start(self) -> "DrainWatcher":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                nodes = self._probe()
            except Exception as exc:  # the GCS may be briefly unreachable; keep the last answer
                log.debug("draining-node probe failed: %s", exc)
            else:
                if self.node_id in nodes:
                    deadline_ms = nodes[self.node_id]
                    self.deadline_s = deadline_ms / 1000 if deadline_ms else None
                    self.draining = True
            self._stop.wait(self.interval_s)


# -- the node agent -------------------------------------------------------------


@dataclass
class Agent:
    """Poll a metadata source; drain this node on a termination notice (once)."""

    source: MetadataSource
    drain: Callable[[Notice], bool]
    interval_s: float = DEFAULT_POLL_INTERVAL_S
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


# -- per-trial heartbeat (in the GCS, which outlives worker nodes) ----------------

_KV_NAMESPACE = "tuner"


def put_heartbeat(trial_id: str, record: dict[str, Any]) -> None:
    """Where a trial is now (node, training seconds, counters), for its next attempt."""
    from ray.experimental.internal_kv import _internal_kv_put

    _internal_kv_put(f"heartbeat:{trial_id}", json.dumps(record), overwrite=True, namespace=_KV_NAMESPACE)


def get_heartbeat(trial_id: str) -> Optional[dict[str, Any]]:
    from ray.experimental.internal_kv import _internal_kv_get

    raw = _internal_kv_get(f"heartbeat:{trial_id}", namespace=_KV_NAMESPACE)
    return json.loads(raw) if raw else None


def clear_heartbeat(trial_id: str) -> None:
    from ray.experimental.internal_kv import _internal_kv_del

    _internal_kv_del(f"heartbeat:{trial_id}", namespace=_KV_NAMESPACE)


def node_lost(node_id: str) -> bool:
    """True when the node is dead or draining: a restart caused by it is a preemption."""
    import ray

    alive = {n["NodeID"]: n["Alive"] for n in ray.nodes()}
    return not alive.get(node_id, False) or node_id in draining_nodes()
