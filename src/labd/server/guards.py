"""What the server refuses before any route runs: header floods, foreign hosts and
origins, JSON nested too deep, and more open streams than one client may hold.

* **Host and origin.** A browser page from another site can send requests to a server on
  the lab PC (a form POST, ``fetch`` with ``mode: "no-cors"``): its responses stay
  unreadable, but the request would still move a stage. So a request that carries an
  ``Origin`` header must come from the server's own origin or one of ``cors_origins``.
  Bound to loopback, the server also accepts only loopback ``Host`` names, so a page
  whose domain is made to resolve to 127.0.0.1 (DNS rebinding) is refused too.
* **JSON depth.** orjson stops at depth 1024; labd refuses far less: nothing a lab sends
  nests deeper than a few levels, and a deep body costs every layer that walks it.
* **Streams per client.** Each open SSE stream holds a server task and a ring cursor;
  one client (token, or address without tokens) may hold ``max_streams_per_client``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

import orjson
from starlette.types import Scope

__all__ = [
    "LOOPBACK_NAMES",
    "MAX_HEADERS",
    "MAX_HEADER_BYTES",
    "HeaderGuard",
    "StreamLimits",
    "json_depth_exceeds",
]

#: The ``Host`` names a loopback-bound server answers to.
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})


#: The most header lines, and header bytes, one request may send (431 past either).
MAX_HEADERS = 100
MAX_HEADER_BYTES = 64 * 1024


class HeaderGuard:
    """Checks a request's headers in one pass: how many, how big, ``Host`` and ``Origin``.

    ``trusted_hosts`` None accepts any ``Host``; ``cors_origins`` are the origins allowed
    besides the server's own (``"*"``: any). ``Host`` values once found good are kept, so
    the usual request costs one loop over its headers and a set lookup.
    """

    def __init__(self, trusted_hosts: frozenset[str] | None, cors_origins: frozenset[str]) -> None:
        self.trusted_hosts = trusted_hosts
        self.cors_origins = cors_origins
        self._good_hosts: set[bytes] = set()

    def refusal(self, scope: Scope) -> tuple[str, str] | None:
        """``(reason, detail)`` when the request must be refused: ``headers``, ``host`` or
        ``origin``."""
        headers = scope["headers"]
        if len(headers) > MAX_HEADERS:
            return "headers", f"{len(headers)} header lines (at most {MAX_HEADERS})"
        host = origin = None
        size = 0
        for key, value in headers:
            size += len(value)
            if key == b"host":
                host = value
            elif key == b"origin":
                origin = value
        if size > MAX_HEADER_BYTES:
            return "headers", f"{size} bytes of headers (at most {MAX_HEADER_BYTES})"
        if host is not None and self.trusted_hosts is not None and host not in self._good_hosts:
            name = _host_name(bytes(host).decode("latin-1").strip().lower())
            if name not in self.trusted_hosts:
                return "host", name
            if len(self._good_hosts) < 64:
                self._good_hosts.add(host)
        if origin is not None:
            text = bytes(origin).decode("latin-1").strip()
            if not self._origin_allowed(text, host):
                return "origin", text
        return None

    def _origin_allowed(self, origin: str, host: bytes | None) -> bool:
        if origin in self.cors_origins or "*" in self.cors_origins:
            return True
        parts = urlsplit(origin)
        # The same origin: the dashboard served by this server.
        return (
            host is not None
            and parts.scheme in ("http", "https")
            and parts.netloc == bytes(host).decode("latin-1").strip()
        )


def _host_name(netloc: str) -> str:
    """``example.org:5000`` → ``example.org``; ``[::1]:5000`` → ``[::1]``."""
    if netloc.startswith("["):
        return netloc[: netloc.find("]") + 1] if "]" in netloc else netloc
    return netloc.rsplit(":", 1)[0] if netloc.count(":") == 1 else netloc


def json_depth_exceeds(body: bytes, limit: int) -> bool:
    """True when the JSON ``body`` nests arrays and objects deeper than ``limit``.

    Each level takes at least two bytes, so a short body cannot exceed it; counting
    brackets runs at C speed, so a body with fewer of them than ``limit`` (every ordinary
    request, flat arrays of any length) is never parsed here.
    """
    if len(body) <= 2 * limit or body.count(b"[") + body.count(b"{") <= limit:
        return False
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        return True  # orjson's own limit (1024), or not JSON at all: refused either way
    return _depth_over(value, limit)


def _depth_over(value: Any, limit: int) -> bool:
    level: list[Any] = [value]
    depth = 0
    while level:
        containers = [v for v in level if isinstance(v, list | dict)]
        if not containers:
            return False
        depth += 1
        if depth > limit:
            return True
        nxt: list[Any] = []
        for item in containers:
            children: Iterable[Any] = item.values() if isinstance(item, dict) else item
            nxt.extend(c for c in children if isinstance(c, list | dict))
        level = nxt
    return False


class StreamLimits:
    """Counts each client's open streams and refuses one past the limit."""

    def __init__(self, per_client: int | None) -> None:
        if per_client is not None and per_client < 1:
            raise ValueError(f"max_streams_per_client must be >= 1 or None, not {per_client!r}")
        self.per_client = per_client
        self._open: dict[str, int] = {}
        self._lock = threading.Lock()

    def acquire(self, client: str) -> bool:
        """Count one more stream for ``client``; False (nothing counted) past the limit."""
        with self._lock:
            count = self._open.get(client, 0)
            if self.per_client is not None and count >= self.per_client:
                return False
            self._open[client] = count + 1
            return True

    def release(self, client: str) -> None:
        with self._lock:
            count = self._open.get(client, 0) - 1
            if count > 0:
                self._open[client] = count
            else:
                self._open.pop(client, None)

    def open_streams(self, client: str) -> int:
        return self._open.get(client, 0)
