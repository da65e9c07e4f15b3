"""The ASGI application: routes, error handlers, body limit, metrics, access log, dashboard."""

from __future__ import annotations

import logging
import mimetypes
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import orjson
from fastapi import Depends, FastAPI, Request
from fastapi.responses import RedirectResponse, Response
from fastapi.routing import APIRoute, APIRouter
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from labd._version import __version__
from labd.daemon import LabDaemon
from labd.server.auth import ROLE_KEY, ROUTE_ROLES, is_open, redact_query
from labd.server.calls import CallRoute, DeviceCaller
from labd.server.context import ServerContext, json_response
from labd.server.errors import (
    ApiError,
    api_error_response,
    error_response,
    install_error_handlers,
)
from labd.server.guards import HeaderGuard, json_depth_exceeds
from labd.server.routes_devices import device_routes
from labd.server.routes_streams import stream_routes
from labd.server.routes_tasks import task_routes
from labd.wire import Health, format_timestamp

__all__ = ["STATIC_DIR", "LabdApp", "create_app"]

access_log = logging.getLogger("labd.server.access")

STATIC_DIR = Path(__file__).with_name("static")


def create_app(
    daemon: LabDaemon,
    *,
    tokens: Mapping[str, str] | None = None,
    call_timeout: float = 30.0,
    heartbeat_interval: float = 15.0,
    max_body_bytes: int = 10 * 1024 * 1024,
    max_json_depth: int = 64,
    max_streams_per_client: int | None = 64,
    cors_origins: Iterable[str] = (),
    trusted_hosts: Iterable[str] | None = None,
    static_dir: Path | None = STATIC_DIR,
) -> LabdApp:
    """Build the labd HTTP/SSE app for ``daemon`` (``app.state.labd`` holds its context).

    ``cors_origins`` lets pages from those origins call the API (closed by default);
    ``trusted_hosts`` limits the ``Host`` names answered (see :mod:`labd.server.guards`).
    """
    if call_timeout <= 0:
        raise ValueError("call_timeout must be positive")
    if heartbeat_interval <= 0:
        raise ValueError("heartbeat_interval must be positive")
    ctx = ServerContext(
        daemon,
        tokens=tokens,
        call_timeout=call_timeout,
        heartbeat_interval=heartbeat_interval,
        max_body_bytes=max_body_bytes,
        max_json_depth=max_json_depth,
        max_streams_per_client=max_streams_per_client,
        cors_origins=frozenset(o.rstrip("/") for o in cors_origins),
        trusted_hosts=None
        if trusted_hosts is None
        else frozenset(h.lower() for h in trusted_hosts),
    )
    daemon.enable_stream_history()
    app = FastAPI(
        title="labd",
        version=__version__,
        description="Instrument control over HTTP and server-sent events.",
        dependencies=[Depends(ctx.auth.route_guard())],
    )
    app.state.labd = ctx
    install_error_handlers(app)
    caller = DeviceCaller(ctx)
    routers = [device_routes(ctx, caller), task_routes(ctx), stream_routes(ctx)]
    for router in routers:
        app.include_router(router)

    @app.get("/health", response_model=Health, tags=["server"])
    async def health() -> Response:
        return json_response({"status": "healthy", "timestamp": format_timestamp(time.time())})

    @app.get("/", tags=["server"])
    async def index(request: Request) -> Response:
        endpoints = sorted(
            {
                f"{m} {getattr(r, 'path', '')}"
                # Included routers may show in app.routes as one opaque entry each.
                for r in [*app.routes, *(r for router in routers for r in router.routes)]
                for m in getattr(r, "methods", None) or ()
                if m != "HEAD"
            }
        )
        return json_response(
            {
                "name": "labd",
                "version": __version__,
                "dashboard": "/ui/",
                "endpoints": endpoints,
            }
        )

    @app.get("/metrics", tags=["server"], response_class=Response)
    async def metrics(request: Request) -> Response:
        return Response(ctx.metrics.render(), media_type="text/plain; version=0.0.4")

    _describe_400_not_422(app)

    if static_dir is not None and static_dir.is_dir():
        _mount_dashboard(app, static_dir)

    unlisted = sorted(set(api_routes(app, routers)) - set(ROUTE_ROLES))
    if unlisted:  # a route without a role would be refused to everyone: say so at once
        raise RuntimeError(f"routes missing from labd.server.auth.ROUTE_ROLES: {unlisted}")
    return LabdApp(app, ctx, caller, routers)


def api_routes(app: FastAPI, routers: list[APIRouter]) -> list[tuple[str, str]]:
    """Every ``(method, path template)`` the app's own and included routes answer."""
    found = []
    for route in [*app.routes, *(r for router in routers for r in router.routes)]:
        if isinstance(route, APIRoute):
            found += [(m, route.path) for m in route.methods or () if m != "HEAD"]
    return sorted(found)


def _describe_400_not_422(app: FastAPI) -> None:
    """Invalid bodies are answered 400 with labd's error body: say so in the schema."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()
            for operations in schema.get("paths", {}).values():
                for operation in operations.values():
                    responses = operation.get("responses", {})
                    if responses.pop("422", None) is not None:
                        responses.setdefault("400", _ERROR_RESPONSE)
            for name in ("HTTPValidationError", "ValidationError"):
                schema.get("components", {}).get("schemas", {}).pop(name, None)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


_ERROR_RESPONSE = {
    "description": "Bad Request",
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}},
}


def _mount_dashboard(app: FastAPI, root: Path) -> None:
    """Serve the dashboard's files from memory: they are few and small, and need no threads."""
    files: dict[str, tuple[bytes, str]] = {}
    for path in root.rglob("*"):
        if path.is_file():
            kind = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
            if kind.startswith("text/") or kind in ("application/javascript",):
                kind += "; charset=utf-8"
            files[path.relative_to(root).as_posix()] = (path.read_bytes(), kind)

    @app.get("/ui", include_in_schema=False)
    async def ui_redirect() -> Response:
        return RedirectResponse("/ui/")

    @app.get("/ui/{path:path}", include_in_schema=False)
    async def ui(path: str) -> Response:
        found = files.get(path or "index.html") or files.get(path.rstrip("/") + "/index.html")
        if found is None:
            raise ApiError(404, f"no such file: /ui/{path}", type_name="NotFound")
        body, kind = found
        return Response(body, media_type=kind, headers={"cache-control": "no-cache"})


class LabdApp:
    """The ASGI app: FastAPI routes inside a body limit, request metrics and a token-free log.

    ``api`` is the FastAPI application (OpenAPI schema, routes).
    """

    def __init__(
        self,
        app: FastAPI,
        ctx: ServerContext,
        caller: DeviceCaller,
        routers: list[APIRouter] | None = None,
    ) -> None:
        self.app = app
        self.api = app
        self.ctx = ctx
        self.caller = caller
        self.routers = list(routers or [])
        #: Routes answered ahead of FastAPI, each a small ASGI route of its own.
        self.ahead = (CallRoute(caller),)
        self.state = app.state
        self._guard = HeaderGuard(ctx.trusted_hosts, ctx.cors_origins)
        self._entry: ASGIApp = self._serve
        if ctx.cors_origins:  # outside everything: preflights carry no token
            self._entry = CORSMiddleware(
                self._serve,
                allow_origins=sorted(ctx.cors_origins),
                allow_methods=["GET", "POST", "PUT", "DELETE"],
                allow_headers=["authorization", "content-type", "last-event-id"],
                max_age=600,
            )

    def routes(self) -> list[tuple[str, str]]:
        """Every ``(method, path template)`` this app answers (open ones included)."""
        return api_routes(self.app, self.routers)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.app, name)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._entry(scope, receive, send)

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500
        labels: tuple[str, str, str] | None = None  # the request's metric labels, when known
        started = time.perf_counter()
        try:
            refusal = self._refusal(scope)
            if refusal is not None:
                response = api_error_response(refusal)
                status = response.status_code
                await response(scope, receive, send)
                return
            if self.ctx.auth.enabled and not is_open(scope["path"]):
                # Authentication before anything else: unknown ids, methods or paths
                # must not answer differently to a caller without a valid token.
                try:
                    scope[ROLE_KEY] = self.ctx.auth.role_of(HTTPConnection(scope))
                except ApiError as exc:
                    response = api_error_response(exc)
                    status = response.status_code
                    await response(scope, receive, send)
                    return
            if scope["method"] in ("POST", "PUT", "PATCH", "DELETE"):
                first = await receive()
                body = first.get("body", b"")
                if first.get("more_body", False) or len(body) > self.ctx.max_body_bytes:
                    body = await self._read_rest(scope, receive, first)
                if body is None:
                    status = 413
                    response = error_response(
                        413,
                        ValueError(f"request body exceeds {self.ctx.max_body_bytes} bytes"),
                        type_name="PayloadTooLarge",
                    )
                    await response(scope, receive, send)
                    return
                if json_depth_exceeds(body, self.ctx.max_json_depth):
                    self.ctx.metrics.requests_refused.labels("json_depth").inc()
                    status = 400
                    response = error_response(
                        400,
                        ValueError(
                            f"request body nests deeper than {self.ctx.max_json_depth} levels"
                        ),
                        type_name="ValidationError",
                    )
                    await response(scope, receive, send)
                    return
                for ahead in self.ahead:  # answered without the framework's routing
                    target = ahead.match(scope)
                    if target is not None:
                        status, labels = await ahead(scope, target, body, send)
                        return
                if body.strip() and not _is_json_object(body):
                    status = 400
                    response = error_response(
                        400,
                        ValueError("request body must be a JSON object"),
                        type_name="ValidationError",
                    )
                    await response(scope, receive, send)
                    return
                receive = _replay(body, receive)

            started = False

            async def send_wrapper(message: Message) -> None:
                nonlocal status, started
                if message["type"] == "http.response.start":
                    status = message["status"]
                    started = True
                await send(message)

            try:
                await self.app(scope, receive, send_wrapper)
            except Exception:
                # Starlette re-raises an unexpected error after its handler has answered
                # (and logged) it; passed on, uvicorn would log it again and drop the
                # connection under a client that is still reading the answer.
                if not started:
                    raise
        finally:
            if labels is None:
                route = scope.get("route")
                template = getattr(route, "path", None) or "unmatched"
                labels = (scope["method"], template, str(status))
            self.ctx.metrics.http_requests.add(labels)
            if access_log.isEnabledFor(logging.INFO):
                query = scope.get("query_string", b"").decode("latin-1")
                path = scope["path"] + ("?" + redact_query(query) if query else "")
                access_log.info(
                    "%s %s %d %.1f ms",
                    scope["method"],
                    path,
                    status,
                    (time.perf_counter() - started) * 1000,
                )

    def _refusal(self, scope: Scope) -> ApiError | None:
        """431 for a header flood, 403 for a ``Host`` this server does not answer to or a
        foreign ``Origin``."""
        found = self._guard.refusal(scope)
        if found is None:
            return None
        reason, detail = found
        self.ctx.metrics.requests_refused.labels(reason).inc()
        if reason == "headers":
            return ApiError(
                431, f"request headers too large: {detail}", type_name="HeadersTooLarge"
            )
        if reason == "host":
            return ApiError(
                403,
                f"this server does not answer to the Host name {detail!r} (it is bound to"
                " loopback: use localhost or 127.0.0.1)",
                type_name="HostNotAllowed",
            )
        return ApiError(
            403,
            f"cross-origin request from {detail} refused; allow the origin with"
            " cors_origins (labd serve --cors-origin)",
            type_name="CrossOriginRefused",
            context={"origin": detail},
        )

    async def _read_rest(self, scope: Scope, receive: Receive, first: Message) -> bytes | None:
        """The whole body, from its ``first`` message on; None when it is over the limit."""
        limit = self.ctx.max_body_bytes
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    if int(value) > limit:
                        return None
                except ValueError:
                    pass
        chunks: list[bytes] = []
        size = 0
        message = first
        while True:
            if message["type"] == "http.disconnect":
                break
            chunk: bytes = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
            message = await receive()
        return b"".join(chunks)


def _is_json_object(body: bytes) -> bool:
    # Checked here so that endpoints without a body model refuse garbage the same way.
    try:
        return isinstance(orjson.loads(body), dict)
    except orjson.JSONDecodeError:
        return False


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
