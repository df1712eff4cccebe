"""The MCP server: the reference memory tools (and optionally filemem's own) on the official ``mcp`` SDK.

Invariant: the nine graph tools list exactly the reference's definitions
(:mod:`._reference`) and answer exactly its result shapes: ``content`` is one
text block (``JSON.stringify(result, null, 2)``, or the reference's fixed
message), ``structuredContent`` the object its ``outputSchema`` describes.
Expected failures (a missing entity, bad input, a busy store) come back as
tool results with ``isError: true`` and a one-line reason; nothing in a tool
call can take the server down. The tools run in the SDK's worker threads,
so one slow call does not stall the others (the ``Store`` is thread-safe).

Imports the ``mcp`` extra at import time: import this module only when
serving (``filemem.integrations.mcp`` does so lazily).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from typing import Any

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.tools import Tool
from mcp.types import CallToolResult, TextContent, ToolAnnotations
from typing_extensions import TypedDict  # pydantic needs it before Python 3.12

import filemem
from filemem import FileMemError, Store
from filemem.memory import Source, recall_context

from ._graph import DEFAULT_NAMESPACE, KnowledgeGraph
from ._reference import TOOLS

__all__ = ["GRAPH_RESOURCE_URI", "build_server"]

#: The resource the reference serves the whole graph under.
GRAPH_RESOURCE_URI = "memory://knowledge-graph"


# Argument types: the SDK validates calls against these (pydantic), while the
# schemas clients see are the reference's own (set on each Tool below).
class EntityIn(TypedDict):
    name: str
    entityType: str
    observations: list[str]


RelationIn = TypedDict("RelationIn", {"from": str, "to": str, "relationType": str})


class ObservationIn(TypedDict):
    entityName: str
    contents: list[str]


class DeletionIn(TypedDict):
    entityName: str
    observations: list[str]


def _json(obj: Any) -> str:
    # JSON.stringify(obj, null, 2): two-space indent, ", " never at line ends, non-ASCII kept as is.
    return json.dumps(obj, indent=2, ensure_ascii=False)


def _ok(text: str, structured: dict[str, Any]) -> CallToolResult:
    return CallToolResult(content=[TextContent(type="text", text=text)], structured_content=structured)


def _error(exc: BaseException) -> CallToolResult:
    text = str(exc) or type(exc).__name__  # verbatim: the reference's messages hold the caller's names as given
    return CallToolResult(content=[TextContent(type="text", text=text)], is_error=True)


def _guarded(fn: Callable[..., CallToolResult]) -> Callable[..., CallToolResult]:
    """Turn filemem's errors into tool errors (the reference's ``isError`` results), keeping the signature."""

    @functools.wraps(fn)  # the SDK reads the parameters through __wrapped__
    def call(*args: Any, **kwargs: Any) -> CallToolResult:
        try:
            return fn(*args, **kwargs)
        except FileMemError as exc:
            return _error(exc)

    return call


def _graph_tools(kg: KnowledgeGraph) -> dict[str, Callable[..., CallToolResult]]:
    def create_entities(entities: list[EntityIn]) -> CallToolResult:
        made = [e.wire() for e in kg.create_entities(entities)]
        return _ok(_json(made), {"entities": made})

    def create_relations(relations: list[RelationIn]) -> CallToolResult:
        made = [r.wire() for r in kg.create_relations(relations)]
        return _ok(_json(made), {"relations": made})

    def add_observations(observations: list[ObservationIn]) -> CallToolResult:
        results = kg.add_observations(observations)
        return _ok(_json(results), {"results": results})

    def delete_entities(entityNames: list[str]) -> CallToolResult:  # noqa: N803 - the reference's argument name
        kg.delete_entities(entityNames)
        return _ok("Entities deleted successfully", {"success": True, "message": "Entities deleted successfully"})

    def delete_observations(deletions: list[DeletionIn]) -> CallToolResult:
        kg.delete_observations(deletions)
        msg = "Observations deleted successfully"
        return _ok(msg, {"success": True, "message": msg})

    def delete_relations(relations: list[RelationIn]) -> CallToolResult:
        kg.delete_relations(relations)
        return _ok("Relations deleted successfully", {"success": True, "message": "Relations deleted successfully"})

    def read_graph() -> CallToolResult:
        graph = kg.read_graph().wire()
        return _ok(_json(graph), graph)

    def search_nodes(query: str) -> CallToolResult:
        graph = kg.search_nodes(query).wire()
        return _ok(_json(graph), graph)

    def open_nodes(names: list[str]) -> CallToolResult:
        graph = kg.open_nodes(names).wire()
        return _ok(_json(graph), graph)

    return {
        f.__name__: f
        for f in (
            create_entities,
            create_relations,
            add_observations,
            delete_entities,
            delete_observations,
            delete_relations,
            read_graph,
            search_nodes,
            open_nodes,
        )
    }


def _ns(namespace: str | list[str]) -> tuple[str, ...]:
    return tuple(namespace.split("/")) if isinstance(namespace, str) else tuple(namespace)


def _store_tools(store: Store) -> list[Callable[..., CallToolResult]]:
    """filemem's own API as tools (``--filemem-tools``): namespaces as ``"a/b"`` or ``["a", "b"]``."""

    def put(namespace: str | list[str], key: str, value: Any, ttl_seconds: float | None = None) -> CallToolResult:
        """Store a JSON value at (namespace, key); return its new version. Safe with many writers."""
        version = store.put(_ns(namespace), key, value, ttl=ttl_seconds)
        return _ok(_json({"version": version}), {"version": version})

    def get(namespace: str | list[str], key: str) -> CallToolResult:
        """The value at (namespace, key) with its version, or found=false."""
        item = store.get_item(_ns(namespace), key)
        out: dict[str, Any] = (
            {"found": False, "value": None, "version": None}
            if item is None
            else {"found": True, "value": item.value, "version": item.version}
        )
        return _ok(_json(out), out)

    def search(
        namespace_prefix: str | list[str] = "",
        query: str | None = None,
        filter: dict[str, Any] | None = None,
        limit: int = 10,
    ) -> CallToolResult:
        """Records under a namespace prefix ("" for all), ranked by BM25 on query, kept by a field filter
        ({"field": value} or {"field": {"$gte": 3}}); best first."""
        hits = store.search(_ns(namespace_prefix) if namespace_prefix else None, query, filter, limit)
        out = {
            "hits": [
                {"namespace": "/".join(h.item.namespace), "key": h.item.key, "value": h.item.value, "score": h.score}
                for h in hits
            ]
        }
        return _ok(_json(out), out)

    def list_namespaces(prefix: str | list[str] = "", max_depth: int | None = None) -> CallToolResult:
        """Namespaces that hold records, as "a/b" strings, optionally under a prefix."""
        found = store.list_namespaces(_ns(prefix) if prefix else None, max_depth=max_depth)
        out = {"namespaces": ["/".join(ns) for ns in found]}
        return _ok(_json(out), out)

    def recall_context_tool(query: str, namespaces: list[str], budget_chars: int = 4000) -> CallToolResult:
        """Context for a query from several namespaces at once, best snippets first, within budget_chars."""
        ctx = recall_context(query, [Source.namespace(store, _ns(n)) for n in namespaces], budget_chars)
        out = {
            "text": ctx.text,
            "snippets": [{"source": s.source, "text": s.text, "score": s.score, "ref": s.ref} for s in ctx.snippets],
            "failed": ctx.failed,
        }
        return _ok(_json(out), out)

    recall_context_tool.__name__ = "recall_context"
    return [put, get, search, list_namespaces, recall_context_tool]


def build_server(
    store: Store,
    *,
    namespace: tuple[str, ...] = DEFAULT_NAMESPACE,
    filemem_tools: bool = False,
) -> MCPServer[Any]:
    """An ``MCPServer`` serving the reference memory tools over ``store`` (and filemem's own with ``filemem_tools``).

    Example::

        import filemem
        from filemem.integrations.mcp import build_server

        with filemem.Store("./memories") as store:
            build_server(store).run()          # stdio; or .run("streamable-http", host="127.0.0.1", port=8765)
    """
    kg = KnowledgeGraph(store, namespace)
    tools: list[Tool] = []
    for fn, spec in zip(_graph_tools(kg).values(), TOOLS, strict=True):
        assert fn.__name__ == spec["name"]
        hints = spec["annotations"]
        tool = Tool.from_function(
            _guarded(fn),
            name=spec["name"],
            title=spec["title"],
            description=spec["description"],
            annotations=ToolAnnotations(
                read_only_hint=hints["readOnlyHint"],
                destructive_hint=hints["destructiveHint"],
                idempotent_hint=hints["idempotentHint"],
                open_world_hint=hints["openWorldHint"],
            ),
            structured_output=False,
        )
        # Publish the reference's schemas verbatim; calls are still validated by the argument model above.
        tool.parameters = spec["inputSchema"]
        tool.fn_metadata.output_schema = spec["outputSchema"]
        tools.append(tool)
    if filemem_tools:
        for fn in _store_tools(store):
            tools.append(Tool.from_function(_guarded(fn), structured_output=False))
    server: MCPServer[Any] = MCPServer(
        "filemem-memory",
        version=filemem.__version__,
        instructions="A knowledge graph memory shared safely by every process that opens the same filemem store.",
        tools=tools,
        log_level="WARNING",
    )

    @server.resource(
        GRAPH_RESOURCE_URI,
        name="knowledge-graph",
        title="Knowledge Graph",
        description="The full knowledge graph with all entities and relations",
        mime_type="application/json",
    )
    def knowledge_graph() -> str:
        return _json(kg.read_graph().wire())

    return server
