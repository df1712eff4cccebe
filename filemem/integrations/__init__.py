"""Adapters for the memory interfaces agent frameworks already use (layer L7).

One module per framework, each over filemem's public API only, each needing
an optional extra that it imports lazily (``import filemem`` never needs one):

    langgraph       FileMemStore, a ``langgraph.store.base.BaseStore``       pip install "filemem[langgraph]"
    anthropic       FileMemMemoryTool, Claude's memory tool backend         pip install "filemem[anthropic]"
    mcp             ``filemem mcp PATH``, a drop-in MCP memory server       pip install "filemem[mcp]"
    openai_agents   FileMemSession, an OpenAI Agents SDK ``Session``        pip install "filemem[openai-agents]"
    dspy            FileMemRetriever, a DSPy retriever / tool               pip install "filemem[dspy]"

``pip install "filemem[all]"`` brings every one. docs/integrations.md shows
each with a runnable example, its differences from the framework's reference
implementation, and the multi-process test behind its guarantee.
"""
