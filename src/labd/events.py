"""State-change events published by the daemon, its devices and tasks.

Every transition (a device added or connected, a stream started, a task's status
changed, an error recorded, ...) is published once here. Listeners run on the
publishing thread and must be quick; the server's ``/stream/events`` reads the
bus's history ring instead of listening, so slow clients cost publishers nothing.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from labd.ring import EventRing, RingEvent
from labd.wire import encode_json, format_timestamp, sse_frame

__all__ = ["EVENT_NAMES", "EventBus", "Listener"]

log = logging.getLogger(__name__)

EVENT_NAMES = frozenset(
    {
        "device_added",
        "device_removed",
        "device_connected",
        "device_disconnected",
        "streaming_started",
        "streaming_stopped",
        "task_started",
        "task_progress",
        "task_status",
        "task_finished",
        "error_recorded",
        "error_cleared",
    }
)

Listener = Callable[[dict[str, Any]], None]


class EventBus:
    """Publishes state-change events to listeners and keeps a history ring for SSE."""

    def __init__(self, history: int = 1024) -> None:
        self.ring = EventRing(capacity=history, max_bytes=16 * 1024 * 1024)
        self._listeners: tuple[Listener, ...] = ()
        self._lock = threading.Lock()

    def publish(self, event: str, **fields: Any) -> dict[str, Any]:
        """Publish ``event`` with its fields; returns the event object as sent."""
        if event not in EVENT_NAMES:
            raise ValueError(f"unknown event name {event!r}")
        now = time.time()
        body: dict[str, Any] = {"event": event, "timestamp": format_timestamp(now), **fields}
        frame = sse_frame(event, encode_json(body, lenient=True))
        self.ring.append(RingEvent(event, frame, timestamp=now))
        for listener in self._listeners:
            try:
                listener(body)
            except Exception:
                log.exception("event listener %r failed on %s", listener, event)
        return body

    def add_listener(self, listener: Listener) -> None:
        with self._lock:
            self._listeners = (*self._listeners, listener)

    def remove_listener(self, listener: Listener) -> None:
        with self._lock:
            self._listeners = tuple(x for x in self._listeners if x is not listener)
