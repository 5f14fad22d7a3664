"""Spot interruption notices from the cloud's instance metadata.

Pollers for AWS IMDSv2 (``spot/instance-action``, rebalance recommendations), GCP
(``instance/preempted``) and Azure Scheduled Events (``Preempt``), each turning the
provider's answer into a :class:`Notice` or ``None``. Malformed answers, 5xx and
timeouts are :class:`MetadataError` (retry, never drain); no service at all is
:class:`MetadataUnavailable` (off-cloud: idle). Endpoints are configurable so that
tests point them at a local fake.
"""

from __future__ import annotations

import email.utils
import json
import logging
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Optional, Protocol

log = logging.getLogger(__name__)

AWS_NOTICE_S = 120  # AWS: two minutes between the notice and the interruption
GCP_NOTICE_S = 30  # GCP: about 30 s (ACPI shutdown follows)
DEFAULT_POLL_INTERVAL_S = 5.0  # what AWS advises for instance-action
HTTP_TIMEOUT_S = 2.0


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


def _get_ok(url: str, headers: dict[str, str], what: str) -> str:
    """The body of a GET that must answer 200."""
    status, body, _ = _http("GET", url, headers)
    if status != 200:
        raise MetadataError(f"{what} answered HTTP {status}")
    return body


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
        body = _get_ok(
            f"{self.base_url}/computeMetadata/v1/instance/preempted",
            {"Metadata-Flavor": "Google"},
            "instance/preempted",
        )
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
        body = _get_ok(
            f"{self.base_url}/metadata/scheduledevents?api-version=2020-07-01", {"Metadata": "true"}, "scheduledevents"
        )
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
