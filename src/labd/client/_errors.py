"""Turning HTTP answers and transport failures into labd exceptions, in one place.

The server sends every error as ``{"error": {type, message, origin, ...}}``; this module
is the client side's only reader of that shape.
"""

from __future__ import annotations

import ast
from typing import Any

import httpx

from labd.exceptions import DeviceBusyError, ServerAPIError, ServerConnectionError
from labd.wire import decode_json

__all__ = [
    "BUILTIN_ERRORS",
    "connection_error",
    "error_from_response",
    "is_retryable_status",
    "local_exception",
]

# Exception types a remote call re-raises as themselves, so code written against a local
# device keeps its ``except ValueError:`` clauses.
BUILTIN_ERRORS: dict[str, type[Exception]] = {
    "ValueError": ValueError,
    "KeyError": KeyError,
    "TypeError": TypeError,
    "RuntimeError": RuntimeError,
    "TimeoutError": TimeoutError,
    "DeviceTimeoutError": TimeoutError,
}


def _error_object(response: httpx.Response) -> dict[str, Any] | None:
    try:
        body = decode_json(response.content)
    except ValueError:
        return None
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        error: dict[str, Any] = body["error"]
        return error
    return None


def error_from_response(response: httpx.Response) -> ServerAPIError:
    """Build the exception for an HTTP error answer (status >= 400)."""
    status = response.status_code
    error = _error_object(response)
    if error is not None:
        detail = f"{error.get('type', 'Error')}: {error.get('message', '')}"
    else:
        detail = response.text.strip()[:500] or response.reason_phrase
    try:
        request = response.request
        where = f" on {request.method} {request.url.path}"
    except RuntimeError:
        where = ""
    message = f"HTTP {status}{where}: {detail}"
    if status == 409:  # a conflict: owned, busy, already exists or not running (see error.type)
        return DeviceBusyError(message, status_code=status, error=error)
    return ServerAPIError(message, status_code=status, error=error)


def connection_error(base_url: str, exc: httpx.TransportError) -> ServerConnectionError:
    """Build the exception for a server that could not be reached or did not answer."""
    if isinstance(exc, httpx.TimeoutException):
        text = f"labd server at {base_url} did not answer in time ({type(exc).__name__})"
    else:
        text = f"cannot reach labd server at {base_url}: {exc or type(exc).__name__}"
    return ServerConnectionError(text)


def is_retryable_status(status: int) -> bool:
    """Whether a stream connection refused with ``status`` is worth retrying."""
    return status >= 500 or status in (408, 425, 429)


def _unquote(text: str) -> str:
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            return text
        if isinstance(value, str):
            return value
    return text


def local_exception(
    error: dict[str, Any] | None, fallback: ServerAPIError | None = None
) -> Exception:
    """The exception to raise locally for a remote error object.

    Builtin types listed in :data:`BUILTIN_ERRORS` come back as themselves with the server's
    message; anything else is ``fallback`` (or a new :class:`ServerAPIError`).
    """
    error = error or {}
    kind = BUILTIN_ERRORS.get(str(error.get("type")))
    if kind is not None:
        message = str(error.get("message", ""))
        if kind is KeyError:
            # str(KeyError("x")) is "'x'"; undo the quoting so the key round-trips.
            message = _unquote(message)
        return kind(message)
    if fallback is not None:
        return fallback
    text = f"{error.get('type', 'Error')}: {error.get('message', '')}"
    return ServerAPIError(text, error=error)
