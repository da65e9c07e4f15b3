"""Client commands about the server and its devices: ``health``, ``devices``, ``call``."""

from __future__ import annotations

import json
import re
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from labd.cli.app import (
    JsonOption,
    TokenOption,
    UrlOption,
    UsageProblem,
    app,
    console,
    print_json,
    reporting_errors,
)

__all__ = ["parse_call_arguments", "parse_value"]

# ``name=value`` makes a keyword argument; ``name`` must be a Python identifier, so a
# positional string containing "=" can still be passed as JSON: '"a=b"'.
_KEYWORD = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)=(.*)", re.DOTALL)


def parse_value(text: str) -> Any:
    """``text`` parsed as JSON when it parses (``1.5``, ``true``, ``[1,2]``), else the string."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def parse_call_arguments(items: list[str]) -> tuple[list[Any], dict[str, Any]]:
    """Split command-line words into positional and keyword arguments for a device call."""
    args: list[Any] = []
    kwargs: dict[str, Any] = {}
    for item in items:
        match = _KEYWORD.fullmatch(item)
        if match is None:
            if kwargs:
                raise UsageProblem(
                    f"positional argument {item!r} follows keyword arguments; put it first"
                )
            args.append(parse_value(item))
            continue
        name, value = match.groups()
        if name in kwargs:
            raise UsageProblem(f"keyword argument {name!r} given twice")
        kwargs[name] = parse_value(value)
    return args, kwargs


@app.command()
def health(
    ctx: typer.Context,
    url: UrlOption = None,
    token: TokenOption = None,
    as_json: JsonOption = False,
) -> None:
    """Check that the server answers (GET /health); exit code 0 when healthy."""
    with reporting_errors(ctx) as state, state.api(url, token) as api:
        body = api.health()
        if as_json:
            print_json(body)
            return
        status = str(body.get("status", "unknown"))
        style = "green" if status == "healthy" else "red"
        console.print(
            Text.assemble(
                (status, f"bold {style}"), f"  {state.url}  ", str(body.get("timestamp"))
            ),
            soft_wrap=True,
        )
        if status != "healthy":
            raise typer.Exit(1)


def _yes_no(value: Any) -> Text:
    return Text("yes", style="green") if value else Text("no", style="dim")


def _error_text(error: Any) -> str:
    if not isinstance(error, dict):
        return ""
    return f"{error.get('type', 'Error')}: {error.get('message', '')}"


@app.command()
def devices(
    ctx: typer.Context,
    url: UrlOption = None,
    token: TokenOption = None,
    as_json: JsonOption = False,
) -> None:
    """List the server's devices: type, connected, streaming, owning task, last error."""
    with reporting_errors(ctx) as state, state.api(url, token) as api:
        infos = api.list_devices()
        if as_json:
            print_json(infos)
            return
        if not infos:
            console.print("no devices", style="dim")
            return
        table = Table(title=f"devices at {state.url}", title_justify="left")
        table.add_column("id", style="bold", no_wrap=True)
        table.add_column("type")
        table.add_column("connected")
        table.add_column("streaming")
        table.add_column("owner")
        table.add_column("last error", style="red", overflow="fold")
        for info in infos:
            owner = info.get("owned_by")
            table.add_row(
                str(info.get("device_id")),
                str(info.get("device_type")),
                _yes_no(info.get("connected")),
                _yes_no(info.get("streaming")),
                Text(str(owner)) if owner else Text("-", style="dim"),
                _error_text(info.get("last_error")),
            )
        console.print(table)


@app.command(
    context_settings={"ignore_unknown_options": True, "allow_interspersed_args": True},
)
def call(
    ctx: typer.Context,
    device: Annotated[str, typer.Argument(metavar="DEVICE", help="Device id, e.g. laser1.")],
    method: Annotated[
        str, typer.Argument(metavar="METHOD", help="Public method name, e.g. set_wavelength.")
    ],
    arguments: Annotated[
        list[str] | None,
        typer.Argument(
            metavar="ARGS",
            help="Arguments: each parsed as JSON when it parses, else a string;"
            " name=value gives a keyword argument.",
            show_default=False,
        ),
    ] = None,
    url: UrlOption = None,
    token: TokenOption = None,
    call_timeout: Annotated[
        float | None,
        typer.Option("--call-timeout", help="Server-side timeout of this call in seconds."),
    ] = None,
    indent: Annotated[
        int | None, typer.Option("--indent", help="Pretty-print the JSON result.")
    ] = None,
) -> None:
    """Call METHOD on DEVICE and print its result as JSON.

    Example: labd call laser1 set_wavelength 1550.5 ; labd call daq1 set_rate hz=200
    """
    with reporting_errors(ctx) as state:
        args, kwargs = parse_call_arguments(list(arguments or []))
        with state.api(url, token) as api:
            result = api.call_device_method(device, method, args, kwargs, timeout=call_timeout)
        print_json(result, indent=indent)
