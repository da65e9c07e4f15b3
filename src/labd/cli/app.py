"""The ``labd`` typer application: global options, consoles, error reporting, JSON output.

Command modules (``lab``, ``devices``, ``stream``, ``tasks``) register their commands on
:data:`app`. Every command runs its body inside :func:`reporting_errors`, which turns an
exception into one red ``error: ...`` line and an exit code (the traceback only with
``--debug``).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from labd import __version__
from labd.client import ServerAPI, SSEClient
from labd.config import ConfigError
from labd.exceptions import ServerAPIError, ServerConnectionError, error_text

__all__ = [
    "DEFAULT_URL",
    "EXIT_FAILURE",
    "EXIT_INTERRUPTED",
    "EXIT_USAGE",
    "CliState",
    "UsageProblem",
    "app",
    "console",
    "describe_error",
    "err_console",
    "error_line",
    "print_json",
    "reporting_errors",
    "state_of",
]

DEFAULT_URL = "http://127.0.0.1:5000"

EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

# Results and tables go to stdout so they can be piped; messages and progress to stderr.
console = Console()
err_console = Console(stderr=True)

app = typer.Typer(
    name="labd",
    help="Run a labd server (demo or from a lab file) and talk to a running one.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


class UsageProblem(ValueError):
    """Arguments the command cannot use (reported as one line, exit code 2)."""


@dataclass
class CliState:
    """Options given before the command: ``labd --url X --token T --debug <command>``."""

    url: str = DEFAULT_URL
    token: str | None = None
    debug: bool = False
    timeout: float = 10.0

    def resolve(self, url: str | None, token: str | None) -> tuple[str, str | None]:
        """The URL and token to use: the command's own options win over the global ones."""
        return (url or self.url).rstrip("/"), token if token is not None else self.token

    def api(self, url: str | None = None, token: str | None = None) -> ServerAPI:
        """A :class:`ServerAPI` for the resolved URL and token."""
        base, secret = self.resolve(url, token)
        self.url, self.token = base, secret
        return ServerAPI(base, timeout=self.timeout, token=secret)

    def sse(self, *, reconnect: bool, read_timeout: float = 30.0) -> SSEClient:
        """An :class:`SSEClient` for the URL and token an earlier :meth:`api` resolved."""
        return SSEClient(
            self.url,
            token=self.token,
            reconnect=reconnect,
            timeout=self.timeout,
            read_timeout=read_timeout,
        )


def state_of(ctx: typer.Context) -> CliState:
    """The :class:`CliState` the global callback stored (a default one under test runners)."""
    root = ctx.find_root()
    if not isinstance(root.obj, CliState):
        root.obj = CliState()
    return root.obj


UrlOption = Annotated[
    str | None,
    typer.Option(
        "--url",
        help="Server URL (overrides the global --url / LABD_URL).",
        show_default=False,
    ),
]
TokenOption = Annotated[
    str | None,
    typer.Option(
        "--token",
        help="Access token (overrides the global --token / LABD_TOKEN).",
        show_default=False,
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def _show_version(value: bool) -> None:
    if value:
        console.print(f"labd {__version__}", highlight=False)
        raise typer.Exit()


@app.callback()
def global_options(
    ctx: typer.Context,
    url: Annotated[
        str,
        typer.Option(
            "--url", envvar="LABD_URL", help="URL of the labd server for client commands."
        ),
    ] = DEFAULT_URL,
    token: Annotated[
        str | None,
        typer.Option(
            "--token",
            envvar="LABD_TOKEN",
            help="Access token for client commands.",
            show_default=False,
        ),
    ] = None,
    timeout: Annotated[
        float, typer.Option("--timeout", help="HTTP timeout in seconds for client commands.")
    ] = 10.0,
    debug: Annotated[
        bool, typer.Option("--debug", envvar="LABD_DEBUG", help="Show tracebacks on errors.")
    ] = False,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_show_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """labd: instrument control and experiment automation."""
    ctx.obj = CliState(url=url, token=token or None, debug=debug, timeout=timeout)


def print_json(value: Any, indent: int | None = None) -> None:
    """Write ``value`` as JSON to stdout: one line by default, never wrapped or coloured."""
    text = json.dumps(value, indent=indent, ensure_ascii=False, allow_nan=True, default=str)
    out = console.file
    out.write(text + "\n")
    out.flush()


def error_line(message: str) -> None:
    """Print ``error: message`` in red on stderr."""
    err_console.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True, highlight=False)


def describe_error(exc: BaseException, state: CliState) -> tuple[str, int]:
    """The one-line message and exit code for an exception a command let through."""
    if isinstance(exc, ConfigError):
        return str(exc), exc.exit_code
    if isinstance(exc, UsageProblem):
        return str(exc), EXIT_USAGE
    if isinstance(exc, ServerConnectionError):
        return f"{exc} (is the server running? `labd demo` starts one)", EXIT_FAILURE
    if isinstance(exc, ServerAPIError):
        return _describe_api_error(exc, state), EXIT_FAILURE
    text = " ".join(str(exc).split())
    if type(exc) is RuntimeError and text:
        return text, EXIT_FAILURE  # labd's own runtime problems read better without the type
    return error_text(exc), EXIT_FAILURE


def _describe_api_error(exc: ServerAPIError, state: CliState) -> str:
    error = exc.error if isinstance(exc.error, dict) else {}
    message = str(error.get("message") or exc)
    status = exc.status_code
    if status == 401:
        if state.token:
            return f"the server at {state.url} rejected the token (invalid token): {message}"
        return (
            f"the server at {state.url} needs a token: pass --token or set LABD_TOKEN ({message})"
        )
    if status == 403:
        return f"the token's role is too weak for this request: {message}"
    if error.get("origin") in ("device", "task", "callback") and error.get("type"):
        return f"{error['type']}: {message}"
    return message


@contextlib.contextmanager
def reporting_errors(ctx: typer.Context) -> Iterator[CliState]:
    """Run a command body; an exception becomes one ``error:`` line and a non-zero exit."""
    state = state_of(ctx)
    try:
        yield state
    except (typer.Exit, typer.Abort):
        raise
    except KeyboardInterrupt:
        err_console.print("interrupted", style="yellow")
        raise typer.Exit(EXIT_INTERRUPTED) from None
    except Exception as exc:
        if isinstance(exc, typer.BadParameter):
            raise
        if state.debug:
            err_console.print_exception()
        message, code = describe_error(exc, state)
        error_line(message)
        raise typer.Exit(code) from None
