"""LabDaemonServer: serves one daemon over HTTP/SSE with uvicorn, on its own thread."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import threading
import time
from collections.abc import Iterable, Mapping
from typing import Any

import uvicorn

from labd.daemon import LabDaemon
from labd.server.app import LabdApp, create_app
from labd.server.guards import LOOPBACK_NAMES

__all__ = ["LabDaemonServer"]

log = logging.getLogger(__name__)


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost``."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        try:
            return all(
                ipaddress.ip_address(info[4][0]).is_loopback
                for info in socket.getaddrinfo(host, None)
            )
        except OSError:
            return False


def _bound_port(server: uvicorn.Server) -> int | None:
    sockets = [s for srv in server.servers for s in srv.sockets]
    return int(sockets[0].getsockname()[1]) if sockets else None


class LabDaemonServer:
    """Serve ``daemon`` at ``http://host:port``; ``port=0`` picks a free port (see ``url``).

    Binds to loopback by default. A non-loopback ``host`` needs ``tokens`` unless
    ``allow_remote_without_auth=True`` says otherwise on purpose. Bound to loopback, it
    answers only to loopback ``Host`` names and ``allowed_hosts`` (a reverse proxy's
    public name). Pages from other origins may call it only
    when listed in ``cors_origins``. One client may hold ``max_streams_per_client`` open
    streams, and the server ``max_connections`` connections in all (503 past that).
    """

    def __init__(
        self,
        daemon: LabDaemon,
        host: str = "127.0.0.1",
        port: int = 5000,
        tokens: Mapping[str, str] | None = None,
        call_timeout: float = 30.0,
        *,
        heartbeat_interval: float = 15.0,
        max_body_bytes: int = 10 * 1024 * 1024,
        max_json_depth: int = 64,
        max_streams_per_client: int | None = 64,
        max_connections: int | None = 1000,
        cors_origins: Iterable[str] = (),
        allowed_hosts: Iterable[str] = (),
        allow_remote_without_auth: bool = False,
        log_level: str = "warning",
    ) -> None:
        if not is_loopback(host) and not tokens and not allow_remote_without_auth:
            raise ValueError(
                f"refusing to serve on non-loopback address {host!r} without tokens: configure"
                " tokens={...} or pass allow_remote_without_auth=True to accept anyone who can"
                " reach this port"
            )
        self.daemon = daemon
        self.host = host
        self.port = port
        self.app: LabdApp = create_app(
            daemon,
            tokens=tokens,
            call_timeout=call_timeout,
            heartbeat_interval=heartbeat_interval,
            max_body_bytes=max_body_bytes,
            max_json_depth=max_json_depth,
            max_streams_per_client=max_streams_per_client,
            cors_origins=cors_origins,
            trusted_hosts=(
                LOOPBACK_NAMES | {host.lower(), *map(str.lower, allowed_hosts)}
                if is_loopback(host)
                else None
            ),
        )
        self._config = uvicorn.Config(
            self.app,
            host=host,
            port=port,
            log_level=log_level,
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=3,
            ws="none",
            limit_concurrency=max_connections,
        )
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._bound_port: int | None = None
        self._failure: BaseException | None = None

    @property
    def url(self) -> str:
        """The base URL clients use (with the real port once started)."""
        port = self._bound_port if self._bound_port is not None else self.port
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{port}"

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self, blocking: bool = False, timeout: float = 10.0) -> None:
        """Start serving: on a ``labd-server`` thread, or in this thread with ``blocking=True``."""
        if self._server is not None:
            raise RuntimeError("server already started")
        self._check_address()
        self._server = uvicorn.Server(self._config)
        if blocking:
            self._serve()
            return
        self._thread = threading.Thread(target=self._serve, name="labd-server", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started or self._bound_port is None:
            if isinstance(self._failure, OSError):
                raise self._failure
            if self._failure is not None or not self._thread.is_alive():
                raise RuntimeError(
                    f"server failed to start on {self.host}:{self.port}: {self._failure}"
                ) from self._failure
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"server did not start within {timeout} s")
            time.sleep(0.01)
        if self._bound_port is None:
            # ``started`` turns true before the loop thread has noted the port.
            self._bound_port = _bound_port(self._server)
        log.info("labd server listening on %s", self.url)

    def _check_address(self) -> None:
        """Fail with a clear OSError when the address cannot be bound (uvicorn would exit)."""
        if self.port == 0:
            return
        try:
            infos = socket.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise OSError(f"cannot listen on {self.host}:{self.port}: {exc}") from exc
        family, kind, proto, _, address = infos[0]
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(address)
            except OSError as exc:
                raise OSError(
                    f"cannot listen on {self.host}:{self.port}: {exc.strerror or exc}"
                ) from exc

    def _serve(self) -> None:
        assert self._server is not None
        try:
            # uvicorn's choice of loop: uvloop when installed (labd[server] installs it).
            with asyncio.Runner(loop_factory=self._config.get_loop_factory()) as runner:
                runner.run(self._main())
        except SystemExit as exc:  # uvicorn exits when it cannot bind
            self._failure = OSError(
                f"cannot listen on {self.host}:{self.port} (address in use or not available)"
            )
            log.error("server could not start: %s", self._failure)
            if self._thread is None:
                raise self._failure from exc
        except BaseException as exc:
            self._failure = exc
            log.error("server stopped with an error: %s", exc)
            if self._thread is None:
                raise

    async def _main(self) -> None:
        assert self._server is not None
        self._loop = asyncio.get_running_loop()
        task = asyncio.create_task(self._server.serve())
        while not self._server.started and not task.done():  # noqa: ASYNC110 - uvicorn has no started event
            await asyncio.sleep(0.01)
        if self._server.started and self._bound_port is None:
            self._bound_port = _bound_port(self._server)
        await task
        if not self._server.started and task.exception() is None:
            raise RuntimeError(f"could not bind {self.host}:{self.port}")

    def stop(self, timeout: float = 5.0) -> None:
        """Close SSE streams, stop uvicorn and join the server thread; idempotent."""
        ctx = self.app.ctx
        ctx.closing = True
        loop = self._loop
        if loop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(ctx.bridge.wake_all)
            except RuntimeError:
                pass
        if self._server is not None:
            self._server.should_exit = True
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
            if thread.is_alive():
                log.warning("server thread did not stop within %s s", timeout)
                if self._server is not None:
                    self._server.force_exit = True
                thread.join(1.0)
        ctx.bridge.close(timeout=1.0)

    def __enter__(self) -> LabDaemonServer:
        if self._server is None:
            self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()
