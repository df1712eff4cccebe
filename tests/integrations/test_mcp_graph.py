"""KnowledgeGraph (the MCP memory server's graph over filemem records), without the MCP SDK.

The behaviour each test pins is the reference server's (its dist/index.js,
@modelcontextprotocol/server-memory 2026.8.31); test_mcp_reference.py checks
the same against a live reference where node is installed. Every test with a
store runs on both backends (a directory, a ``postgresql://`` URL: issue 16).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

import filemem
from filemem import InvalidValueError
from filemem.integrations.mcp import EntityNotFoundError, KnowledgeGraph, read_jsonl
from filemem.integrations.mcp._graph import _entity_key


@pytest.fixture
def store(any_store: filemem.Store) -> Iterator[filemem.Store]:
    """A fresh store on each backend (tests/conftest.py's ``any_store``)."""
    yield any_store


@pytest.fixture
def kg(store: filemem.Store) -> KnowledgeGraph:
    return KnowledgeGraph(store)


def ent(name: str, etype: str = "person", obs: list[str] | None = None) -> dict[str, object]:
    return {"name": name, "entityType": etype, "observations": obs or []}


def rel(a: str, b: str, t: str = "knows") -> dict[str, str]:
    return {"from": a, "to": b, "relationType": t}


def test_create_entities_returns_only_new_ones_in_input_order(kg: KnowledgeGraph) -> None:
    made = kg.create_entities([ent("b"), ent("a", obs=["x", "x"])])
    assert [e.wire() for e in made] == [ent("b"), ent("a", obs=["x", "x"])]  # duplicates kept, as the reference
    again = kg.create_entities([ent("a", "robot", ["y"]), ent("c")])
    assert [e.name for e in again] == ["c"]
    graph = kg.read_graph().wire()
    assert graph["entities"] == [ent("b"), ent("a", obs=["x", "x"]), ent("c")]  # creation order; "a" untouched


def test_a_name_given_twice_in_one_call_is_created_once(kg: KnowledgeGraph) -> None:
    # Deliberate difference: the reference would store two entities named "a".
    made = kg.create_entities([ent("a", "first"), ent("a", "second")])
    assert [e.entityType for e in made] == ["first"]
    assert [e["entityType"] for e in kg.read_graph().wire()["entities"]] == ["first"]


def test_relations_dedupe_and_need_no_endpoints(kg: KnowledgeGraph) -> None:
    made = kg.create_relations([rel("a", "b"), rel("a", "b"), rel("b", "a")])
    assert [r.wire() for r in made] == [rel("a", "b"), rel("b", "a")]
    assert kg.create_relations([rel("a", "b")]) == []
    assert kg.read_graph().wire() == {"entities": [], "relations": [rel("a", "b"), rel("b", "a")]}


def test_add_observations_filters_existing_and_is_all_or_nothing(kg: KnowledgeGraph) -> None:
    kg.create_entities([ent("a", obs=["x"]), ent("b")])
    got = kg.add_observations(
        [
            {"entityName": "a", "contents": ["x", "y", "y"]},  # "y" twice: both added, as the reference
            {"entityName": "a", "contents": ["y", "z"]},  # sees the first request's additions
            {"entityName": "b", "contents": ["q"]},
        ]
    )
    assert got == [
        {"entityName": "a", "addedObservations": ["y", "y"]},
        {"entityName": "a", "addedObservations": ["z"]},
        {"entityName": "b", "addedObservations": ["q"]},
    ]
    before = kg.read_graph()
    with pytest.raises(EntityNotFoundError, match=r"^Entity with name nobody not found$"):
        kg.add_observations([{"entityName": "a", "contents": ["new"]}, {"entityName": "nobody", "contents": ["n"]}])
    assert kg.read_graph() == before  # "a" did not get "new"


def test_deletes(kg: KnowledgeGraph) -> None:
    kg.create_entities([ent("a", obs=["1", "2", "3"]), ent("b"), ent("c")])
    kg.create_relations([rel("a", "b"), rel("b", "c"), rel("c", "a"), rel("c", "c")])
    kg.delete_observations(
        [{"entityName": "a", "observations": ["2", "9"]}, {"entityName": "zz", "observations": ["1"]}]
    )
    kg.delete_relations([rel("c", "c"), rel("x", "y")])
    kg.delete_entities(["b", "nobody"])
    assert kg.read_graph().wire() == {"entities": [ent("a", obs=["1", "3"]), ent("c")], "relations": [rel("c", "a")]}
    assert kg.open_nodes(["zz"]).wire() == {"entities": [], "relations": []}  # delete_observations created nothing


def test_search_and_open_include_relations_touching_a_hit(kg: KnowledgeGraph) -> None:
    kg.create_entities([ent("Ada", "person", ["Writes PYTHON"]), ent("Bob", "robot"), ent("Cy", "cat")])
    kg.create_relations([rel("Ada", "Bob"), rel("Bob", "Cy"), rel("Cy", "Zed")])
    assert kg.search_nodes("python").wire() == {
        "entities": [ent("Ada", "person", ["Writes PYTHON"])],
        "relations": [rel("Ada", "Bob")],
    }
    assert [e.name for e in kg.search_nodes("O").entities] == ["Ada", "Bob"]  # "rObot", "PYTHON": case-insensitive
    opened = kg.open_nodes(["Cy", "Ada", "missing"]).wire()
    assert [e["name"] for e in opened["entities"]] == ["Ada", "Cy"]  # graph order, not request order
    assert opened["relations"] == [rel("Ada", "Bob"), rel("Bob", "Cy"), rel("Cy", "Zed")]


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "%2F", "a%", "\x00", "ü/é", "x" * 5000, "%E", "%H"])
def test_any_name_is_stored_losslessly(kg: KnowledgeGraph, name: str) -> None:
    others = ["a/b", "%2F", "", ".", "%E"]
    kg.create_entities([ent(n) for n in {name, *others}])
    assert [e.name for e in kg.open_nodes([name]).entities] == [name]
    kg.add_observations([{"entityName": name, "contents": ["seen"]}])
    assert kg.open_nodes([name]).entities[0].observations == ["seen"]
    kg.delete_entities([name])
    assert {e.name for e in kg.read_graph().entities} == set(others) - {name}


def test_entity_keys_are_distinct_and_valid() -> None:
    names = ["", ".", "..", "%", "%E", "%D", "%DD", "%25", "/", "%2F", "a/b", "a%2Fb", "x" * 600, "x" * 601]
    keys = [_entity_key(n) for n in names]
    assert len(set(keys)) == len(keys)
    for k in keys:
        assert k and "/" not in k and "\x00" not in k and k not in (".", "..") and len(k) <= 1024


@pytest.mark.parametrize(
    ("call", "arg"),
    [
        ("create_entities", [{"name": "a", "entityType": 3, "observations": []}]),
        ("create_entities", [{"name": "a", "entityType": "t"}]),
        ("create_entities", "not a list"),
        ("create_relations", [{"from": "a", "to": "b"}]),
        ("add_observations", [{"entityName": "a", "contents": "x"}]),
        ("delete_observations", [{"entityName": "a"}]),
        ("delete_entities", [1]),
        ("open_nodes", None),
        ("search_nodes", 5),
        ("create_entities", [{"name": "\ud800", "entityType": "t", "observations": []}]),
        ("add_observations", [{"entityName": "a", "contents": ["ok", "\udfff"]}]),
    ],
)
def test_bad_input_raises_and_changes_nothing(kg: KnowledgeGraph, call: str, arg: object) -> None:
    kg.create_entities([ent("a", obs=["x"])])
    before = kg.read_graph()
    with pytest.raises(InvalidValueError):
        getattr(kg, call)(arg)
    assert kg.read_graph() == before


def test_foreign_records_in_the_namespace_are_ignored(kg: KnowledgeGraph, store: filemem.Store) -> None:
    store.put(("mcp", "memory", "entities"), "junk", [1, 2])
    store.put(("mcp", "memory", "relations"), "junk", {"from": 1})
    kg.create_entities([ent("a")])
    assert kg.read_graph().wire() == {"entities": [ent("a")], "relations": []}


def test_graphs_in_different_namespaces_are_separate(store: filemem.Store) -> None:
    one, two = KnowledgeGraph(store, ("team", "one")), KnowledgeGraph(store, ("team", "two"))
    one.create_entities([ent("a")])
    assert two.read_graph().entities == []
    assert store.list_namespaces(("team",)) == [("team", "one", "entities")]


# ---------------------------------------------------------------------------- the reference's JSONL file


REFERENCE_FILE = "\n".join(
    json.dumps(x)
    for x in [
        {"type": "entity", "name": "Ada", "entityType": "person", "observations": ["likes tea"]},
        {"type": "relation", "from": "Ada", "to": "Bob", "relationType": "knows"},
        {"type": "entity", "name": "Bob", "entityType": "person", "observations": []},
        {"type": "comment", "text": "other types are skipped, as the reference skips them"},
    ]
)  # the reference writes lines joined by "\n" with no trailing newline


def test_read_jsonl_takes_the_reference_format() -> None:
    graph = read_jsonl(REFERENCE_FILE + "\n\n")
    assert graph.wire() == {
        "entities": [ent("Ada", obs=["likes tea"]), ent("Bob")],
        "relations": [rel("Ada", "Bob")],
    }


@pytest.mark.parametrize(
    "bad",
    [
        '{"type": "entity", "name": "x"}',
        "not json",
        "[1]",
        '{"type": "relation", "from": "a", "to": 2, "relationType": "r"}',
    ],
)
def test_read_jsonl_names_the_bad_line(bad: str) -> None:
    with pytest.raises(InvalidValueError, match=r"^m\.jsonl:2: "):
        read_jsonl(REFERENCE_FILE.split("\n")[0] + "\n" + bad, source="m.jsonl")


def test_import_keeps_existing_entities(kg: KnowledgeGraph, tmp_path: Path) -> None:
    kg.create_entities([ent("Ada", "robot")])
    assert kg.import_graph(read_jsonl(REFERENCE_FILE)) == (1, 1)
    assert kg.read_graph().wire()["entities"] == [ent("Ada", "robot"), ent("Bob")]
    assert kg.import_graph(read_jsonl(REFERENCE_FILE)) == (0, 0)  # idempotent
