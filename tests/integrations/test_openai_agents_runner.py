"""A real ``Runner.run`` keeps its conversation in a FileMemSession, with a fake model (no network)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

pytest.importorskip("agents")

from agents import Agent, Model, ModelResponse, RunConfig, Runner, SQLiteSession, Usage, function_tool
from openai.types.responses import ResponseFunctionToolCall, ResponseOutputMessage, ResponseOutputText

import filemem
from filemem.integrations.openai_agents import FileMemSession


def _message(text: str, n: int) -> ResponseOutputMessage:
    return ResponseOutputMessage(
        id=f"msg_{n}",
        type="message",
        role="assistant",
        status="completed",
        content=[ResponseOutputText(type="output_text", text=text, annotations=[])],
    )


class FakeModel(Model):
    """Calls the ``note`` tool on the first turn of each run, then answers with what it has seen."""

    def __init__(self) -> None:
        self.inputs: list[list[Any]] = []

    async def get_response(self, system_instructions: Any, input: Any, *args: Any, **kwargs: Any) -> ModelResponse:
        items = [{"role": "user", "content": input}] if isinstance(input, str) else list(input)
        self.inputs.append(items)
        n = len(self.inputs)
        if items[-1].get("type") != "function_call_output":
            call = ResponseFunctionToolCall(
                type="function_call",
                id=f"fc_{n}",
                call_id=f"call_{n}",
                name="note",
                arguments=json.dumps({"n": n}),
                status="completed",
            )
            return ModelResponse(output=[call], usage=Usage(), response_id=None)
        said = [i["content"] for i in items if i.get("role") == "user"]
        return ModelResponse(output=[_message(f"heard {said}", n)], usage=Usage(), response_id=None)

    def stream_response(self, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        raise NotImplementedError("the test runs without streaming")


@function_tool
def note(n: int) -> str:
    """Note a number."""
    return f"noted {n}"


async def _conversation(session: Any) -> tuple[FakeModel, list[str]]:
    model = FakeModel()
    agent = Agent(name="helper", model=model, tools=[note])
    config = RunConfig(tracing_disabled=True)
    outputs = []
    for text in ("I like tea", "What do I like?"):
        result = await Runner.run(agent, text, session=session, run_config=config)
        outputs.append(result.final_output)
    return model, outputs


def test_runner_keeps_history_in_filemem_like_sqlite(location: str) -> None:
    with filemem.Store(location) as store:
        ours = FileMemSession("chat-1", store)
        model, outputs = asyncio.run(_conversation(ours))
        assert outputs == ["heard ['I like tea']", "heard ['I like tea', 'What do I like?']"]
        # The second run's first model call saw the first run's whole turn, from the session.
        assert [i.get("type", "message") for i in model.inputs[2]] == [
            "message",
            "function_call",
            "function_call_output",
            "message",
            "message",
        ]
        history = asyncio.run(ours.get_items())
        ref = SQLiteSession("chat-1")
        try:
            _, ref_outputs = asyncio.run(_conversation(ref))
            assert ref_outputs == outputs
            assert history == asyncio.run(ref.get_items())
        finally:
            ref.close()
        # Another process's view (a second store on the directory) sees the same history.
        with filemem.Store(location) as other:
            assert asyncio.run(FileMemSession("chat-1", other).get_items()) == history
