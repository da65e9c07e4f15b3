"""Remote device calls: the checks, the timed call and its outcome, in one place.

Calls are the hot path of the HTTP API, so ``LabdApp`` answers
``POST /devices/{id}/call`` straight from ASGI with :func:`parse_call` (the route's own
strict ``CallRequest`` model) and :meth:`DeviceCaller.perform`, skipping the framework's
routing; the FastAPI route (kept for the OpenAPI description) goes through the same
``perform``.
"""

from __future__ import annotations

import inspect
from typing import Any

from pydantic import ValidationError
from starlette.requests import HTTPConnection
from starlette.types import Scope

from labd.devices import DeviceBusy, enum_parameters, is_query, signature_of, to_enum
from labd.exceptions import DeviceTimeoutError
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


class _Method:
    """What a call needs to know about one device method, worked out once."""

    __slots__ = ("action", "enums", "func", "max_args", "min_args", "query", "signature")

    def __init__(self, name: str, func: Any) -> None:
        self.func = func
        self.query = is_query(name, func)
        self.action = f"call {name}"  # for the 409 when a task owns the device
        # None when there is nothing to check arguments against.
        self.signature: inspect.Signature | None = signature_of(func)
        # Enum-annotated parameters: JSON brings their values or names, the device wants
        # members.
        self.enums = enum_parameters(self.signature)
        # Plain positional parameters: without kwargs, a count check equals bind().
        self.min_args = self.max_args = -1
        if self.signature is not None:
            params = self.signature.parameters.values()
            if all(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in params):
                self.max_args = len(self.signature.parameters)
                self.min_args = sum(p.default is p.empty for p in params)

    def check(self, args: list[Any], kwargs: dict[str, Any]) -> None:
        """Raise TypeError unless the method accepts these arguments."""
        if not kwargs and self.min_args <= len(args) <= self.max_args:
            return
        if self.signature is not None:
            self.signature.bind(*args, **kwargs)

    def with_members(
        self, args: list[Any], kwargs: dict[str, Any]
    ) -> tuple[list[Any], dict[str, Any]]:
        """The arguments with each Enum-annotated one made a member; TypeError if it is none."""
        assert self.signature is not None
        bound = self.signature.bind(*args, **kwargs)
        for name, kind in self.enums.items():
            if name in bound.arguments:
                try:
                    bound.arguments[name] = to_enum(kind, bound.arguments[name])
                except TypeError as exc:
                    raise TypeError(f"{name}: {exc}") from None
        return list(bound.args), bound.kwargs


class DeviceCaller:
    """Validates and runs remote calls for one server."""

    def __init__(self, ctx: ServerContext) -> None:
        self.ctx = ctx
        self._methods: dict[tuple[str, str], _Method] = {}
        self._count = ctx.metrics.device_calls.inc

    def _learn(self, device_id: str, name: str, func: Any) -> _Method:
        # Kept per method: inspect.signature costs more than all of a call's other checks.
        if len(self._methods) > 4096:  # devices come and go: stay bounded
            self._methods.clear()
        known = self._methods[device_id, name] = _Method(name, func)
        return known

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
        original = record.methods.get(method)  # public methods only
        if original is None:
            raise ApiError(
                400,
                f"device {device_id!r} has no public method {method!r}",
                type_name="AttributeError",
                context=_where(device_id, method),
            )
        info = self._methods.get((device_id, method))
        if info is None or info.func is not original:
            info = self._learn(device_id, method, original)
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
