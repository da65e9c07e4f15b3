"""docs/migrating.md runs as written: its python blocks, in order, as one script."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_code_block_of_the_migration_guide_runs(tmp_path: Path) -> None:
    text = (ROOT / "docs" / "migrating.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert len(blocks) >= 6, "the guide's examples were not found"
    script = tmp_path / "migrating_guide.py"
    script.write_text("\n".join(blocks) + '\nprint("guide ran")\n', encoding="utf-8")
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("guide ran")


def test_the_readme_links_the_migration_guide() -> None:
    assert "docs/migrating.md" in (ROOT / "README.md").read_text(encoding="utf-8")
