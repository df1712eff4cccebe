"""Bad input: a one-line error, a non-zero exit, and nothing changed on disk."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cli._util import copy_fixture, one_line_error, opened_fixture, run, run_proc, tree_hash


@pytest.fixture
def store(tmp_path: Path) -> str:
    return opened_fixture(tmp_path, "v1-json")


@pytest.mark.parametrize(
    ("args", "code", "words"),
    [
        (["ls", "{store}", "no/such/ns"], 1, "no namespace"),
        (["get", "{store}", "no-such-ns", "k"], 1, "no such namespace"),
        (["get", "{store}", "agent-1/facts", "nope"], 1, "no key"),
        (["rm", "{store}", "agent-1/facts", "nope"], 1, "no key"),
        (["put", "{store}", "agent-1/facts", "k", "{not json"], 2, "not valid JSON"),
        (["put", "{store}", "agent-1/facts", "k", "blue"], 2, "not valid JSON"),
        (["put", "{store}", "agent-1/facts", "a/b", "1"], 2, "key"),
        (["put", "{store}", "agent-1/../x", "k", "1"], 2, "namespace"),
        (["get", "{store}", "agent-1/facts", ""], 2, "key"),
        (["put", "{store}", "agent-1/facts", "k", "1", "--ttl", "-5"], 2, "ttl"),
        (["convert", "{store}", "--codec", "yaml"], 2, "invalid choice"),
        (["info", "{store}", "--lock-timeout", "0"], 2, "must be positive"),
        (["import", "{store}", "/no/such/file.jsonl"], 2, "no such input file"),
    ],
)
def test_bad_input_changes_nothing(store: str, args: list[str], code: int, words: str) -> None:
    before = tree_hash(store)
    res = run(*[a.replace("{store}", store) for a in args])
    if (code == 2 and "invalid choice" in words) or "must be positive" in words:
        assert res.rc == 2 and words in res.err  # argparse's usage error (usage line + message)
    else:
        one_line_error(res)
        assert res.rc == code, res
        assert words in res.err, res.err
    assert tree_hash(store) == before


@pytest.mark.parametrize(
    "command",
    [
        ["info"],
        ["ls"],
        ["stats"],
        ["export"],
        ["check"],
        ["check", "--fix"],
        ["compact"],
        ["put", "ns", "k", "1"],
        ["rm", "ns", "k"],
        ["get", "ns", "k"],
        ["convert", "--codec", "msgpack"],
        ["watch", "--timeout", "1"],
        ["import"],
    ],
)
def test_missing_store(tmp_path: Path, command: list[str]) -> None:
    missing = str(tmp_path / "nowhere")
    res = run(command[0], missing, *command[1:], stdin="")
    one_line_error(res)
    assert res.rc == 3 and "no filemem store" in res.err
    assert not (tmp_path / "nowhere").exists()


def test_not_a_store(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    before = tree_hash(str(tmp_path))
    res = run("put", str(tmp_path), "ns", "k", "1")
    one_line_error(res)
    assert res.rc == 3
    assert tree_hash(str(tmp_path)) == before


BAD_LINES = [
    (
        '{"namespace": "a", "key": "k", "value": 1}\n{"namespace": "a", "key": "k2", "value": \n',
        "line 2: not valid JSON",
    ),
    ('{"namespace": "a", "key": "k", "value": 1}\n[1, 2]\n', "line 2: expected a JSON object"),
    ('{"namespace": "a", "key": "k/x", "value": 1}\n', "line 1"),
    ('{"namespace": ["a", ".."], "key": "k", "value": 1}\n', "line 1"),
    ('{"namespace": "a", "value": 1}\n', "line 1: 'key' must be a string"),
    ('{"namespace": "a", "key": "k"}\n', "line 1: no 'value'"),
    ('{"namespace": "a", "key": "k", "value": {"$bytes": "!!"}}\n', "line 1: $bytes"),
    ('{"filemem_export": 99}\n', "newer"),
]


@pytest.mark.parametrize(("text", "words"), BAD_LINES)
@pytest.mark.parametrize("dry", [False, True])
def test_bad_import_line_writes_nothing(store: str, text: str, words: str, dry: bool) -> None:
    before = tree_hash(store)
    res = run("import", store, *(["--dry-run"] if dry else []), stdin=text)
    one_line_error(res)
    assert res.rc == 2 and words in res.err, res.err
    assert tree_hash(store) == before


def test_unencodable_value_for_the_store_codec(store: str) -> None:
    # bytes are fine in msgpack, never in a JSON store: refused before anything is written.
    before = tree_hash(store)
    text = '{"namespace": "a", "key": "ok", "value": 1}\n{"namespace": "a", "key": "b", "value": {"$bytes": "aGk="}}\n'
    res = run("import", store, stdin=text)
    one_line_error(res)
    assert res.rc == 2 and "line 2" in res.err
    assert tree_hash(store) == before


def test_a_damaged_shard_is_reported_in_one_line(tmp_path: Path) -> None:
    path = copy_fixture(tmp_path, "v1-msgpack-flipped-byte")
    before = tree_hash(path)
    for args in (["get", path, "agent-1/facts", "sky"], ["ls", path, "agent-1/facts"], ["export", path]):
        res = run(*args)
        one_line_error(res)
        assert res.rc == 3 and "corrupt shard" in res.err and "check --fix" not in res.out
    assert tree_hash(path) == before


def test_watch_writes_nothing(tmp_path: Path) -> None:
    path = copy_fixture(tmp_path, "v1-json")
    before = tree_hash(path)
    res = run_proc("watch", path, "--timeout", "0.5", "--json")
    assert res.rc == 0 and res.out == ""
    assert tree_hash(path) == before
