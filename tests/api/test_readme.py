"""The README's Python examples run as written (from the repository root)."""

from __future__ import annotations

import os
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_readme_python_blocks_run(capsys) -> None:
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert len(blocks) >= 2
    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        for i, block in enumerate(blocks):
            exec(compile(block, f"README.md python block {i}", "exec"), {})
    finally:
        os.chdir(cwd)
    out = capsys.readouterr().out
    assert "IOPS" in out and "can read and write" in out
