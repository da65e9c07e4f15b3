"""Turning exceptions into HTTP answers with labd's error body -- the only place that does."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from labd.exceptions import (
    DeviceBusy,
    DeviceConfigurationError,
    DeviceOwnedError,
    DeviceTimeoutError,
    DuplicateDeviceError,
    DuplicateTaskError,
    TaskError,
    UnknownDeviceError,
    UnknownDeviceTypeError,
    UnknownTaskError,
    UnknownTaskTypeError,
)
from labd.wire import ErrorBody, ErrorInfo, Origin, encode_json, error_object

__all__ = [
    "ApiError",
    "api_error_response",
    "describe_validation",
    "documented_errors",
    "error_response",
    "install_error_handlers",
    "recorded_error_response",
    "status_for",
]

log = logging.getLogger(__name__)


class ApiError(Exception):
    """An error answer: status, the error type name to show, origin and context."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type_name: str | None = None,
        origin: Origin = "framework",
        context: dict[str, Any] | None = None,
        cause: BaseException | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.type_name = type_name
        self.origin = origin
        self.context = context or {}
        self.cause = cause


_STATUS: list[tuple[type[BaseException], int]] = [
    (UnknownDeviceError, 404),
    (UnknownTaskError, 404),
    (UnknownDeviceTypeError, 404),
    (UnknownTaskTypeError, 404),
    (DuplicateDeviceError, 409),
    (DuplicateTaskError, 409),
    (DeviceOwnedError, 409),
    (DeviceBusy, 409),
    (DeviceTimeoutError, 504),
    (DeviceConfigurationError, 400),
    (TaskError, 409),
]


def status_for(exc: BaseException) -> int | None:
    """The status a framework exception maps to, or None for a device's own error."""
    for cls, status in _STATUS:
        if isinstance(exc, cls):
            return status
    return None


def error_response(
    status: int,
    exc: BaseException,
    origin: Origin = "framework",
    context: dict[str, Any] | None = None,
    *,
    type_name: str | None = None,
) -> Response:
    body = error_object(exc, origin, context, include_traceback=origin != "framework")
    if type_name is not None:
        body["type"] = type_name
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return Response(
        encode_json({"error": body}, lenient=True),
        status_code=status,
        media_type="application/json",
        headers=headers,
    )


def documented_errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses=`` entries: these statuses answer with the error body."""
    return {code: {"model": ErrorBody} for code in codes}


def recorded_error_response(error: ErrorInfo | None, kind: str, ident: str) -> Response:
    """``GET /{kind}s/{id}/error``: the last error, or 404 when none is recorded."""
    if error is None:
        raise ApiError(
            404,
            f"no error recorded for {kind} {ident!r}",
            type_name="NoErrorRecorded",
            context={f"{kind}_id": ident},
        )
    return Response(encode_json({"error": error}, lenient=True), media_type="application/json")


def api_error_response(exc: ApiError) -> Response:
    """The answer for an :class:`ApiError` (a device's own exception keeps its traceback)."""
    source: BaseException = exc
    if exc.cause is not None and exc.origin != "framework" and str(exc) == str(exc.cause):
        source = exc.cause
    return error_response(
        exc.status,
        source,
        exc.origin,
        exc.context,
        type_name=exc.type_name or (type(exc.cause).__name__ if exc.cause else None),
    )


def describe_validation(errors: Sequence[Any]) -> str:
    """One line for pydantic's errors of a request body: ``field: problem; ...``."""
    parts = []
    for item in errors:
        where = ".".join(str(x) for x in item.get("loc", ()) if x != "body") or "body"
        parts.append(f"{where}: {item.get('msg', 'invalid')}")
    return "invalid request: " + "; ".join(parts)


def install_error_handlers(app: FastAPI) -> None:
    """Every error leaves the server with the same body schema, never a bare 500 or 422."""

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> Response:
        return api_error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        return error_response(
            400, ValueError(describe_validation(exc.errors())), type_name="ValidationError"
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        return error_response(exc.status_code, RuntimeError(str(exc.detail)), type_name="HTTPError")

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return error_response(500, exc, "framework")
