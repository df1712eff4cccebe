"""filemem's memory tool says and holds exactly what the SDK's BetaLocalFilesystemMemoryTool does.

Both tools get the same commands through ``tool.call(input)``; after each,
the outcome (result text, or refusal text) and the whole set of files and
directories must be equal. Where the reference crashes with an OSError (a
path through a file, a directory moved into itself), ours must refuse with a
ToolError instead. Directory sizes are masked (the reference prints its file
system's figure; ours prints 4K).
"""

from __future__ import annotations

import itertools
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from anthropic.tools.memory import BetaLocalFilesystemMemoryTool
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import filemem
from filemem.integrations.anthropic import FileMemMemoryTool
from tests.integrations._memtool import run_both


def C(command: str, **kw: Any) -> dict[str, Any]:
    return {"command": command, **kw}


def create(path: str, text: str = "alpha\nbeta\ngamma\n") -> dict[str, Any]:
    return C("create", path=path, file_text=text)


TABLE: dict[str, list[dict[str, Any]]] = {
    "traversal": [
        C("view", path="/memories/../etc/passwd"),
        C("view", path="/memories/../../../../etc/passwd"),
        create("/memories/../x.txt"),
        C("view", path="/etc/passwd"),
        C("view", path="memories/a"),
        create("/memories/a/../b.txt"),
        C("view", path="/memories/./b.txt"),
        C("view", path="/memories//b.txt"),
        C("view", path="/memories/a/../../memories/b.txt"),
        C("delete", path="/memories/.."),
        C("rename", old_path="/memories/b.txt", new_path="/memories/../b.txt"),
        C("rename", old_path="/memories/../b.txt", new_path="/memories/c.txt"),
        C("view", path="/memoriesb.txt"),
        C("view", path="/memories/b.txt/"),
    ],
    "missing files": [
        C("view", path="/memories/nope.md"),
        C("str_replace", path="/memories/nope.md", old_str="a", new_str="b"),
        C("insert", path="/memories/nope.md", insert_line=0, insert_text="x"),
        C("delete", path="/memories/nope.md"),
        C("rename", old_path="/memories/nope.md", new_path="/memories/other.md"),
        C("rename", old_path="/memories/nope.md", new_path="/memories/made/by/rename.md"),
        C("view", path="/memories"),
    ],
    "view and view_range": [
        create("/memories/f.txt", "one\ntwo\nthree\nfour\n"),
        C("view", path="/memories/f.txt"),
        C("view", path="/memories/f.txt", view_range=[2, 3]),
        C("view", path="/memories/f.txt", view_range=[2, -1]),
        C("view", path="/memories/f.txt", view_range=[0, 2]),
        C("view", path="/memories/f.txt", view_range=[-5, 1]),
        C("view", path="/memories/f.txt", view_range=[3, 2]),
        C("view", path="/memories/f.txt", view_range=[10, 20]),
        C("view", path="/memories/f.txt", view_range=[1]),
        C("view", path="/memories/f.txt", view_range=[]),
        C("view", path="/memories/f.txt", view_range=[2, -2]),
        create("/memories/empty.txt", ""),
        C("view", path="/memories/empty.txt"),
        create("/memories/crlf.txt", "a\r\nb\r\n"),
        C("view", path="/memories/crlf.txt"),
        create("/memories/üñí/ç.md", "héllo ☕\n"),
        C("view", path="/memories"),
        C("view", path="/memories/üñí"),
    ],
    "str_replace": [
        create("/memories/s.txt", "apple banana\ncherry apple\ndate\n"),
        C("str_replace", path="/memories/s.txt", old_str="kiwi", new_str="x"),
        C("str_replace", path="/memories/s.txt", old_str="apple", new_str="x"),
        C("str_replace", path="/memories/s.txt", old_str="aa", new_str="x"),
        C("str_replace", path="/memories/s.txt", old_str="", new_str="x"),
        C("str_replace", path="/memories/s.txt", old_str="cherry", new_str="fig\ngrape"),
        C("str_replace", path="/memories/s.txt", old_str="date\n", new_str=""),
        C("view", path="/memories/s.txt"),
        create("/memories/overlap.txt", "aaa"),
        C("str_replace", path="/memories/overlap.txt", old_str="aa", new_str="b"),
        create("/memories/e.txt", ""),
        C("str_replace", path="/memories/e.txt", old_str="", new_str="filled"),
        C("str_replace", path="/memories", old_str="a", new_str="b"),
        create("/memories/d/in.txt", "x"),
        C("str_replace", path="/memories/d", old_str="a", new_str="b"),
    ],
    "insert": [
        create("/memories/i.txt", "l1\nl2\n"),
        C("insert", path="/memories/i.txt", insert_line=-1, insert_text="bad"),
        C("insert", path="/memories/i.txt", insert_line=3, insert_text="bad"),
        C("insert", path="/memories/i.txt", insert_line=0, insert_text="top\n"),
        C("insert", path="/memories/i.txt", insert_line=3, insert_text="end\n\n"),
        C("insert", path="/memories/i.txt", insert_line=2, insert_text="mid\nmid2"),
        C("view", path="/memories/i.txt"),
        create("/memories/noeol.txt", "a\nb"),
        C("insert", path="/memories/noeol.txt", insert_line=2, insert_text="c"),
        create("/memories/blank.txt", ""),
        C("insert", path="/memories/blank.txt", insert_line=1, insert_text="c"),
        C("insert", path="/memories/blank.txt", insert_line=0, insert_text=""),
        C("insert", path="/memories", insert_line=0, insert_text="x"),
    ],
    "create over things": [
        create("/memories/a.txt"),
        create("/memories/a.txt", "again"),
        create("/memories"),
        create("/memories/"),
        create("/memories/dir/f.txt"),
        create("/memories/dir"),
        create("/memories/a.txt/under.txt"),
        create("/memories/a.txt/deeper/under.txt"),
        create("/memories/.hidden", "secret"),
        C("view", path="/memories"),
        C("view", path="/memories/.hidden"),
    ],
    "rename": [
        create("/memories/r1.txt", "one"),
        create("/memories/r2.txt", "two"),
        C("rename", old_path="/memories/r1.txt", new_path="/memories/r2.txt"),
        C("rename", old_path="/memories/r1.txt", new_path="/memories/r1.txt"),
        C("rename", old_path="/memories", new_path="/memories/x"),
        C("rename", old_path="/memories/r1.txt", new_path="/memories"),
        C("rename", old_path="/memories/r1.txt", new_path="/memories/sub/deep/r1.txt"),
        create("/memories/d1/a.txt", "a"),
        create("/memories/d1/e/b.txt", "b"),
        C("rename", old_path="/memories/d1", new_path="/memories/sub"),
        C("rename", old_path="/memories/d1", new_path="/memories/d2"),
        C("rename", old_path="/memories/d2", new_path="/memories/d2/inner"),
        C("rename", old_path="/memories/d2", new_path="/memories/d2/x/y"),
        C("rename", old_path="/memories/r2.txt", new_path="/memories/r2.txt/z"),
        C("view", path="/memories"),
        C("view", path="/memories/d2"),
    ],
    "delete and directories": [
        create("/memories/t/u/v/w.txt", "deep"),
        create("/memories/t/x.txt", "x"),
        C("view", path="/memories"),
        C("view", path="/memories/t"),
        C("view", path="/memories/t/u/v"),
        C("delete", path="/memories/t/u/v/w.txt"),
        C("view", path="/memories/t/u/v"),
        C("delete", path="/memories/t/u"),
        C("delete", path="/memories/t/u"),
        C("delete", path="/memories"),
        C("delete", path="/memories/"),
        C("delete", path="/memories/t/x.txt/y"),
        C("view", path="/memories/t/x.txt/y"),
        C("delete", path="/memories/t"),
        C("view", path="/memories"),
        C("clear_all_memory"),
    ],
    "clear_all_memory": [
        create("/memories/k/a.txt"),
        create("/memories/b.txt"),
        C("clear_all_memory"),
        C("view", path="/memories"),
        create("/memories/b.txt"),
    ],
}


@pytest.fixture
def pair(location: str, tmp_path: Path) -> Iterator[tuple[FileMemMemoryTool, BetaLocalFilesystemMemoryTool]]:
    store = filemem.Store(location, durability="flush")
    try:
        yield FileMemMemoryTool(store), BetaLocalFilesystemMemoryTool(str(tmp_path / "ref"))
    finally:
        store.close()


@pytest.mark.parametrize("case", sorted(TABLE))
def test_table(case: str, pair: tuple[FileMemMemoryTool, BetaLocalFilesystemMemoryTool]) -> None:
    run_both(*pair, TABLE[case])


SEGMENTS = ["a", "b", "n.md", "o.txt", ".h", "..", ".", "", "memories"]
odd_paths = st.builds(
    lambda prefix, segs: prefix + "/".join(segs),
    st.sampled_from(["/memories/", "/memories", "/memories//", "/memoriesa/", "/etc/"]),
    st.lists(st.sampled_from(SEGMENTS), min_size=0, max_size=3),
)
# Mostly a few plain paths, so that files exist and edits, moves and refusals on them happen.
plain_paths = st.sampled_from(
    [
        "/memories",
        "/memories/a",
        "/memories/n.md",
        "/memories/a/n.md",
        "/memories/a/b",
        "/memories/a/b/o.txt",
        "/memories/b",
    ]
)
paths = st.one_of(plain_paths, plain_paths, plain_paths, odd_paths)
FILES = ["/memories/n.md", "/memories/a/n.md", "/memories/a/b/o.txt"]
file_paths = st.one_of(st.sampled_from(FILES), st.sampled_from(FILES), plain_paths)
texts = st.text(alphabet="ab\n\r x☕", max_size=12)
snippets = st.one_of(st.sampled_from(["a", "b", "x", "\n", "ab", "b\n"]), st.text(alphabet="ab\n x", max_size=2))
BUILDERS: dict[str, Any] = {
    "view": st.builds(lambda p: C("view", path=p), paths),
    "view_range": st.builds(
        lambda p, r: C("view", path=p, view_range=r), file_paths, st.lists(st.integers(-2, 5), max_size=3)
    ),
    "create": st.builds(create, paths, texts),
    "str_replace": st.builds(
        lambda p, o, n: C("str_replace", path=p, old_str=o, new_str=n), file_paths, snippets, snippets
    ),
    "insert": st.builds(
        lambda p, n, t: C("insert", path=p, insert_line=n, insert_text=t), file_paths, st.integers(-1, 5), texts
    ),
    "delete": st.builds(lambda p: C("delete", path=p), paths),
    "rename": st.builds(lambda a, b: C("rename", old_path=a, new_path=b), paths, paths),
    "move": st.builds(
        lambda a, b: C("rename", old_path=a, new_path=b),
        st.one_of(file_paths, plain_paths),
        st.sampled_from(["/memories/c.md", "/memories/a/c.md", "/memories/c/d", "/memories/c", "/memories/a/b/c"]),
    ),
    "clear_all_memory": st.just(C("clear_all_memory")),
}
# Creates and edits often, clears rarely: sequences then build trees worth editing and moving.
WEIGHTS = ["create"] * 5 + ["str_replace"] * 3 + ["insert"] * 3 + ["view", "view_range", "rename", "move"] * 2
WEIGHTS += ["delete", "clear_all_memory"]
commands = st.sampled_from(WEIGHTS).flatmap(lambda name: BUILDERS[name])
_runs = itertools.count()


@pytest.fixture
def shared_store(location: str) -> Iterator[filemem.Store]:
    """One store per test on each backend; every hypothesis example works in a namespace of its own."""
    store = filemem.Store(location, durability="flush")
    try:
        yield store
    finally:
        store.close()


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(texts, min_size=3, max_size=3), st.lists(commands, min_size=1, max_size=20))
def test_random_command_sequences(
    shared_store: filemem.Store, tmp_path: Path, seeds: list[str], sequence: list[dict[str, Any]]
) -> None:
    # Start from a small tree, so that edits, moves and deletes have files to work on.
    sequence = [create(path, text) for path, text in zip(FILES, seeds, strict=True)] + sequence
    run = next(_runs)
    base = Path(tempfile.mkdtemp(dir=tmp_path, prefix=f"run{run}-"))
    ours = FileMemMemoryTool(shared_store, namespace=("runs", str(run)))
    run_both(ours, BetaLocalFilesystemMemoryTool(str(base / "ref")), sequence)
