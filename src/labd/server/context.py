"""What every route of one server shares: the daemon, settings, auth, metrics, the bridge."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from fastapi.responses import Response
from starlette.requests import HTTPConnection

from labd.daemon import LabDaemon
from labd.server.auth import Auth
from labd.server.bridge import Bridge
from labd.server.errors import ApiError
from labd.server.guards import StreamLimits
from labd.server.metrics import Metrics
from labd.tasks import TaskHandle
from labd.wire import encode_json

__all__ = ["ServerContext", "json_response", "unknown_device"]


@dataclass
class ServerContext:
    daemon: LabDaemon
    tokens: Mapping[str, str] | None = None
    call_timeout: float = 30.0
    heartbeat_interval: float = 15.0
    max_body_bytes: int = 10 * 1024 * 1024
    max_json_depth: int = 64
    max_streams_per_client: int | None = 64
    #: Origins (``scheme://host[:port]``) allowed besides the server's own; ``"*"``: any.
    cors_origins: frozenset[str] = frozenset()
    #: ``Host`` names accepted; None accepts any (a loopback bind sets loopback names).
    trusted_hosts: frozenset[str] | None = None
    metrics: Metrics = field(default_factory=Metrics)
    bridge: Bridge = field(default_factory=Bridge)
    closing: bool = False
    auth: Auth = field(init=False)
    stream_limits: StreamLimits = field(init=False)

    def __post_init__(self) -> None:
        if self.max_json_depth < 2:
            raise ValueError(f"max_json_depth must be >= 2, not {self.max_json_depth!r}")
        self.auth = Auth(self.tokens, on_failure=self.metrics.auth_failures.inc)
        self.stream_limits = StreamLimits(self.max_streams_per_client)

    def client_of(self, request: HTTPConnection) -> str:
        """Who a request counts against: its token (hashed) with tokens on, else its address."""
        if self.auth.enabled:
            token = self.auth.token_of(request)
            if token:
                return "token:" + hashlib.sha256(token.encode()).hexdigest()[:16]
        client = request.client
        return "addr:" + (client.host if client is not None else "?")

    def open_stream(self, request: HTTPConnection) -> str:
        """Count a new stream against its client, or 429 past ``max_streams_per_client``."""
        client = self.client_of(request)
        if not self.stream_limits.acquire(client):
            self.metrics.streams_refused.inc()
            raise ApiError(
                429,
                f"too many open streams for this client (at most {self.stream_limits.per_client});"
                " close one first",
                type_name="TooManyStreams",
                context={"limit": self.stream_limits.per_client},
            )
        return client

    def require(self, request: HTTPConnection, role: str) -> str:
        return self.auth.require(request, role)

    def ensure_not_owned(self, device_id: str, action: str) -> None:
        """409 naming the owner when a task holds the device."""
        owner = self.daemon.owner_of(device_id)
        if owner is not None:
            raise ApiError(
                409,
                f"device {device_id!r} is owned by task {owner!r}; cannot {action}",
                type_name="DeviceOwnedError",
                context={"device_id": device_id, "owner": owner, "action": action},
            )

    def is_closing(self) -> bool:
        return self.closing

    def check_device(self, device_id: str) -> None:
        """404 naming the id unless the daemon holds the device."""
        if not self.daemon.has_device(device_id):
            raise unknown_device(device_id)

    def check_stream(self, device_id: str) -> None:
        """404 for an unknown device, 400 for one that cannot stream."""
        self.check_device(device_id)
        if not self.daemon.can_stream(device_id):
            raise ApiError(
                400,
                f"device {device_id!r} cannot stream",
                type_name="DeviceError",
                context={"device_id": device_id},
            )

    def task(self, task_id: str) -> TaskHandle:
        """The task's handle, or 404 naming the id."""
        try:
            return self.daemon.get_task(task_id)
        except ValueError as exc:
            raise ApiError(
                404, str(exc), type_name=type(exc).__name__, context={"task_id": task_id}
            ) from None


def unknown_device(device_id: str) -> ApiError:
    """The 404 for a device id the daemon does not hold."""
    return ApiError(
        404,
        f"unknown device {device_id!r}",
        type_name="UnknownDeviceError",
        context={"device_id": device_id},
    )


def json_response(body: Any, status: int = 200) -> Response:
    """A JSON answer encoded by labd's rules (NumPy → lists, datetimes → ISO-8601)."""
    return Response(
        encode_json(body, lenient=True), status_code=status, media_type="application/json"
    )
