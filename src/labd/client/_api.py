"""ServerAPI: the labd HTTP API as plain Python methods, on one ``httpx.Client``."""

from __future__ import annotations

import logging
import threading
import time
from types import TracebackType
from typing import Any, cast
from urllib.parse import quote

import httpx

from labd.client._errors import connection_error, error_from_response
from labd.client._remote import RemoteDaemon, RemoteDevice
from labd.client._sse import FINAL_TASK_STATUSES, SSEClient
from labd.wire import DeviceInfo, ErrorInfo, MethodInfo, TaskInfo, decode_json, encode_json

__all__ = ["ServerAPI"]

log = logging.getLogger(__name__)

_JSON = {"Content-Type": "application/json"}


def _seg(text: str) -> str:
    return quote(text, safe="")


class ServerAPI:
    """Client for a labd server: devices, calls, tasks, errors and streaming control.

    Returns decoded JSON. Raises :class:`ServerConnectionError` when the server cannot be
    reached, :class:`ServerAPIError` (``status_code``, ``error``) for error answers, and
    :class:`DeviceBusyError` for a 409 on a device owned by a task or busy with a hung call.
    """

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:5000",
        timeout: float = 10.0,
        token: str | None = None,
        *,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.token = token
        self._transport = transport
        headers = {"Accept": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._client = httpx.Client(
            base_url=self.base_url, timeout=timeout, headers=headers, transport=transport
        )

    def __enter__(self) -> ServerAPI:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ServerAPI({self.base_url!r})"

    def close(self) -> None:
        """Close the HTTP connection pool."""
        self._client.close()

    # ---- plumbing ------------------------------------------------------------------------

    def _request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        timeout: float | None = None,
        missing_ok: bool = False,
    ) -> httpx.Response | None:
        content = None if body is None else encode_json(body)
        try:
            response = self._client.request(
                method,
                path,
                content=content,
                headers=_JSON if content is not None else None,
                timeout=timeout if timeout is not None else self.timeout,
            )
        except httpx.TransportError as exc:
            raise connection_error(self.base_url, exc) from exc
        if missing_ok and response.status_code == 404:
            return None
        if response.status_code >= 400:
            raise error_from_response(response)
        return response

    def _json(self, method: str, path: str, body: Any = None, **options: Any) -> Any:
        response = self._request(method, path, body, **options)
        if response is None or response.status_code == 204 or not response.content:
            return None
        return decode_json(response.content)

    # ---- server --------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        """``GET /health``: ``{"status": "healthy", "timestamp"}``."""
        return cast(dict[str, Any], self._json("GET", "/health"))

    def server_info(self) -> dict[str, Any]:
        """``GET /``: server name, version and endpoints."""
        return cast(dict[str, Any], self._json("GET", "/"))

    def metrics(self) -> str:
        """``GET /metrics``: Prometheus text."""
        response = self._request("GET", "/metrics")
        assert response is not None
        return response.text

    # ---- devices -------------------------------------------------------------------------

    def list_devices(self) -> list[DeviceInfo]:
        """Info of every device."""
        return cast(list[DeviceInfo], self._json("GET", "/devices")["devices"])

    def get_device(self, device_id: str) -> DeviceInfo:
        """Info of one device (connected, streaming, owned_by, last_error, ...)."""
        return cast(DeviceInfo, self._json("GET", f"/devices/{_seg(device_id)}"))

    def get_device_methods(self, device_id: str) -> list[MethodInfo]:
        """The device's public methods with their parameters (introspection)."""
        body = self._json("GET", f"/devices/{_seg(device_id)}/methods")
        return cast(list[MethodInfo], body["methods"])

    def add_device(self, device_id: str, device_type: str, **params: Any) -> DeviceInfo:
        """Create a device of a registered type; returns its info."""
        body = {"device_id": device_id, "device_type": device_type, "params": params}
        return cast(DeviceInfo, self._json("POST", "/devices", body))

    def connect_device(self, device_id: str) -> DeviceInfo:
        """Connect a device; returns its info."""
        return cast(DeviceInfo, self._json("POST", f"/devices/{_seg(device_id)}/connect"))

    def disconnect_device(self, device_id: str) -> DeviceInfo:
        """Disconnect a device (idempotent); returns its info."""
        return cast(DeviceInfo, self._json("POST", f"/devices/{_seg(device_id)}/disconnect"))

    def remove_device(self, device_id: str) -> None:
        """Stop, disconnect and forget a device."""
        self._request("DELETE", f"/devices/{_seg(device_id)}")

    def call_device_method(
        self,
        device_id: str,
        method: str,
        args: list[Any] | tuple[Any, ...] | None = None,
        kwargs: dict[str, Any] | None = None,
        timeout: float | None = None,
    ) -> Any:
        """Call ``method`` on the device and return its result.

        ``timeout`` is the server-side call timeout (a 504 past it); the HTTP request then
        waits a little longer than that.
        """
        body: dict[str, Any] = {"method": method, "args": list(args or ()), "kwargs": kwargs or {}}
        http_timeout = self.timeout
        if timeout is not None:
            body["timeout"] = timeout
            http_timeout = max(self.timeout, timeout + 5.0)
        answer = self._json("POST", f"/devices/{_seg(device_id)}/call", body, timeout=http_timeout)
        return answer["result"]

    def get_device_error(self, device_id: str) -> ErrorInfo | None:
        """The device's last recorded error, or None."""
        body = self._json("GET", f"/devices/{_seg(device_id)}/error", missing_ok=True)
        return None if body is None else cast(ErrorInfo, body.get("error"))

    def clear_device_error(self, device_id: str) -> None:
        """Forget the device's last error."""
        self._request("DELETE", f"/devices/{_seg(device_id)}/error")

    def start_streaming(self, device_id: str, **kwargs: Any) -> Any:
        """Start the device's stream explicitly (runs until stopped, whoever watches)."""
        return self._json("POST", f"/devices/{_seg(device_id)}/streaming/start", {"kwargs": kwargs})

    def stop_streaming(self, device_id: str) -> Any:
        """Stop the device's stream; every subscriber gets ``stream_end``."""
        return self._json("POST", f"/devices/{_seg(device_id)}/streaming/stop", {})

    # ---- tasks ---------------------------------------------------------------------------

    def list_task_types(self) -> Any:
        """Registered task types with their parameters."""
        body = self._json("GET", "/task-types")
        if isinstance(body, dict) and set(body) == {"task_types"}:
            return body["task_types"]
        return body

    def list_tasks(self) -> list[TaskInfo]:
        """Info of every known task (running and recently finished)."""
        return cast(list[TaskInfo], self._json("GET", "/tasks")["tasks"])

    def get_task(self, task_id: str) -> TaskInfo:
        """Info of one task: status, progress, result, exception, times."""
        return cast(TaskInfo, self._json("GET", f"/tasks/{_seg(task_id)}"))

    def execute_task(
        self, task_id: str, task_type: str, params: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Start a task; returns ``{"task_id", "device_ids", "status": "started"}``."""
        body = {"task_id": task_id, "task_type": task_type, "params": params or {}}
        return cast(dict[str, Any], self._json("POST", "/tasks", body))

    def cancel_task(self, task_id: str) -> Any:
        """Ask a running task to stop."""
        return self._json("POST", f"/tasks/{_seg(task_id)}/cancel")

    def pause_task(self, task_id: str) -> Any:
        """Pause a running task at its next checkpoint."""
        return self._json("POST", f"/tasks/{_seg(task_id)}/pause")

    def resume_task(self, task_id: str) -> Any:
        """Resume a paused task."""
        return self._json("POST", f"/tasks/{_seg(task_id)}/resume")

    def set_task_parameter(self, task_id: str, key: str, value: Any) -> None:
        """Change a running task's parameter."""
        self._json("POST", f"/tasks/{_seg(task_id)}/parameters", {"key": key, "value": value})

    def get_task_parameter(self, task_id: str, key: str) -> Any:
        """Read a task's parameter."""
        return self._json("GET", f"/tasks/{_seg(task_id)}/parameters/{_seg(key)}")["value"]

    def get_task_error(self, task_id: str) -> ErrorInfo | None:
        """The task's recorded error, or None."""
        body = self._json("GET", f"/tasks/{_seg(task_id)}/error", missing_ok=True)
        return None if body is None else cast(ErrorInfo, body.get("error"))

    def clear_task_error(self, task_id: str) -> None:
        """Forget the task's error record."""
        self._request("DELETE", f"/tasks/{_seg(task_id)}/error")

    def wait_task(
        self, task_id: str, timeout: float | None = None, poll_interval: float = 1.0
    ) -> TaskInfo:
        """Wait until the task is completed, failed or cancelled; returns its info.

        Follows ``/stream/tasks/{id}`` to return promptly, and polls every
        ``poll_interval`` seconds in case the stream is unavailable. Raises
        ``TimeoutError`` when ``timeout`` passes first.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        info = self.get_task(task_id)
        if info["status"] in FINAL_TASK_STATUSES:
            return info
        finished = threading.Event()

        def on_event(event: dict[str, Any]) -> None:
            if event.get("event") == "task_status" and event.get("status") in FINAL_TASK_STATUSES:
                finished.set()

        def on_error(exc: Exception) -> None:
            log.debug("task stream for %s unavailable, polling: %s", task_id, exc)

        watcher = SSEClient(
            self.base_url,
            on_event=on_event,
            token=self.token,
            timeout=self.timeout,
            on_error=on_error,
            transport=self._transport,
        )
        watcher.start_task_stream(task_id)
        try:
            while True:
                pause = poll_interval
                if deadline is not None:
                    pause = max(0.0, min(pause, deadline - time.monotonic()))
                finished.wait(pause)
                info = self.get_task(task_id)
                if info["status"] in FINAL_TASK_STATUSES:
                    return info
                if deadline is not None and time.monotonic() >= deadline:
                    raise TimeoutError(f"task {task_id!r} still {info['status']} after {timeout} s")
        finally:
            watcher.stop_stream(timeout=2.0)

    # ---- proxies -------------------------------------------------------------------------

    def device(self, device_id: str, call_timeout: float | None = None) -> RemoteDevice:
        """A proxy on which ``dev.method(...)`` calls the remote device's method."""
        return RemoteDevice(self, device_id, call_timeout=call_timeout)

    def daemon(self) -> RemoteDaemon:
        """A daemon-like view of the server for task and script code."""
        return RemoteDaemon(self)

    def sse_client(self, on_event: Any = None, **options: Any) -> SSEClient:
        """An :class:`SSEClient` for this server with the same token."""
        options.setdefault("timeout", self.timeout)
        options.setdefault("transport", self._transport)
        return SSEClient(self.base_url, on_event=on_event, token=self.token, **options)
