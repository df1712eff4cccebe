"""The command line on a postgresql:// URL (issue 16): what works, and a clear error for what does not yet."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import filemem
from filemem._cli import main

pytestmark = [pytest.mark.postgres, pytest.mark.pg_only]


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    got = capsys.readouterr()
    return code, got.out, got.err


def test_put_get_ls_rm_export_import_check_on_a_url(
    pg_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    filemem.Store(pg_url).close()
    assert run(capsys, "put", pg_url, "agent-1/facts", "sky", '{"c": "blue"}')[0] == 0
    code, out, _ = run(capsys, "get", pg_url, "agent-1/facts", "sky")
    assert code == 0 and json.loads(out) == {"c": "blue"}
    code, out, _ = run(capsys, "ls", pg_url, "agent-1/facts")
    assert code == 0 and "sky" in out
    dump = str(tmp_path / "dump.jsonl")
    assert run(capsys, "export", pg_url, "-o", dump)[0] == 0
    assert run(capsys, "rm", pg_url, "agent-1/facts", "sky")[0] == 0
    with filemem.Store(pg_url) as s:
        assert s.get("agent-1/facts", "sky") is None
    assert run(capsys, "import", pg_url, dump)[0] == 0
    with filemem.Store(pg_url) as s:
        assert s.get("agent-1/facts", "sky") == {"c": "blue"}
    assert run(capsys, "check", pg_url)[0] == 0


def test_file_only_commands_fail_clearly(pg_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    filemem.Store(pg_url).close()
    code, _, err = run(capsys, "convert", pg_url, "--codec", "msgpack")
    assert code == 3 and "postgres store keeps the codec" in err
    code, out, _ = run(capsys, "info", pg_url)
    assert code == 0 and "backend:       postgres" in out and "schema version 1" in out


def test_demo_runs_its_agents_on_a_server(pg_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(
        capsys, "demo", "--store", pg_url, "--workers", "2", "--rounds", "12", "--durability", "flush", "--json"
    )
    report = json.loads(out)
    assert code == 0 and report["ok"] and report["lost_updates"] == 0, report["problems"]
    assert report["stored_episodes"] == report["counted_episodes"] == report["site_visits"] == 24
    assert report["shards"] == 0 and report["facts"] == 3 and "schema" in report["path"]
    code, _, err = run(capsys, "demo", "--store", pg_url, "somewhere-else")
    assert code == 2 and "not both" in err
