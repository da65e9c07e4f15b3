"""Remote stand-ins for local objects: device proxies, a daemon view and task handles.

Code written against a local ``LabDaemon`` (``daemon.get_device("laser1").set_wavelength(...)``,
``daemon.execute_task(...)``) runs against a server through these classes unchanged.
"""

from __future__ import annotations

import inspect
import logging
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Any, Protocol

from labd.client._errors import local_exception
from labd.client._sse import FINAL_TASK_STATUSES, SSEClient
from labd.exceptions import (
    DeviceBusyError,
    ServerAPIError,
    ServerConnectionError,
    TaskCancelledError,
    TaskFailedError,
)
from labd.task_context import TaskContext, split_task_call, task_call_signature
from labd.wire import DeviceInfo, ErrorInfo, MethodInfo, TaskInfo

__all__ = [
    "RemoteDaemon",
    "RemoteDevice",
    "RemoteMethod",
    "RemoteSubscription",
    "RemoteTaskContext",
    "RemoteTaskHandle",
]

log = logging.getLogger(__name__)


class Server(Protocol):
    """What the remote stand-ins need of a client: the :class:`ServerAPI` methods they call.

    A protocol, so that this module does not import the client that makes these objects.
    """

    base_url: str

    def list_devices(self) -> list[DeviceInfo]: ...
    def get_device(self, device_id: str) -> DeviceInfo: ...
    def get_device_methods(self, device_id: str) -> list[MethodInfo]: ...
    def add_device(self, device_id: str, device_type: str, **params: Any) -> DeviceInfo: ...
    def connect_device(self, device_id: str) -> DeviceInfo: ...
    def disconnect_device(self, device_id: str) -> DeviceInfo: ...
    def remove_device(self, device_id: str) -> None: ...
    def call_device_method(
        self,
        device_id: str,
        method: str,
        args: list[Any] | tuple[Any, ...] | None = None,
        kwargs: dict[str, Any] | None = None,
        timeout: float | None = None,
    ) -> Any: ...
    def get_device_error(self, device_id: str) -> ErrorInfo | None: ...
    def clear_device_error(self, device_id: str) -> None: ...
    def start_streaming(self, device_id: str, **kwargs: Any) -> Any: ...
    def stop_streaming(self, device_id: str) -> Any: ...
    def list_tasks(self) -> list[TaskInfo]: ...
    def get_task(self, task_id: str) -> TaskInfo: ...
    def execute_task(
        self, task_id: str, task_type: str, params: dict[str, Any] | None = None
    ) -> dict[str, Any]: ...
    def cancel_task(self, task_id: str) -> Any: ...
    def pause_task(self, task_id: str) -> Any: ...
    def resume_task(self, task_id: str) -> Any: ...
    def set_task_parameter(self, task_id: str, key: str, value: Any) -> None: ...
    def get_task_parameter(self, task_id: str, key: str) -> Any: ...
    def wait_task(
        self, task_id: str, timeout: float | None = None, poll_interval: float = 1.0
    ) -> TaskInfo: ...
    def sse_client(self, on_event: Any = None, **options: Any) -> SSEClient: ...


def _reraise_local(exc: ServerAPIError) -> None:
    """Raise the builtin exception named by the server's error object, if it is one."""
    if isinstance(exc, ServerConnectionError | DeviceBusyError):
        return
    local = local_exception(exc.error, exc)
    if local is not exc:
        raise local from exc


class RemoteMethod:
    """A bound remote method: calling it calls the device's method on the server."""

    def __init__(self, device: RemoteDevice, name: str, info: MethodInfo | None = None) -> None:
        self.device = device
        self.info = info
        self.__name__ = name
        self.__qualname__ = f"{type(device).__name__}.{name}"
        self.__doc__ = info["doc"] if info is not None else None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.device._call(self.__name__, args, kwargs)

    def __repr__(self) -> str:
        return f"<remote method {self.__name__} of {self.device.device_id!r}>"


class RemoteSubscription:
    """One remote subscription to a device stream: ``callback(payload)`` on an SSE thread.

    ``delivered`` counts payloads handed to the callback, ``dropped`` the sequence gaps
    the server reported (events this client fell behind on). Ends on ``stream_end``.
    """

    def __init__(self, api: Server, device_id: str, callback: Callable[[Any], object]) -> None:
        self.device_id = device_id
        self.delivered = 0
        self.dropped = 0
        self.last_error: Any = None
        self.ended = threading.Event()
        self._callback = callback
        self._run: Any = None
        self._sequence: int | None = None
        self._client = api.sse_client(on_event=self._on_event, on_error=self._on_error)

    def __enter__(self) -> RemoteSubscription:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def start(self, last_event_id: str | None = None) -> None:
        """Open the SSE connection."""
        self._client.start_device_stream(self.device_id, last_event_id)

    def close(self, timeout: float | None = 5.0) -> None:
        """Stop receiving; idempotent."""
        self._client.stop_stream(timeout)

    def is_active(self) -> bool:
        """True while the SSE connection thread runs."""
        return self._client.is_running()

    def _on_event(self, event: dict[str, Any]) -> None:
        kind = event.get("event")
        if kind == "device_data":
            sequence, run = event.get("sequence"), event.get("run")
            if isinstance(sequence, int):
                if (
                    run == self._run
                    and self._sequence is not None
                    and sequence > self._sequence + 1
                ):
                    self.dropped += sequence - self._sequence - 1
                self._run, self._sequence = run, sequence
            self.delivered += 1
            self._callback(event.get("payload"))
        elif kind == "stream_error":
            self.last_error = event.get("error")
            log.warning("stream of %s reported an error: %s", self.device_id, self.last_error)
        elif kind == "stream_end":
            self.ended.set()

    def _on_error(self, exc: Exception) -> None:
        self.last_error = exc
        self.ended.set()
        log.error("stream subscription to %s failed: %s", self.device_id, exc)


class RemoteDevice:
    """Proxy for a device on a labd server: ``dev.set_wavelength(1550.0)`` calls it remotely.

    The method list is fetched once (``remote_methods()``), so unknown names raise
    ``AttributeError`` locally and ``dir()`` lists the device's methods. Builtin exceptions
    raised by the device (ValueError, KeyError, TypeError, RuntimeError, TimeoutError) are
    re-raised as themselves; other failures raise :class:`ServerAPIError`.
    """

    def __init__(self, api: Server, device_id: str, call_timeout: float | None = None) -> None:
        self.device_id = device_id
        self._api = api
        self._call_timeout = call_timeout
        self._methods: dict[str, MethodInfo] | None = None
        self._subscriptions: list[RemoteSubscription] = []
        self._guard = threading.Lock()

    def __repr__(self) -> str:
        return f"<RemoteDevice {self.device_id!r} at {self._api.base_url}>"

    def __getattr__(self, name: str) -> RemoteMethod:
        if name.startswith("_"):
            raise AttributeError(name)
        info = self.remote_methods().get(name)
        if info is None:
            raise AttributeError(f"remote device {self.device_id!r} has no public method {name!r}")
        return RemoteMethod(self, name, info)

    def __dir__(self) -> list[str]:
        names = set(super().__dir__())
        try:
            names.update(self.remote_methods())
        except ServerAPIError:
            pass
        return sorted(names)

    def remote_methods(self, refresh: bool = False) -> dict[str, MethodInfo]:
        """The device's public methods by name, as the server describes them (cached)."""
        if self._methods is None or refresh:
            methods = self._api.get_device_methods(self.device_id)
            self._methods = {method["name"]: method for method in methods}
        return self._methods

    def remote_info(self) -> DeviceInfo:
        """The device's info from the server (connected, streaming, owner, last error)."""
        return self._api.get_device(self.device_id)

    def _call(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        try:
            return self._api.call_device_method(
                self.device_id, name, list(args), kwargs, timeout=self._call_timeout
            )
        except ServerAPIError as exc:
            _reraise_local(exc)
            raise

    def connect(self) -> None:
        """Connect the device through the server (not a raw call of its ``connect``)."""
        self._api.connect_device(self.device_id)

    def disconnect(self) -> None:
        """Disconnect the device through the server."""
        self._api.disconnect_device(self.device_id)

    def start_streaming(
        self, callback: Callable[[Any], object], **kwargs: Any
    ) -> RemoteSubscription:
        """Start the device's stream and call ``callback(payload)`` for each datum.

        The callback runs on an SSE client thread. Data emitted between the start and the
        subscription (typically the first milliseconds) may not be seen.
        """
        self._api.start_streaming(self.device_id, **kwargs)
        subscription = RemoteSubscription(self._api, self.device_id, callback)
        subscription.start()
        with self._guard:
            self._subscriptions.append(subscription)
        return subscription

    def stop_streaming(self, timeout: float | None = None) -> None:
        """Stop the device's stream on the server and close this proxy's subscriptions."""
        try:
            self._api.stop_streaming(self.device_id)
        finally:
            self._close_subscriptions(5.0 if timeout is None else timeout)

    def is_streaming(self) -> bool:
        """Whether the device streams, according to the server."""
        return bool(self.remote_info()["streaming"])

    def _close_subscriptions(self, timeout: float | None) -> None:
        with self._guard:
            subscriptions, self._subscriptions = self._subscriptions, []
        for subscription in subscriptions:
            subscription.close(timeout)


def _remote_exception(error: ErrorInfo | dict[str, Any] | None) -> Exception | None:
    if not error:
        return None
    return local_exception(dict(error))


class RemoteTaskHandle:
    """A task running on a labd server, with the methods of a local ``TaskHandle``."""

    def __init__(
        self,
        api: Server,
        task_id: str,
        task_type: str = "",
        device_ids: list[str] | None = None,
    ) -> None:
        self.task_id = task_id
        self.task_type = task_type
        self.device_ids = list(device_ids or [])
        self._api = api

    def __repr__(self) -> str:
        return f"<RemoteTaskHandle {self.task_id!r} at {self._api.base_url}>"

    def info(self) -> TaskInfo:
        """The task's info from the server."""
        return self._api.get_task(self.task_id)

    @property
    def status(self) -> str:
        """``running``, ``paused``, ``completed``, ``failed`` or ``cancelled``."""
        return self.info()["status"]

    @property
    def result(self) -> Any:
        """What ``run()`` returned (None while running)."""
        return self.info()["result"]

    def exception(self) -> Exception | None:
        """The exception ``run()`` raised, rebuilt from the server's error object, or None."""
        return _remote_exception(self.info()["exception"])

    def is_running(self) -> bool:
        """True until the task has finished."""
        return self.status not in FINAL_TASK_STATUSES

    def is_paused(self) -> bool:
        """True while the task is paused."""
        return self.status == "paused"

    def wait(self, timeout: float | None = None) -> Any:
        """Wait for the task and return its result, like ``TaskHandle.wait``.

        Raises ``TaskFailedError`` (the task's exception chained), ``TaskCancelledError``
        (``.result`` holds what it returned) or ``TimeoutError``.
        """
        info = self._api.wait_task(self.task_id, timeout=timeout)
        status = info["status"]
        if status == "cancelled":
            raise TaskCancelledError(f"task {self.task_id!r} was cancelled", result=info["result"])
        if status == "failed":
            error: dict[str, Any] = dict(info["exception"] or {})
            cause = _remote_exception(error)
            text = f"task {self.task_id!r} failed: {error.get('type')}: {error.get('message')}"
            raise TaskFailedError(text) from cause
        return info["result"]

    def cancel(self) -> None:
        """Ask the task to stop; does nothing if it has already finished."""
        try:
            self._api.cancel_task(self.task_id)
        except ServerAPIError as exc:
            if exc.status_code != 409:
                raise

    def pause(self) -> None:
        """Pause the task at its next checkpoint."""
        self._api.pause_task(self.task_id)

    def resume(self) -> None:
        """Resume a paused task."""
        self._api.resume_task(self.task_id)

    def set_parameter(self, key: str, value: Any) -> None:
        """Change a parameter of the running task; the task's KeyError/ValueError propagate."""
        try:
            self._api.set_task_parameter(self.task_id, key, value)
        except ServerAPIError as exc:
            _reraise_local(exc)
            raise

    def get_parameter(self, key: str) -> Any:
        """Read a parameter of the task."""
        try:
            return self._api.get_task_parameter(self.task_id, key)
        except ServerAPIError as exc:
            _reraise_local(exc)
            raise


class RemoteTaskContext(TaskContext):
    """The ``context`` given to a task run in this process against a remote daemon.

    A :class:`labd.TaskContext` (``checkpoint()``, ``sleep()``, ``cancelled``, ``report()``),
    so task code runs the same locally and remotely; ``report()`` keeps the last
    ``progress`` and ``message`` here, since the server has no task to publish them on.
    """

    def __init__(
        self,
        daemon: RemoteDaemon,
        task_id: str,
        cancel_event: threading.Event | None = None,
        resume_event: threading.Event | None = None,
    ) -> None:
        super().__init__(
            daemon,
            task_id,
            cancel_event=cancel_event,
            resume_event=resume_event,
            reporter=self._keep,
        )
        self.progress: float | None = None
        self.message: str | None = None

    def _keep(self, progress: float | None, message: str | None, data: dict[str, Any]) -> None:
        if progress is not None:
            self.progress = progress
        if message is not None:
            self.message = message
        log.debug("task %s: progress=%s message=%s %s", self.task_id, progress, message, data)


def _device_id(device: str | RemoteDevice) -> str:
    return device.device_id if isinstance(device, RemoteDevice) else device


def _accepts_task_id(cls: type) -> bool:
    try:
        parameters = inspect.signature(cls).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == "task_id" or p.kind is p.VAR_KEYWORD for p in parameters)


class RemoteDaemon:
    """A daemon-like view of a labd server, for code written against ``context.daemon``."""

    def __init__(self, api: Server) -> None:
        self.api = api
        self._devices: dict[str, RemoteDevice] = {}
        self._guard = threading.Lock()

    def __repr__(self) -> str:
        return f"<RemoteDaemon at {self.api.base_url}>"

    # ---- devices -------------------------------------------------------------------------

    def get_device(self, device_id: str) -> RemoteDevice:
        """A proxy for the device; raises :class:`ServerAPIError` (404) if the server has none."""
        with self._guard:
            proxy = self._devices.get(device_id)
        if proxy is None:
            self.api.get_device(device_id)
            with self._guard:
                proxy = self._devices.setdefault(device_id, RemoteDevice(self.api, device_id))
        return proxy

    def list_devices(self) -> list[str]:
        """The ids of the server's devices."""
        return [info["device_id"] for info in self.api.list_devices()]

    def add_device(self, device_id: str, device_type: str, /, **params: Any) -> RemoteDevice:
        """Create a device of a registered type on the server; returns its proxy."""
        self.api.add_device(device_id, device_type, **params)
        return self.get_device(device_id)

    def connect_device(self, device: str | RemoteDevice, timeout: float | None = None) -> None:
        """Connect a device (``timeout`` is the server's business here)."""
        self.api.connect_device(_device_id(device))

    def disconnect_device(self, device: str | RemoteDevice, timeout: float | None = None) -> None:
        """Disconnect a device (idempotent)."""
        self.api.disconnect_device(_device_id(device))

    def remove_device(self, device: str | RemoteDevice, timeout: float | None = None) -> None:
        """Stop, disconnect and forget a device on the server."""
        device_id = _device_id(device)
        self.api.remove_device(device_id)
        with self._guard:
            proxy = self._devices.pop(device_id, None)
        if proxy is not None:
            proxy._close_subscriptions(timeout)

    def start_streaming(
        self, device: str | RemoteDevice, callback: Callable[[Any], object], **kwargs: Any
    ) -> RemoteSubscription:
        """Start the device's stream and subscribe ``callback`` to it."""
        return self.get_device(_device_id(device)).start_streaming(callback, **kwargs)

    def stop_streaming(self, device: str | RemoteDevice, timeout: float | None = 1.0) -> None:
        """Stop the device's stream; subscriptions made through this daemon close."""
        self.get_device(_device_id(device)).stop_streaming(timeout)

    def get_last_error(self, device_id: str) -> ErrorInfo | None:
        """The device's last recorded error, or None."""
        return self.api.get_device_error(device_id)

    def clear_last_error(self, device_id: str) -> None:
        """Forget the device's last error."""
        self.api.clear_device_error(device_id)

    # ---- tasks ---------------------------------------------------------------------------

    def execute_task(self, *args: Any, **params: Any) -> RemoteTaskHandle:
        """``execute_task(task_id, task_type, **params)``: start a registered task type.

        Takes its arguments as :meth:`labd.LabDaemon.execute_task` does.
        """
        task_id, task_type, params = split_task_call(args, params)
        if not isinstance(task_type, str):
            raise TypeError("a remote daemon takes registered task type names, not classes")
        answer = self.api.execute_task(task_id, task_type, params)
        return RemoteTaskHandle(self.api, task_id, task_type, answer.get("device_ids"))

    execute_task.__signature__ = task_call_signature("str")  # type: ignore[attr-defined]

    def get_task(self, task_id: str) -> RemoteTaskHandle:
        """A handle for a task the server knows."""
        info = self.api.get_task(task_id)
        return RemoteTaskHandle(self.api, task_id, info["task_type"], info["device_ids"])

    def list_tasks(self) -> list[str]:
        """The ids of the server's tasks."""
        return [info["task_id"] for info in self.api.list_tasks()]

    def run_task(
        self,
        task_type: type,
        task_id: str = "local",
        *,
        cancel_event: threading.Event | None = None,
        **params: Any,
    ) -> Any:
        """Run a task class in this thread with this remote daemon as ``context.daemon``.

        Devices are the server's; ownership is not claimed (the server only knows tasks it
        runs itself). Returns what ``run()`` returns.
        """
        if _accepts_task_id(task_type):
            params["task_id"] = task_id
        task = task_type(**params)
        context = RemoteTaskContext(self, task_id, cancel_event or threading.Event())
        return task.run(context)
