"""How labd adapts a plain device class: construction, locking, introspection, timed calls.

At ``add_device`` time labd

* builds the instance, passing ``device_id=`` only when ``__init__`` accepts it;
* injects ``device._ld_lock`` (a ``threading.RLock``);
* replaces, on the instance, every public method defined by the class (plain methods,
  classmethods and staticmethods whose names do not start with ``_``) with a wrapper
  that holds the lock for the call. Wrappers keep the name, docstring and signature.

Not wrapped, on purpose: private methods (device threads take the lock themselves, for
brief updates); properties and plain attributes (reading them stays a plain attribute
access -- put hardware I/O in methods); callables stored on the instance and methods
added after ``add_device`` (labd only knows what the class defines). The streaming trio
goes to the stream hub instead (see :mod:`labd.streams`).
"""

from __future__ import annotations

import enum
import functools
import inspect
import logging
import queue
import threading
import types
import typing
from collections.abc import Callable
from concurrent.futures import CancelledError
from typing import Any, TypeVar

from labd.exceptions import DeviceBusy, DeviceConfigurationError, DeviceTimeoutError
from labd.wire import MethodInfo, ParameterInfo

__all__ = [
    "STREAMING_METHODS",
    "CallJob",
    "CallWorker",
    "DeviceBusy",
    "check_device_class",
    "choices_of",
    "describe_methods",
    "enum_parameters",
    "instantiate",
    "is_query",
    "public_methods",
    "query",
    "signature_of",
    "to_enum",
    "wrap_device",
]

log = logging.getLogger(__name__)

STREAMING_METHODS = frozenset({"start_streaming", "stop_streaming", "is_streaming"})
_QUERY_PREFIXES = ("get_", "is_", "has_")

F = TypeVar("F", bound=Callable[..., Any])


def query(func: F) -> F:
    """Mark a device method as a read-only query.

    Queries are served remotely even while a task owns the device.
    """
    func.__labd_query__ = True  # type: ignore[attr-defined]
    return func


def is_query(name: str, func: Any) -> bool:
    """A query is a ``get_*``/``is_*``/``has_*`` method or one marked with :func:`query`."""
    target = inspect.unwrap(func) if callable(func) else func
    return name.startswith(_QUERY_PREFIXES) or bool(getattr(target, "__labd_query__", False))


def accepts_keyword(cls: type, name: str) -> bool:
    """Whether ``cls(...)`` accepts the keyword ``name`` (by name or through ``**kwargs``)."""
    try:
        params = inspect.signature(cls).parameters.values()
    except (TypeError, ValueError):
        return False
    for p in params:
        if p.kind is p.VAR_KEYWORD:
            return True
        if p.name == name and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
            return True
    return False


def instantiate(cls: type, device_id: str, params: dict[str, Any], *, kind: str = "device") -> Any:
    """Build ``cls`` with ``params``, passing the id only when ``__init__`` accepts it.

    An explicit ``device_id`` (``task_id`` for tasks) in ``params`` must equal the id.
    """
    id_name = f"{kind}_id"
    params = dict(params)
    explicit = params.pop(id_name, device_id)
    if explicit != device_id:
        raise DeviceConfigurationError(
            f"{id_name}={explicit!r} in the params does not match the id {device_id!r}"
        )
    if accepts_keyword(cls, id_name):
        params[id_name] = device_id
    try:
        inspect.signature(cls).bind(**params)
    except TypeError as exc:
        raise DeviceConfigurationError(
            f"bad parameters for {kind} {device_id!r} ({cls.__name__}): {exc}"
        ) from exc
    except ValueError:
        pass  # no introspectable signature: let the call itself decide
    obj = cls(**params)
    try:
        if getattr(obj, id_name, None) != device_id:
            object.__setattr__(obj, id_name, device_id)  # not through a custom __setattr__
    except AttributeError:
        log.debug("%s %r does not allow setting %s", kind, device_id, id_name)
    return obj


def public_methods(cls: type) -> list[str]:
    """Names of the public methods a class defines (functions, class- and staticmethods)."""
    names = []
    for name in dir(cls):
        if name.startswith("_"):
            continue
        try:
            attr = inspect.getattr_static(cls, name)
        except AttributeError:
            continue
        if isinstance(attr, staticmethod | classmethod) or inspect.isfunction(attr):
            names.append(name)
    return names


def check_device_class(cls: type, device_id: str) -> None:
    """Refuse, before anything is built, a class whose instances labd cannot adapt.

    Raises :class:`DeviceConfigurationError` naming the device, the class and the reason:
    instances without a ``__dict__`` (``__slots__``) cannot take ``_ld_lock`` or method
    wrappers, and ``async def`` or generator methods would run their bodies after the
    call returned, outside the device lock, and cannot be called over the network.
    """
    where = f"device {device_id!r} ({cls.__qualname__})"
    if not getattr(cls, "__dictoffset__", 1):
        raise DeviceConfigurationError(
            f"{where}: its instances have no __dict__ (the class uses __slots__), so labd"
            " cannot add _ld_lock and its method wrappers; add '__dict__' to __slots__"
        )
    for name in public_methods(cls):
        func = inspect.getattr_static(cls, name)
        if isinstance(func, staticmethod | classmethod):
            func = func.__func__
        func = inspect.unwrap(func)
        if inspect.iscoroutinefunction(func) or inspect.isasyncgenfunction(func):
            raise DeviceConfigurationError(
                f"{where}: method {name!r} is 'async def'; labd runs device methods on"
                " threads under the device lock and cannot await them: make it a plain"
                " 'def' (it may use asyncio.run inside)"
            )
        if inspect.isgeneratorfunction(func):
            raise DeviceConfigurationError(
                f"{where}: method {name!r} is a generator; its body would run after the"
                " call returned, outside the device lock, and cannot be sent over the"
                " network: return a list (or make it private, '_name')"
            )


def wrap_device(obj: Any, lock: threading.RLock) -> dict[str, Callable[..., Any]]:
    """Inject ``_ld_lock`` and wrap each public method in it.

    Returns ``{name: original bound method}``. Attributes are set with
    ``object.__setattr__``: a device's own ``__setattr__`` (one that forwards settings to
    the instrument, or refuses unknown names) is for its users, not for labd's parts.
    """
    set_attribute = object.__setattr__
    set_attribute(obj, "_ld_lock", lock)
    originals: dict[str, Callable[..., Any]] = {}
    for name in public_methods(type(obj)):
        bound = getattr(obj, name)
        originals[name] = bound
        if name in STREAMING_METHODS:
            continue
        set_attribute(obj, name, _locked(bound, lock))
    return originals


def _locked(method: Callable[..., Any], lock: threading.RLock) -> Callable[..., Any]:
    # Bound acquire/release are measurably cheaper per call than a ``with`` block here.
    acquire = lock.acquire
    release = lock.release

    @functools.wraps(method)
    def call(*args: Any, **kwargs: Any) -> Any:
        acquire()
        try:
            return method(*args, **kwargs)
        finally:
            release()

    return call


def _annotation_text(annotation: Any) -> str | None:
    if annotation is inspect.Parameter.empty:
        return None
    if isinstance(annotation, str):
        return annotation
    if isinstance(annotation, type):
        return annotation.__name__
    return str(annotation).replace("typing.", "")


def _jsonable_default(value: Any) -> Any:
    if value is inspect.Parameter.empty:
        return None
    if isinstance(value, enum.Enum):
        choices = choices_of(type(value)) or []
        return value.value if value.value in choices else value.name
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return repr(value)


def signature_of(func: Callable[..., Any]) -> inspect.Signature | None:
    """``func``'s signature with string annotations evaluated where they can be; or None."""
    try:
        return inspect.signature(func, eval_str=True)
    except (TypeError, ValueError):
        return None
    except Exception:  # an annotation that does not evaluate (NameError, ...): keep the text
        try:
            return inspect.signature(func)
        except (TypeError, ValueError):
            return None


def choices_of(annotation: Any) -> list[Any] | None:
    """The values a ``Literal[...]`` or ``Enum`` annotation allows (``| None`` aside), or None.

    An Enum offers its members' values when they are JSON scalars, else their names.
    """
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        values = [member.value for member in annotation]
        if all(v is None or isinstance(v, bool | int | float | str) for v in values):
            return values
        return [member.name for member in annotation]
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return list(typing.get_args(annotation))
    if origin is typing.Union or origin is types.UnionType:
        found: list[Any] = []
        for arg in typing.get_args(annotation):
            if arg is type(None):
                continue
            more = choices_of(arg)
            if more is None:
                return None
            found.extend(v for v in more if v not in found)
        return found or None
    return None


def enum_parameters(sig: inspect.Signature | None) -> dict[str, type[enum.Enum]]:
    """The parameters annotated with an Enum class (``| None`` aside), by name."""
    found: dict[str, type[enum.Enum]] = {}
    for p in sig.parameters.values() if sig is not None else ():
        candidates = typing.get_args(p.annotation) or (p.annotation,)
        for candidate in candidates:
            if isinstance(candidate, type) and issubclass(candidate, enum.Enum):
                found[p.name] = candidate
                break
    return found


def to_enum(kind: type[enum.Enum], value: Any) -> Any:
    """A JSON value as a member of ``kind``: by value, else by name; TypeError if neither."""
    if isinstance(value, kind) or value is None:
        return value
    try:
        return kind(value)
    except (ValueError, TypeError):
        pass
    if isinstance(value, str) and value in kind.__members__:
        return kind[value]
    allowed = ", ".join(repr(v) for v in choices_of(kind) or ())
    raise TypeError(f"{value!r} is not a {kind.__name__} (one of {allowed})")


def describe_callable(name: str, func: Callable[..., Any]) -> MethodInfo:
    """Describe one callable: parameters, return annotation, docstring, query flag."""
    sig = signature_of(func) or inspect.Signature()
    params: list[ParameterInfo] = []
    for p in sig.parameters.values():
        params.append(
            {
                "name": p.name,
                "kind": p.kind.name.lower(),
                "required": p.default is p.empty
                and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD),
                "default": _jsonable_default(p.default),
                "annotation": _annotation_text(p.annotation),
                "choices": choices_of(p.annotation),
            }
        )
    return {
        "name": name,
        "parameters": params,
        "returns": _annotation_text(sig.return_annotation),
        "doc": inspect.getdoc(func),
        "query": is_query(name, func),
    }


def describe_methods(methods: dict[str, Callable[..., Any]]) -> list[MethodInfo]:
    """Describe each public method (from the originals recorded by :func:`wrap_device`)."""
    return [describe_callable(name, methods[name]) for name in sorted(methods)]


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
        args: tuple[Any, ...],
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
        args: tuple[Any, ...],
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
        in_time = finished.acquire(timeout=-1 if timeout is None else max(timeout, 0.0))
        if not in_time and self.abandon(job):
            raise DeviceTimeoutError(
                f"call to device {self.device_id!r} did not finish within {timeout} s"
            )
        return job.result()

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
