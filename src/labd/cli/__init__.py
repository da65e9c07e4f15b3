"""The ``labd`` command: serve a lab (``demo``, ``serve``) and talk to a running server.

``main()`` is the console-script entry point (``labd = "labd.cli:main"``); :data:`app` is
the typer application, for tests and for embedding.
"""

from __future__ import annotations

from labd.cli import devices, lab, stream, tasks
from labd.cli.app import app

__all__ = ["app", "main"]

# The command modules register themselves on ``app`` when imported.
_COMMAND_MODULES = (devices, lab, stream, tasks)


def main() -> None:
    """Run the ``labd`` command line."""
    app(prog_name="labd")
