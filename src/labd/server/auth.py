"""Tokens and roles: viewer < operator < admin.

viewer: GETs, streams and query methods; operator: + calls, streaming control and
tasks; admin: + adding, removing, connecting and disconnecting devices. ``/health``,
``/ui/``, ``/openapi.json`` and ``/docs`` are open. Tokens come from
``Authorization: Bearer ...`` or, for browsers' EventSource, ``?token=``.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Mapping
from typing import Any

from fastapi import Request
from starlette.requests import HTTPConnection

from labd.server.errors import ApiError

__all__ = ["ROLES", "Auth", "redact_query"]

ROLES = {"viewer": 1, "operator": 2, "admin": 3}
OPEN_PATHS = ("/health", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc")


class Auth:
    """Checks a request's token against the configured ones."""

    def __init__(
        self, tokens: Mapping[str, str] | None, on_failure: Callable[[], None] | None = None
    ) -> None:
        tokens = dict(tokens or {})
        for token, role in tokens.items():
            if role not in ROLES:
                raise ValueError(
                    f"unknown role {role!r} for a token; use one of {', '.join(ROLES)}"
                )
            if not token:
                raise ValueError("tokens must be non-empty strings")
        self._tokens = tokens
        self.enabled = bool(tokens)  # False: every caller is admin
        self._on_failure = on_failure

    def role_of(self, request: HTTPConnection) -> str | None:
        """The caller's role; raises 401 for a missing or unknown token (when auth is on)."""
        if not self._tokens:
            return "admin"
        token = None
        header = request.headers.get("authorization", "")
        if header[:7].lower() == "bearer ":
            token = header[7:].strip()
        if not token:
            token = request.query_params.get("token")
        if not token:
            self._fail()
            raise ApiError(401, "authentication required: send a token", type_name="Unauthorized")
        for known, role in self._tokens.items():
            if hmac.compare_digest(known.encode(), token.encode()):
                return role
        self._fail()
        raise ApiError(401, "invalid token", type_name="Unauthorized")

    def require(self, request: HTTPConnection, role: str) -> str:
        """Raise 401/403 unless the caller has at least ``role``."""
        have = self.role_of(request)
        assert have is not None
        if ROLES[have] < ROLES[role]:
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

    def dependency(self, role: str) -> Callable[[Request], Any]:
        """A FastAPI dependency requiring ``role``."""

        def check(request: Request) -> str:
            return self.require(request, role)

        return check


def redact_query(query: str) -> str:
    """The query string with any ``token=`` value hidden, for logs."""
    if "token=" not in query:
        return query
    parts = []
    for part in query.split("&"):
        key = part.split("=", 1)[0]
        parts.append(f"{key}=***" if key == "token" else part)
    return "&".join(parts)
