"""The MCP section of docs/integrations.md: its Python example runs as written and prints what the page says."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytest.importorskip("mcp", reason="needs the mcp extra: pip install 'filemem[mcp]'")

import filemem

DOC = Path(__file__).resolve().parents[2] / "docs" / "integrations.md"


def _section() -> str:
    text = DOC.read_text(encoding="utf-8")
    return text.split("## MCP memory server\n", 1)[1].split("\n## ", 1)[0]


def test_the_example_runs_and_prints_what_the_page_says(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    section = _section()
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 1
    promised = re.search(r"prints `(.*?)`", section)
    assert promised is not None
    monkeypatch.chdir(tmp_path)  # the example uses ./memories
    exec(compile(blocks[0], "docs/integrations.md", "exec"), {"__name__": "docs"})
    assert capfd.readouterr().out.strip() == promised.group(1)
    with filemem.Store(str(tmp_path / "memories")) as store:
        assert store.keys(("mcp", "memory", "entities")) == ["Ada"]


def test_the_commands_shown_exist() -> None:
    from filemem._cli import build_parser

    parser = build_parser()
    for line in re.findall(r"^filemem mcp (.*?)\s+#", _section(), flags=re.M):
        parser.parse_args(["mcp", *line.split()])  # exits (SystemExit) on an option that does not exist
