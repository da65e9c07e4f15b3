"""``labd stream DEVICE``: watch a device stream live (rate, drops, latest value) or as JSON."""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from typing import Annotated, Any

import typer
from rich.console import RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from labd.cli.app import (
    TokenOption,
    UrlOption,
    UsageProblem,
    app,
    console,
    err_console,
    print_json,
    reporting_errors,
)

__all__ = ["StreamStats", "summarize"]

_REFRESH_S = 0.1
_IDLE_REFRESH_HZ = 2.0
_RATE_WINDOW_S = 1.0
_VALUE_CHARS = 120


@dataclass
class StreamStats:
    """Counts for one watched stream: events, sequence-gap drops, rate and the latest datum."""

    device_id: str
    received: int = 0
    dropped: int = 0
    last_sequence: int | None = None
    last_run: Any = None
    latest: Any = None
    latest_timestamp: str | None = None
    rate_hz: float = 0.0
    state: str = "waiting for data"
    last_error: str | None = None
    _window_start: float = field(default_factory=time.monotonic)
    _window_count: int = 0
    _last_data_at: float | None = None

    def add(self, envelope: dict[str, Any]) -> None:
        """Account for one ``device_data`` envelope."""
        sequence = envelope.get("sequence")
        run = envelope.get("run")
        if isinstance(sequence, int):
            restarted = run != self.last_run or (
                self.last_sequence is not None and sequence <= self.last_sequence
            )
            if self.last_sequence is not None and not restarted:
                self.dropped += sequence - self.last_sequence - 1
            self.last_sequence, self.last_run = sequence, run
        self.received += 1
        self._window_count += 1
        self._last_data_at = time.monotonic()
        self.latest = envelope.get("payload")
        self.latest_timestamp = envelope.get("timestamp")
        self.state = "streaming"

    def update_rate(self, now: float | None = None) -> None:
        """Recompute ``rate_hz`` once the current window is long enough."""
        now = time.monotonic() if now is None else now
        span = now - self._window_start
        if span >= _RATE_WINDOW_S:
            self.rate_hz = self._window_count / span
            self._window_start, self._window_count = now, 0
        elif self.rate_hz == 0.0 and span > 0.1:
            self.rate_hz = self._window_count / span  # provisional, until a full window

    def quiet_for(self, now: float | None = None) -> float:
        """Seconds since the last datum while streaming, 0 when data are arriving."""
        if self.state != "streaming" or self._last_data_at is None:
            return 0.0
        now = time.monotonic() if now is None else now
        idle = now - self._last_data_at
        return idle if idle >= _RATE_WINDOW_S else 0.0

    def render(self, now: float | None = None) -> RenderableType:
        """The live view: one row per figure (only reads the counts: any thread may draw)."""
        grid = Table.grid(padding=(0, 2))
        grid.add_column(style="bold")
        grid.add_column()
        quiet = self.quiet_for(now)
        state = f"streaming, no data for {quiet:.0f} s" if quiet else self.state
        style = {"streaming": "green", "ended": "yellow", "error": "red"}.get(self.state, "dim")
        grid.add_row("device", self.device_id)
        grid.add_row("state", Text(state, style="yellow" if quiet else style))
        grid.add_row("received", str(self.received))
        grid.add_row("rate", f"{0.0 if quiet else self.rate_hz:,.1f} /s")
        grid.add_row("dropped", Text(str(self.dropped), style="red" if self.dropped else ""))
        grid.add_row("sequence", "-" if self.last_sequence is None else str(self.last_sequence))
        grid.add_row("timestamp", self.latest_timestamp or "-")
        grid.add_row("latest", summarize(self.latest) if self.received else "-")
        if self.last_error:
            grid.add_row("error", Text(self.last_error, style="red"))
        return grid


def _shape(value: Any) -> tuple[int, ...] | None:
    shape: list[int] = []
    while isinstance(value, list):
        shape.append(len(value))
        if not value:
            break
        value = value[0]
    return tuple(shape) if shape else None


def _number(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return json.dumps(value, default=str)
    if isinstance(value, float) and math.isfinite(value):
        return f"{value:.6g}"
    return str(value)


def _flat_numbers(value: Any, limit: int) -> list[float]:
    found: list[float] = []
    stack = [value]
    while stack and len(found) < limit:
        item = stack.pop(0)
        if isinstance(item, list):
            stack[:0] = item
        elif isinstance(item, (int, float)) and not isinstance(item, bool):
            found.append(float(item))
    return found


def summarize(value: Any, width: int = _VALUE_CHARS) -> str:
    """A short one-line description of a datum: numbers, array shape and head, dict fields."""
    if isinstance(value, list):
        shape = _shape(value) or (0,)
        dims = "x".join(str(n) for n in shape)
        if len(shape) > 1:
            numbers = _flat_numbers(value, 100_000)
            if numbers:
                text = (
                    f"array {dims}  min {min(numbers):.4g}  max {max(numbers):.4g}"
                    f"  mean {sum(numbers) / len(numbers):.4g}"
                )
            else:
                text = f"array {dims}"
        else:
            items = ", ".join(_number(v) for v in value[:6])
            more = ", ..." if len(value) > 6 else ""
            text = f"[{items}{more}]  ({dims})" if value else "[]"
    elif isinstance(value, dict):
        text = "{" + ", ".join(f"{k}: {summarize(v, 40)}" for k, v in value.items()) + "}"
    elif isinstance(value, str):
        text = value
    else:
        text = _number(value)
    return text if len(text) <= width else text[: width - 3] + "..."


@app.command()
def stream(
    ctx: typer.Context,
    device: Annotated[str, typer.Argument(metavar="DEVICE", help="Device id, e.g. daq1.")],
    count: Annotated[
        int | None, typer.Option("--count", "-n", help="Exit after N data events.", min=1)
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print every event envelope as one JSON line.")
    ] = False,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Watch DEVICE's stream: rate, drops (sequence gaps) and latest value, live.

    Subscribing starts the stream if it is not running; Ctrl-C stops watching (exit 0).
    """
    with reporting_errors(ctx) as state:
        if count is not None and count < 1:
            raise UsageProblem("--count must be at least 1")
        with state.api(url, token) as api:
            api.get_device(device)  # unknown device, bad token or no server: fail here, clearly
        stats = StreamStats(device)
        events = state.sse(reconnect=True).iter_device_stream(device)
        try:
            if as_json:
                _follow_json(events, stats, count)
            else:
                _follow_live(events, stats, count)
        except KeyboardInterrupt:
            err_console.print(f"stopped watching {device}", style="dim")
        finally:
            events.close()
        if stats.state == "ended":
            err_console.print(f"stream of {device} ended", style="yellow")


def _account(envelope: dict[str, Any], stats: StreamStats) -> bool:
    """Update ``stats``; returns True for a data event."""
    kind = envelope.get("event")
    if kind == "device_data":
        stats.add(envelope)
        return True
    if kind == "stream_error":
        stats.state = "error"
        error = envelope.get("error")
        if isinstance(error, dict):
            stats.last_error = f"{error.get('type', 'Error')}: {error.get('message', '')}"
        else:
            stats.last_error = str(error)
    elif kind == "stream_end":
        stats.state = "ended"
    return False


def _follow_json(events: Any, stats: StreamStats, count: int | None) -> None:
    for envelope in events:
        print_json(envelope)
        if _account(envelope, stats) and count is not None and stats.received >= count:
            return


def _follow_live(events: Any, stats: StreamStats, count: int | None) -> None:
    # This loop redraws as data arrive; rich's refresh thread (stopped when the view
    # closes) redraws a few times a second too, so a stream that goes quiet shows it.
    with Live(
        get_renderable=stats.render, console=console, refresh_per_second=_IDLE_REFRESH_HZ
    ) as live:
        last_draw = 0.0
        try:
            for envelope in events:
                is_data = _account(envelope, stats)
                done = is_data and count is not None and stats.received >= count
                now = time.monotonic()
                stats.update_rate(now)
                if done or not is_data or now - last_draw >= _REFRESH_S:
                    live.refresh()
                    last_draw = now
                if done:
                    return
        finally:
            live.refresh()
    if not console.is_terminal:
        console.line()  # rich leaves the last frame unterminated when not on a terminal
