"""Docs that cannot drift: tutorial code runs, generated references are current, every command is documented."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

import gendocs  # noqa: E402

import filemem  # noqa: E402
from filemem._cli import build_parser  # noqa: E402


def _blocks(path: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.S)


def test_tutorial_code_runs(capsys: pytest.CaptureFixture[str]) -> None:
    blocks = _blocks(ROOT / "docs" / "tutorial.md")
    assert len(blocks) >= 5
    env: dict[str, object] = {}
    for block in blocks:
        exec(compile(block, "docs/tutorial.md", "exec"), env)
    out = capsys.readouterr().out
    assert "{'task': 'log in', 'ok': True}" in out and "blue green" in out


def test_readme_code_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """The README's examples, as written (they use ./memories: run them in a scratch directory)."""
    monkeypatch.chdir(tmp_path)
    blocks = _blocks(ROOT / "README.md")
    assert len(blocks) >= 2
    for block in blocks:
        exec(compile(block, "README.md", "exec"), {"__name__": "readme"})
    assert capsys.readouterr().out.strip() == "1"  # the async scan saw the one fact
    with filemem.Store(str(tmp_path / "memories")) as store:
        assert store.check() == []
        assert store.get(("agent-1", "events"), "ev-1") == {"step": "login"}


def test_cli_reference_is_current() -> None:
    assert (ROOT / "docs" / "cli.md").read_text() == gendocs.cli_markdown(), "run python tools/gendocs.py"


def test_api_reference_is_current() -> None:
    assert (ROOT / "docs" / "api.md").read_text() == gendocs.api_markdown(), "run python tools/gendocs.py"


def test_every_command_is_documented_with_an_example() -> None:
    cli_doc = (ROOT / "docs" / "cli.md").read_text()
    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    for name, p in sub.choices.items():
        assert f"## filemem {name}" in cli_doc, name
        assert p.epilog and "Example:" in p.epilog, f"{name} has no example in its help"
