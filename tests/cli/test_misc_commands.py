"""The entry points, progress display, help texts, bench and demo."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from filemem._cli import build_parser
from filemem._cli._base import COMMANDS, Progress
from tests.cli._util import copy_fixture, run, run_proc

REQUIRED = {
    "info",
    "ls",
    "get",
    "put",
    "rm",
    "export",
    "import",
    "check",
    "compact",
    "stats",
    "watch",
    "convert",
    "demo",
    "bench",
}


def test_every_required_command_exists_with_an_example() -> None:
    assert set(COMMANDS) >= REQUIRED
    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    for name, p in sub.choices.items():
        assert p.epilog and p.epilog.startswith("Example: filemem " + name), name
        if COMMANDS[name].store is not None:
            options = {o for a in p._actions for o in a.option_strings}
            assert {"--json", "--lock-timeout"} <= options, name


def test_python_dash_m_and_usage_errors(tmp_path: Path) -> None:
    path = copy_fixture(tmp_path, "v1-json")
    res = run_proc("info", path)
    assert res.rc == 0 and "records:" in res.out
    res = run_proc("frobnicate")
    assert res.rc == 2 and "invalid choice" in res.err
    res = run_proc("--help")
    assert res.rc == 0 and "Exit codes" in res.out


def test_progress_only_on_a_terminal(tmp_path: Path) -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    tty = Tty()
    with Progress("check", tty) as p:
        for i in range(3):
            p(i + 1, 3)
    assert "check: 3/3 100%" in tty.getvalue() and tty.getvalue().endswith("\r\x1b[K")
    pipe = io.StringIO()
    with Progress("check", pipe) as p:
        p(1, 1)
    assert pipe.getvalue() == ""
    # A real run with stderr piped: no progress characters at all.
    path = copy_fixture(tmp_path, "v1-msgpack")
    for args in (["check", path], ["export", path], ["compact", path]):
        res = run_proc(*args)
        assert res.rc == 0 and "\r" not in res.err and "\x1b" not in res.err, args


def test_bench_runs_and_reports_ratios(tmp_path: Path) -> None:
    res = run("bench", "--records", "30", "--durability", "flush", "--dir", str(tmp_path), "--json")
    assert res.rc == 0, res
    got = json.loads(res.out)
    assert got["records"] == 30 and got["put_ratio"] > 0 and got["get_ratio"] > 0
    assert list(tmp_path.iterdir()) == []  # temporary stores removed
    table = run("bench", "--records", "10", "--durability", "flush", "--dir", str(tmp_path)).out
    assert "RATIO" in table and "get (strict)" in table


@pytest.mark.slow
def test_demo_runs(tmp_path: Path) -> None:
    res = run_proc("demo", str(tmp_path / "demo"), "--workers", "2", "--rounds", "5", "--durability", "flush", "--json")
    assert res.rc == 0, res
    assert json.loads(res.out)["lost_updates"] == 0
