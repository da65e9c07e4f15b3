"""Server-Sent Events on the client side: an incremental parser and :class:`SSEClient`.

The parser is pure code (bytes in, events out) so the framing rules are tested without
a network. :class:`EventStream` follows one SSE endpoint across reconnects and yields
decoded envelopes; :class:`SSEClient` runs one on a background thread for callback users
or hands it out for ``for event in ...`` loops.
"""

from __future__ import annotations

import logging
import random
import re
import socket
import threading
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import Any
from urllib.parse import quote

import httpx

from labd.client._errors import connection_error, error_from_response, is_retryable_status
from labd.exceptions import ServerAPIError
from labd.wire import FINAL_TASK_STATUSES as _FINAL
from labd.wire import decode_json

__all__ = ["Backoff", "EventStream", "SSEClient", "SSEEvent", "SSEParser"]

log = logging.getLogger(__name__)

_LINE_END = re.compile(rb"\r\n|\r|\n")
_BOM = b"\xef\xbb\xbf"
FINAL_TASK_STATUSES = _FINAL  # the wire's, re-exported for the client's users

EventCallback = Callable[[dict[str, Any]], object]
ErrorCallback = Callable[[Exception], object]


@dataclass(frozen=True, slots=True)
class SSEEvent:
    """One dispatched SSE event: its name, data (lines joined by ``\\n``) and last event id."""

    event: str
    data: str
    id: str | None = None


class SSEParser:
    """Incremental SSE parser following the WHATWG rules.

    Feed it bytes as they arrive, split anywhere; it handles LF, CR and CRLF line ends
    (also a CRLF split across chunks), comments, multi-line ``data``, ``id`` and ``retry``.
    """

    def __init__(self) -> None:
        self._partial: list[bytes] = []
        self._skip_lf = False
        self._started = False
        self._data: list[str] = []
        self._event = ""
        self.last_event_id: str | None = None
        self.retry_ms: int | None = None
        self.comments = 0

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        """Parse ``chunk`` and return the events it completed."""
        if not self._started and chunk:
            prefix = b"".join(self._partial) + chunk
            if len(prefix) < len(_BOM) and _BOM.startswith(prefix):
                self._partial = [prefix]
                return []
            self._started = True
            self._partial = []
            chunk = prefix.removeprefix(_BOM)
        if self._skip_lf and chunk:
            self._skip_lf = False
            if chunk.startswith(b"\n"):
                chunk = chunk[1:]
        events: list[SSEEvent] = []
        start = 0
        for match in _LINE_END.finditer(chunk):
            piece = chunk[start : match.start()]
            if self._partial:
                self._partial.append(piece)
                piece = b"".join(self._partial)
                self._partial = []
            start = match.end()
            if match.group() == b"\r" and start == len(chunk):
                self._skip_lf = True
            event = self.feed_line(piece.decode("utf-8", errors="replace"))
            if event is not None:
                events.append(event)
        if start < len(chunk):
            self._partial.append(chunk[start:])
        return events

    def feed_line(self, line: str) -> SSEEvent | None:
        """Process one line (without its line end); returns an event when a blank line ends one."""
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            self.comments += 1
            return None
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id":
            if "\0" not in value:
                self.last_event_id = value
        elif name == "retry" and value.isascii() and value.isdigit():
            self.retry_ms = int(value)
        return None

    def _dispatch(self) -> SSEEvent | None:
        if not self._data:
            self._event = ""
            return None
        event = SSEEvent(self._event or "message", "\n".join(self._data), self.last_event_id)
        self._data = []
        self._event = ""
        return event


class Backoff:
    """Exponential reconnect delays, capped, with jitter that only shortens them.

    Delay ``n`` (from 0) is ``min(maximum, initial * factor**n) * (1 - jitter * r)`` with
    ``r`` drawn from ``rand()`` in [0, 1).
    """

    def __init__(
        self,
        initial: float = 0.25,
        maximum: float = 10.0,
        factor: float = 2.0,
        jitter: float = 0.2,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.initial = initial
        self.maximum = maximum
        self.factor = factor
        self.jitter = jitter
        self._rand = rand
        self.attempt = 0

    def next_delay(self) -> float:
        """The delay before the next attempt; advances the schedule."""
        base = min(self.maximum, self.initial * self.factor ** min(self.attempt, 64))
        self.attempt += 1
        return base * (1.0 - self.jitter * self._rand())

    def reset(self) -> None:
        """Start again from ``initial`` (after a successful connection)."""
        self.attempt = 0


def _envelope(event: SSEEvent) -> dict[str, Any] | None:
    """Decode an event's JSON data; adds ``event`` (the SSE event name) only when missing."""
    if event.event == "ping":
        return None
    try:
        data = decode_json(event.data)
    except ValueError:
        data = event.data
    if isinstance(data, dict):
        data.setdefault("event", event.event)
        return data
    return {"event": event.event, "data": data}


class _Follower:
    """State and generator behind an :class:`EventStream`.

    Kept apart from the stream object so the generator does not reference it: dropping
    an ``EventStream`` (a ``break`` out of a ``for`` loop) then closes the connection at once.
    """

    def __init__(
        self,
        url: str,
        *,
        base_url: str,
        headers: dict[str, str],
        reconnect: bool,
        timeout: float,
        read_timeout: float,
        last_event_id: str | None = None,
        backoff: Backoff | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url = url
        self.last_event_id = last_event_id
        self.reconnect = reconnect
        self.connections = 0
        self.closed = threading.Event()
        self._base_url = base_url
        self._headers = headers
        self._timeout = httpx.Timeout(timeout, read=read_timeout)
        self._backoff = backoff or Backoff()
        self._transport = transport
        self._response: httpx.Response | None = None
        self._lock = threading.Lock()
        self._last_run: Any = None
        self._last_sequence: int | None = None

    def abort_connection(self) -> None:
        """Shut the current socket down so a blocked read returns at once."""
        with self._lock:
            response = self._response
        if response is None:
            return
        stream = response.extensions.get("network_stream")
        sock = stream.get_extra_info("socket") if stream is not None else None
        if isinstance(sock, socket.socket):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _is_duplicate(self, envelope: dict[str, Any]) -> bool:
        sequence = envelope.get("sequence")
        if envelope.get("event") != "device_data" or not isinstance(sequence, int):
            return False
        run = envelope.get("run")
        if (
            run is not None
            and run == self._last_run
            and self._last_sequence is not None
            and sequence <= self._last_sequence
        ):
            return True
        self._last_run, self._last_sequence = run, sequence
        return False

    @staticmethod
    def _ends(envelope: dict[str, Any]) -> bool:
        kind = envelope.get("event")
        if kind == "stream_end":
            return True
        return kind == "task_status" and envelope.get("status") in FINAL_TASK_STATUSES

    def run(self) -> Generator[dict[str, Any], None, None]:
        """Yield decoded events, reconnecting as configured, until closed or ended."""
        client = httpx.Client(
            timeout=self._timeout, headers=self._headers, transport=self._transport
        )
        try:
            while not self.closed.is_set():
                try:
                    for envelope in self._connection(client):
                        yield envelope
                        if self._ends(envelope):
                            return
                except httpx.TransportError as exc:
                    if self.closed.is_set():
                        return
                    if not self.reconnect:
                        raise connection_error(self._base_url, exc) from exc
                    log.info("SSE connection to %s lost: %s", self.url, exc or type(exc).__name__)
                if not self.reconnect:
                    return
                delay = self._backoff.next_delay()
                log.debug("reconnecting to %s in %.2f s", self.url, delay)
                if self.closed.wait(delay):
                    return
        finally:
            client.close()

    def _connection(self, client: httpx.Client) -> Iterator[dict[str, Any]]:
        headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache"}
        if self.last_event_id is not None:
            headers["Last-Event-ID"] = self.last_event_id
        with client.stream("GET", self.url, headers=headers) as response:
            with self._lock:
                self._response = response
            try:
                if self.closed.is_set():
                    return
                if response.status_code != 200:
                    response.read()
                    error = error_from_response(response)
                    if not (self.reconnect and is_retryable_status(response.status_code)):
                        raise error
                    log.warning("SSE stream %s refused, will retry: %s", self.url, error)
                    return
                self.connections += 1
                self._backoff.reset()
                parser = SSEParser()
                for chunk in response.iter_bytes():
                    for event in parser.feed(chunk):
                        if event.id is not None:
                            self.last_event_id = event.id
                        envelope = _envelope(event)
                        if envelope is None or self._is_duplicate(envelope):
                            continue
                        yield envelope
                    if parser.retry_ms is not None:
                        self._backoff.initial = parser.retry_ms / 1000.0
                    if self.closed.is_set():
                        return
            finally:
                with self._lock:
                    self._response = None


class EventStream:
    """Decoded events from one SSE endpoint, across reconnects; iterate it, then ``close()``.

    Ends by itself on ``stream_end`` (device streams) and on a final ``task_status``
    (task streams); raises :class:`ServerAPIError` when the server refuses the stream with
    a 4xx, or when the connection fails and ``reconnect`` is off.
    ``close()`` may be called from any thread and wakes a reader blocked on an idle stream.
    """

    def __init__(self, follower: _Follower) -> None:
        self._follower = follower
        self._reading = threading.Lock()
        self._events = follower.run()

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return self

    def __next__(self) -> dict[str, Any]:
        with self._reading:
            return next(self._events)

    def __enter__(self) -> EventStream:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def url(self) -> str:
        """The SSE endpoint followed."""
        return self._follower.url

    @property
    def last_event_id(self) -> str | None:
        """Id of the last event received; sent as ``Last-Event-ID`` on reconnects."""
        return self._follower.last_event_id

    @property
    def connections(self) -> int:
        """How many connections the server accepted so far (1 + successful reconnects)."""
        return self._follower.connections

    @property
    def closed(self) -> bool:
        """True once ``close()`` was called."""
        return self._follower.closed.is_set()

    def close(self) -> None:
        """Stop the stream; safe from any thread and idempotent."""
        self._follower.closed.set()
        self._follower.abort_connection()
        # A reader blocked in __next__ holds _reading; the aborted socket wakes it and the
        # generator then finishes by itself. Otherwise close the generator here.
        if self._reading.acquire(blocking=False):
            try:
                self._events.close()
            finally:
                self._reading.release()


class SSEClient:
    """Follows a labd SSE endpoint: callbacks on a background thread, or iterators.

    ``on_event(envelope)`` gets each decoded event (the JSON ``data``; ``event`` is added
    from the SSE event name when the data lack it). Heartbeats are skipped. Connections
    that drop are retried with capped, jittered exponential backoff and ``Last-Event-ID``.
    A 4xx answer (unknown id, bad token) is not retried: it goes to ``on_error`` (or the
    log) and the stream stops. ``read_timeout`` should exceed the server's heartbeat
    interval (15 s by default).
    """

    def __init__(
        self,
        base_url: str,
        on_event: EventCallback | None = None,
        token: str | None = None,
        reconnect: bool = True,
        timeout: float = 10.0,
        *,
        read_timeout: float = 20.0,
        on_error: ErrorCallback | None = None,
        backoff_initial: float = 0.25,
        backoff_max: float = 10.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.on_event = on_event
        self.on_error = on_error
        self.reconnect = reconnect
        self.timeout = timeout
        self.read_timeout = read_timeout
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._transport = transport
        self._stream: EventStream | None = None
        self._thread: threading.Thread | None = None
        self._guard = threading.Lock()

    def __enter__(self) -> SSEClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop_stream()

    # ---- iterator form -------------------------------------------------------------------

    def iter_device_stream(self, device_id: str, last_event_id: str | None = None) -> EventStream:
        """Events of one device's stream; ends after ``stream_end``."""
        return self._open(f"/stream/devices/{quote(device_id, safe='')}", last_event_id)

    def iter_task_stream(self, task_id: str) -> EventStream:
        """Progress and status events of one task; ends after its final ``task_status``."""
        return self._open(f"/stream/tasks/{quote(task_id, safe='')}", None)

    def iter_event_stream(self) -> EventStream:
        """The server's state-change events (``/stream/events``); runs until closed."""
        return self._open("/stream/events", None)

    # ---- callback form -------------------------------------------------------------------

    def start_device_stream(self, device_id: str, last_event_id: str | None = None) -> None:
        """Call ``on_event`` for each event of ``device_id``'s stream, on a background thread."""
        self._start(self.iter_device_stream(device_id, last_event_id), f"device-{device_id}")

    def start_task_stream(self, task_id: str) -> None:
        """Call ``on_event`` for each progress/status event of ``task_id``."""
        self._start(self.iter_task_stream(task_id), f"task-{task_id}")

    def start_event_stream(self) -> None:
        """Call ``on_event`` for each state-change event of the server."""
        self._start(self.iter_event_stream(), "events")

    def stop_stream(self, timeout: float | None = 5.0) -> None:
        """Stop the background stream and join its thread, waiting at most ``timeout``."""
        with self._guard:
            stream, thread = self._stream, self._thread
            self._stream = self._thread = None
        if stream is not None:
            stream.close()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
            if thread.is_alive():
                log.warning("SSE thread %s did not stop within %s s", thread.name, timeout)

    def is_running(self) -> bool:
        """True while the background stream thread runs."""
        thread = self._thread
        return thread is not None and thread.is_alive()

    @property
    def last_event_id(self) -> str | None:
        """Id of the last event the background stream received (for resuming)."""
        stream = self._stream
        return stream.last_event_id if stream is not None else None

    @property
    def connections(self) -> int:
        """Connections the server accepted for the background stream (1 + reconnects)."""
        stream = self._stream
        return stream.connections if stream is not None else 0

    def _open(self, path: str, last_event_id: str | None) -> EventStream:
        follower = _Follower(
            self.base_url + path,
            base_url=self.base_url,
            headers=dict(self._headers),
            reconnect=self.reconnect,
            timeout=self.timeout,
            read_timeout=self.read_timeout,
            last_event_id=last_event_id,
            backoff=Backoff(self.backoff_initial, self.backoff_max),
            transport=self._transport,
        )
        return EventStream(follower)

    def _start(self, stream: EventStream, label: str) -> None:
        with self._guard:
            if self._thread is not None and self._thread.is_alive():
                stream.close()
                raise RuntimeError(
                    "this SSEClient already follows a stream; call stop_stream() first"
                )
            thread = threading.Thread(
                target=self._pump, args=(stream,), name=f"labd-sse-client-{label}", daemon=True
            )
            self._stream, self._thread = stream, thread
        thread.start()

    def _pump(self, stream: EventStream) -> None:
        try:
            for envelope in stream:
                if self.on_event is None:
                    continue
                try:
                    self.on_event(envelope)
                except Exception:
                    log.exception("SSE on_event callback failed for %s", stream.url)
        except Exception as exc:
            if stream.closed:
                return
            if self.on_error is not None:
                try:
                    self.on_error(exc)
                except Exception:
                    log.exception("SSE on_error callback failed for %s", stream.url)
            elif isinstance(exc, ServerAPIError):
                log.error("SSE stream %s stopped: %s", stream.url, exc)
            else:
                log.exception("SSE stream %s stopped", stream.url)
        finally:
            stream.close()
