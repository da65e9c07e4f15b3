"""The web dashboard at /ui/, driven in a real Chromium against a real server with the demo lab."""

from __future__ import annotations

import enum
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import pytest

CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.exists():
    if os.environ.get("CI"):  # CI installs Chromium: a missing browser is a failure there
        raise RuntimeError("CI must install Chromium at /usr/bin/chromium (see .ci/run)")
    pytest.skip("the dashboard tests need Chromium at /usr/bin/chromium", allow_module_level=True)

from playwright.sync_api import Browser, Page, sync_playwright  # noqa: E402

import labd as ld  # noqa: E402
from labd.server import LabDaemonServer  # noqa: E402
from labd.sim import setup_demo  # noqa: E402

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"
SCREENSHOT = ROOT / "docs" / "img" / "dashboard.png"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WAIT_MS = 30_000  # generous: a loaded 2-core machine runs the server, the lab and Chromium
DEMO_DEVICES = ("camera1", "daq1", "laser1", "meter1")


class Lab:
    """A demo daemon served on a free loopback port."""

    def __init__(self, tokens: dict[str, str] | None = None) -> None:
        self.daemon = ld.LabDaemon()
        setup_demo(self.daemon)
        self.server = LabDaemonServer(self.daemon, host="127.0.0.1", port=0, tokens=tokens)
        self.server.start()
        self.ui = self.server.url.rstrip("/") + "/ui/"

    def close(self) -> None:
        try:
            self.server.stop()
        finally:
            self.daemon.shutdown()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        chromium = p.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def lab() -> Iterator[Lab]:
    served = Lab()
    try:
        yield served
    finally:
        served.close()


@pytest.fixture
def auth_lab() -> Iterator[Lab]:
    served = Lab(tokens={"look-only": "viewer", "hands-on": "operator"})
    try:
        yield served
    finally:
        served.close()


@pytest.fixture
def page(browser: Browser, request: pytest.FixtureRequest) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    context.set_default_timeout(WAIT_MS)
    opened = context.new_page()
    errors: list[str] = []
    opened.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        yield opened
        assert errors == [], f"uncaught errors in the page: {errors}"
    finally:
        ARTIFACTS.mkdir(exist_ok=True)
        try:
            opened.screenshot(path=str(ARTIFACTS / f"{request.node.name}.png"), full_page=True)
        finally:
            context.close()


def tid(test_id: str) -> str:
    return f'[data-testid="{test_id}"]'


def text_of(page: Page, test_id: str) -> str:
    return page.locator(tid(test_id)).inner_text()


def wait_js(page: Page, expression: str, arg: Any = None) -> None:
    page.wait_for_function(expression, arg=arg, timeout=WAIT_MS)


def wait_count_above(page: Page, test_id: str, value: int) -> None:
    wait_js(
        page,
        "([id, v]) => { const el = document.querySelector(`[data-testid='${id}']`);"
        " return el !== null && Number(el.textContent) > v; }",
        [test_id, value],
    )


def wait_text(page: Page, test_id: str, text: str) -> None:
    wait_js(
        page,
        "([id, t]) => { const el = document.querySelector(`[data-testid='${id}']`);"
        " return el !== null && el.textContent.trim() === t; }",
        [test_id, text],
    )


def wait_contains(page: Page, test_id: str, text: str) -> None:
    wait_js(
        page,
        "([id, t]) => { const el = document.querySelector(`[data-testid='${id}']`);"
        " return el !== null && el.textContent.includes(t); }",
        [test_id, text],
    )


def open_dashboard(page: Page, lab: Lab) -> None:
    page.goto(lab.ui)
    page.wait_for_selector(tid("device-laser1"))
    page.wait_for_selector('[data-testid="events-status"][data-state="live"]')


def open_methods(page: Page, device_id: str) -> None:
    page.locator(tid(f"methods-{device_id}")).locator("summary").click()


def start_sweep(page: Page, task_id: str, **params: float) -> None:
    page.wait_for_selector('[data-testid="task-type"] option[value="sweep"]', state="attached")
    page.select_option(tid("task-type"), "sweep")
    page.fill(tid("task-id"), task_id)
    for name, value in params.items():
        page.fill(tid(f"tp-sweep-{name}"), json.dumps(value))
    page.click(tid("task-submit"))


def test_lists_demo_devices_with_status(lab: Lab, page: Page) -> None:
    open_dashboard(page, lab)
    for device_id in DEMO_DEVICES:
        assert page.locator(tid(f"device-{device_id}")).is_visible()
        assert text_of(page, f"connected-{device_id}") == "connected"
    assert "StreamingDAQ" in text_of(page, "device-daq1")


def test_method_forms_call_the_device(lab: Lab, page: Page) -> None:
    open_dashboard(page, lab)
    open_methods(page, "laser1")
    setter = page.locator(tid("method-laser1-set_wavelength"))
    setter.locator(tid("arg-laser1-set_wavelength-nm")).fill("1551.25")
    setter.locator("button[type=submit]").click()
    wait_text(page, "result-laser1-set_wavelength", "null")
    assert lab.daemon.get_device("laser1").get_wavelength() == 1551.25

    getter = page.locator(tid("method-laser1-get_wavelength"))
    assert "query" in getter.inner_text()
    getter.locator("button[type=submit]").click()
    wait_text(page, "result-laser1-get_wavelength", "1551.25")


class Filter(enum.Enum):
    OPEN = "open"
    RED = "red"


class FilterWheel:
    """A driver whose settings are annotated with a Literal and an Enum."""

    def __init__(self, device_id: str) -> None:
        self.filter = Filter.OPEN
        self.speed = "slow"

    def set_filter(self, position: Filter) -> str:
        self.filter = position
        return position.name

    def set_speed(self, speed: Literal["slow", "fast"] = "slow") -> str:
        self.speed = speed
        return speed


def test_literal_and_enum_parameters_are_drop_downs(lab: Lab, page: Page) -> None:
    wheel = lab.daemon.add_device("wheel", FilterWheel)
    open_dashboard(page, lab)
    page.wait_for_selector(tid("device-wheel"))
    open_methods(page, "wheel")
    setter = page.locator(tid("method-wheel-set_filter"))
    choice = setter.locator(tid("arg-wheel-set_filter-position"))
    assert choice.evaluate("el => el.tagName") == "SELECT"
    assert choice.locator("option").all_inner_texts() == ["open", "red"]
    choice.select_option(label="red")
    setter.locator("button[type=submit]").click()
    wait_text(page, "result-wheel-set_filter", '"RED"')
    assert wheel.filter is Filter.RED  # the device got the member, not the string

    speed = page.locator(tid("method-wheel-set_speed"))
    options = speed.locator(tid("arg-wheel-set_speed-speed")).locator("option")
    assert options.all_inner_texts() == ['default: "slow"', "slow", "fast"]
    speed.locator(tid("arg-wheel-set_speed-speed")).select_option(label="fast")
    speed.locator("button[type=submit]").click()
    wait_text(page, "result-wheel-set_speed", '"fast"')
    assert wheel.speed == "fast"


def test_device_errors_show_and_clear(lab: Lab, page: Page) -> None:
    open_dashboard(page, lab)
    open_methods(page, "laser1")
    setter = page.locator(tid("method-laser1-set_wavelength"))
    setter.locator(tid("arg-laser1-set_wavelength-nm")).fill("42")
    setter.locator("button[type=submit]").click()
    wait_contains(page, "result-laser1-set_wavelength", "ValueError")
    # The error record arrives through /stream/events and shows on the device.
    wait_contains(page, "error-laser1", "outside")
    assert "ValueError" in text_of(page, "error-laser1")
    page.click(tid("clear-error-laser1"))
    page.locator(tid("error-laser1")).wait_for(state="hidden")
    assert lab.daemon.get_last_error("laser1") is None


def test_state_changes_arrive_as_events(lab: Lab, page: Page) -> None:
    open_dashboard(page, lab)
    lab.daemon.disconnect_device("meter1")
    wait_text(page, "connected-meter1", "disconnected")
    page.click(tid("connect-meter1"))
    wait_text(page, "connected-meter1", "connected")
    assert lab.daemon.device_info("meter1")["connected"] is True


def test_stream_counter_grows(lab: Lab, page: Page) -> None:
    open_dashboard(page, lab)
    page.click(tid("stream-start-meter1"))
    page.wait_for_selector(tid("streaming-meter1"))
    page.click(tid("watch-meter1"))
    wait_count_above(page, "points-meter1", 20)
    assert page.locator(tid("stream-meter1")).get_attribute("data-kind") == "scalar"
    page.click(tid("stream-stop-meter1"))
    page.wait_for_selector(tid("streaming-meter1"), state="detached")


def test_sweep_progress_reaches_100(lab: Lab, page: Page) -> None:
    open_dashboard(page, lab)
    start_sweep(page, "short", start_nm=1550.0, stop_nm=1550.4, step_nm=0.1, dwell_s=0.001)
    page.wait_for_selector(tid("task-short"))
    wait_text(page, "task-status-short", "completed")
    wait_js(
        page,
        "() => document.querySelector('[data-testid=\"progress-short\"]')"
        ".getAttribute('aria-valuenow') === '100'",
    )
    assert text_of(page, "progress-short") == "100%"
    assert "wavelength_nm" in text_of(page, "task-result-short")
    assert lab.daemon.get_task("short").status == "completed"


def test_pause_edit_resume_and_cancel_long_sweep(lab: Lab, page: Page) -> None:
    open_dashboard(page, lab)
    start_sweep(page, "long", start_nm=1500.0, stop_nm=1600.0, step_nm=0.01, dwell_s=0.2)
    wait_text(page, "task-status-long", "running")
    # the devices it claims show their owner
    page.wait_for_selector(tid("owner-laser1"))

    page.click(tid("pause-long"))
    wait_text(page, "task-status-long", "paused")
    page.fill(tid("param-key-long"), "dwell_s")
    page.fill(tid("param-value-long"), "0.05")
    page.click(f"{tid('param-long')} button[type=submit]")
    wait_contains(page, "param-result-long", "dwell_s = 0.05")
    assert lab.daemon.get_task("long").get_parameter("dwell_s") == 0.05
    page.fill(tid("param-key-long"), "laser")
    page.click(f"{tid('param-long')} button[type=submit]")
    wait_contains(page, "param-result-long", "KeyError")
    page.click(tid("resume-long"))
    wait_text(page, "task-status-long", "running")

    page.click(tid("cancel-long"))
    wait_text(page, "task-status-long", "cancelled")
    assert lab.daemon.get_task("long").status == "cancelled"
    page.wait_for_selector(tid("owner-laser1"), state="detached")


def test_asks_for_a_token_then_works(auth_lab: Lab, page: Page) -> None:
    page.goto(auth_lab.ui)
    page.wait_for_selector(tid("token-input"), state="visible")
    assert page.locator(tid("device-laser1")).count() == 0

    page.fill(tid("token-input"), "look-only")
    page.click(tid("token-submit"))
    page.wait_for_selector(tid("device-laser1"))
    page.wait_for_selector('[data-testid="events-status"][data-state="live"]')
    page.click(tid("stream-start-daq1"))
    page.wait_for_selector(tid("notice"), state="visible")
    assert "role too low" in text_of(page, "notice-text")

    page.click(tid("token-change"))
    page.fill(tid("token-input"), "hands-on")
    page.click(tid("token-submit"))
    page.wait_for_selector(tid("token-form"), state="hidden")
    open_methods(page, "laser1")
    page.locator(tid("method-laser1-get_wavelength")).locator("button[type=submit]").click()
    wait_text(page, "result-laser1-get_wavelength", "1550")
    page.click(tid("stream-start-meter1"))
    page.click(tid("watch-meter1"))
    wait_count_above(page, "points-meter1", 5)


def test_1khz_stream_keeps_page_responsive(lab: Lab, page: Page) -> None:
    open_dashboard(page, lab)
    assert lab.daemon.get_device("daq1").get_rate() == 1000.0
    for device_id in ("daq1", "camera1", "meter1"):
        page.click(tid(f"stream-start-{device_id}"))
        page.click(tid(f"watch-{device_id}"))
    wait_count_above(page, "points-daq1", 200)
    assert page.locator(tid("stream-daq1")).get_attribute("data-kind") == "channels"
    wait_count_above(page, "points-camera1", 2)
    assert page.locator(tid("stream-camera1")).get_attribute("data-kind") == "image"
    start_sweep(page, "scan", start_nm=1549.0, stop_nm=1551.0, step_nm=0.05, dwell_s=0.01)

    before = int(text_of(page, "points-daq1"))
    page.evaluate("() => { labdPerf.clicks.length = 0; }")
    # Clicks are handled while the 1 kHz stream is drawn, and the stream keeps arriving.
    # How fast (long tasks, click latency) is measured by bench/dashboard.py.
    for _ in range(6):
        page.click(tid("watch-meter1"))
    wait_count_above(page, "points-daq1", before + 1_000)
    wait_js(page, "() => window.labdPerf.clicks.length >= 6")
    wait_text(page, "task-status-scan", "completed")

    if os.environ.get("LABD_UPDATE_SCREENSHOT") == "1":
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        shot = ARTIFACTS / "dashboard-live.png"
        ARTIFACTS.mkdir(exist_ok=True)
        page.evaluate("() => window.scrollTo(0, 0)")
        page.screenshot(path=str(shot), full_page=True)
        shutil.copyfile(shot, SCREENSHOT)
