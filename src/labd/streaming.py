"""Building blocks for streaming device classes.

Three small pieces cover the patterns device authors otherwise write by hand:

- :class:`RateLimitedLoop` calls ``emit(acquire())`` at a fixed rate on its own
  thread. Ticks are scheduled against ideal times ``t0 + k / rate_hz`` on the
  monotonic clock, so the rate never drifts; ticks whose whole period passed while
  ``acquire``/``emit`` overran are skipped (never run in a burst) and counted.
- :class:`BackpressureQueue` decouples a producer from a slow consumer: ``put``
  never blocks, a full queue drops and counts, and the callback runs in order on
  the queue's own delivery thread.
- :class:`ErrorBudget` counts consecutive failures and says when to give up.

They compose into a streaming device with no hand-written threads: the loop
acquires, the queue's ``put`` is its ``emit``, and the budget decides when a
misbehaving instrument ends the stream::

    class Sensor:
        def start_streaming(self, callback, sample_rate=100.0):
            self._queue = BackpressureQueue(callback, maxsize=100, name=self.device_id)
            self._loop = RateLimitedLoop(
                self._read, self._queue.put, sample_rate,
                name=self.device_id, error_budget=ErrorBudget(10),
            )
            self._queue.start()
            self._loop.start()

        def stop_streaming(self, timeout=None):
            self._loop.stop(timeout)
            self._queue.stop(timeout)

        def is_streaming(self):
            return self._loop.is_running()

Under labd the callback handed to ``start_streaming`` is already cheap (the
stream hub never blocks the device), so the queue is only needed when the
device's own consumer is slow; the loop and the budget are useful everywhere.
"""

from __future__ import annotations

import logging
import math
import operator
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Literal

from labd.exceptions import ErrorBudgetExhausted, error_text

__all__ = ["BackpressureQueue", "ErrorBudget", "RateLimitedLoop", "StopReason"]

logger = logging.getLogger(__name__)

StopReason = Literal["stopped", "error", "error_budget"]
"""Why a loop ended: ``stop()`` was called, an unhandled error, or the budget ran out."""

# start() after stop() waits this long for the previous thread to finish its last call.
_RESTART_JOIN_TIMEOUT = 5.0
# An idle delivery thread re-checks its state this often (a safety net; puts wake it).
_IDLE_WAIT = 0.5
# How many recent (actual - ideal) schedule errors a loop keeps.
_HISTORY = 1024


def _positive_int(value: int, what: str) -> int:
    try:
        number = operator.index(value)
    except TypeError:
        raise ValueError(f"{what} must be an integer >= 1, got {value!r}") from None
    if isinstance(value, bool) or number < 1:
        raise ValueError(f"{what} must be an integer >= 1, got {value!r}")
    return number


def _positive_rate(value: float) -> float:
    try:
        rate = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"rate_hz must be a finite number > 0, got {value!r}") from None
    if not (math.isfinite(rate) and rate > 0):
        raise ValueError(f"rate_hz must be a finite number > 0, got {value!r}")
    return rate


class ErrorBudget:
    """Counts consecutive failures; exhausted after ``limit`` of them in a row.

    ``exhausted`` latches: a later success resets ``consecutive_failures`` but the
    budget stays exhausted until :meth:`reset`. ``on_exhausted(last_error)`` runs once
    per exhaustion, on the thread that recorded the failure. Thread-safe.
    """

    def __init__(
        self, limit: int, on_exhausted: Callable[[BaseException], object] | None = None
    ) -> None:
        self._limit = _positive_int(limit, "ErrorBudget limit")
        self._on_exhausted = on_exhausted
        self._lock = threading.Lock()
        self._consecutive = 0
        self._total = 0
        self._last_error: BaseException | None = None
        self._exhausted = False

    @property
    def limit(self) -> int:
        """Consecutive failures that exhaust the budget."""
        return self._limit

    @property
    def exhausted(self) -> bool:
        """True once ``limit`` consecutive failures were recorded (until :meth:`reset`)."""
        return self._exhausted

    @property
    def consecutive_failures(self) -> int:
        """Failures since the last success."""
        return self._consecutive

    @property
    def total_failures(self) -> int:
        """Failures since creation or the last :meth:`reset`."""
        return self._total

    @property
    def last_error(self) -> BaseException | None:
        """The most recently recorded failure."""
        return self._last_error

    def record_failure(self, exc: BaseException) -> bool:
        """Record one failure; returns whether the budget is now exhausted."""
        with self._lock:
            self._consecutive += 1
            self._total += 1
            self._last_error = exc
            newly_exhausted = not self._exhausted and self._consecutive >= self._limit
            if newly_exhausted:
                self._exhausted = True
        if newly_exhausted and self._on_exhausted is not None:
            try:
                self._on_exhausted(exc)
            except Exception:
                logger.exception("on_exhausted hook of %r raised", self)
        return self._exhausted

    def record_success(self) -> None:
        """Record one success: the run of consecutive failures is broken."""
        with self._lock:
            self._consecutive = 0

    def reset(self) -> None:
        """Return to the fresh state: no failures, not exhausted."""
        with self._lock:
            self._consecutive = 0
            self._total = 0
            self._last_error = None
            self._exhausted = False

    def __repr__(self) -> str:
        state = "exhausted" if self._exhausted else "ok"
        return f"<ErrorBudget {self._consecutive}/{self._limit} {state}>"


class RateLimitedLoop:
    """Calls ``emit(acquire())`` at ``rate_hz`` on a ``labd-loop-<name>`` daemon thread.

    Tick ``k`` is due at ``t0 + k / rate_hz`` (monotonic clock, no accumulated drift).
    When an iteration ends after the whole period of one or more later ticks (acquire
    or emit overran, or the thread woke late), those ticks are skipped and added to
    ``overruns``; the tick whose period is under way runs at once, late.
    ``on_tick(ideal, actual)`` (both ``time.monotonic()`` seconds) is called on the
    loop thread before each ``acquire``; :meth:`schedule_errors` keeps the most recent
    ``actual - ideal`` values for tests and benchmarks.

    An exception from ``acquire``, ``emit`` or ``on_tick``:

    - goes to ``on_error(exc)`` when given (not logged), and is recorded in
      ``error_budget`` when given; the loop stops once the budget is exhausted, and
      ``on_error`` then receives an :class:`~labd.exceptions.ErrorBudgetExhausted`
      that says why (the last failure chained), so ``on_error=callback.error`` leaves
      the reason in the daemon's error records;
    - with neither, is logged and stops the loop.

    If ``on_error`` itself raises, that is logged and the loop stops. ``stop()`` may be
    called from any thread, including from inside ``acquire``/``emit``; a datum whose
    ``acquire`` returns after ``stop()`` is not emitted.
    """

    def __init__(
        self,
        acquire: Callable[[], Any],
        emit: Callable[[Any], object],
        rate_hz: float,
        *,
        name: str | None = None,
        error_budget: ErrorBudget | None = None,
        on_error: Callable[[Exception], object] | None = None,
        on_tick: Callable[[float, float], object] | None = None,
    ) -> None:
        self._rate_hz = _positive_rate(rate_hz)
        self._acquire = acquire
        self._emit = emit
        self._period = 1.0 / self._rate_hz
        self._name = name if name is not None else f"{id(self):x}"
        self._budget = error_budget
        self._on_error = on_error
        self._on_tick = on_tick
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop_event = threading.Event()
        self._ticks = 0
        self._overruns = 0
        self._stopped_reason: StopReason | None = None
        self._last_error: Exception | None = None
        self._errors: deque[float] = deque(maxlen=_HISTORY)
        self._errors_lock = threading.Lock()

    @property
    def name(self) -> str:
        """The loop's name; its thread is ``labd-loop-<name>``."""
        return self._name

    @property
    def rate_hz(self) -> float:
        """Target rate in ticks per second."""
        return self._rate_hz

    @property
    def ticks(self) -> int:
        """Iterations run since the last start."""
        return self._ticks

    @property
    def overruns(self) -> int:
        """Ticks skipped since the last start because an iteration ran past them."""
        return self._overruns

    @property
    def stopped_reason(self) -> StopReason | None:
        """Why the last run ended; None while running or before the first start."""
        return self._stopped_reason

    @property
    def last_error(self) -> Exception | None:
        """The last exception raised by acquire/emit/on_tick since the last start."""
        return self._last_error

    def schedule_errors(self) -> list[float]:
        """The most recent ``actual - ideal`` tick times in seconds (up to 1024), oldest first."""
        with self._errors_lock:
            return list(self._errors)

    def is_running(self) -> bool:
        """True from start() until stop() is called or the loop ends by itself."""
        thread = self._thread
        return thread is not None and thread.is_alive() and not self._stop_event.is_set()

    def start(self) -> None:
        """Start ticking; the first tick is at once.

        Raises RuntimeError if already running. After a stop, the previous thread is
        given up to 5 s to finish its last call (so acquire never runs twice at once).
        """
        with self._lock:
            previous = self._thread
            if previous is not None and previous.is_alive() and not self._stop_event.is_set():
                raise RuntimeError(f"{self!r} is already running")
        if previous is not None and previous.is_alive():
            if previous is threading.current_thread():
                raise RuntimeError(f"{self!r} cannot be restarted from its own thread")
            previous.join(_RESTART_JOIN_TIMEOUT)
            if previous.is_alive():
                raise RuntimeError(f"{self!r}: the previous run has not finished its last call")
        with self._lock:
            if self._thread is not previous:
                raise RuntimeError(f"{self!r} was started concurrently")
            stop_event = threading.Event()
            self._stop_event = stop_event
            self._ticks = 0
            self._overruns = 0
            self._stopped_reason = None
            self._last_error = None
            with self._errors_lock:
                self._errors.clear()
            thread = threading.Thread(
                target=self._run, args=(stop_event,), name=f"labd-loop-{self._name}", daemon=True
            )
            self._thread = thread
            thread.start()
        logger.debug("%r started", self)

    def stop(self, timeout: float | None = None) -> None:
        """Stop the loop, waking it at once, and wait up to ``timeout`` for its thread.

        Idempotent. From the loop's own thread (inside acquire/emit) it returns at
        once; the loop ends when that call returns.
        """
        with self._lock:
            thread = self._thread
            if thread is None:
                return
            if not self._stop_event.is_set():
                self._stopped_reason = "stopped"
                self._stop_event.set()
        if thread is threading.current_thread():
            return
        thread.join(timeout)
        if thread.is_alive():
            logger.warning("%r: thread still busy %s s after stop()", self, timeout)

    def _run(self, stop: threading.Event) -> None:
        period = self._period
        t0 = time.monotonic()
        k = 0
        try:
            while True:
                ideal = t0 + k * period
                now = time.monotonic()
                if now < ideal:
                    if stop.wait(ideal - now):
                        break
                    now = time.monotonic()
                elif stop.is_set():
                    break
                self._ticks += 1
                with self._errors_lock:
                    self._errors.append(now - ideal)
                if not self._iterate(stop, ideal, now):
                    break
                # Next tick: skip every tick whose whole period has already passed.
                due = int((time.monotonic() - t0) / period)
                k += 1
                if due > k:
                    self._overruns += due - k
                    k = due
        finally:
            self._finish(stop, "error")
            logger.debug("%r ended (%s)", self, self._stopped_reason)

    def _iterate(self, stop: threading.Event, ideal: float, actual: float) -> bool:
        """One tick; returns False when the loop must end."""
        try:
            if self._on_tick is not None:
                self._on_tick(ideal, actual)
            datum = self._acquire()
            if stop.is_set():
                return False
            self._emit(datum)
        except Exception as exc:
            return self._handle_error(stop, exc)
        if self._budget is not None:
            self._budget.record_success()
        return True

    def _handle_error(self, stop: threading.Event, exc: Exception) -> bool:
        self._last_error = exc
        if self._on_error is not None:
            try:
                self._on_error(exc)
            except Exception:
                logger.exception("on_error hook of %r raised; stopping", self)
                self._finish(stop, "error")
                return False
        budget = self._budget
        if budget is not None:
            if budget.record_failure(exc):
                reason = ErrorBudgetExhausted(
                    f"stopped after {budget.consecutive_failures} consecutive failures;"
                    f" last: {error_text(exc)}"
                )
                reason.__cause__ = exc
                if self._on_error is not None:
                    # The reason for stopping, as the last thing the owner hears.
                    try:
                        self._on_error(reason)
                    except Exception:
                        logger.exception("on_error hook of %r raised", self)
                else:
                    logger.error("%r: %s", self, reason, exc_info=exc)
                self._finish(stop, "error_budget")
                return False
            if self._on_error is None:
                logger.warning(
                    "%r: %s: %s (%d of %d consecutive failures allowed)",
                    self,
                    type(exc).__name__,
                    exc,
                    budget.consecutive_failures,
                    budget.limit,
                )
            return True
        if self._on_error is not None:
            return True
        logger.error("%r: acquire/emit raised; stopping", self, exc_info=exc)
        self._finish(stop, "error")
        return False

    def _finish(self, stop: threading.Event, reason: StopReason) -> None:
        with self._lock:
            if not stop.is_set():
                self._stopped_reason = reason
                stop.set()

    def __repr__(self) -> str:
        state = "running" if self.is_running() else "stopped"
        return f"<RateLimitedLoop {self._name!r} {self._rate_hz:g} Hz {state}>"


class BackpressureQueue:
    """A bounded queue whose ``callback(item)`` runs in order on a ``labd-queue-<name>`` thread.

    :meth:`put` never blocks: when the queue holds ``maxsize`` items (counting the
    one being delivered), or is not running, the item is dropped and counted. Every
    item put is, at any moment, in exactly one of ``delivered`` (handed to the
    callback, whether or not it raised), ``dropped`` or ``pending`` (queued or being
    delivered), so ``delivered + dropped + pending`` equals the number of ``put`` calls.

    A callback exception goes to ``on_error(exc)`` when given, else it is logged;
    either way it is counted in ``callback_errors`` and delivery goes on.
    """

    def __init__(
        self,
        callback: Callable[[Any], object],
        maxsize: int = 100,
        *,
        name: str | None = None,
        on_error: Callable[[Exception], object] | None = None,
    ) -> None:
        self._callback = callback
        self._maxsize = _positive_int(maxsize, "maxsize")
        self._name = name if name is not None else f"{id(self):x}"
        self._on_error = on_error
        self._cond = threading.Condition(threading.Lock())
        self._items: deque[Any] = deque()
        # "new" -> "running" -> ("draining" ->) "stopped"; start() again -> "running"
        self._state: Literal["new", "running", "draining", "stopped"] = "new"
        self._thread: threading.Thread | None = None
        self._in_flight = 0
        self._delivered = 0
        self._dropped = 0
        self._callback_errors = 0

    @property
    def name(self) -> str:
        """The queue's name; its thread is ``labd-queue-<name>``."""
        return self._name

    @property
    def maxsize(self) -> int:
        """Most items held at once, counting the one being delivered."""
        return self._maxsize

    @property
    def delivered(self) -> int:
        """Items handed to the callback (including those whose callback raised)."""
        with self._cond:
            return self._delivered

    @property
    def dropped(self) -> int:
        """Items refused because the queue was full or not running, or discarded by stop()."""
        with self._cond:
            return self._dropped

    @property
    def pending(self) -> int:
        """Items accepted but not yet delivered (queued, or in the callback right now)."""
        with self._cond:
            return len(self._items) + self._in_flight

    @property
    def callback_errors(self) -> int:
        """Callback calls that raised."""
        with self._cond:
            return self._callback_errors

    def is_running(self) -> bool:
        """True between start() and stop(): puts are accepted."""
        return self._state == "running"

    def start(self) -> None:
        """Start the delivery thread.

        Raises RuntimeError if already running. After a stop, the previous thread is
        given up to 5 s to finish (so items are never delivered by two threads).
        """
        with self._cond:
            if self._state == "running":
                raise RuntimeError(f"{self!r} is already running")
            previous = self._thread
        if previous is not None and previous.is_alive():
            if previous is threading.current_thread():
                raise RuntimeError(f"{self!r} cannot be restarted from its own thread")
            previous.join(_RESTART_JOIN_TIMEOUT)
            if previous.is_alive():
                raise RuntimeError(f"{self!r}: the previous delivery thread has not finished")
        with self._cond:
            if self._thread is not previous or self.is_running():
                raise RuntimeError(f"{self!r} was started concurrently")
            self._state = "running"
            thread = threading.Thread(
                target=self._deliver, name=f"labd-queue-{self._name}", daemon=True
            )
            self._thread = thread
            thread.start()

    def put(self, item: Any) -> bool:
        """Queue ``item`` for delivery; never blocks. False (and counted) if dropped."""
        with self._cond:
            if self._state != "running" or len(self._items) + self._in_flight >= self._maxsize:
                self._dropped += 1
                return False
            self._items.append(item)
            self._cond.notify()
            return True

    def stop(self, timeout: float | None = None, *, drain: bool = False) -> None:
        """Stop accepting items and end the delivery thread, waiting up to ``timeout``.

        By default nothing further is delivered: queued items are discarded and
        counted in ``dropped`` (an item already in the callback finishes). With
        ``drain=True`` the queued items are delivered first. Idempotent; from inside
        the callback it returns at once.
        """
        with self._cond:
            thread = self._thread
            if drain and self._state == "running":
                self._state = "draining"
            elif not drain and self._state in ("running", "draining"):
                self._state = "stopped"
                self._dropped += len(self._items)
                self._items.clear()
            self._cond.notify_all()
        if thread is None or thread is threading.current_thread():
            return
        thread.join(timeout)
        if thread.is_alive():
            logger.warning("%r: delivery thread still busy %s s after stop()", self, timeout)

    def _deliver(self) -> None:
        while True:
            with self._cond:
                while not self._items and self._state == "running":
                    self._cond.wait(_IDLE_WAIT)
                if self._state == "stopped" or not self._items:
                    self._state = "stopped"
                    return
                item = self._items.popleft()
                self._in_flight = 1
            failed = False
            try:
                self._callback(item)
            except Exception as exc:
                failed = True
                self._report(exc)
            finally:
                with self._cond:
                    self._in_flight = 0
                    self._delivered += 1
                    self._callback_errors += int(failed)

    def _report(self, exc: Exception) -> None:
        if self._on_error is None:
            logger.error("%r: callback raised", self, exc_info=exc)
            return
        try:
            self._on_error(exc)
        except Exception:
            logger.exception("on_error hook of %r raised", self)

    def __repr__(self) -> str:
        return f"<BackpressureQueue {self._name!r} {self._state} maxsize={self._maxsize}>"
