"""The layers point one way: core ← sim; core ← server; wire/exceptions/task_context ← client;
all ← cli."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "labd"


def _labd_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("labd"))
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "labd":
                found.update(f"labd.{a.name}" for a in node.names)
            elif node.module.startswith("labd."):
                found.add(node.module)
    return found


def _modules(sub: str) -> list[Path]:
    root = SRC / sub if sub else SRC
    return sorted(root.glob("*.py") if not sub else root.rglob("*.py"))


CORE = [p for p in _modules("") if p.name not in ("__main__.py", "patterns.py")]


def _under(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


@pytest.mark.parametrize("path", CORE, ids=lambda p: p.name)
def test_core_imports_no_server_client_or_cli(path: Path) -> None:
    bad = {
        m
        for m in _labd_imports(path)
        if any(_under(m, p) for p in ("labd.server", "labd.client", "labd.cli", "labd.sim"))
    }
    assert not bad, f"{path.name} imports {sorted(bad)}"


@pytest.mark.parametrize("path", _modules("client"), ids=lambda p: p.name)
def test_client_imports_only_shared_wire_models(path: Path) -> None:
    allowed = ("labd.client", "labd.wire", "labd.exceptions", "labd.datafiles", "labd.task_context")
    bad = {m for m in _labd_imports(path) if not any(_under(m, p) for p in allowed)}
    assert not bad, f"client/{path.name} imports {sorted(bad)}"


@pytest.mark.parametrize("path", _modules("sim"), ids=lambda p: p.name)
def test_sim_uses_only_the_public_core(path: Path) -> None:
    bad = {
        m
        for m in _labd_imports(path)
        if any(_under(m, p) for p in ("labd.server", "labd.client", "labd.cli"))
    }
    assert not bad, f"sim/{path.name} imports {sorted(bad)}"


@pytest.mark.parametrize("path", _modules("server"), ids=lambda p: p.name)
def test_server_does_not_import_the_cli(path: Path) -> None:
    bad = {m for m in _labd_imports(path) if _under(m, "labd.cli")}
    assert not bad, f"server/{path.name} imports {sorted(bad)}"
