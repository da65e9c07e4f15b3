"""Commands that serve a lab: ``labd demo`` (simulated instruments) and ``labd serve CONFIG``."""

from __future__ import annotations

import logging
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Annotated, Any

import typer

from labd.cli.app import UsageProblem, app, console, err_console, reporting_errors
from labd.config import ROLES, LabConfig, ServerOptions
from labd.daemon import LabDaemon

__all__ = ["parse_tokens", "serve_until_stopped"]

log = logging.getLogger(__name__)

_DEFAULT_HOST = "127.0.0.1"
_DEFAULT_PORT = 5000
_STOP_POLL_S = 0.5

HostOption = Annotated[
    str | None,
    typer.Option("--host", help=f"Address to bind (default {_DEFAULT_HOST}).", show_default=False),
]
PortOption = Annotated[
    int | None,
    typer.Option(
        "--port",
        min=0,
        max=65535,
        help=f"Port to bind; 0 picks a free one (default {_DEFAULT_PORT}).",
        show_default=False,
    ),
]
ServerTokenOption = Annotated[
    list[str] | None,
    typer.Option(
        "--token",
        help="Require this token (repeatable). SECRET gives the admin role;"
        " ROLE:SECRET (viewer, operator, admin) gives that role.",
        show_default=False,
    ),
]
RemoteOption = Annotated[
    bool,
    typer.Option(
        "--allow-remote-without-auth",
        help="Allow a non-loopback --host without tokens (anyone who can reach the port).",
    ),
]
CorsOption = Annotated[
    list[str] | None,
    typer.Option(
        "--cors-origin",
        help="Let pages from this origin (e.g. https://lab.example.org) use the API"
        " (repeatable; closed by default).",
        show_default=False,
    ),
]
LogLevelOption = Annotated[
    str, typer.Option("--log-level", help="Log level: debug, info, warning, error.")
]


def parse_tokens(values: list[str]) -> dict[str, str]:
    """``--token`` values to a token → role table: ``SECRET`` is admin, ``ROLE:SECRET`` is ROLE."""
    tokens: dict[str, str] = {}
    for value in values:
        role, sep, secret = value.partition(":")
        if not (sep and role in ROLES):
            role, secret = "admin", value
        if not secret:
            raise UsageProblem("--token needs a non-empty secret")
        tokens[secret] = role
    return tokens


def _configure_logging(level: str) -> None:
    number = logging.getLevelName(level.upper())
    if not isinstance(number, int):
        raise UsageProblem(f"unknown --log-level {level!r}")
    root = logging.getLogger()
    # Under a test runner or an embedding program the root logger is already set up.
    if not root.handlers:
        logging.basicConfig(
            level=number,
            stream=sys.stderr,
            format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        )


@contextmanager
def _stop_signals(stop: threading.Event) -> Iterator[None]:
    """SIGINT and SIGTERM set ``stop``; a second SIGINT falls back to KeyboardInterrupt."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_signal(signum: int, frame: FrameType | None) -> None:
        if stop.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        stop.set()

    previous: dict[signal.Signals, Any] = {}
    for signum in (signal.SIGINT, signal.SIGTERM):
        previous[signum] = signal.signal(signum, on_signal)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def serve_until_stopped(
    daemon: LabDaemon,
    options: ServerOptions,
    describe: Callable[[str], list[str]],
) -> None:
    """Serve ``daemon`` until Ctrl-C or SIGTERM, then stop the server and shut the daemon down.

    ``describe(url)`` gives the lines printed once the server listens (the first names the URL
    with the real port).
    """
    try:
        from labd.server import LabDaemonServer
    except ImportError as exc:
        raise UsageProblem(
            f"the server needs the server extra: pip install 'labd[server]' ({exc})"
        ) from exc
    kwargs = options.merged(host=options.host or _DEFAULT_HOST).server_kwargs()
    kwargs.setdefault("port", _DEFAULT_PORT)
    try:
        server = LabDaemonServer(daemon, **kwargs)
    except ValueError as exc:
        raise UsageProblem(str(exc)) from exc
    stop = threading.Event()
    with _stop_signals(stop):
        try:
            server.start()
        except OSError as exc:
            raise RuntimeError(f"{exc} (another server? try --port)") from None
        try:
            for line in describe(server.url):
                console.print(line, soft_wrap=True, highlight=False)
            console.file.flush()
            while not stop.wait(_STOP_POLL_S):
                if not server.running:
                    raise RuntimeError("the server stopped unexpectedly (see the log above)")
        except KeyboardInterrupt:
            pass
        finally:
            err_console.print("stopping ...", style="dim")
            server.stop()
            daemon.shutdown(timeout=5.0)
    err_console.print("stopped", style="dim")


def _banner(
    title: str, daemon: LabDaemon, tokens: dict[str, str] | None
) -> Callable[[str], list[str]]:
    def describe(url: str) -> list[str]:
        lines = [
            f"{title} listening on {url}",
            f"dashboard: {url}/ui/",
            f"devices: {', '.join(daemon.list_devices()) or '(none)'}",
            f"task types: {', '.join(sorted(daemon.task_types())) or '(none)'}",
        ]
        if tokens:
            roles = ", ".join(sorted(set(tokens.values())))
            lines.append(f"auth: {len(tokens)} token(s) required ({roles})")
        lines.append("Press Ctrl-C to stop.")
        return lines

    return describe


@app.command()
def demo(
    ctx: typer.Context,
    host: HostOption = None,
    port: PortOption = None,
    token: ServerTokenOption = None,
    allow_remote_without_auth: RemoteOption = False,
    cors_origin: CorsOption = None,
    log_level: LogLevelOption = "warning",
) -> None:
    """Serve simulated instruments (daq1, laser1, meter1, camera1) and the sweep task."""
    with reporting_errors(ctx):
        _configure_logging(log_level)
        from labd.sim import setup_demo

        tokens = parse_tokens(list(token or [])) or None
        options = ServerOptions(
            host=host,
            port=port,
            tokens=tokens,
            allow_remote_without_auth=allow_remote_without_auth or None,
            cors_origins=tuple(cors_origin) if cors_origin else None,
        )
        daemon = LabDaemon()
        try:
            setup_demo(daemon)
        except BaseException:
            daemon.shutdown(timeout=5.0)
            raise
        _serve_built(daemon, options, _banner("labd demo", daemon, tokens))


@app.command()
def serve(
    ctx: typer.Context,
    config: Annotated[
        Path,
        typer.Argument(
            metavar="CONFIG", help="Lab file: lab.toml, or lab.py defining setup(daemon)."
        ),
    ],
    host: HostOption = None,
    port: PortOption = None,
    token: ServerTokenOption = None,
    allow_remote_without_auth: RemoteOption = False,
    cors_origin: CorsOption = None,
    log_level: LogLevelOption = "warning",
) -> None:
    """Serve the lab described by CONFIG (a TOML lab file or a Python setup file).

    Command-line options override the file's server table; --token replaces its tokens.
    """
    with reporting_errors(ctx):
        _configure_logging(log_level)
        lab = LabConfig.load(config)
        daemon = LabDaemon()
        try:
            configured = lab.build(daemon)
        except BaseException:
            daemon.shutdown(timeout=5.0)
            raise
        options = configured.merged(
            host=host,
            port=port,
            tokens=parse_tokens(list(token)) if token else None,
            allow_remote_without_auth=allow_remote_without_auth or None,
            cors_origins=tuple(cors_origin) if cors_origin else None,
        )
        _serve_built(daemon, options, _banner(f"labd ({config.name})", daemon, options.tokens))


def _serve_built(
    daemon: LabDaemon, options: ServerOptions, describe: Callable[[str], list[str]]
) -> None:
    try:
        serve_until_stopped(daemon, options, describe)
    finally:
        daemon.shutdown(timeout=5.0)
