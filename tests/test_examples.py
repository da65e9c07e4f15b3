"""Every script in examples/ runs from the repository root and exits 0."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted(p for p in (ROOT / "examples").rglob("*.py") if "__pycache__" not in p.parts)

# Text each script must print; scripts not listed only have to exit 0.
EXPECTED: dict[str, list[str]] = {
    "quickstart.py": ["the meter reads", "daq1 streamed", "sweep completed", "at 1550.0 nm"],
    "task_progress.py": ["[watcher] countdown", "ended: completed", "result: lift-off"],
    "visa/visa_stream.py": ["dvm1: 1.234500 V", "streamed 5 values"],
    "remote_task.py": [
        "remote devices: daq1",
        "ran here: 9 points",
        "ran on the server: completed",
    ],
    "seed_rebuilt.py": [
        "ThreadSafeStreamingDevice: ",
        "RateLimitedStreamingDevice: ",
        "RobustStreamingDevice: ",
        "BackpressureStreamingDevice: ",
    ],
}


def test_examples_are_found() -> None:
    names = {p.relative_to(ROOT / "examples").as_posix() for p in EXAMPLES}
    assert set(EXPECTED) <= names


@pytest.mark.parametrize(
    "script", EXAMPLES, ids=[p.relative_to(ROOT / "examples").as_posix() for p in EXAMPLES]
)
def test_example_runs(script: Path) -> None:
    env = dict(os.environ)
    env.pop("PYVISA_LIBRARY", None)  # the VISA example picks its simulated instrument itself
    done = subprocess.run(
        [sys.executable, str(script)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    name = script.relative_to(ROOT / "examples").as_posix()
    for text in EXPECTED.get(name, []):
        assert text in done.stdout, f"{name} did not print {text!r}:\n{done.stdout}"
    assert "Traceback" not in done.stderr
