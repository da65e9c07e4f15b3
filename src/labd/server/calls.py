"""Remote device calls: the checks, the timed call and its outcome, in one place.

Calls are the hot path of the HTTP API, so ``POST /devices/{id}/call`` is
:class:`CallRoute`, a small ASGI route mounted ahead of FastAPI: :func:`parse_call` (the
route's own strict ``CallRequest`` model) and :meth:`DeviceCaller.perform`, without the
framework's routing. The FastAPI route (kept for the OpenAPI description) goes through
the same ``perform``.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError
from starlette.requests import HTTPConnection
from starlette.types import Message, Scope, Send

from labd.exceptions import (
    DeviceArgumentError,
    DeviceBusy,
    DeviceTimeoutError,
    UnknownDeviceError,
)
from labd.server.context import ServerContext, unknown_device
from labd.server.errors import ApiError, api_error_response, describe_validation
from labd.server.models import CallRequest
from labd.wire import encode_json

__all__ = ["CallRoute", "DeviceCaller", "parse_call"]


def _where(device_id: str, method: str) -> dict[str, Any]:
    """The error context of a failed call (built only when one fails)."""
    return {"device_id": device_id, "method": method}


def parse_call(body: bytes) -> tuple[str, list[Any], dict[str, Any], float | None]:
    """A raw call body's ``(method, args, kwargs, timeout)``, validated by ``CallRequest``.

    The same strict model documents the route, so the fast path and the schema agree.
    """
    try:
        call = CallRequest.model_validate_json(body)
    except ValidationError as exc:
        raise ApiError(
            400, describe_validation(exc.errors()), type_name="ValidationError"
        ) from None
    return call.method, call.args, call.kwargs, call.timeout


class DeviceCaller:
    """Validates and runs remote calls for one server."""

    def __init__(self, ctx: ServerContext) -> None:
        self.ctx = ctx
        self._count = ctx.metrics.device_calls.inc

    async def perform(
        self,
        scope: Scope,
        device_id: str,
        method: str,
        args: list[Any],
        kwargs: dict[str, Any],
        timeout: float | None,
    ) -> bytes:
        """Check the method, role, ownership and arguments, call on the device's thread.

        Returns the encoded ``{"result", "success"}`` reply; failures raise ``ApiError``.
        """
        ctx = self.ctx
        try:
            call = ctx.daemon.prepare_call(device_id, method)  # public methods only
        except UnknownDeviceError:
            raise unknown_device(device_id) from None
        except AttributeError as exc:
            raise ApiError(
                400, str(exc), type_name="AttributeError", context=_where(device_id, method)
            ) from None
        if ctx.auth.enabled:
            ctx.require(HTTPConnection(scope), "viewer" if call.query else "operator")
        if not call.query and ctx.daemon.owner_of(device_id) is not None:
            ctx.ensure_not_owned(device_id, call.action)
        try:
            args, kwargs = call.bind(args, kwargs)
        except DeviceArgumentError as exc:
            raise ApiError(
                400, str(exc), type_name="TypeError", context=_where(device_id, method)
            ) from None
        wait = timeout if timeout is not None else ctx.call_timeout
        try:
            result = await ctx.bridge.call(call, wait, args, kwargs)
        except DeviceBusy as exc:
            self._count(device_id, "busy")
            raise ApiError(
                409, str(exc), type_name="DeviceBusy", context=_where(device_id, method)
            ) from None
        except DeviceTimeoutError as exc:
            self._count(device_id, "timeout")
            ctx.daemon.record_error(device_id, exc, "framework", method=method)
            raise ApiError(
                504, str(exc), type_name="DeviceTimeoutError", context=_where(device_id, method)
            ) from None
        except Exception as exc:
            self._count(device_id, "error")
            ctx.daemon.record_error(device_id, exc, "device", method=method)
            raise ApiError(
                500, str(exc), origin="device", context=_where(device_id, method), cause=exc
            ) from None
        self._count(device_id, "ok")
        return encode_json({"result": result, "success": True}, lenient=True)


class CallRoute:
    """``POST /devices/{id}/call`` as a small ASGI route, mounted ahead of FastAPI.

    The entry point hands it requests that :meth:`match` accepts, with their body read
    (and its size limit checked); see docs/decisions/0006.
    """

    path = "/devices/{device_id}/call"

    def __init__(self, caller: DeviceCaller) -> None:
        self.caller = caller
        self._route = _RouteName(self.path)
        self._ok = ("POST", self.path, "200")

    def match(self, scope: Scope) -> str | None:
        """The device id when this is ``POST /devices/{id}/call`` (ASGI paths come decoded)."""
        path: str = scope["path"]
        if scope["method"] != "POST" or not path.startswith("/devices/"):
            return None
        if not path.endswith("/call"):
            return None
        device_id = path[9:-5]
        if not device_id or "/" in device_id:
            return None
        return device_id

    async def __call__(
        self, scope: Scope, device_id: str, body: bytes, send: Send
    ) -> tuple[int, tuple[str, str, str] | None]:
        """Answer the call; returns the status and, on success, the metric labels."""
        scope["route"] = self._route
        try:
            method, args, kwargs, timeout = parse_call(body)
            reply = await self.caller.perform(scope, device_id, method, args, kwargs, timeout)
        except ApiError as exc:
            response = api_error_response(exc)

            async def no_body() -> Message:
                return {"type": "http.disconnect"}

            await response(scope, no_body, send)
            return response.status_code, None
        await send(_json_start(len(reply)))
        await send({"type": "http.response.body", "body": reply})
        return 200, self._ok


class _RouteName:
    """What the access log and metrics read of a route: its path template."""

    __slots__ = ("path",)

    def __init__(self, path: str) -> None:
        self.path = path


_JSON_CONTENT_TYPE = (b"content-type", b"application/json")


def _json_start(length: int) -> Message:
    """The start of a 200 JSON reply of ``length`` bytes."""
    headers = [_JSON_CONTENT_TYPE, (b"content-length", str(length).encode())]
    return {"type": "http.response.start", "status": 200, "headers": headers}
