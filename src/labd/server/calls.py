"""Remote device calls: the checks, the timed call and its outcome, in one place.

Calls are the hot path of the HTTP API, so ``LabdApp`` answers
``POST /devices/{id}/call`` straight from ASGI with :func:`parse_call` (the route's own
strict ``CallRequest`` model) and :meth:`DeviceCaller.perform`, skipping the framework's
routing; the FastAPI route (kept for the OpenAPI description) goes through the same
``perform``.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError
from starlette.requests import HTTPConnection
from starlette.types import Scope

from labd.exceptions import DeviceBusy, DeviceTimeoutError
from labd.server.context import ServerContext
from labd.server.errors import ApiError, describe_validation
from labd.server.models import CallRequest
from labd.wire import encode_json

__all__ = ["DeviceCaller", "parse_call"]


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
        record = ctx.device(device_id)
        try:
            info = record.spec(method)  # public methods only
        except AttributeError as exc:
            raise ApiError(
                400, str(exc), type_name="AttributeError", context=_where(device_id, method)
            ) from None
        if ctx.auth.enabled:
            ctx.require(HTTPConnection(scope), "viewer" if info.query else "operator")
        if not info.query and ctx.daemon.owner_of(device_id) is not None:
            ctx.ensure_not_owned(device_id, info.action)
        try:
            info.check(args, kwargs)
            if info.enums:
                args, kwargs = info.with_members(args, kwargs)
        except TypeError as exc:
            raise ApiError(
                400,
                f"bad arguments for {device_id}.{method}: {exc}",
                type_name="TypeError",
                context=_where(device_id, method),
            ) from None
        func = getattr(record.device, method)
        wait = timeout if timeout is not None else ctx.call_timeout
        try:
            result = await ctx.bridge.call(record.worker, wait, func, *args, **kwargs)
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
