"""docs/memory.md cannot drift: every Python block on it runs, in order, in one namespace."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_memory_howto_code_runs(capsys: pytest.CaptureFixture[str]) -> None:
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "docs" / "memory.md").read_text(), flags=re.S)
    assert len(blocks) >= 9
    env: dict[str, object] = {}
    for block in blocks:
        exec(compile(block, "docs/memory.md", "exec"), env)
    out = capsys.readouterr().out
    assert "2 0.8 ['worker-1', 'worker-2']" in out  # the merge rule as documented
    assert "{'wiki': 'RuntimeError: vector index offline'}" in out
    assert "['Deploys happen at noon.']" in out
    assert "Paris 1.0" in out
