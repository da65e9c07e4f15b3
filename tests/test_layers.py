"""The layers point one way, with no import cycles: import-linter's contracts hold.

The contracts live in pyproject.toml (``[tool.importlinter]``): the core imports none of
the server, the clients, the CLI or the simulated lab; the clients use only the shared
wire formats, exceptions, data files and task context; the simulated lab is plain device
code; the server reaches the daemon only through its interface (no device, stream or file
modules, no CLI); no package has an import cycle.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "labd"
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")

#: Top-level modules that are not the core: the entry point and the client helpers.
OUTSIDE_THE_CORE = {"__init__", "__main__", "patterns"}


def _contracts() -> list[dict[str, object]]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    return config["tool"]["importlinter"]["contracts"]  # type: ignore[no-any-return]


@pytest.mark.skipif(not LINT_IMPORTS.exists(), reason="import-linter is not installed")
def test_import_linter_contracts_are_kept() -> None:
    done = subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout


def test_every_core_module_is_bound_by_the_core_contract() -> None:
    core = next(c for c in _contracts() if str(c["name"]).startswith("The core imports"))
    bound = set(core["source_modules"])  # type: ignore[call-overload]
    modules = {f"labd.{p.stem}" for p in SRC.glob("*.py") if p.stem not in OUTSIDE_THE_CORE}
    assert modules == bound, (sorted(modules - bound), sorted(bound - modules))


def test_every_package_is_checked_for_cycles() -> None:
    acyclic = [c for c in _contracts() if c["type"] == "acyclic_siblings"]
    assert acyclic and acyclic[0]["ancestors"] == ["labd"]


#: What the daemon keeps for itself: its records of devices, their call threads and
#: streams. The server asks the daemon (``prepare_call``, ``prepare_stream_start``,
#: ``open_remote_reader``, ...) instead of reaching for these.
DAEMON_INSIDES = {"device_record", "worker", "stream", "streams", "_devices", "spec"}


def _is_daemon(node: ast.expr) -> bool:
    """``daemon`` or ``<anything>.daemon``."""
    return (isinstance(node, ast.Name) and node.id == "daemon") or (
        isinstance(node, ast.Attribute) and node.attr == "daemon"
    )


def test_the_server_uses_no_daemon_insides() -> None:
    found = []
    for path in sorted((SRC / "server").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Attribute):
                continue
            if node.attr in DAEMON_INSIDES or (node.attr == "events" and _is_daemon(node.value)):
                found.append(f"{path.name}:{node.lineno} .{node.attr}")
    assert found == []
