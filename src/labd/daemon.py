"""LabDaemon: the registry of devices and task types, their lifecycles, ownership and errors."""

from __future__ import annotations

import functools
import inspect
import logging
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from labd.calls import CallJob, CallSpec, CallWorker, DeviceCall
from labd.devices import (
    check_device_class,
    describe_callable,
    describe_methods,
    instantiate,
    wrap_device,
)
from labd.events import EventBus
from labd.exceptions import (
    DeviceConfigurationError,
    DeviceConnectionError,
    DeviceError,
    DeviceOwnedError,
    DeviceTimeoutError,
    DuplicateDeviceError,
    DuplicateTaskError,
    PluginConflictError,
    TaskError,
    UnknownDeviceError,
    UnknownDeviceTypeError,
    UnknownTaskError,
    UnknownTaskTypeError,
    error_text,
)
from labd.ring import EventRing
from labd.streams import RESERVED_KWARGS, DeviceStream, RemoteReader, StreamHub, Subscription
from labd.task_context import split_task_call, task_call_signature
from labd.tasks import TaskHandle, current_task
from labd.wire import DeviceInfo, ErrorInfo, MethodInfo, Origin, TaskTypeInfo, error_object

__all__ = ["DeviceRecord", "LabDaemon"]

log = logging.getLogger(__name__)

_ERROR_EVENT_INTERVAL = 1.0  # repeated identical errors publish at most one event per second


def _claimed_devices(task: Any, task_id: str, type_name: str) -> list[str]:
    """A task's ``device_ids``: a list (or tuple) of device id strings, else a TaskError.

    A bare string would otherwise be claimed letter by letter.
    """
    claimed = getattr(task, "device_ids", None)
    if claimed is None:
        return []
    if not isinstance(claimed, list | tuple) or not all(isinstance(d, str) and d for d in claimed):
        raise TaskError(
            f"task {task_id!r} ({type_name}): device_ids must be a list of device id"
            f" strings, not {claimed!r}"
        )
    return list(claimed)


def _describe_task_type(name: str, cls: type) -> TaskTypeInfo:
    info = describe_callable(name, cls)
    params = [
        p
        for p in info["parameters"]
        if p["name"] != "task_id" and p["kind"] not in ("var_positional", "var_keyword")
    ]
    return {"name": name, "parameters": params, "doc": inspect.getdoc(cls)}


class DeviceRecord:
    """What the daemon knows about one device."""

    def __init__(self, device_id: str, device_type: str, device: Any) -> None:
        self.device_id = device_id
        self.device_type = device_type
        self.device = device
        self.lock = threading.RLock()
        self.methods: dict[str, Callable[..., Any]] = {}
        self.connected = False
        self.worker = CallWorker(device_id)
        self.stream: DeviceStream | None = None
        self._specs: dict[str, CallSpec] = {}
        self._calls: dict[str, DeviceCall] = {}

    def spec(self, method: str) -> CallSpec:
        """The call spec of a public method (made on its first call), or AttributeError."""
        spec = self._specs.get(method)
        if spec is not None:
            return spec
        func = self.methods.get(method) if isinstance(method, str) else None
        if func is None:  # private, not a method, or not defined by the class
            raise AttributeError(f"device {self.device_id!r} has no public method {method!r}")
        spec = self._specs[method] = CallSpec(self.device_id, method, func)
        return spec

    def call(self, method: str) -> DeviceCall:
        """The ready call of a public method (made on its first use), or AttributeError."""
        call = self._calls.get(method)
        if call is None:
            spec = self.spec(method)
            locked = getattr(self.device, method)  # the wrapper that takes the device lock
            call = self._calls[method] = DeviceCall(self.worker, locked, method, spec=spec)
        return call


class LabDaemon:
    """Holds devices and task types, runs tasks, routes streams; safe to use from many threads."""

    def __init__(
        self,
        completed_task_buffer: int = 20,
        *,
        stream_buffer_events: int = 4096,
        stream_buffer_bytes: int = 64 * 1024 * 1024,
    ) -> None:
        if completed_task_buffer < 0:
            raise ValueError("completed_task_buffer must be >= 0")
        self.completed_task_buffer = completed_task_buffer
        self.events = EventBus()
        self.streams = StreamHub(
            self._record_device_error,
            self.events.publish,
            buffer_events=stream_buffer_events,
            buffer_bytes=stream_buffer_bytes,
        )
        self._lock = threading.RLock()
        self._device_types: dict[str, type] = {}
        self._task_types: dict[str, type] = {}
        self._devices: dict[str, DeviceRecord] = {}
        self._by_object: dict[int, DeviceRecord] = {}
        self._tasks: OrderedDict[str, TaskHandle] = OrderedDict()
        self._owners: dict[str, str] = {}
        self._device_errors: dict[str, ErrorInfo] = {}
        self._task_errors: dict[str, ErrorInfo] = {}
        self._error_event_at: dict[tuple[str, str], tuple[str, float]] = {}
        self._shut_down = False
        self._recordings: weakref.WeakSet[Any] = weakref.WeakSet()

    # -- plugins ------------------------------------------------------------------------

    def register_plugins(
        self, devices: dict[str, type] | None = None, tasks: dict[str, type] | None = None
    ) -> None:
        """Register device and task classes under names.

        The names serve ``add_device``/``execute_task`` and the HTTP API.
        """
        with self._lock:
            for registry, new, kind in (
                (self._device_types, devices or {}, "device"),
                (self._task_types, tasks or {}, "task"),
            ):
                for name, cls in new.items():
                    if not isinstance(cls, type):
                        raise TypeError(f"{kind} type {name!r} must be a class, not {cls!r}")
                    current = registry.get(name)
                    if current is not None and current is not cls:
                        raise PluginConflictError(
                            f"{kind} type {name!r} is already registered as"
                            f" {current.__module__}.{current.__qualname__}"
                        )
                for name, cls in new.items():
                    registry[name] = cls

    def device_types(self) -> dict[str, type]:
        return dict(self._device_types)

    def task_types(self) -> dict[str, type]:
        return dict(self._task_types)

    def task_type_infos(self) -> list[TaskTypeInfo]:
        """Each registered task type, by name: its parameters (less ``task_id``) and docstring."""
        types = self.task_types()
        return [_describe_task_type(name, types[name]) for name in sorted(types)]

    # -- devices ------------------------------------------------------------------------

    def add_device(self, device_id: str, device_type: str | type, /, **params: Any) -> Any:
        """Create a device, inject its lock, wrap its public methods and route its stream."""
        if not isinstance(device_id, str) or not device_id:
            raise ValueError("device_id must be a non-empty string")
        cls, type_name = self._device_class(device_type)
        with self._lock:
            if device_id in self._devices:
                raise DuplicateDeviceError(f"device {device_id!r} already exists")
        check_device_class(cls, device_id)
        device = instantiate(cls, device_id, params)
        record = DeviceRecord(device_id, type_name, device)
        record.methods = wrap_device(device, record.lock)
        self._track_connection(record)
        with self._lock:
            if device_id in self._devices:
                raise DuplicateDeviceError(f"device {device_id!r} already exists")
            self._devices[device_id] = record
            self._by_object[id(device)] = record
            record.stream = self.streams.attach(device_id, device, record.methods)
        self.events.publish("device_added", device_id=device_id, device_type=type_name)
        return device

    def _device_class(self, device_type: str | type) -> tuple[type, str]:
        if isinstance(device_type, type):
            return device_type, device_type.__name__
        with self._lock:
            cls = self._device_types.get(device_type)
        if cls is None:
            known = ", ".join(sorted(self._device_types)) or "none"
            raise UnknownDeviceTypeError(
                f"unknown device type {device_type!r} (registered: {known})"
            )
        return cls, device_type

    def _track_connection(self, record: DeviceRecord) -> None:
        """Keep ``connected`` true to what the device was told, whoever calls connect/disconnect."""
        device = record.device
        for name, state in (("connect", True), ("disconnect", False)):
            locked = getattr(device, name, None)
            if name not in record.methods or not callable(locked):
                continue

            def tracked(
                *args: Any, _call: Callable[..., Any] = locked, _state: bool = state, **kwargs: Any
            ) -> Any:
                result = _call(*args, **kwargs)
                self._set_connected(record, _state)
                return result

            object.__setattr__(device, name, functools.wraps(locked)(tracked))

    def _set_connected(self, record: DeviceRecord, connected: bool) -> None:
        if record.connected == connected:
            return
        record.connected = connected
        if record.device_id in self._devices:
            name = "device_connected" if connected else "device_disconnected"
            self.events.publish(name, device_id=record.device_id)

    def device_record(self, device: str | Any) -> DeviceRecord:
        """The daemon's record of a device, by id or object."""
        if isinstance(device, str):
            found = self._devices.get(device)
            if found is None:
                raise UnknownDeviceError(f"unknown device {device!r}")
            return found
        found = self._by_object.get(id(device))
        if found is None or found.device is not device:
            raise UnknownDeviceError(f"device object {device!r} is not held by this daemon")
        return found

    def get_device(self, device_id: str) -> Any:
        return self.device_record(device_id).device

    def has_device(self, device_id: str) -> bool:
        return device_id in self._devices

    def list_devices(self) -> list[str]:
        return list(self._devices)

    def connect_device(self, device: str | Any, timeout: float | None = None) -> None:
        """Call the device's ``connect()``; past ``timeout`` raise; disconnect once it returns."""
        record = self.device_record(device)
        connect = getattr(record.device, "connect", None)
        if "connect" not in record.methods or connect is None:
            self._set_connected(record, True)
            return
        try:
            if timeout is None:
                connect()
            else:
                job = record.worker.submit(connect)
                try:
                    record.worker.wait(job, timeout)
                except DeviceTimeoutError:
                    job.add_done_callback(functools.partial(self._undo_late_connect, record))
                    raise
        except DeviceTimeoutError as exc:
            err = DeviceTimeoutError(
                f"device {record.device_id!r} did not connect within {timeout} s"
            )
            self._record_device_error(record.device_id, err, "framework", {"action": "connect"})
            raise err from exc
        except Exception as exc:
            self._record_device_error(record.device_id, exc, "device", {"action": "connect"})
            raise DeviceConnectionError(
                f"device {record.device_id!r} failed to connect: {error_text(exc)}"
            ) from exc

    def _undo_late_connect(self, record: DeviceRecord, job: CallJob) -> None:
        if job.dropped() or job.exception() is not None:
            return
        log.warning("device %r connected after its timeout; disconnecting it", record.device_id)
        disconnect = getattr(record.device, "disconnect", None)
        if callable(disconnect) and "disconnect" in record.methods:
            try:
                disconnect()
            except Exception as exc:
                self._record_device_error(record.device_id, exc, "device", {"action": "disconnect"})
        self._set_connected(record, False)

    def disconnect_device(self, device: str | Any, timeout: float | None = None) -> None:
        """Stop the device's stream, then call ``disconnect()``; a no-op when not connected."""
        record = self.device_record(device)
        if record.stream is not None:
            record.stream.stop(timeout)
        if not record.connected:
            return
        disconnect = getattr(record.device, "disconnect", None)
        if "disconnect" not in record.methods or disconnect is None:
            self._set_connected(record, False)
            return
        try:
            if timeout is None:
                disconnect()
            else:
                record.worker.call(timeout, disconnect)
        except DeviceTimeoutError:
            err = DeviceTimeoutError(
                f"device {record.device_id!r} did not disconnect within {timeout} s"
            )
            self._record_device_error(record.device_id, err, "framework", {"action": "disconnect"})
            raise err from None
        except Exception as exc:
            self._record_device_error(record.device_id, exc, "device", {"action": "disconnect"})
            raise DeviceError(
                f"device {record.device_id!r} failed to disconnect: {error_text(exc)}"
            ) from exc

    def remove_device(self, device: str | Any, timeout: float | None = None) -> None:
        """Stop streaming, disconnect and forget the device."""
        record = self.device_record(device)
        try:
            self.disconnect_device(record.device_id, timeout)
        finally:
            with self._lock:
                self._devices.pop(record.device_id, None)
                self._by_object.pop(id(record.device), None)
                self._device_errors.pop(record.device_id, None)
                self.streams.detach(record.device_id)
            record.worker.close(timeout=0)
            self.events.publish("device_removed", device_id=record.device_id)

    @contextmanager
    def device_context(
        self, device_id: str, device_type: str | type, **params: Any
    ) -> Iterator[Any]:
        """Add and connect a device; disconnect and remove it on exit, also on error."""
        device = self.add_device(device_id, device_type, **params)
        try:
            self.connect_device(device_id)
            yield device
        finally:
            try:
                self.remove_device(device_id)
            except Exception:
                log.exception("cleaning up device %r failed", device_id)

    def device_info(self, device_id: str) -> DeviceInfo:
        record = self.device_record(device_id)
        stream = record.stream
        return {
            "device_id": record.device_id,
            "device_type": record.device_type,
            "connected": record.connected,
            "streaming": bool(stream is not None and stream.is_streaming()),
            "owned_by": self._owners.get(record.device_id),
            "last_error": self._device_errors.get(record.device_id),
        }

    def device_methods(self, device_id: str) -> list[MethodInfo]:
        return describe_methods(self.device_record(device_id).methods)

    def owner_of(self, device_id: str) -> str | None:
        """The id of the task that owns the device, or None."""
        return self._owners.get(device_id)

    def call_device(
        self,
        device_id: str,
        method: str,
        args: tuple[Any, ...] | list[Any] = (),
        kwargs: dict[str, Any] | None = None,
        timeout: float | None = None,
    ) -> Any:
        """Call a public method by name on the device's call thread, waiting at most ``timeout``.

        Arguments that do not fit the method raise :class:`DeviceArgumentError` before the
        device is touched.
        """
        record = self.device_record(device_id)
        kwargs = kwargs or {}
        record.spec(method).checked(args, kwargs)
        func = getattr(record.device, method)  # the locked wrapper
        try:
            return record.worker.call(timeout, func, *args, **kwargs)
        except DeviceTimeoutError as exc:
            self._record_device_error(device_id, exc, "framework", {"method": method})
            raise
        except Exception as exc:
            self._record_device_error(device_id, exc, "device", {"method": method})
            raise

    def prepare_call(self, device_id: str, method: str) -> DeviceCall:
        """A public method's call, ready for a caller that queues it itself (the server).

        Raises :class:`UnknownDeviceError`, or AttributeError for anything but a public
        method. Checking its arguments (:meth:`DeviceCall.bind`) is the caller's part.
        """
        return self.device_record(device_id).call(method)

    # -- streaming --------------------------------------------------------------------

    def _stream_of(self, device: str | Any) -> DeviceStream:
        record = self.device_record(device)
        if record.stream is None or not record.stream.can_stream:
            raise DeviceError(f"device {record.device_id!r} cannot stream (no start_streaming)")
        return record.stream

    def can_stream(self, device_id: str) -> bool:
        """True when the device has a ``start_streaming`` method."""
        stream = self.device_record(device_id).stream
        return stream is not None and stream.can_stream

    def prepare_stream_start(
        self, device_id: str, kwargs: dict[str, Any] | None = None, *, explicit: bool = True
    ) -> DeviceCall:
        """Starting the device's stream for remote readers, as a call for the device's thread.

        ``explicit=False`` is a start that only its remote readers asked for: it stops
        when the last of them leaves (:class:`RemoteReader`).
        """
        record = self.device_record(device_id)
        stream = self._stream_of(record.device_id)
        start = functools.partial(stream.subscribe, None, kwargs or {}, explicit=explicit)
        return DeviceCall(record.worker, start, "start_streaming", action="start streaming")

    @property
    def event_history(self) -> EventRing:
        """The recent state-change events, as SSE frames, for remote readers."""
        return self.events.ring

    def enable_stream_history(self) -> None:
        """Keep each device stream's recent events for remote readers (idempotent)."""
        self.streams.enable_history()

    def open_remote_reader(self, device_id: str, last_sequence: int | None = None) -> RemoteReader:
        """A remote client joins the device's stream history, after ``last_sequence`` if given.

        Starts nothing: when :attr:`RemoteReader.needs_start`, the caller starts the stream
        (:meth:`prepare_stream_start`). Close the reader when the client leaves.
        """
        stream = self._stream_of(device_id)
        self.streams.enable_history()
        return RemoteReader(stream, last_sequence)

    def start_streaming(
        self, device: str | Any, callback: Callable[[Any], Any], **kwargs: Any
    ) -> Subscription:
        """Subscribe ``callback`` to the device's stream, starting the device if needed.

        ``queue_size=N`` runs the callback on its own thread behind a bounded queue;
        ``on_end(error_or_None)`` is called when the stream ends. Other keyword
        arguments go to the device's ``start_streaming``.
        """
        stream = self._stream_of(device)
        labd_kwargs = {k: kwargs.pop(k) for k in RESERVED_KWARGS if k in kwargs}
        sub = stream.subscribe(callback, kwargs, explicit=True, **labd_kwargs)
        assert sub is not None
        return sub

    def stop_streaming(self, device: str | Any, timeout: float | None = 1.0) -> None:
        """Stop the device's stream for every subscriber; a no-op when not streaming."""
        self._stream_of(device).stop(timeout)

    def record(
        self, device: str | Any, path: Any, metadata: dict[str, Any] | None = None, **options: Any
    ) -> Any:
        """Record every datum of the device's stream to an HDF5 file (see :mod:`labd.recording`)."""
        from labd.recording import Recording

        recording = Recording(self, self.device_record(device), path, metadata, **options)
        self._recordings.add(recording)
        return recording

    # -- tasks --------------------------------------------------------------------------

    def execute_task(self, *args: Any, **params: Any) -> TaskHandle:
        """``execute_task(task_id, task_type, **params)``: start a task on its own thread.

        Its devices are claimed first (all or none). ``task_id`` and ``task_type`` may be
        given by position or by keyword; the other keywords go to the task's ``__init__``
        (see :func:`labd.task_context.split_task_call` for a task's own ``task_id`` or
        ``task_type`` parameter).
        """
        task_id, task_type, params = split_task_call(args, params)
        if not isinstance(task_id, str) or not task_id:
            raise ValueError("task_id must be a non-empty string")
        cls, type_name = self._task_class(task_type)
        with self._lock:
            existing = self._tasks.get(task_id)
            if existing is not None and existing.is_running():
                raise DuplicateTaskError(f"task {task_id!r} is still running")
        try:
            task = instantiate(cls, task_id, params, kind="task")
        except (TypeError, ValueError, DeviceConfigurationError) as exc:
            raise TaskError(f"cannot create task {task_id!r} ({type_name}): {exc}") from exc
        device_ids = _claimed_devices(task, task_id, type_name)
        parent = current_task()
        with self._lock:
            existing = self._tasks.get(task_id)
            if existing is not None and existing.is_running():
                raise DuplicateTaskError(f"task {task_id!r} is still running")
            for device_id in device_ids:
                if device_id not in self._devices:
                    raise UnknownDeviceError(f"task {task_id!r} needs unknown device {device_id!r}")
            ancestors = set()
            node = parent
            while node is not None:
                ancestors.add(node.task_id)
                node = node.parent
            for device_id in device_ids:
                owner = self._owners.get(device_id)
                if owner is not None and owner not in ancestors:
                    raise DeviceOwnedError(
                        f"device {device_id!r} is owned by task {owner!r}",
                        device_id=device_id,
                        owner=owner,
                    )
            for device_id in device_ids:
                self._owners.setdefault(device_id, task_id)
            handle = TaskHandle(
                self,
                task_id,
                type_name,
                task,
                device_ids,
                parent,
                self.events.publish,
                self._task_finished,
            )
            self._tasks.pop(task_id, None)
            self._tasks[task_id] = handle
            self._task_errors.pop(task_id, None)
            if parent is not None:
                parent.children.append(handle)
        self.events.publish(
            "task_started",
            task_id=task_id,
            task_type=type_name,
            device_ids=device_ids,
            parent=parent.task_id if parent else None,
        )
        handle._start()
        if parent is not None and parent.cancel_requested:
            # The parent was cancelled while starting this child; its cancel() may not
            # have seen the child yet.
            handle.cancel()
        return handle

    def _task_class(self, task_type: str | type) -> tuple[type, str]:
        if isinstance(task_type, type):
            return task_type, task_type.__name__
        with self._lock:
            cls = self._task_types.get(task_type)
        if cls is None:
            known = ", ".join(sorted(self._task_types)) or "none"
            raise UnknownTaskTypeError(f"unknown task type {task_type!r} (registered: {known})")
        return cls, task_type

    def _task_finished(self, handle: TaskHandle) -> None:
        with self._lock:
            for device_id, owner in list(self._owners.items()):
                if owner == handle.task_id:
                    del self._owners[device_id]
            if self._tasks.get(handle.task_id) is handle:
                self._tasks.move_to_end(handle.task_id)  # finishing counts as a use
            failed = handle.error is not None and not handle.cancel_requested
            if failed and handle.error is not None:
                self._task_errors[handle.task_id] = handle.error
            finished = [t for t in self._tasks.values() if t is handle or not t.is_running()]
            for old in finished[: max(0, len(finished) - self.completed_task_buffer)]:
                self._tasks.pop(old.task_id, None)
                self._task_errors.pop(old.task_id, None)
        if failed:
            self.events.publish(
                "error_recorded",
                task_id=handle.task_id,
                error=self._task_errors.get(handle.task_id),
            )

    execute_task.__signature__ = task_call_signature()  # type: ignore[attr-defined]

    @contextmanager
    def task_context(self, *args: Any, **params: Any) -> Iterator[TaskHandle]:
        """``task_context(task_id, task_type, **params)``: start a task; on exit cancel it
        and wait for it to end."""
        handle = self.execute_task(*args, **params)
        task_id = handle.task_id
        try:
            yield handle
        finally:
            handle.cancel()
            while not handle._done.wait(10.0):
                log.warning("waiting for cancelled task %r to return", task_id)

    def get_task(self, task_id: str) -> TaskHandle:
        with self._lock:
            handle = self._tasks.get(task_id)
            if handle is None:
                raise UnknownTaskError(f"unknown task {task_id!r}")
            self._tasks.move_to_end(task_id)
            return handle

    def list_tasks(self) -> list[str]:
        return list(self._tasks)

    # -- errors -------------------------------------------------------------------------

    def _record_device_error(
        self, device_id: str, exc: BaseException, origin: Origin, context: dict[str, Any]
    ) -> None:
        error = error_object(exc, origin, {"device_id": device_id, **context})
        self._device_errors[device_id] = error
        key = (device_id, origin)
        signature = f"{error['type']}: {error['message']}"
        now = time.monotonic()
        last = self._error_event_at.get(key)
        if last is not None and last[0] == signature and now - last[1] < _ERROR_EVENT_INTERVAL:
            return
        self._error_event_at[key] = (signature, now)
        log.warning("device %r: %s error: %s", device_id, origin, signature)
        self.events.publish("error_recorded", device_id=device_id, error=error)

    def record_error(
        self, device_id: str, exc: BaseException, origin: Origin = "device", **context: Any
    ) -> None:
        """Record an error for a device (shown by ``get_last_error`` and the server)."""
        self.device_record(device_id)
        self._record_device_error(device_id, exc, origin, context)

    def get_last_error(self, device_id: str) -> ErrorInfo | None:
        self.device_record(device_id)
        return self._device_errors.get(device_id)

    def clear_last_error(self, device_id: str) -> None:
        self.device_record(device_id)
        if self._device_errors.pop(device_id, None) is not None:
            self._error_event_at = {
                k: v for k, v in self._error_event_at.items() if k[0] != device_id
            }
            self.events.publish("error_cleared", device_id=device_id)

    def get_task_error(self, task_id: str) -> ErrorInfo | None:
        self.get_task(task_id)
        return self._task_errors.get(task_id)

    def clear_task_error(self, task_id: str) -> None:
        self.get_task(task_id)
        if self._task_errors.pop(task_id, None) is not None:
            self.events.publish("error_cleared", task_id=task_id)

    # -- shutdown -----------------------------------------------------------------------

    def shutdown(self, timeout: float | None = 2.0) -> None:
        """Stop streams, cancel tasks, disconnect devices -- within ``timeout``; idempotent.

        Never raises for a device or task that misbehaves: what did not stop in time is
        logged by name.
        """
        with self._lock:
            if self._shut_down:
                return
            self._shut_down = True
            tasks = list(self._tasks.values())
            records = list(self._devices.values())
        deadline = None if timeout is None else time.monotonic() + timeout

        def left() -> float | None:
            return None if deadline is None else max(0.0, deadline - time.monotonic())

        for handle in tasks:
            handle.cancel()
        for recording in list(self._recordings):
            try:
                recording.stop(left())
            except Exception:
                log.exception("finishing recording %s during shutdown failed", recording.path)
        late_streams = self.streams.close(left())
        for handle in tasks:
            if not handle.join_thread(left()):
                log.warning("task %r did not stop within the shutdown timeout", handle.task_id)
        late: list[str] = list(late_streams)
        for record in records:
            try:
                self.disconnect_device(record.device_id, left() if deadline else None)
            except DeviceTimeoutError:
                late.append(record.device_id)
            except Exception:
                log.exception("disconnecting device %r during shutdown failed", record.device_id)
        for record in records:
            if not record.worker.close(min(0.5, left() or 0.5)):
                late.append(record.device_id)
        if late:
            log.warning(
                "shutdown: device(s) did not stop in time: %s (their labd-call threads"
                " are left running as daemon threads)",
                ", ".join(sorted(set(late))),
            )

    @property
    def is_shut_down(self) -> bool:
        return self._shut_down

    def __enter__(self) -> LabDaemon:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    def __repr__(self) -> str:
        return f"<LabDaemon devices={len(self._devices)} tasks={len(self._tasks)}>"
