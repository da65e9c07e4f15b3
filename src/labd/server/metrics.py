"""Prometheus metrics from the server's own registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

__all__ = ["Metrics"]


class Metrics:
    """The server's counters and gauges (one registry per server, so tests stay independent)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.http_requests = Counter(
            "labd_http_requests",
            "HTTP requests answered",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.device_calls = Counter(
            "labd_device_calls",
            "Device method calls over HTTP, by outcome",
            ["device_id", "outcome"],
            registry=self.registry,
        )
        self.events_delivered = Counter(
            "labd_stream_events_delivered",
            "Device stream events sent to SSE clients",
            ["device_id"],
            registry=self.registry,
        )
        self.events_dropped = Counter(
            "labd_stream_events_dropped",
            "Device stream events SSE clients missed because they fell behind",
            ["device_id"],
            registry=self.registry,
        )
        self.sse_clients = Gauge(
            "labd_sse_clients",
            "Connected SSE clients per device",
            ["device_id"],
            registry=self.registry,
        )
        self.auth_failures = Counter(
            "labd_auth_failures",
            "Requests refused for a missing, bad or too weak token",
            registry=self.registry,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
