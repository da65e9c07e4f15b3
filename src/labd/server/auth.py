"""Tokens and roles: viewer < operator < admin, and which route needs which.

viewer: GETs, streams and query methods; operator: + calls, streaming control and
tasks; admin: + adding, removing, connecting and disconnecting devices. ``/health``,
``/ui/``, ``/openapi.json`` and ``/docs`` are open. Tokens come from
``Authorization: Bearer ...`` or, for browsers' EventSource, ``?token=``.

Authentication happens once, before any routing: every request outside
:func:`is_open` needs a valid token (401), so an anonymous client learns nothing about
devices or methods. Then :data:`ROUTE_ROLES` says the least role of each route (403);
calls of methods that are not queries need ``operator`` on top, checked by the call path.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

from fastapi import Request
from starlette.requests import HTTPConnection

from labd.server.errors import ApiError
from labd.wire import ROLES

__all__ = ["OPEN_PATHS", "ROLES", "ROLE_KEY", "ROUTE_ROLES", "Auth", "is_open", "redact_query"]

#: Each role's rank: a higher one may do all a lower one may.
RANKS = {role: rank for rank, role in enumerate(ROLES, start=1)}

#: Paths anyone may open; with ``/ui`` and the dashboard's files below ``/ui/`` they are
#: the only exemptions from authentication.
OPEN_PATHS = frozenset({"/health", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"})

#: The least role of every route, by ``(method, path template)``; None: open.
ROUTE_ROLES: Mapping[tuple[str, str], str | None] = MappingProxyType(
    {
        ("GET", "/health"): None,
        ("GET", "/ui"): None,
        ("GET", "/ui/{path:path}"): None,
        ("GET", "/"): "viewer",
        ("GET", "/metrics"): "viewer",
        ("GET", "/devices"): "viewer",
        ("POST", "/devices"): "admin",
        ("GET", "/devices/{device_id}"): "viewer",
        ("DELETE", "/devices/{device_id}"): "admin",
        ("GET", "/devices/{device_id}/methods"): "viewer",
        ("POST", "/devices/{device_id}/connect"): "admin",
        ("POST", "/devices/{device_id}/disconnect"): "admin",
        ("POST", "/devices/{device_id}/call"): "viewer",  # + operator unless a query
        ("GET", "/devices/{device_id}/error"): "viewer",
        ("DELETE", "/devices/{device_id}/error"): "operator",
        ("POST", "/devices/{device_id}/streaming/start"): "operator",
        ("POST", "/devices/{device_id}/streaming/stop"): "operator",
        ("GET", "/task-types"): "viewer",
        ("GET", "/tasks"): "viewer",
        ("POST", "/tasks"): "operator",
        ("GET", "/tasks/{task_id}"): "viewer",
        ("POST", "/tasks/{task_id}/cancel"): "operator",
        ("POST", "/tasks/{task_id}/pause"): "operator",
        ("POST", "/tasks/{task_id}/resume"): "operator",
        ("POST", "/tasks/{task_id}/parameters"): "operator",
        ("GET", "/tasks/{task_id}/parameters/{key}"): "viewer",
        ("GET", "/tasks/{task_id}/error"): "viewer",
        ("DELETE", "/tasks/{task_id}/error"): "operator",
        ("GET", "/stream/devices/{device_id}"): "viewer",
        ("GET", "/stream/tasks/{task_id}"): "viewer",
        ("GET", "/stream/events"): "viewer",
    }
)

#: Where the entry point leaves the caller's role in the ASGI scope.
ROLE_KEY = "labd.role"


def is_open(path: str) -> bool:
    """Whether ``path`` needs no token: the open paths and the dashboard's files."""
    return path in OPEN_PATHS or path == "/ui" or path.startswith("/ui/")


class Auth:
    """Checks a request's token against the configured ones."""

    def __init__(
        self, tokens: Mapping[str, str] | None, on_failure: Callable[[], None] | None = None
    ) -> None:
        tokens = dict(tokens or {})
        for token, role in tokens.items():
            if role not in RANKS:
                raise ValueError(
                    f"unknown role {role!r} for a token; use one of {', '.join(ROLES)}"
                )
            if not token:
                raise ValueError("tokens must be non-empty strings")
        self._tokens = tokens
        self.enabled = bool(tokens)  # False: every caller is admin
        self._on_failure = on_failure

    @staticmethod
    def token_of(request: HTTPConnection) -> str | None:
        """The token a request sends: ``Authorization: Bearer …``, else ``?token=``."""
        token = None
        header = request.headers.get("authorization", "")
        if header[:7].lower() == "bearer ":
            token = header[7:].strip()
        return token or request.query_params.get("token") or None

    def role_of(self, request: HTTPConnection) -> str | None:
        """The caller's role; raises 401 for a missing or unknown token (when auth is on)."""
        if not self._tokens:
            return "admin"
        token = self.token_of(request)
        if not token:
            self._fail()
            raise ApiError(401, "authentication required: send a token", type_name="Unauthorized")
        for known, role in self._tokens.items():
            if hmac.compare_digest(known.encode(), token.encode()):
                return role
        self._fail()
        raise ApiError(401, "invalid token", type_name="Unauthorized")

    def require(self, request: HTTPConnection, role: str) -> str:
        """Raise 401/403 unless the caller has at least ``role``.

        The role the entry point found is reused (no second token check).
        """
        have = request.scope.get(ROLE_KEY) or self.role_of(request)
        assert have is not None
        if RANKS[have] < RANKS[role]:
            self._fail()
            raise ApiError(
                403,
                f"this needs the {role} role; your token has {have}",
                type_name="Forbidden",
                context={"required": role, "role": have},
            )
        return have

    def _fail(self) -> None:
        if self._on_failure is not None:
            self._on_failure()

    def route_guard(self) -> Callable[[Request], Any]:
        """A FastAPI dependency for the whole app: the route's role from :data:`ROUTE_ROLES`.

        A route missing from the table is refused (403), never let through.
        """

        def guard(request: Request) -> None:
            if not self.enabled:
                return
            template = getattr(request.scope.get("route"), "path", None)
            method = "GET" if request.method == "HEAD" else request.method
            try:
                role = ROUTE_ROLES[method, template]  # type: ignore[index]
            except KeyError:
                raise ApiError(
                    403, f"no role is set for {method} {template}", type_name="Forbidden"
                ) from None
            if role is not None:
                self.require(request, role)

        return guard


def redact_query(query: str) -> str:
    """The query string with any ``token=`` value hidden, for logs."""
    if "token=" not in query:
        return query
    parts = []
    for part in query.split("&"):
        key = part.split("=", 1)[0]
        parts.append(f"{key}=***" if key == "token" else part)
    return "&".join(parts)
