"""The code in docs/integrations.md's sections on Claude's memory tool, the Agents SDK session and DSPy runs as written.

Each ```python block runs in a fresh namespace; where the block is followed by
"prints" and an indented block, its output must be that (compared word by
word: the page shows tabs as they come out).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent
SECTIONS = {
    "Claude's memory tool": "anthropic",
    "OpenAI Agents SDK session": "agents",
    "DSPy retriever": "dspy",
}


def _section(title: str) -> str:
    text = (ROOT / "docs" / "integrations.md").read_text()
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


def _examples(section: str) -> list[tuple[str, str | None]]:
    """(code, expected output or None) for each python block of the section."""
    out = []
    for m in re.finditer(r"```python\n(.*?)```\n(?:\nprints\n\n((?:    [^\n]*\n|\n)+))?", section, flags=re.S):
        expected = None
        if m.group(2) is not None:
            expected = "\n".join(line[4:] for line in m.group(2).split("\n"))
        out.append((m.group(1), expected))
    return out


@pytest.mark.parametrize("title", sorted(SECTIONS))
def test_section_code_runs_and_prints_what_the_page_says(
    title: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip(SECTIONS[title])
    monkeypatch.chdir(tmp_path)
    examples = _examples(_section(title))
    assert examples, f"no runnable example in the section {title!r}"
    assert any(expected for _, expected in examples)
    for code, expected in examples:
        exec(compile(code, f"docs/integrations.md ({title})", "exec"), {"__name__": "docs"})
        printed = capsys.readouterr().out
        if expected is not None:
            assert printed.split() == expected.split(), printed


def test_cost_section_has_these_adapters() -> None:
    cost = _section("Cost")
    for what in ("memory tool: str_replace", "session: add_items", "DSPy: rm for dspy.Retrieve"):
        assert what in cost
