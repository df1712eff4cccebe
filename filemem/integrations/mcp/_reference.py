"""The reference memory server's tool definitions, word for word (data only).

Invariant: names, titles, descriptions, input and output schemas and
annotations are exactly those ``@modelcontextprotocol/server-memory``
(npm, version 2026.8.31) lists in ``tools/list``, so a client configured for
it sees the same tools here. tests/integrations/test_mcp_reference.py checks
them against a live reference server when node is installed, and
test_mcp_server.py against a recorded copy (tests/integrations/data/) always.
"""

from __future__ import annotations

from typing import Any, Final

__all__ = ["REFERENCE_VERSION", "TOOLS", "ToolSpec"]

#: The npm version these definitions were taken from.
REFERENCE_VERSION: Final = "2026.8.31"

ToolSpec = dict[str, Any]

_SCHEMA: Final = "http://json-schema.org/draft-07/schema#"


def _string(description: str | None = None) -> dict[str, Any]:
    return {"type": "string"} if description is None else {"type": "string", "description": description}


def _strings(description: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "array", "items": {"type": "string"}}
    if description is not None:
        out["description"] = description
    return out


def _object(properties: dict[str, Any], *, closed: bool) -> dict[str, Any]:
    # zod's JSON Schema output closes output objects (additionalProperties: false) but not input ones.
    out: dict[str, Any] = {"type": "object", "properties": properties, "required": list(properties)}
    if closed:
        out["additionalProperties"] = False
    return out


def _entity(*, closed: bool) -> dict[str, Any]:
    return _object(
        {
            "name": _string("The name of the entity"),
            "entityType": _string("The type of the entity"),
            "observations": _strings("An array of observation contents associated with the entity"),
        },
        closed=closed,
    )


def _relation(*, closed: bool) -> dict[str, Any]:
    return _object(
        {
            "from": _string("The name of the entity where the relation starts"),
            "to": _string("The name of the entity where the relation ends"),
            "relationType": _string("The type of the relation"),
        },
        closed=closed,
    )


def _input(properties: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"$schema": _SCHEMA, "type": "object", "properties": properties}
    if properties:
        out["required"] = list(properties)
    return out


def _output(properties: dict[str, Any]) -> dict[str, Any]:
    return {"$schema": _SCHEMA, **_object(properties, closed=True)}


def _array(items: dict[str, Any], description: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "array", "items": items}
    if description is not None:
        out["description"] = description
    return out


def _hints(*, read_only: bool, destructive: bool, idempotent: bool) -> dict[str, bool]:
    return {
        "readOnlyHint": read_only,
        "destructiveHint": destructive,
        "idempotentHint": idempotent,
        "openWorldHint": False,
    }


_WRITE: Final = _hints(read_only=False, destructive=False, idempotent=False)
_DELETE: Final = _hints(read_only=False, destructive=True, idempotent=True)
_READ: Final = _hints(read_only=True, destructive=False, idempotent=True)
_DONE: Final = _output({"success": {"type": "boolean"}, "message": {"type": "string"}})
_GRAPH: Final = _output(
    {"entities": _array(_entity(closed=True)), "relations": _array(_relation(closed=True))},
)


def _tool(name: str, title: str, description: str, inp: dict[str, Any], out: dict[str, Any], hints: Any) -> ToolSpec:
    return {
        "name": name,
        "title": title,
        "description": description,
        "inputSchema": inp,
        "outputSchema": out,
        "annotations": hints,
    }


#: The nine tools, in the reference's order.
TOOLS: Final[list[ToolSpec]] = [
    _tool(
        "create_entities",
        "Create Entities",
        "Create multiple new entities in the knowledge graph",
        _input({"entities": _array(_entity(closed=False))}),
        _output({"entities": _array(_entity(closed=True))}),
        _WRITE,
    ),
    _tool(
        "create_relations",
        "Create Relations",
        "Create multiple new relations between entities in the knowledge graph. Relations should be in active voice",
        _input({"relations": _array(_relation(closed=False))}),
        _output({"relations": _array(_relation(closed=True))}),
        _WRITE,
    ),
    _tool(
        "add_observations",
        "Add Observations",
        "Add new observations to existing entities in the knowledge graph",
        _input(
            {
                "observations": _array(
                    _object(
                        {
                            "entityName": _string("The name of the entity to add the observations to"),
                            "contents": _strings("An array of observation contents to add"),
                        },
                        closed=False,
                    )
                )
            }
        ),
        _output({"results": _array(_object({"entityName": _string(), "addedObservations": _strings()}, closed=True))}),
        _WRITE,
    ),
    _tool(
        "delete_entities",
        "Delete Entities",
        "Delete multiple entities and their associated relations from the knowledge graph",
        _input({"entityNames": _strings("An array of entity names to delete")}),
        _DONE,
        _DELETE,
    ),
    _tool(
        "delete_observations",
        "Delete Observations",
        "Delete specific observations from entities in the knowledge graph",
        _input(
            {
                "deletions": _array(
                    _object(
                        {
                            "entityName": _string("The name of the entity containing the observations"),
                            "observations": _strings("An array of observations to delete"),
                        },
                        closed=False,
                    )
                )
            }
        ),
        _DONE,
        _DELETE,
    ),
    _tool(
        "delete_relations",
        "Delete Relations",
        "Delete multiple relations from the knowledge graph",
        _input({"relations": _array(_relation(closed=False), "An array of relations to delete")}),
        _DONE,
        _DELETE,
    ),
    _tool("read_graph", "Read Graph", "Read the entire knowledge graph", _input({}), _GRAPH, _READ),
    _tool(
        "search_nodes",
        "Search Nodes",
        "Search for nodes in the knowledge graph based on a query",
        _input({"query": _string("The search query to match against entity names, types, and observation content")}),
        _GRAPH,
        _READ,
    ),
    _tool(
        "open_nodes",
        "Open Nodes",
        "Open specific nodes in the knowledge graph by their names",
        _input({"names": _strings("An array of entity names to retrieve")}),
        _GRAPH,
        _READ,
    ),
]
