"""A drop-in for the reference MCP memory server, safe for many processes on one store (layer L7).

``filemem mcp PATH`` (or ``python -m filemem.integrations.mcp PATH``) serves
the nine knowledge-graph tools of ``@modelcontextprotocol/server-memory``
(same names, input schemas and result shapes) over stdio, or streamable
HTTP on 127.0.0.1 with ``--http``; ``--filemem-tools`` adds filemem's own
put/get/search/list_namespaces/recall_context. Entities and relations are
records (one each), every change one atomic write, so several servers on
one store never lose each other's writes. ``--import memory.jsonl`` takes
a reference server's file.

Example (Claude Code)::

    claude mcp add memory -- filemem mcp ~/.local/share/agent-memory

Needs the ``mcp`` extra (``pip install "filemem[mcp]"``) to serve; it is
imported only then. :class:`KnowledgeGraph` (the graph over a ``Store``)
and ``--import`` need only filemem.
"""

from __future__ import annotations

from typing import Any

from ._graph import DEFAULT_NAMESPACE as DEFAULT_NAMESPACE
from ._graph import Entity as Entity
from ._graph import EntityNotFoundError as EntityNotFoundError
from ._graph import Graph as Graph
from ._graph import KnowledgeGraph as KnowledgeGraph
from ._graph import Relation as Relation
from ._graph import read_jsonl as read_jsonl
from ._main import main as main

__all__ = [
    "DEFAULT_NAMESPACE",
    "Entity",
    "EntityNotFoundError",
    "Graph",
    "KnowledgeGraph",
    "Relation",
    "build_server",
    "main",
    "read_jsonl",
]


def build_server(store: Any, **kwargs: Any) -> Any:
    """An ``mcp.server.mcpserver.MCPServer`` over ``store`` (see ``_server.build_server``); needs the mcp extra.

    Example::

        with filemem.Store("./memories") as store:
            build_server(store, filemem_tools=True).run()
    """
    from ._server import build_server as build  # noqa: PLC0415 - the SDK is imported only here

    return build(store, **kwargs)
