"""Device calls: the call thread of each device, its jobs, and what a call needs to know.

* :class:`CallWorker` runs the calls with a timeout on the device's own thread
  (``labd-call-<device>``), one after another; a call that outlives its timeout keeps
  the thread and marks the device busy (docs/decisions/0002).
* :class:`CallJob` is one queued call and its outcome (docs/decisions/0005).
* :meth:`CallWorker.expire` is the one rule for a caller whose wait ran out, shared by
  the synchronous wait here and the server's event-loop bridge.
* :class:`CallSpec` is what a call needs to know about one method (its query flag, its
  argument check, its Enum-annotated parameters), worked out once per device method.
* :class:`DeviceCall` is a call made ready by the daemon for a caller on another loop
  (the server): what to check and how to queue it, without the daemon's records.
"""

from __future__ import annotations

import enum
import inspect
import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import CancelledError
from typing import Any

from labd.devices import enum_parameters, is_query, signature_of, to_enum
from labd.exceptions import DeviceArgumentError, DeviceBusy, DeviceTimeoutError

__all__ = ["CallJob", "CallSpec", "CallWorker", "DeviceCall"]

log = logging.getLogger(__name__)


class CallSpec:
    """What a call needs to know about one public method of a device, worked out once.

    ``inspect.signature`` costs more than all of a call's other checks, so the spec is
    made on the first call of each method and kept with the device's record.
    """

    __slots__ = (
        "action",
        "device_id",
        "enums",
        "func",
        "max_args",
        "min_args",
        "name",
        "query",
        "signature",
    )

    def __init__(self, device_id: str, name: str, func: Callable[..., Any]) -> None:
        self.device_id = device_id
        self.name = name
        self.func = func  # the device's own method, as its class defines it
        self.query = is_query(name, func)
        self.action = f"call {name}"  # for the 409 when a task owns the device
        # None when there is nothing to check arguments against.
        self.signature: inspect.Signature | None = signature_of(func)
        # Enum-annotated parameters: JSON brings their values or names, the device wants
        # members.
        self.enums: dict[str, type[enum.Enum]] = enum_parameters(self.signature)
        # Plain positional parameters: without kwargs, a count check equals bind().
        self.min_args = self.max_args = -1
        if self.signature is not None:
            params = self.signature.parameters.values()
            if all(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in params):
                self.max_args = len(self.signature.parameters)
                self.min_args = sum(p.default is p.empty for p in params)

    def check(self, args: list[Any] | tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """Raise TypeError unless the method accepts these arguments."""
        if not kwargs and self.min_args <= len(args) <= self.max_args:
            return
        if self.signature is not None:
            self.signature.bind(*args, **kwargs)

    def checked(self, args: list[Any] | tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """:meth:`check`, raising :class:`DeviceArgumentError` naming ``device.method``."""
        try:
            self.check(args, kwargs)
        except TypeError as exc:
            raise self._refused(exc) from None

    def with_members(
        self, args: list[Any], kwargs: dict[str, Any]
    ) -> tuple[list[Any], dict[str, Any]]:
        """Checked arguments with each Enum-annotated one made a member (remote calls).

        JSON brings an Enum's value or name; the device gets the member. Raises
        :class:`DeviceArgumentError` naming ``device.method`` for anything else.
        """
        self.checked(args, kwargs)
        if not self.enums:
            return args, kwargs
        assert self.signature is not None
        bound = self.signature.bind(*args, **kwargs)
        for name, kind in self.enums.items():
            if name in bound.arguments:
                try:
                    bound.arguments[name] = to_enum(kind, bound.arguments[name])
                except TypeError as exc:
                    raise self._refused(TypeError(f"{name}: {exc}")) from None
        return list(bound.args), bound.kwargs

    def _refused(self, exc: TypeError) -> DeviceArgumentError:
        return DeviceArgumentError(f"bad arguments for {self.device_id}.{self.name}: {exc}")


_QUEUED, _RUNNING, _DONE, _DROPPED = range(4)


class CallJob:
    """One call queued on a device's call thread and, once it has run, its outcome.

    A lean future made by :meth:`CallWorker.enqueue`: its state changes under its
    worker's one lock, where ``concurrent.futures.Future`` builds a condition variable
    per call, and every remote call makes one.
    """

    __slots__ = (
        "_error",
        "_lock",
        "_more",
        "_on_done",
        "_state",
        "_value",
        "args",
        "func",
        "kwargs",
        "tag",
    )

    def __init__(
        self,
        lock: threading.Lock,
        func: Callable[..., Any],
        args: tuple[Any, ...] | list[Any],
        kwargs: dict[str, Any],
        on_done: Callable[[CallJob], None] | None,
        tag: Any,
    ) -> None:
        self._lock = lock
        self.func = func
        self.args = args
        self.kwargs = kwargs
        self.tag = tag  # the submitter's own reference, for its callback
        self._state = _QUEUED
        self._value: Any = None
        self._error: BaseException | None = None
        self._on_done = on_done
        self._more: list[Callable[[CallJob], None]] | None = None  # add_done_callback's

    def done(self) -> bool:
        """True once the call has returned or raised, or was dropped unrun."""
        return self._state >= _DONE

    def dropped(self) -> bool:
        """True when the call was dropped before it ran (its caller gave up in line)."""
        return self._state == _DROPPED

    def result(self) -> Any:
        """The call's return value; re-raises what it raised. Only once :meth:`done`."""
        if self._state == _DONE:
            if self._error is not None:
                raise self._error
            return self._value
        if self._state == _DROPPED:
            raise CancelledError(f"call to {self.func!r} was dropped before it ran")
        raise RuntimeError("the call has not finished")

    def exception(self) -> BaseException | None:
        """What the call raised, or None. Only once :meth:`done`."""
        return None if self._state == _DROPPED else self._error

    def add_done_callback(self, fn: Callable[[CallJob], None]) -> None:
        """Call ``fn(job)`` when the job is done: on the call thread, or now if it is."""
        with self._lock:
            if self._state < _DONE:
                if self._more is None:
                    self._more = []
                self._more.append(fn)
                return
        fn(self)

    def _notify(self) -> None:
        # Once the job is settled (under the lock), nothing else touches its callbacks.
        on_done, more = self._on_done, self._more
        self._on_done = self._more = None
        if on_done is not None:
            try:  # the one callback of every remote call: no helper call in between
                on_done(self)
            except Exception:
                log.exception("a device call's done-callback failed")
        for fn in more or ():
            self._run_callback(fn)

    def _run_callback(self, fn: Callable[[CallJob], None]) -> None:
        try:
            fn(self)
        except Exception:
            log.exception("a device call's done-callback failed")


class CallWorker:
    """Runs calls for one device on its own thread (``labd-call-<device>``), with timeouts.

    Python cannot interrupt device code, so a call that outlives its timeout keeps
    running: the caller gets :class:`DeviceTimeoutError` at once and, until that call
    returns, further calls fail fast with :class:`DeviceBusy` instead of queueing
    behind it. Calls within their timeout run one after another, in order; a call whose
    caller gave up while it waited in line is never run. One thread per device bounds
    the threads hung devices can hold.
    """

    def __init__(self, device_id: str) -> None:
        self.device_id = device_id
        self._queue: queue.SimpleQueue[CallJob | None] = queue.SimpleQueue()
        # Whoever takes a job out of _waiting owns it: the call thread runs it, or
        # abandon() drops it. set.remove is atomic, so that needs no lock per call.
        self._waiting: set[CallJob] = set()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()  # guards the worker and the outcome of its jobs
        self._hung: CallJob | None = None
        self._closed = False

    @property
    def hung(self) -> bool:
        """True while a call that timed out is still running."""
        return self._hung is not None

    @property
    def thread(self) -> threading.Thread | None:
        return self._thread

    def submit(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> CallJob:
        """Queue a call; the job holds its outcome once it has run."""
        return self.enqueue(func, args, kwargs)

    def enqueue(
        self,
        func: Callable[..., Any],
        args: tuple[Any, ...] | list[Any],
        kwargs: dict[str, Any],
        on_done: Callable[[CallJob], None] | None = None,
        tag: Any = None,
    ) -> CallJob:
        """Queue ``func(*args, **kwargs)``; ``on_done(job)`` runs once it is done.

        ``tag`` is kept on the job for ``on_done`` to use (it saves a closure per call).
        """
        if self._hung is not None:
            raise DeviceBusy(
                f"device {self.device_id!r} is busy: an earlier call timed out and is still running"
            )
        if self._thread is None:
            self._start()
        job = CallJob(self._lock, func, args, kwargs, on_done, tag)
        self._waiting.add(job)
        self._queue.put(job)
        # close() marks the worker closed before it queues the end marker, so a job
        # queued after that marker sees the mark here and is taken back unrun.
        if self._closed and self._take(job):
            raise RuntimeError(f"device {self.device_id!r} has been removed")
        return job

    def _start(self) -> None:
        with self._lock:
            if self._closed:
                raise RuntimeError(f"device {self.device_id!r} has been removed")
            if self._thread is None:  # it only ends at close(), after which none start
                self._thread = threading.Thread(
                    target=self._run, name=f"labd-call-{self.device_id}", daemon=True
                )
                self._thread.start()

    def _take(self, job: CallJob) -> bool:
        """Claim a queued job (True), unless the call thread has claimed it already."""
        try:
            self._waiting.remove(job)
        except KeyError:
            return False
        return True

    def call(
        self, timeout: float | None, func: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> Any:
        """Run a call and wait for it at most ``timeout`` seconds (None: forever)."""
        return self.wait(self.enqueue(func, args, kwargs), timeout)

    def wait(self, job: CallJob, timeout: float | None) -> Any:
        """Wait for a submitted call; on timeout, mark the device busy and raise."""
        finished = threading.Lock()
        finished.acquire()
        job.add_done_callback(lambda _: finished.release())
        if not finished.acquire(timeout=-1 if timeout is None else max(timeout, 0.0)):
            self.expire(job, timeout)
        return job.result()

    def expire(self, job: CallJob, timeout: float | None) -> None:
        """The caller's wait for ``job`` ran out: the one rule for every way of waiting.

        Drops the job if it is still in line, or marks the device busy while it runs, and
        raises :class:`DeviceTimeoutError`. Returns if the job finished after all, so its
        outcome can be used.
        """
        if self.abandon(job):
            raise DeviceTimeoutError(
                f"call to device {self.device_id!r} did not finish within {timeout} s"
            )

    def abandon(self, job: CallJob) -> bool:
        """The caller gave up on ``job``: drop it if queued, else mark the device busy.

        Returns False when the job has finished after all (its outcome is there to use).
        """
        with self._lock:
            if job.done():
                return False
            if not self._take(job):  # the call thread has it: running, or about to
                self._hung = job
                return True
            job._state = _DROPPED
        job._notify()
        return True

    def _run(self) -> None:
        get = self._queue.get
        waiting = self._waiting
        lock = self._lock
        while True:
            job = get()
            if job is None:
                return
            try:
                waiting.remove(job)
            except KeyError:  # dropped by abandon() while it waited in line
                continue
            job._state = _RUNNING
            value: Any = None
            error: BaseException | None = None
            try:
                value = job.func(*job.args, **job.kwargs)
            except BaseException as exc:
                error = exc
            with lock:
                job._state, job._value, job._error = _DONE, value, error
                if self._hung is job:
                    self._hung = None
                    log.warning("late call to device %r has returned", self.device_id)
            # Waking the caller comes last: this thread then waits for work, so the woken
            # caller finds the interpreter free instead of blocking on it once more.
            job._notify()
            del value, error, job

    def close(self, timeout: float | None = 1.0) -> bool:
        """Stop the worker thread after queued calls; returns False if it is still busy."""
        with self._lock:
            self._closed = True
            thread = self._thread
        self._queue.put(None)
        if thread is None:
            return True
        if thread is not threading.current_thread():
            thread.join(timeout)
        return not thread.is_alive()


class DeviceCall:
    """One kind of device call, made ready by the daemon for a caller that queues it itself.

    The server's bridge queues it with :meth:`enqueue` and settles a wait that ran out
    with :meth:`expire`; its checks read :attr:`query`, :attr:`action` and
    :meth:`bind`. It holds no more of the device than that call needs.
    """

    __slots__ = ("_spec", "_worker", "action", "device_id", "func", "method", "query")

    def __init__(
        self,
        worker: CallWorker,
        func: Callable[..., Any],
        method: str,
        *,
        spec: CallSpec | None = None,
        action: str | None = None,
        query: bool = False,
    ) -> None:
        self._worker = worker
        self._spec = spec
        self.func = func
        self.device_id = worker.device_id
        self.method = method
        self.query = spec.query if spec is not None else query
        self.action = spec.action if spec is not None else action or method

    def bind(self, args: list[Any], kwargs: dict[str, Any]) -> tuple[list[Any], dict[str, Any]]:
        """The arguments as the device should get them (:meth:`CallSpec.with_members`)."""
        if self._spec is None:
            return args, kwargs
        return self._spec.with_members(args, kwargs)

    def enqueue(
        self,
        args: tuple[Any, ...] | list[Any],
        kwargs: dict[str, Any],
        on_done: Callable[[CallJob], None] | None = None,
        tag: Any = None,
    ) -> CallJob:
        """Queue the call on the device's call thread (:meth:`CallWorker.enqueue`)."""
        return self._worker.enqueue(self.func, args, kwargs, on_done, tag)

    def expire(self, job: CallJob, timeout: float | None) -> None:
        """The caller's wait ran out (:meth:`CallWorker.expire`)."""
        self._worker.expire(job, timeout)

    def abandon(self, job: CallJob) -> bool:
        """The caller gave up (:meth:`CallWorker.abandon`)."""
        return self._worker.abandon(job)

    def __repr__(self) -> str:
        return f"<DeviceCall {self.device_id}.{self.method}>"
