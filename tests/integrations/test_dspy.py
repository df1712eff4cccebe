"""The DSPy retriever: as a module, as dspy.Retrieve's rm, and as a ReAct tool driven by a fake LM."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

dspy = pytest.importorskip("dspy")

from dspy.utils.dummies import DummyLM  # noqa: E402

import filemem  # noqa: E402
from filemem.integrations.dspy import FileMemRetriever  # noqa: E402
from tests.helpers import needs_keyword_search  # noqa: E402

FACTS = {
    "f1": {"text": "the staging database is read-only on Fridays", "topic": "ops"},
    "f2": {"text": "deploys to staging go through the blue pipeline", "topic": "ops"},
    "f3": {"text": "the user prefers tea over coffee", "topic": "prefs"},
    "f4": {"text": "staging credentials rotate every month", "topic": "ops"},
}


@pytest.fixture
def store(location: str) -> Iterator[filemem.Store]:
    """A fresh store on each backend (a directory, a postgresql:// URL), with a few facts."""
    with filemem.Store(location) as s:
        for key, value in FACTS.items():
            s.put(("agent-1", "facts"), key, value)
        s.put(("agent-2", "facts"), "other", {"text": "staging is somebody else's"})
        yield s


def _expected(store: filemem.Store, query: str, k: int) -> list[str]:
    return [h.item.value["text"] for h in store.search(("agent-1",), query=query, limit=k)]


def test_module_returns_at_most_k_passages_from_store_search(store: filemem.Store) -> None:
    needs_keyword_search(store)
    retriever = FileMemRetriever(store, ("agent-1",), k=2, text_field="text")
    pred = retriever("staging")
    assert isinstance(pred, dspy.Prediction)
    assert pred.passages == _expected(store, "staging", 2) and len(pred.passages) == 2
    assert all(ref.startswith("agent-1/facts/") for ref in pred.refs)
    assert pred.scores == sorted(pred.scores, reverse=True)
    assert retriever("staging", k=10).passages == _expected(store, "staging", 10)  # 3 match: fewer than k
    assert retriever("tea").passages == ["the user prefers tea over coffee"]
    assert retriever("nothing-like-this").passages == []
    assert retriever("   ").passages == []
    # Without text_field every string of the value is the passage.
    assert FileMemRetriever(store, ("agent-1",), k=1)("tea").passages == ["the user prefers tea over coffee prefs"]
    filtered = FileMemRetriever(store, ("agent-1",), k=5, text_field="text", filter={"topic": "prefs"})
    assert filtered("staging coffee").passages == ["the user prefers tea over coffee"]


def test_rm_for_dspy_retrieve(store: filemem.Store) -> None:
    needs_keyword_search(store)
    retriever = FileMemRetriever(store, ("agent-1",), k=3, text_field="text")
    with dspy.context(rm=retriever.rm):  # dspy.configure(rm=...) sets the same setting globally
        got = dspy.Retrieve(k=2)("staging")
        assert got.passages == _expected(store, "staging", 2)
        assert dspy.Retrieve(k=5)("staging").passages == _expected(store, "staging", 5)
    raw = retriever.rm("staging", k=1)
    assert len(raw) == 1 and raw[0].long_text == _expected(store, "staging", 1)[0] and raw[0].ref


def test_react_uses_the_tool_with_a_fake_lm(store: filemem.Store) -> None:
    needs_keyword_search(store)
    retriever = FileMemRetriever(store, ("agent-1",), k=2, text_field="text")
    tool = retriever.as_tool()
    assert tool.__name__ == "search_memory" and tool("tea") == ["the user prefers tea over coffee"]
    lm = DummyLM(
        [
            {"next_thought": "look it up", "next_tool_name": "search_memory", "next_tool_args": {"query": "staging"}},
            {"next_thought": "enough", "next_tool_name": "finish", "next_tool_args": {}},
            {"reasoning": "memory says so", "answer": "read-only on Fridays"},
        ]
    )
    agent = dspy.ReAct("question -> answer", tools=[tool])
    with dspy.context(lm=lm):
        pred = agent(question="Can I write to the staging database on Friday?")
    assert pred.answer == "read-only on Fridays"
    assert pred.trajectory["tool_name_0"] == "search_memory"
    assert pred.trajectory["observation_0"] == _expected(store, "staging", 2)


def test_recall_context_sources(store: filemem.Store) -> None:
    from filemem.memory import Source

    sources = [Source.namespace(store, ("agent-1", "facts")), Source.namespace(store, ("agent-2", "facts"))]
    retriever = FileMemRetriever(sources=sources, k=2)
    passages = retriever("staging").passages
    assert len(passages) == 2 and all("staging" in p for p in passages)
    assert len(FileMemRetriever(sources=sources, k=10)("staging").passages) == 4  # every match, fewer than k


def test_bad_arguments_and_ownership(store: filemem.Store, tmp_path: Path) -> None:
    needs_keyword_search(store)
    with pytest.raises(filemem.InvalidValueError):
        FileMemRetriever(store, k=0)
    with pytest.raises(filemem.InvalidValueError):
        FileMemRetriever()
    with pytest.raises(filemem.InvalidQueryError):
        FileMemRetriever(store, filter={"x": {"$regex": "a"}})
    with pytest.raises(filemem.InvalidQueryError):
        FileMemRetriever(store)(42)
    owned = FileMemRetriever(tmp_path / "other", k=1)
    clone = owned.deepcopy()  # what DSPy optimizers do
    assert clone.store is owned.store and clone("x").passages == []
    owned.close()
    with pytest.raises(filemem.StoreClosedError):
        owned("x")
