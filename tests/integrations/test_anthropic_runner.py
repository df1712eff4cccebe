"""filemem's memory tool inside the SDK's own tool runner, against a fake Messages API (no network, no model)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

anthropic = pytest.importorskip("anthropic")
httpx2 = pytest.importorskip("httpx2")

import filemem  # noqa: E402
from filemem.integrations.anthropic import AsyncFileMemMemoryTool, FileMemMemoryTool  # noqa: E402

SCRIPT: list[list[dict[str, Any]]] = [
    [{"type": "tool_use", "id": "tu_1", "name": "memory", "input": {"command": "view", "path": "/memories"}}],
    [
        {
            "type": "tool_use",
            "id": "tu_2",
            "name": "memory",
            "input": {"command": "create", "path": "/memories/prefs.md", "file_text": "- likes coffee\n"},
        }
    ],
    [
        {
            "type": "tool_use",
            "id": "tu_3",
            "name": "memory",
            "input": {"command": "str_replace", "path": "/memories/prefs.md", "old_str": "coffee", "new_str": "tea"},
        }
    ],
    [{"type": "tool_use", "id": "tu_4", "name": "memory", "input": {"command": "view", "path": "/memories/nope"}}],
    [{"type": "text", "text": "Noted: you like tea."}],
]


class FakeMessagesAPI:
    """Answers each POST /v1/messages with the next scripted assistant turn; keeps the requests."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []

    def __call__(self, request: Any) -> Any:
        body = json.loads(request.content)
        self.requests.append(body)
        content = SCRIPT[len(self.requests) - 1]
        return httpx2.Response(
            200,
            json={
                "id": f"msg_{len(self.requests)}",
                "type": "message",
                "role": "assistant",
                "model": body["model"],
                "content": content,
                "stop_reason": "tool_use" if content[0]["type"] == "tool_use" else "end_turn",
                "stop_sequence": None,
                "usage": {"input_tokens": 10, "output_tokens": 10},
            },
        )

    def tool_results(self) -> list[dict[str, Any]]:
        """The tool_result blocks the runner sent back, in order."""
        out = []
        for body in self.requests[1:]:
            last = body["messages"][-1]
            out.extend(block for block in last["content"] if block.get("type") == "tool_result")
        return out


def _text(result: dict[str, Any]) -> str:
    content = result["content"]
    return content if isinstance(content, str) else "".join(block["text"] for block in content)


def _check(api: FakeMessagesAPI, final: Any, store: filemem.Store) -> None:
    assert len(api.requests) == len(SCRIPT)
    assert api.requests[0]["tools"] == [{"type": "memory_20250818", "name": "memory"}]
    results = api.tool_results()
    assert [r["tool_use_id"] for r in results] == ["tu_1", "tu_2", "tu_3", "tu_4"]
    assert _text(results[0]).startswith("Here're the files and directories up to 2 levels deep in /memories")
    assert _text(results[1]) == "File created successfully at: /memories/prefs.md"
    assert "     1\t- likes tea" in _text(results[2])
    assert results[3].get("is_error") is True
    assert _text(results[3]) == "The path /memories/nope does not exist. Please provide a valid path."
    assert [r.get("is_error") for r in results[:3]] == [None, None, None]
    assert final.content[0].text == "Noted: you like tea."
    assert store.get(("memories",), "prefs.md")["text"] == "- likes tea\n"


def test_sync_tool_runner(location: str) -> None:
    api = FakeMessagesAPI()
    client = anthropic.Anthropic(api_key="test", http_client=httpx2.Client(transport=httpx2.MockTransport(api)))
    with filemem.Store(location) as store:
        runner = client.beta.messages.tool_runner(
            model="claude-sonnet-4-5",
            max_tokens=256,
            tools=[FileMemMemoryTool(store)],
            messages=[{"role": "user", "content": "I like coffee. No, tea."}],
        )
        final = runner.until_done()
        _check(api, final, store)
    client.close()


def test_async_tool_runner(location: str) -> None:
    api = FakeMessagesAPI()

    async def main(store: filemem.Store) -> Any:
        http = httpx2.AsyncClient(transport=httpx2.MockTransport(api))
        client = anthropic.AsyncAnthropic(api_key="test", http_client=http)
        try:
            runner = client.beta.messages.tool_runner(
                model="claude-sonnet-4-5",
                max_tokens=256,
                tools=[AsyncFileMemMemoryTool(store)],
                messages=[{"role": "user", "content": "I like coffee. No, tea."}],
            )
            return await runner.until_done()
        finally:
            await client.close()

    with filemem.Store(location) as store:
        final = asyncio.run(main(store))
        _check(api, final, store)


def test_tool_from_a_path_opens_and_closes_its_store(location: str) -> None:
    tool = FileMemMemoryTool(location, namespace=("agent-1", "memories"))
    assert tool.call({"command": "create", "path": "/memories/a.md", "file_text": "x"}).startswith("File created")
    tool.clear_all_memory()
    tool.close()
    with pytest.raises(filemem.StoreClosedError):
        tool.store.keys(tool.namespace)
    with pytest.raises(filemem.InvalidKeyError):
        FileMemMemoryTool(location, namespace=("..",))
    with pytest.raises(filemem.InvalidValueError):
        FileMemMemoryTool(42)  # type: ignore[arg-type]
