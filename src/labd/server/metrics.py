"""Prometheus metrics from the server's own registry."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.core import CounterMetricFamily

__all__ = ["Metrics", "Tally"]


class Tally:
    """A labelled counter kept as plain ints and read when Prometheus scrapes.

    For counts taken on every request: ``Counter.labels(...).inc()`` costs a label lookup
    and a lock, more than the rest of a device call's bookkeeping together. Count only
    from the server's event loop thread (the scrape reads there too).
    """

    def __init__(
        self, name: str, documentation: str, labelnames: Sequence[str], registry: CollectorRegistry
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = list(labelnames)
        self.counts: dict[tuple[str, ...], int] = {}
        registry.register(self)

    def inc(self, *values: str) -> None:
        self.add(values)

    def add(self, values: tuple[str, ...]) -> None:
        """``inc(*values)`` for labels already in a tuple (a constant one costs nothing)."""
        counts = self.counts
        counts[values] = counts.get(values, 0) + 1

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for values, count in list(self.counts.items()):
            family.add_metric(list(values), count)
        yield family


class Metrics:
    """The server's counters and gauges (one registry per server, so tests stay independent)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.http_requests = Tally(
            "labd_http_requests",
            "HTTP requests answered",
            ["method", "route", "status"],
            self.registry,
        )
        self.device_calls = Tally(
            "labd_device_calls",
            "Device method calls over HTTP, by outcome",
            ["device_id", "outcome"],
            self.registry,
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
        self.requests_refused = Counter(
            "labd_requests_refused",
            "Requests refused before routing: foreign host or origin, JSON nested too deep",
            ["reason"],
            registry=self.registry,
        )
        self.streams_refused = Counter(
            "labd_streams_refused",
            "Streams refused because their client holds max_streams_per_client already",
            registry=self.registry,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
