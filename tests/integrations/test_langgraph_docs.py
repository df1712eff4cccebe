"""The LangGraph section of docs/integrations.md: its code runs and prints what the page says."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytest.importorskip("langgraph.store.base")

DOC = Path(__file__).resolve().parents[2] / "docs" / "integrations.md"


def _section() -> str:
    text = DOC.read_text()
    start = text.index("## LangGraph long-term memory store")
    end = text.index("\n## ", start + 1)
    return text[start:end]


def test_langgraph_section_code_runs_as_documented(capsys: pytest.CaptureFixture[str]) -> None:
    section = _section()
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 1
    exec(compile(blocks[0], "docs/integrations.md#langgraph", "exec"), {"__name__": "docs"})
    printed = re.search(r"\nprints\n\n((?:    .*\n)+)", section)
    assert printed is not None
    want = [line[4:] for line in printed.group(1).splitlines()]
    assert capsys.readouterr().out.splitlines() == want
