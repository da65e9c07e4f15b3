"""Remote device calls: the checks, the timed call and its outcome, in one place.

Calls are the hot path of the HTTP API, so ``LabdApp`` answers
``POST /devices/{id}/call`` straight from ASGI with :meth:`DeviceCaller.from_body`,
skipping the framework's routing and validation; the FastAPI route (kept for the
OpenAPI description) goes through the same :meth:`DeviceCaller.perform`.
"""

from __future__ import annotations

import inspect
from typing import Any

import orjson
from fastapi import Request
from fastapi.responses import Response

from labd.devices import DeviceBusy, is_query
from labd.exceptions import DeviceTimeoutError
from labd.server.context import ServerContext, json_response
from labd.server.errors import ApiError

__all__ = ["DeviceCaller"]


def _invalid(message: str) -> ApiError:
    return ApiError(400, f"invalid request: {message}", type_name="ValidationError")


class DeviceCaller:
    """Validates and runs remote calls for one server."""

    def __init__(self, ctx: ServerContext) -> None:
        self.ctx = ctx
        self._signatures: dict[int, tuple[Any, inspect.Signature]] = {}

    def _signature(self, method: Any) -> inspect.Signature:
        # inspect.signature costs more than all the other checks of a call together.
        cached = self._signatures.get(id(method))
        if cached is None or cached[0] is not method:
            if len(self._signatures) > 4096:  # devices come and go: stay bounded
                self._signatures.clear()
            cached = self._signatures[id(method)] = (method, inspect.signature(method))
        return cached[1]

    async def from_body(self, request: Request, device_id: str, body: bytes) -> Response:
        """Parse a raw call body (the same rules as ``CallRequest``) and perform the call."""
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise _invalid("body is not valid JSON") from None
        if not isinstance(data, dict):
            raise _invalid("body must be a JSON object")
        method = data.get("method")
        args = data.get("args", [])
        kwargs = data.get("kwargs", {})
        timeout = data.get("timeout")
        if not isinstance(method, str) or not method:
            raise _invalid("method: a non-empty string is required")
        if not isinstance(args, list):
            raise _invalid("args: must be a list")
        if not isinstance(kwargs, dict):
            raise _invalid("kwargs: must be an object")
        if timeout is not None and (
            isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0
        ):
            raise _invalid("timeout: must be a number greater than 0")
        return await self.perform(request, device_id, method, args, kwargs, timeout)

    async def perform(
        self,
        request: Request,
        device_id: str,
        method: str,
        args: list[Any],
        kwargs: dict[str, Any],
        timeout: float | None,
    ) -> Response:
        """Check the method, role, ownership and arguments, then call on the device's thread."""
        ctx = self.ctx
        record = ctx.device(device_id)
        context = {"device_id": device_id, "method": method}
        original = record.methods.get(method)
        if method.startswith("_") or original is None:
            raise ApiError(
                400,
                f"device {device_id!r} has no public method {method!r}",
                type_name="AttributeError",
                context=context,
            )
        query = is_query(method, original)
        ctx.require(request, "viewer" if query else "operator")
        if not query:
            ctx.ensure_not_owned(device_id, f"call {method}")
        try:
            self._signature(original).bind(*args, **kwargs)
        except TypeError as exc:
            raise ApiError(
                400,
                f"bad arguments for {device_id}.{method}: {exc}",
                type_name="TypeError",
                context=context,
            ) from None
        except ValueError:
            pass  # no signature to check against
        func = getattr(record.device, method)
        wait = timeout if timeout is not None else ctx.call_timeout
        outcomes = ctx.metrics.device_calls
        try:
            result = await ctx.bridge.call(record.worker, wait, func, *args, **kwargs)
        except DeviceBusy as exc:
            outcomes.labels(device_id, "busy").inc()
            raise ApiError(409, str(exc), type_name="DeviceBusy", context=context) from None
        except DeviceTimeoutError as exc:
            outcomes.labels(device_id, "timeout").inc()
            ctx.daemon.record_error(device_id, exc, "framework", method=method)
            raise ApiError(504, str(exc), type_name="DeviceTimeoutError", context=context) from None
        except Exception as exc:
            outcomes.labels(device_id, "error").inc()
            ctx.daemon.record_error(device_id, exc, "device", method=method)
            raise ApiError(500, str(exc), origin="device", context=context, cause=exc) from None
        outcomes.labels(device_id, "ok").inc()
        return json_response({"result": result, "success": True})
