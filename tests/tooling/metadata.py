"""A cloud metadata service on 127.0.0.1 speaking the AWS IMDSv2, GCP and Azure shapes.

Setting ``terminate_at`` schedules an interruption the way a real instance's metadata
changes; ``mode`` injects failures (500, malformed answers, slow answers).
"""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone
from email.utils import format_datetime
from typing import Any, Optional

from tests.tooling.local_http import LocalHttpServer


class MetadataServer(LocalHttpServer):
    """State of the service; ``mode`` is ok | 500 | malformed | slow (failures to inject)."""

    def __init__(self, provider: str) -> None:
        super().__init__()
        self.provider = provider
        self.mode = "ok"
        self.terminate_at: Optional[float] = None  # unix time of a scheduled interruption
        self.rebalance = False
        self.instance = {  # what IMDS tells a booting node (cluster/node_start.sh reads it)
            "instance-type": "g5.xlarge",
            "placement/availability-zone": "us-east-1a",
            "placement/region": "us-east-1",
            "instance-life-cycle": "spot",
        }
        self.tokens: set[str] = set()

    def revoke_tokens(self) -> None:
        self.tokens.clear()

    # -- responses in each provider's shape ---------------------------------------
    def answer(self, method: str, path: str, headers: Any) -> tuple[int, str]:
        if self.mode == "500":
            return 500, "internal error"
        if self.mode == "slow":
            time.sleep(5)
        if self.provider == "aws":
            return self._aws(method, path, headers)
        if self.provider == "gcp":
            if headers.get("Metadata-Flavor") != "Google" or not path.startswith(
                "/computeMetadata/v1/instance/preempted"
            ):
                return 403, ""
            if self.mode == "malformed":
                return 200, "MAYBE"
            return 200, "TRUE" if self.terminate_at else "FALSE"
        if headers.get("Metadata") != "true" or not path.startswith("/metadata/scheduledevents"):
            return 400, ""
        if self.mode == "malformed":
            return 200, "{not json"
        events = []
        if self.terminate_at:
            events.append(
                {
                    "EventId": "602d9444-d2cd-49c7-8624-8643e7171297",
                    "EventType": "Preempt",
                    "ResourceType": "VirtualMachine",
                    "Resources": ["vm-spot-1"],
                    "EventStatus": "Scheduled",
                    "NotBefore": format_datetime(datetime.fromtimestamp(self.terminate_at, timezone.utc), usegmt=True),
                    "Description": "",
                    "EventSource": "Platform",
                    "DurationInSeconds": -1,
                }
            )
        return 200, json.dumps({"DocumentIncarnation": 1, "Events": events})

    def _aws(self, method: str, path: str, headers: Any) -> tuple[int, str]:
        if method == "PUT" and path == "/latest/api/token":
            if not headers.get("X-aws-ec2-metadata-token-ttl-seconds"):
                return 400, ""
            token = f"token-{len(self.tokens)}-{time.time()}"
            self.tokens.add(token)
            return 200, token
        if headers.get("X-aws-ec2-metadata-token") not in self.tokens:
            return 401, ""
        if path == "/latest/meta-data/spot/instance-action":
            if self.mode == "malformed":
                return 200, '{"action": "terminate"'
            if self.terminate_at is None:
                return 404, ""
            when = datetime.fromtimestamp(self.terminate_at, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
            return 200, json.dumps({"action": "terminate", "time": when})
        if path.removeprefix("/latest/meta-data/") in self.instance:
            return 200, self.instance[path.removeprefix("/latest/meta-data/")]
        if path == "/latest/meta-data/events/recommendations/rebalance":
            if not self.rebalance:
                return 404, ""
            return 200, json.dumps({"noticeTime": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")})
        return 404, ""
