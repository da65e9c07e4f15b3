"""The stream hub: one stream per device, any number of subscribers.

Whoever calls ``start_streaming(callback)`` -- the daemon, the device object itself or
the server -- subscribes to the device's single stream; the first subscription starts
the device, later ones join. The device thread's work per datum is fixed: number the
datum, encode it once into the device's history ring (only when remote readers may
exist), then call the local subscribers. Remote readers follow the ring with their own
cursors, so their number never costs the device anything.

Lifecycle of a device stream (``DeviceStream.state``, a :class:`StreamState`; the allowed
changes are :data:`STREAM_TRANSITIONS`)::

    idle --subscribe--> starting --device started--> running --stop/ended--> stopping --> idle
      \\                    \\--device start raised--> idle
       \\--the device restarted itself (adopted)--> running

Calls from outside the device (scripts, tasks, the daemon, the server) reach the hub's
versions of the streaming trio, installed on the instance; the device's own code calling
``self.is_streaming()``, ``self.start_streaming(...)`` or ``self.stop_streaming()`` reaches
its own methods, as in plain Python (see :func:`labd.devices.own_code`). The hub learns
of a stream the device stopped by itself through ``is_streaming()``: its watcher ends the
stream for every subscriber once that reads False twice in a row, so a device that
restarts its own loop quickly keeps its subscribers.

Locks: the hub never holds the device's ``_ld_lock`` while it starts or stops the device,
and releases it if the calling thread holds it (a ``disconnect()`` that stops its own
stream), the way ``threading.Condition.wait`` does, so stopping can never deadlock
against a device loop that takes the lock.
"""

from __future__ import annotations

import enum
import functools
import inspect
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from labd.calls import CallSpec
from labd.devices import own_code
from labd.exceptions import DeviceError, DeviceTimeoutError
from labd.ring import EventRing, RingEvent
from labd.streaming import BackpressureQueue
from labd.wire import Origin, encode_json, encode_stream_envelope, error_object, sse_frame

__all__ = [
    "STREAM_TRANSITIONS",
    "DeviceStream",
    "RemoteReader",
    "StreamHub",
    "StreamState",
    "Subscription",
]

log = logging.getLogger(__name__)

ErrorSink = Callable[[str, BaseException, Origin, dict[str, Any]], None]
EventSink = Callable[..., Any]

#: Keyword arguments of ``start_streaming`` that belong to labd, not to the device.
RESERVED_KWARGS = ("queue_size", "on_end")

_TRANSITION_TIMEOUT = 30.0
_STOP_GRACE = 0.5  # beyond stop()'s timeout, for a device stop that uses the same timeout
_WATCH_INTERVAL = 0.2
#: Consecutive False reads of ``is_streaming()`` after which the watcher ends a stream.
_DEAD_READS = 2


class StreamState(enum.Enum):
    """Where a device stream is in its lifecycle."""

    IDLE = "idle"
    STARTING = "starting"  # the device's start_streaming is running
    RUNNING = "running"
    STOPPING = "stopping"  # ending: no new run may start until the end is delivered

    def __str__(self) -> str:
        return self.value


IDLE, STARTING, RUNNING, STOPPING = StreamState

#: The changes of state a device stream may make; :meth:`DeviceStream._set_state` raises
#: for any other.
STREAM_TRANSITIONS: dict[StreamState, frozenset[StreamState]] = {
    IDLE: frozenset({STARTING, RUNNING}),  # a subscription starts it / the device restarted
    STARTING: frozenset({RUNNING, IDLE}),  # started / its start raised
    RUNNING: frozenset({STOPPING}),
    STOPPING: frozenset({IDLE}),
}

#: The daemon event each change publishes, exactly once; other changes publish none.
_STATE_EVENTS = {
    (STARTING, RUNNING): "streaming_started",
    (IDLE, RUNNING): "streaming_started",
    (STOPPING, IDLE): "streaming_stopped",
}


class Subscription:
    """One subscriber of a device stream.

    Inline subscriptions run the callback on the device's thread; with ``queue_size``
    the callback runs on its own thread behind a bounded queue that drops (and counts)
    when full, so a slow callback never stalls the device. With ``with_meta`` the
    callback gets ``(sequence, timestamp, datum)``: the stream's own numbering and the
    datum's POSIX time, as recordings need.
    """

    def __init__(
        self,
        stream: DeviceStream,
        callback: Callable[..., Any],
        *,
        queue_size: int | None = None,
        on_end: Callable[[BaseException | None], Any] | None = None,
        with_meta: bool = False,
    ) -> None:
        if not callable(callback):
            raise TypeError(f"callback must be callable, not {type(callback).__name__}")
        if queue_size is not None and queue_size < 1:
            raise ValueError("queue_size must be a positive integer")
        self.device_id = stream.device_id
        self.callback = callback
        self.queue_size = queue_size
        self.with_meta = with_meta
        self._stream = stream
        self._on_end = on_end
        self._delivered = 0
        self._inline_errors = 0
        self._closed = threading.Event()
        self._queue: BackpressureQueue | None = None
        if queue_size is not None:
            self._queue = BackpressureQueue(
                self._run_callback_queued,
                maxsize=queue_size,
                name=f"sub-{stream.device_id}",
            )

    @property
    def delivered(self) -> int:
        """Data handed to the callback so far."""
        return self._queue.delivered if self._queue is not None else self._delivered

    @property
    def dropped(self) -> int:
        """Data dropped because the queue was full (always 0 for inline subscriptions)."""
        return self._queue.dropped if self._queue is not None else 0

    @property
    def active(self) -> bool:
        return not self._closed.is_set()

    def wait_closed(self, timeout: float | None = None) -> bool:
        """Wait until the subscription ends (closed, or its stream stopped)."""
        return self._closed.wait(timeout)

    def close(self, timeout: float | None = 1.0) -> None:
        """Stop receiving data; the device stream keeps running for others. Idempotent."""
        if self._closed.is_set():
            return
        self._stream._remove(self)
        self._finish(None, timeout=timeout, notify=False)

    def _start(self) -> None:
        if self._queue is not None:
            self._queue.start()

    def _deliver(self, data: Any, sequence: int, timestamp: float) -> None:
        if self._queue is not None:
            self._queue.put((sequence, timestamp, data) if self.with_meta else data)
            return
        self._delivered += 1
        try:
            if self.with_meta:
                self.callback(sequence, timestamp, data)
            else:
                self.callback(data)
        except Exception as exc:
            self._inline_errors += 1
            self._stream._record(exc, "callback")

    def _run_callback_queued(self, data: Any) -> None:
        try:
            if self.with_meta:
                self.callback(*data)
            else:
                self.callback(data)
        except Exception as exc:
            self._stream._record(exc, "callback")

    def _finish(
        self, error: BaseException | None, *, timeout: float | None = 1.0, notify: bool = True
    ) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        if self._queue is not None:
            self._queue.stop(timeout=timeout)
        if notify and self._on_end is not None:
            try:
                self._on_end(error)
            except Exception as exc:
                self._stream._record(exc, "callback")

    def __repr__(self) -> str:
        state = "active" if self.active else "closed"
        return f"<Subscription {self.device_id!r} {state} delivered={self.delivered}>"


class _Emitter:
    """The callback labd hands to the device's ``start_streaming``.

    Call it with each datum; ``error(exc)`` reports a device-side problem (recorded,
    and sent to subscribers as ``stream_error``); ``end()`` says the stream is over.
    """

    __slots__ = ("_run", "_stream")

    def __init__(self, stream: DeviceStream, run: int) -> None:
        self._stream = stream
        self._run = run

    def __call__(self, data: Any) -> None:
        self._stream._emit(self._run, data)

    def error(self, exc: BaseException) -> None:
        self._stream._device_error(self._run, exc)

    def end(self) -> None:
        self._stream._device_end(self._run)

    def __repr__(self) -> str:
        return f"<labd stream callback {self._stream.device_id!r} run={self._run}>"


@contextmanager
def _released(lock: Any) -> Iterator[None]:
    """Fully release an RLock the current thread holds, for the duration of the block."""
    if lock is not None and lock._is_owned():
        saved = lock._release_save()
        try:
            yield
        finally:
            lock._acquire_restore(saved)
    else:
        yield


def _accepts_timeout(func: Callable[..., Any]) -> bool:
    try:
        params = inspect.signature(func).parameters
    except (TypeError, ValueError):
        return False
    return "timeout" in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


class DeviceStream:
    """The single stream of one device, its subscribers and its history ring."""

    def __init__(
        self,
        hub: StreamHub,
        device_id: str,
        device: Any,
        methods: Mapping[str, Callable[..., Any]],
    ) -> None:
        self.hub = hub
        self.device_id = device_id
        self._lock = getattr(device, "_ld_lock", None)
        # The device's own trio, as its class defines it (``methods``: the originals that
        # wrap_device recorded), never looked up through ``__getattr__``.
        self._device_start: Callable[..., Any] | None = methods.get("start_streaming")
        self._device_stop: Callable[..., Any] | None = methods.get("stop_streaming")
        self._device_is_streaming: Callable[[], Any] | None = methods.get("is_streaming")
        self._stop_takes_timeout = self._device_stop is not None and _accepts_timeout(
            self._device_stop
        )
        # Checks start arguments before the device is touched (the callback is labd's).
        self._start_spec = (
            CallSpec(device_id, "start_streaming", self._device_start)
            if self._device_start is not None
            else None
        )
        self._cond = threading.Condition(threading.Lock())
        self.state = IDLE
        self.run = 0
        self.args: tuple[Any, ...] = ()
        self.kwargs: dict[str, Any] = {}
        self.explicit = False
        self.remote_readers = 0
        self.emitted = 0
        self.started_at: float | None = None
        self._active_run = 0
        self._next_seq = 0
        self._subs: tuple[Subscription, ...] = ()
        self._emit_lock = threading.Lock()
        self._emit_threads: frozenset[threading.Thread] = frozenset()
        self._stop_requested = False
        self._starter: threading.Thread | None = None  # the thread in the device's start
        self._dead_reads = 0  # consecutive False reads of the device's is_streaming()
        self._stopped_itself = False  # the device's own code called its stop_streaming
        self._subscribers_told = False  # this run's stream_end has gone out
        self.ring: EventRing | None = None
        self.last_error: BaseException | None = None

    @property
    def can_stream(self) -> bool:
        return callable(self._device_start)

    @property
    def running(self) -> bool:
        return self.state is STARTING or self.state is RUNNING

    @property
    def subscribers(self) -> int:
        return len(self._subs)

    # -- subscribing and starting -------------------------------------------------

    def subscribe(
        self,
        callback: Callable[..., Any] | None,
        kwargs: dict[str, Any] | None = None,
        *,
        args: tuple[Any, ...] = (),
        queue_size: int | None = None,
        on_end: Callable[[BaseException | None], Any] | None = None,
        explicit: bool = True,
        with_meta: bool = False,
    ) -> Subscription | None:
        """Join the device stream, starting the device if it is idle.

        With ``callback=None`` nothing subscribes locally: the stream is only started
        (explicit control, or for remote readers of the ring). ``args`` and ``kwargs`` go
        to the device's ``start_streaming`` after labd's callback; arguments its signature
        does not accept raise TypeError naming the device before anything starts.
        ``with_meta`` calls ``callback(sequence, timestamp, datum)`` instead of
        ``callback(datum)``.
        """
        if not self.can_stream:
            raise DeviceError(f"device {self.device_id!r} cannot stream (no start_streaming)")
        args = tuple(args)
        kwargs = dict(kwargs or {})
        if self._start_spec is not None:
            self._start_spec.checked((None, *args), kwargs)
        sub = (
            Subscription(self, callback, queue_size=queue_size, on_end=on_end, with_meta=with_meta)
            if callback is not None
            else None
        )
        if self._stopped_itself and self.state is RUNNING:
            self._end_if_dead(at_once=True)  # it stopped itself: do not join a dead stream
        with self._cond:
            ready = self._cond.wait_for(
                lambda: self.state is IDLE or self.state is RUNNING, timeout=_TRANSITION_TIMEOUT
            )
            if not ready:
                raise DeviceError(
                    f"stream of device {self.device_id!r} is still {self.state}; try again"
                )
            if sub is not None:
                sub._start()
            if self.state is RUNNING:
                if (args or kwargs) and (args, kwargs) != (self.args, self.kwargs):
                    log.warning(
                        "device %r is already streaming with %s; ignoring %s",
                        self.device_id,
                        _arguments_text(self.args, self.kwargs),
                        _arguments_text(args, kwargs),
                    )
                if sub is not None:
                    self._subs = (*self._subs, sub)
                self.explicit = self.explicit or explicit
                return sub
            self._enter(STARTING)
            self.run += 1
            run = self.run
            self._next_seq = 0
            self._active_run = run
            self._stop_requested = False
            self._stopped_itself = False
            self._dead_reads = 0
            self._starter = threading.current_thread()
            self._subs = (sub,) if sub is not None else ()
            self.args = args
            self.kwargs = kwargs
            self.explicit = explicit
            self.started_at = time.time()
        try:
            assert self._device_start is not None
            with _released(self._lock):
                self._device_start(_Emitter(self, run), *args, **kwargs)
        except BaseException as exc:
            with self._cond:
                self._active_run = 0
                self._starter = None
                self._enter(IDLE)
                subs, self._subs = self._subs, ()
            for s in subs:
                s._finish(exc, notify=False)
            if isinstance(exc, Exception):
                self._record(exc, "device")
            raise
        with self._cond:
            self._enter(RUNNING)
            self._starter = None
            stop_now = self._stop_requested
        self._publish(STARTING, RUNNING)
        if stop_now:
            # Asked for while the device was starting (by a callback, or by the device's
            # end()): the stop runs on a labd thread, never on the caller's.
            self.hub._spawn(f"labd-stop-{self.device_id}", self.stop, None)
        return sub

    def _enter(self, new: StreamState) -> None:
        """Change the state by :data:`STREAM_TRANSITIONS`; the caller holds ``_cond``.

        Wakes every thread waiting for a change. The change's daemon event, if it has
        one, is published by :meth:`_publish` once the lock is released.
        """
        old = self.state
        if new not in STREAM_TRANSITIONS[old]:
            raise RuntimeError(f"stream of device {self.device_id!r} cannot go from {old} to {new}")
        self.state = new
        self._cond.notify_all()

    def _publish(self, old: StreamState, new: StreamState) -> None:
        """Tell the hub about a change made by :meth:`_enter`: one event, outside the lock."""
        self.hub._state_changed(self, _STATE_EVENTS[old, new])

    def _remove(self, sub: Subscription) -> None:
        with self._cond:
            self._subs = tuple(s for s in self._subs if s is not sub)

    # -- the device thread's path ---------------------------------------------------

    def _emit(self, run: int, data: Any) -> None:
        if run != self._active_run:
            return
        # Thread objects, not idents: a new thread may reuse a finished one's ident.
        thread = threading.current_thread()
        if thread not in self._emit_threads:
            self._emit_threads = self._emit_threads | {thread}
        ring = self.ring
        with self._emit_lock:
            if run != self._active_run:  # stopped meanwhile: stream_end must stay last
                return
            seq = self._next_seq
            self._next_seq = seq + 1
            self.emitted += 1
            now = time.time()
            if ring is not None:
                frame = sse_frame(
                    "device_data",
                    encode_stream_envelope(self.device_id, seq, now, data, run),
                    seq,
                )
                ring.append(RingEvent("device_data", frame, sequence=seq, run=run, timestamp=now))
        for sub in self._subs:
            sub._deliver(data, seq, now)

    def _device_error(self, run: int, exc: BaseException) -> None:
        if run != self.run:
            return
        self._record(exc, "device")
        if self.ring is not None:
            body = {"device_id": self.device_id, "error": error_object(exc, "device")}
            self.ring.append(
                RingEvent("stream_error", sse_frame("stream_error", encode_json(body)), run=run)
            )

    def _device_end(self, run: int) -> None:
        with self._cond:
            if run != self.run or not self.running:
                return
            if self.state is STARTING:
                self._stop_requested = True
                return
            self._enter(STOPPING)
            self._active_run = 0
        self._ended(None)

    # -- stopping ----------------------------------------------------------------------

    def stop(self, timeout: float | None = None) -> None:
        """Stop the device stream for every subscriber; a no-op when it is not running.

        Called on a thread that emits into this stream (a subscriber callback, the
        device's own loop), it returns at once and the device is stopped on a labd
        thread right after: joining the device's thread from itself cannot work. Called
        while another thread is starting the device, it waits (up to ``timeout``) for the
        start to finish, then stops.

        With a ``timeout``, the device's ``stop_streaming`` runs on a ``labd-stop`` thread
        and is waited for that long (plus a little grace). If it has not returned by then,
        the stream ends for its subscribers with a :class:`DeviceTimeoutError`, which is
        also recorded; the stream can start again once the device's stop returns.
        """
        here = threading.current_thread()
        with self._cond:
            if (
                self.state is STARTING
                and here is not self._starter
                and here not in self._emit_threads
            ):
                wait = _TRANSITION_TIMEOUT if timeout is None else timeout
                self._cond.wait_for(lambda: self.state is not STARTING, timeout=wait)
            if self.state is STARTING:
                self._stop_requested = True  # the starting thread hands it to a labd thread
                return
            if self.state is not RUNNING:
                return
            self._enter(STOPPING)
            self._active_run = 0
        if here in self._emit_threads:
            self.hub._spawn(f"labd-stop-{self.device_id}", self._stop_device, timeout)
            return
        if timeout is None or self._device_stop is None:
            self._stop_device(timeout)
            return
        finished = threading.Event()

        def stop_device() -> None:
            try:
                self._stop_device(timeout)
            finally:
                finished.set()

        self.hub._spawn(f"labd-stop-{self.device_id}", stop_device)
        with _released(self._lock):  # the device's loop may need it to finish
            in_time = finished.wait(max(timeout, 0.0) + _STOP_GRACE)
        if not in_time:
            late = DeviceTimeoutError(
                f"stop_streaming of device {self.device_id!r} did not return within"
                f" {timeout} s; its subscribers were told the stream ended"
            )
            self._record(late, "framework")
            self._end_subscribers(late)

    def _stop_device(self, timeout: float | None) -> None:
        error: BaseException | None = None
        if self._device_stop is not None:
            try:
                with _released(self._lock):
                    if self._stop_takes_timeout:
                        self._device_stop(timeout=timeout)
                    else:
                        self._device_stop()
            except Exception as exc:
                error = exc
                self._record(exc, "device")
        self._ended(error)

    def _end_subscribers(self, error: BaseException | None) -> None:
        """The run's ``stream_end``, once: to the history ring and to every subscriber."""
        with self._cond:
            if self._subscribers_told:
                return
            self._subscribers_told = True
            subs, self._subs = self._subs, ()
        # While "stopping" no new run can start, so the end is the run's last event.
        run = self.run
        if self.ring is not None:
            body: dict[str, Any] = {"device_id": self.device_id, "run": run}
            if error is not None:
                origin: Origin = "framework" if isinstance(error, DeviceTimeoutError) else "device"
                body["error"] = error_object(error, origin)
            frame = sse_frame("stream_end", encode_json(body))
            with self._emit_lock:  # after any datum still being appended
                self.ring.append(RingEvent("stream_end", frame, run=run))
        for sub in subs:
            sub._finish(error)

    def _ended(self, error: BaseException | None) -> None:
        self._end_subscribers(error)
        with self._cond:
            self.explicit = False
            self._emit_threads = frozenset()
            self._subscribers_told = False  # for the next run
            self._enter(IDLE)
        self._publish(STOPPING, IDLE)

    def check_alive(self) -> None:
        """End the stream for everyone once the device's own loop has stopped.

        The watcher calls this every 0.2 s; the stream ends after ``is_streaming()`` has
        read False twice in a row, so a device that restarts its own loop keeps it.
        """
        self._end_if_dead()

    def _end_if_dead(self, *, at_once: bool = False) -> None:
        probe = self._device_is_streaming
        if self.state is not RUNNING or (probe is None and not at_once):
            return
        try:
            alive = bool(probe()) if probe is not None else False
        except Exception:
            log.exception("is_streaming() of device %r raised", self.device_id)
            return
        if alive:
            self._dead_reads = 0
            return
        self._dead_reads += 1
        if self._dead_reads < _DEAD_READS and not at_once:
            return
        with self._cond:
            if self.state is not RUNNING:
                return
            self._enter(STOPPING)
            self._active_run = 0
        log.info("stream of device %r ended by itself", self.device_id)
        self._ended(None)

    def own_stop(self, stop: Callable[..., Any], args: tuple[Any, ...], kwargs: Any) -> Any:
        """The device's code called its own ``stop_streaming``: run it as it is.

        The device lock is released meanwhile (as for the hub's own stops). Called from
        one of the device's public methods (``disconnect()``, holding the lock), the
        stream ends for its subscribers as soon as ``is_streaming()`` reads False; from
        the device's own threads (a loop restarting itself), the watcher decides.
        """
        lock = self._lock
        in_public_call = lock is not None and lock._is_owned()
        with _released(lock):
            result = stop(*args, **kwargs)
        self._stopped_itself = True
        if in_public_call or self._device_is_streaming is None:
            self._end_if_dead(at_once=True)
        return result

    def own_start(self, start: Callable[..., Any], args: tuple[Any, ...], kwargs: Any) -> Any:
        """The device's code called its own ``start_streaming`` (a restart): run it as it is.

        Restarted with a callback of this stream's after the stream had ended, the device
        streams again: the hub adopts that as a new run, so its state stays the device's.
        """
        result = start(*args, **kwargs)
        self._stopped_itself = False
        self._dead_reads = 0
        emitter = next((a for a in (*args, *kwargs.values()) if isinstance(a, _Emitter)), None)
        if emitter is None or emitter._stream is not self:
            return result
        with self._cond:
            if self.state is not IDLE:
                return result
            self._enter(RUNNING)
            self.run += 1
            emitter._run = self._active_run = self.run
            self._next_seq = 0
            self._subs = ()
            self.explicit = True
            self.started_at = time.time()
        self._publish(IDLE, RUNNING)
        return result

    def is_streaming(self) -> bool:
        if self.state is STARTING:
            return True
        if self.state is not RUNNING:
            return False
        probe = self._device_is_streaming
        if probe is None:
            return True
        try:
            return bool(probe())
        except Exception:
            return True

    # -- remote readers ---------------------------------------------------------------

    def add_remote_reader(self) -> None:
        with self._cond:
            self.remote_readers += 1

    def remove_remote_reader(self) -> bool:
        """Forget one remote reader; stops a stream that only remote readers asked for.

        Returns True when this stopped the stream.
        """
        with self._cond:
            self.remote_readers = max(0, self.remote_readers - 1)
            stop = self.remote_readers == 0 and self.state is RUNNING and not self.explicit
        if stop:
            self.stop(timeout=2.0)
        return stop

    def _record(self, exc: BaseException, origin: Origin) -> None:
        self.last_error = exc
        self.hub._record(self.device_id, exc, origin)


class RemoteReader:
    """One remote client reading a device stream's history ring; :meth:`close` when it leaves.

    While any are open, a stream that only remote readers started keeps running; the
    last one to close stops it (an explicit start is left running).
    """

    def __init__(self, stream: DeviceStream, last_sequence: int | None = None) -> None:
        ring = stream.ring
        if ring is None:
            raise RuntimeError("remote readers need the hub's history (enable_history)")
        self.device_id = stream.device_id
        self.ring: EventRing = ring
        # Where to begin: after the last event the client saw (Last-Event-ID), else new ones.
        self.cursor = (
            ring.head
            if last_sequence is None
            else ring.find_after_sequence(last_sequence, stream.run)
        )
        self._stream = stream
        self._open = True
        stream.add_remote_reader()

    @property
    def needs_start(self) -> bool:
        """True when the device is not streaming, so the reader would see nothing."""
        return not self._stream.running

    def close(self) -> bool:
        """Leave; returns True when this stopped the stream. Idempotent."""
        if not self._open:
            return False
        self._open = False
        return self._stream.remove_remote_reader()


class StreamHub:
    """Owns every device stream of a daemon, their history rings and the end watcher."""

    def __init__(
        self,
        on_error: ErrorSink | None = None,
        on_event: EventSink | None = None,
        *,
        buffer_events: int = 4096,
        buffer_bytes: int = 64 * 1024 * 1024,
    ) -> None:
        self._on_error = on_error
        self._on_event = on_event
        self.buffer_events = buffer_events
        self.buffer_bytes = buffer_bytes
        self._history = False
        self._streams: dict[str, DeviceStream] = {}
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._watcher: threading.Thread | None = None
        self._helpers: set[threading.Thread] = set()

    def attach(
        self,
        device_id: str,
        device: Any,
        methods: Mapping[str, Callable[..., Any]],
    ) -> DeviceStream:
        """Create the device's stream and route its streaming trio through the hub.

        ``methods`` are the device's own public methods, as
        :func:`labd.devices.wrap_device` recorded them.
        """
        stream = DeviceStream(self, device_id, device, methods)
        with self._lock:
            self._streams[device_id] = stream
            if self._history:
                stream.ring = self._new_ring()
        if stream.can_stream:
            _install_trio(device, stream)
        return stream

    def detach(self, device_id: str) -> None:
        with self._lock:
            self._streams.pop(device_id, None)

    def get(self, device_id: str) -> DeviceStream:
        return self._streams[device_id]

    def streams(self) -> list[DeviceStream]:
        return list(self._streams.values())

    def enable_history(self) -> None:
        """Keep a history ring per device, for remote readers; idempotent."""
        with self._lock:
            self._history = True
            for stream in self._streams.values():
                if stream.ring is None:
                    stream.ring = self._new_ring()

    @property
    def history_enabled(self) -> bool:
        return self._history

    def _new_ring(self) -> EventRing:
        return EventRing(self.buffer_events, self.buffer_bytes)

    def _record(self, device_id: str, exc: BaseException, origin: Origin) -> None:
        if self._on_error is not None:
            self._on_error(device_id, exc, origin, {"device_id": device_id})
        else:
            log.error("device %r: %s error: %s", device_id, origin, exc)

    def _state_changed(self, stream: DeviceStream, event: str) -> None:
        """A stream started or stopped: publish the event (and watch started streams)."""
        if event == "streaming_started":
            self._ensure_watcher()
        if self._on_event is not None:
            self._on_event(event, device_id=stream.device_id, run=stream.run)

    def _ensure_watcher(self) -> None:
        with self._lock:
            if self._closing.is_set() or (self._watcher is not None and self._watcher.is_alive()):
                return
            self._watcher = threading.Thread(
                target=self._watch, name="labd-stream-watch", daemon=True
            )
            self._watcher.start()

    def _watch(self) -> None:
        while not self._closing.wait(_WATCH_INTERVAL):
            for stream in list(self._streams.values()):
                stream.check_alive()

    def _spawn(self, name: str, target: Callable[..., Any], *args: Any) -> None:
        def run() -> None:
            try:
                target(*args)
            finally:
                with self._lock:
                    self._helpers.discard(thread)

        thread = threading.Thread(target=run, name=name, daemon=True)
        with self._lock:
            self._helpers.add(thread)
        thread.start()

    def close(self, timeout: float | None = 2.0) -> list[str]:
        """Stop every stream and the watcher; returns the ids whose stop did not finish."""
        deadline = None if timeout is None else time.monotonic() + timeout
        late: list[str] = []
        for stream in list(self._streams.values()):
            stream.stop(timeout=_remaining(deadline))
        with self._lock:
            helpers = list(self._helpers)
        for thread in helpers:
            thread.join(_remaining(deadline))
            if thread.is_alive():
                late.append(thread.name.removeprefix("labd-stop-"))
        self._closing.set()
        watcher = self._watcher
        if watcher is not None:
            watcher.join(_remaining(deadline))
        return late


def _remaining(deadline: float | None) -> float | None:
    if deadline is None:
        return None
    return max(0.0, deadline - time.monotonic())


def _arguments_text(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    parts = [repr(a) for a in args] + [f"{k}={v!r}" for k, v in kwargs.items()]
    return ", ".join(parts) or "no arguments"


def _install_trio(device: Any, stream: DeviceStream) -> None:
    """Route the streaming trio through the hub, on the instance, for calls from outside.

    Each replacement looks at its immediate caller: when that is the device's own code
    (:func:`labd.devices.own_code`), the call goes to the device's own method instead.
    """
    own = own_code(type(device))
    caller = sys._getframe
    device_start = stream._device_start
    device_stop = stream._device_stop
    device_is_streaming = stream._device_is_streaming
    assert device_start is not None

    @functools.wraps(device_start)
    def start_streaming(*args: Any, **kwargs: Any) -> Subscription | None:
        if caller(1).f_code in own:
            return stream.own_start(device_start, args, kwargs)  # type: ignore[no-any-return]
        if args:
            callback, args = args[0], args[1:]
        elif "callback" in kwargs:
            callback = kwargs.pop("callback")
        else:
            raise TypeError(
                f"{stream.device_id}.start_streaming() needs a callback as its first argument"
            )
        queue_size = kwargs.pop("queue_size", None)
        on_end = kwargs.pop("on_end", None)
        return stream.subscribe(callback, kwargs, args=args, queue_size=queue_size, on_end=on_end)

    def stop_streaming(*args: Any, **kwargs: Any) -> Any:
        if device_stop is not None and caller(1).f_code in own:
            return stream.own_stop(device_stop, args, kwargs)
        timeout = kwargs.pop("timeout", args[0] if args else None)
        stream.stop(timeout)
        return None

    def is_streaming(*args: Any, **kwargs: Any) -> Any:
        if device_is_streaming is not None and caller(1).f_code in own:
            return device_is_streaming(*args, **kwargs)
        return stream.is_streaming()

    set_attribute = object.__setattr__  # a device's own __setattr__ is not for labd's parts
    set_attribute(device, "start_streaming", start_streaming)
    if device_stop is not None:
        set_attribute(device, "stop_streaming", functools.wraps(device_stop)(stop_streaming))
    else:
        set_attribute(device, "stop_streaming", stop_streaming)
    if device_is_streaming is not None:
        set_attribute(device, "is_streaming", functools.wraps(device_is_streaming)(is_streaming))
    else:
        set_attribute(device, "is_streaming", is_streaming)
