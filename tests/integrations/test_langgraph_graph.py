"""A real compiled LangGraph graph on FileMemStore: a tool node writes and reads memories, driven by a fake model.

No ``from __future__ import annotations`` here: LangChain resolves the tools'
``Annotated[..., InjectedStore()]`` hints at run time.
"""

from typing import Annotated, Any

import pytest

pytest.importorskip("langgraph.prebuilt")

from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.tools import tool
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.prebuilt import InjectedStore, ToolNode, tools_condition

from filemem.integrations.langgraph import FileMemStore


def test_compiled_graph_tool_node_writes_and_reads_memories(location: str) -> None:
    @tool
    def remember(fact: str, store: Annotated[Any, InjectedStore()]) -> str:
        """Remember a fact about the user."""
        store.put(("memories", "u1"), f"fact-{len(store.search(('memories', 'u1'), limit=100))}", {"fact": fact})
        return "saved"

    @tool
    def recall(store: Annotated[Any, InjectedStore()]) -> str:
        """Recall what is known about the user."""
        return "; ".join(i.value["fact"] for i in store.search(("memories", "u1"), limit=100))

    script = iter(
        [
            AIMessage("", tool_calls=[{"name": "remember", "args": {"fact": "likes tea"}, "id": "c1"}]),
            AIMessage("", tool_calls=[{"name": "remember", "args": {"fact": "lives in Oslo"}, "id": "c2"}]),
            AIMessage("", tool_calls=[{"name": "recall", "args": {}, "id": "c3"}]),
            AIMessage("You like tea and live in Oslo."),
        ]
    )
    model = GenericFakeChatModel(messages=script)

    def agent(state: MessagesState) -> dict[str, Any]:
        return {"messages": [model.invoke(state["messages"])]}

    builder = StateGraph(MessagesState)
    builder.add_node("agent", agent)
    builder.add_node("tools", ToolNode([remember, recall]))
    builder.add_edge(START, "agent")
    builder.add_conditional_edges("agent", tools_condition, {"tools": "tools", END: END})
    builder.add_edge("tools", "agent")

    path = location  # a directory or a postgresql:// URL (issue 16)
    with FileMemStore(path) as store:
        graph = builder.compile(store=store)
        out = graph.invoke({"messages": [HumanMessage("remember things")]})
        tool_texts = [m.content for m in out["messages"] if m.type == "tool"]
        assert tool_texts == ["saved", "saved", "likes tea; lives in Oslo"]
        assert out["messages"][-1].content == "You like tea and live in Oslo."
    # Another process's view (a fresh instance on the same store) has them too.
    with FileMemStore(path) as again:
        assert sorted(i.value["fact"] for i in again.search(("memories", "u1"))) == ["likes tea", "lives in Oslo"]
