"""LangMem's memory tools over FileMemStore: create, update, search, delete, and a second instance sees them.

Runs when the ``langmem`` extra is installed (CI installs every extra).
"""

from __future__ import annotations

import asyncio
import json

import pytest

pytest.importorskip("langmem")

from langmem import create_manage_memory_tool, create_search_memory_tool

from filemem.integrations.langgraph import FileMemStore
from tests.integrations._langgraph_common import DIMS, toy_embed


def test_langmem_tools_manage_and_search_memories(location: str) -> None:
    path = location  # a directory or a postgresql:// URL (issue 16)
    index = {"dims": DIMS, "embed": toy_embed}
    with FileMemStore(path, index=index) as store:  # type: ignore[arg-type]
        manage = create_manage_memory_tool(("memories", "u1"), store=store)
        search = create_search_memory_tool(("memories", "u1"), store=store)
        created = manage.invoke({"content": "likes strong tea", "action": "create"})
        assert created.startswith("created memory ")
        key = created.split()[-1]
        manage.invoke({"content": "lives in Oslo", "action": "create"})
        manage.invoke({"content": "likes green tea", "action": "update", "id": key})
        assert store.get(("memories", "u1"), key).value == {"content": "likes green tea"}  # type: ignore[union-attr]

        found = json.loads(search.invoke({"query": "green tea", "limit": 5}))
        assert {m["value"]["content"] for m in found} == {"likes green tea", "lives in Oslo"}
        assert all(m["score"] is not None for m in found)  # ranked through filemem's vectors
        assert found[0]["value"]["content"] == "likes green tea"

        async def both() -> None:
            await manage.ainvoke({"action": "delete", "id": key})

        asyncio.run(both())
    with FileMemStore(path, index=index) as again:  # type: ignore[arg-type]
        search = create_search_memory_tool(("memories", "u1"), store=again)
        texts = [m["value"]["content"] for m in json.loads(search.invoke({"query": "Oslo"}))]
        assert texts == ["lives in Oslo"]
