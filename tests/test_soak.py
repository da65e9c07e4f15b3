"""The soak (``bench/soak.py``) in the suite: a server under mixed load for a while.

CI runs it for 60 s (``CI`` set); elsewhere 15 s unless ``LABD_SOAK_SECONDS`` says
otherwise. Its verdict rules are tested on their own below, so a soak that could not
fail would be caught.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("uvicorn")

ROOT = Path(__file__).resolve().parents[1]
SOAK = ROOT / "bench" / "soak.py"


def _load() -> Any:
    spec = importlib.util.spec_from_file_location("labd_soak", SOAK)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


soak = _load()


def _seconds() -> float:
    given = os.environ.get("LABD_SOAK_SECONDS")
    if given:
        return float(given)
    return 60.0 if os.environ.get("CI") else 15.0


def test_the_soak_passes(tmp_path: Path) -> None:
    out = tmp_path / "soak.json"
    seconds = _seconds()
    done = subprocess.run(
        [sys.executable, str(SOAK), "--duration", str(seconds), "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=seconds + 240,
    )
    print(done.stdout)  # the table, in the suite's output (pytest -s, or on failure)
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(out.read_text())
    load = result["load"]
    assert result["failures"] == []
    assert load["events"] > 0 and load["requests"] > 0
    assert load["reconnects"] >= 20 and load.get("task cancelled", 0) > 0
    assert not any(key.startswith(("http 5", "sse 5")) for key in load)


def _samples(**series: list[float]) -> list[dict[str, float]]:
    length = len(next(iter(series.values())))
    return [{key: values[i] for key, values in series.items()} for i in range(length)]


def test_growth_is_caught_and_steady_figures_pass() -> None:
    steady = _samples(threads=[12] * 9, fds=[40] * 9, rss_mb=[70, 71, 70, 71, 72, 71, 71, 70, 72])
    assert not any(grew for *_, grew in soak.growth(steady).values())
    leaking = _samples(
        threads=[12, 12, 12, 14, 15, 16, 18, 19, 20],
        fds=[40, 40, 41, 45, 50, 55, 60, 65, 70],
        rss_mb=[70, 75, 80, 85, 90, 95, 100, 105, 110],
    )
    assert all(grew for *_, grew in soak.growth(leaking).values())


def test_a_5xx_an_out_of_order_event_or_a_client_error_fails_the_soak() -> None:
    steady = _samples(threads=[12] * 3, fds=[40] * 3, rss_mb=[70] * 3)
    base = {"events": 10, "requests": 10, "http 200": 10}

    def verdict(**extra: int) -> list[str]:
        result = {"load": {**base, **extra}, "growth": soak.growth(steady)}
        return soak.failures({**result, "labd_threads_left": []})

    assert verdict() == []
    assert verdict(**{"http 503": 1})
    assert verdict(**{"sse 500": 1})
    assert verdict(**{"events out of order": 1})
    assert verdict(**{"sse client error ReadTimeout": 1})
    assert verdict(events=0)
