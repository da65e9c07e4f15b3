"""Client commands about tasks: ``tasks``, ``task-types`` and ``run-task`` with a progress bar."""

from __future__ import annotations

import secrets
import time
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.progress import (
    BarColumn,
    Progress,
    SpinnerColumn,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table
from rich.text import Text

from labd.cli.app import (
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    JsonOption,
    TokenOption,
    UrlOption,
    UsageProblem,
    app,
    console,
    err_console,
    error_line,
    print_json,
    reporting_errors,
)
from labd.cli.devices import parse_value
from labd.client import ServerAPI
from labd.exceptions import ServerAPIError
from labd.wire import FINAL_TASK_STATUSES, parse_timestamp

__all__ = ["EXIT_CANCELLED", "parse_params"]

EXIT_CANCELLED = 3
_FINAL = FINAL_TASK_STATUSES
_STATUS_STYLE = {
    "running": "cyan",
    "paused": "yellow",
    "completed": "green",
    "failed": "red",
    "cancelled": "magenta",
}
_CANCEL_WAIT_S = 15.0


def parse_params(items: list[str]) -> dict[str, Any]:
    """``["start_nm=1540", "laser=laser1"]`` → ``{"start_nm": 1540, "laser": "laser1"}``."""
    params: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UsageProblem(f"--param expects key=value, got {item!r}")
        if key in params:
            raise UsageProblem(f"--param {key} given twice")
        params[key] = parse_value(value)
    return params


def _status_text(status: Any) -> Text:
    return Text(str(status), style=_STATUS_STYLE.get(str(status), ""))


def _percent(progress: Any) -> str:
    if isinstance(progress, (int, float)) and not isinstance(progress, bool):
        return f"{100.0 * progress:.0f}%"
    return "-"


def _time_of(stamp: Any) -> str:
    # ISO-8601 timestamps: show the time of day, seconds precision.
    if not isinstance(stamp, str) or "T" not in stamp:
        return "-"
    return stamp.split("T", 1)[1][:8]


def _duration(started: Any, finished: Any) -> str:
    if not isinstance(started, str):
        return "-"
    try:
        begin = parse_timestamp(started)
        end = parse_timestamp(finished) if finished else time.time()
    except (TypeError, ValueError):
        return "-"
    return f"{max(end - begin, 0.0):.1f} s"


@app.command()
def tasks(
    ctx: typer.Context,
    url: UrlOption = None,
    token: TokenOption = None,
    as_json: JsonOption = False,
) -> None:
    """List running and recently finished tasks."""
    with reporting_errors(ctx) as state, state.api(url, token) as api:
        infos = api.list_tasks()
        if as_json:
            print_json(infos)
            return
        if not infos:
            console.print("no tasks", style="dim")
            return
        table = Table(title=f"tasks at {state.url}", title_justify="left")
        table.add_column("id", style="bold", no_wrap=True)
        table.add_column("type")
        table.add_column("status", no_wrap=True)
        table.add_column("progress", justify="right", no_wrap=True)
        table.add_column("started", no_wrap=True)
        table.add_column("took", justify="right", no_wrap=True)
        table.add_column("devices")
        table.add_column("message", overflow="fold")
        for info in infos:
            table.add_row(
                str(info.get("task_id")),
                str(info.get("task_type")),
                _status_text(info.get("status")),
                _percent(info.get("progress")),
                _time_of(info.get("started_at")),
                _duration(info.get("started_at"), info.get("finished_at")),
                ", ".join(info.get("device_ids") or []),
                str(info.get("message") or ""),
            )
        console.print(table)


@app.command("task-types")
def task_types(
    ctx: typer.Context,
    url: UrlOption = None,
    token: TokenOption = None,
    as_json: JsonOption = False,
) -> None:
    """List the task types the server can run, with their parameters."""
    with reporting_errors(ctx) as state, state.api(url, token) as api:
        types = api.list_task_types()
        if as_json:
            print_json(types)
            return
        table = Table(title=f"task types at {state.url}", title_justify="left")
        table.add_column("type", style="bold", no_wrap=True)
        table.add_column("parameters", overflow="fold")
        table.add_column("description", overflow="fold")
        for entry in types if isinstance(types, list) else []:
            params = []
            for p in entry.get("parameters", []):
                if p.get("name") == "task_id":
                    continue
                text = str(p.get("name"))
                if not p.get("required", False):
                    text += f"={p.get('default')!r}"
                params.append(text)
            doc = str(entry.get("doc") or "").strip().splitlines()
            table.add_row(str(entry.get("name")), ", ".join(params), doc[0] if doc else "")
        console.print(table)


@app.command("run-task")
def run_task(
    ctx: typer.Context,
    task_type: Annotated[str, typer.Argument(metavar="TYPE", help="Registered task type.")],
    task_id: Annotated[
        str | None, typer.Option("--id", help="Task id (default: TYPE-<time>-<random>).")
    ] = None,
    param: Annotated[
        list[str] | None,
        typer.Option(
            "--param",
            "-p",
            help="Task parameter key=value (value parsed as JSON when it parses); repeatable.",
            show_default=False,
        ),
    ] = None,
    detach: Annotated[
        bool, typer.Option("--detach", help="Start the task, print its id and return.")
    ] = False,
    indent: Annotated[
        int | None, typer.Option("--indent", help="Pretty-print the JSON result.")
    ] = None,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Run a task, show its progress, print its result as JSON.

    Exit code: 0 completed, 1 failed, 3 cancelled, 130 on Ctrl-C (which cancels the task).
    """
    with reporting_errors(ctx) as state:
        params = parse_params(list(param or []))
        task_id = task_id or f"{task_type}-{time.strftime('%H%M%S')}-{secrets.token_hex(2)}"
        with state.api(url, token) as api:
            api.execute_task(task_id, task_type, params)
            if detach:
                console.print(task_id, highlight=False)
                return
            try:
                err_console.print(
                    f"started task [bold]{escape(task_id)}[/] ({escape(task_type)})",
                    highlight=False,
                )
                _follow(state.sse(reconnect=False).iter_task_stream(task_id), task_id)
            except KeyboardInterrupt:
                _cancel(api, task_id)
                raise typer.Exit(EXIT_INTERRUPTED) from None
            info = api.get_task(task_id)
            if info["status"] not in _FINAL:  # the stream ended early: wait by polling
                info = api.wait_task(task_id, poll_interval=0.5)
        code = _report(info, indent)
        if code:
            raise typer.Exit(code)


def _follow(events: Any, task_id: str) -> None:
    """Drive a progress bar from the task's event stream until its final status."""
    progress = Progress(
        SpinnerColumn(),
        TextColumn("{task.description}", markup=False),
        BarColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[message]}", markup=False),
        console=err_console,
        auto_refresh=False,
    )
    try:
        with progress:
            bar = progress.add_task(task_id, total=None, message="")
            for event in events:
                kind = event.get("event")
                if kind == "task_progress":
                    fraction = event.get("progress")
                    message = event.get("message")
                    if isinstance(fraction, (int, float)) and not isinstance(fraction, bool):
                        progress.update(bar, total=1.0, completed=min(max(fraction, 0.0), 1.0))
                    if message is not None:
                        progress.update(bar, message=str(message))
                elif kind == "task_status":
                    status = str(event.get("status"))
                    if status == "completed":
                        progress.update(bar, total=1.0, completed=1.0)
                    progress.update(bar, description=f"{task_id} ({status})")
                    if status in _FINAL:
                        progress.refresh()
                        return
                progress.refresh()
    finally:
        events.close()
        if not err_console.is_terminal:
            err_console.line()  # rich leaves the last frame unterminated when not on a terminal


def _cancel(api: ServerAPI, task_id: str) -> None:
    err_console.print(f"cancelling task {task_id} ...", style="yellow")
    try:
        api.cancel_task(task_id)
        info = api.wait_task(task_id, timeout=_CANCEL_WAIT_S, poll_interval=0.2)
        err_console.print(f"task {task_id} {info['status']}", style="yellow")
    except (ServerAPIError, TimeoutError) as exc:
        error_line(f"could not confirm that task {task_id} stopped: {exc}")


def _report(info: Any, indent: int | None) -> int:
    """Print the outcome of a finished task; returns the exit code."""
    task_id, status = info.get("task_id"), info.get("status")
    if status == "completed":
        print_json(info.get("result"), indent=indent)
        return 0
    if status == "cancelled":
        err_console.print(f"task {task_id} was cancelled", style="magenta")
        if info.get("result") is not None:
            print_json(info.get("result"), indent=indent)
        return EXIT_CANCELLED
    error = info.get("exception")
    if isinstance(error, dict):
        detail = f"{error.get('type', 'Error')}: {error.get('message', '')}"
    else:
        detail = str(error)
    error_line(f"task {task_id} {status}: {detail}")
    return EXIT_FAILURE
