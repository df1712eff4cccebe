"""The OpenAPI 3.1 document of the HTTP API, written by hand (layer L7).

Invariant: every route the app serves is described here;
tests/server/test_openapi.py fails when a route is missing.
"""

from __future__ import annotations

from typing import Any

__all__ = ["openapi_document"]

_REF_PROBLEM = {"$ref": "#/components/responses/Problem"}
_NS = {"name": "namespace", "in": "path", "required": True, "schema": {"type": "string"}, "description": "a/b/c"}
_KEY = {"name": "key", "in": "path", "required": True, "schema": {"type": "string"}}
_PAGE = [
    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}},
    {"name": "cursor", "in": "query", "schema": {"type": "string"}, "description": "`next` of the previous page"},
]


def _json(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _op(
    summary: str,
    ok: dict[str, Any],
    *,
    scope: str | None,
    params: list[Any] | None = None,
    body: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": summary,
        "responses": {"200": ok, "4XX": _REF_PROBLEM, "5XX": _REF_PROBLEM, **(extra or {})},
    }
    if scope is None:
        op["security"] = []
    else:
        op["description"] = f"Needs the `{scope}` scope."
    if params:
        op["parameters"] = params
    if body is not None:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
    return op


_RECORD = {"$ref": "#/components/schemas/Record"}
_COLLECT_RECORD: dict[str, Any] = {
    "type": "object",
    "required": ["namespace", "key", "value"],
    "additionalProperties": False,
    "properties": {
        "namespace": {"type": "string"},
        "key": {"type": "string"},
        "value": {},
        "priority": {"enum": ["high", "normal", "low"], "default": "normal"},
    },
}
_ANY: dict[str, Any] = {}


def openapi_document() -> dict[str, Any]:
    """The document served at ``/openapi.json``."""
    obj = {"type": "object"}
    paths: dict[str, Any] = {
        "/": {"get": _op("the dashboard page", {"description": "HTML"}, scope=None)},
        "/static/{path}": {
            "get": _op(
                "the dashboard's static files",
                {"description": "a file"},
                scope=None,
                params=[{"name": "path", "in": "path", "required": True, "schema": {"type": "string"}}],
            )
        },
        "/openapi.json": {"get": _op("this document", _json(obj), scope=None)},
        "/health/live": {"get": _op("the process serves", _json(obj), scope=None)},
        "/health/ready": {
            "get": _op(
                "ready to serve: store open, watcher alive, dead letters under the threshold",
                _json(obj),
                scope=None,
                extra={"503": _json(obj, "a check failed; `checks` names it")},
            )
        },
        "/metrics": {"get": _op("Prometheus metrics", {"description": "text exposition format"}, scope="admin")},
        "/v1/whoami": {"get": _op("the token's name, scopes and prefixes", _json(obj), scope="any")},
        "/v1/namespaces": {
            "get": _op(
                "namespaces under a prefix (whole segments) with record counts",
                _json(obj),
                scope="read",
                params=[
                    {"name": "prefix", "in": "query", "schema": {"type": "string"}},
                    {"name": "max_depth", "in": "query", "schema": {"type": "integer", "minimum": 1}},
                ],
            )
        },
        "/v1/ns/{namespace}/records/{key}": {
            "get": _op(
                "one record; ETag is its version; If-None-Match gives 304",
                _json(_RECORD),
                scope="read",
                params=[_NS, _KEY],
                extra={"304": {"description": "not modified"}},
            ),
            "put": _op(
                "store a value; If-Match: version or If-None-Match: * make it conditional (412 on conflict)",
                _json(obj),
                scope="write",
                params=[_NS, _KEY],
                body={
                    "type": "object",
                    "required": ["value"],
                    "properties": {"value": _ANY, "ttl": {"type": ["number", "null"]}},
                },
            ),
            "delete": _op("remove a record (If-Match as for PUT)", _json(obj), scope="write", params=[_NS, _KEY]),
        },
        "/v1/ns/{namespace}/records": {
            "get": _op("records of a namespace, by key, paged", _json(obj), scope="read", params=[_NS, *_PAGE])
        },
        "/v1/ns/{namespace}/keys": {
            "get": _op("keys of a namespace, paged", _json(obj), scope="read", params=[_NS, *_PAGE])
        },
        "/v1/search": {
            "post": _op(
                "search records under a prefix",
                _json(obj),
                scope="read",
                body={
                    "type": "object",
                    "properties": {
                        "prefix": {"type": "string"},
                        "query": {"type": ["string", "null"]},
                        "filter": {"type": ["object", "null"]},
                        "limit": {"type": "integer"},
                        "offset": {"type": "integer"},
                    },
                },
            )
        },
        "/v1/batch": {
            "post": _op(
                "puts and deletes, all or nothing",
                _json(obj),
                scope="write",
                body={
                    "type": "object",
                    "required": ["ops"],
                    "properties": {
                        "ops": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["op", "namespace", "key"],
                                "properties": {
                                    "op": {"enum": ["put", "delete"]},
                                    "namespace": {"type": "string"},
                                    "key": {"type": "string"},
                                    "value": _ANY,
                                    "if_version": {"type": ["integer", "null"]},
                                    "ttl": {"type": ["number", "null"]},
                                },
                            },
                        }
                    },
                },
            )
        },
        "/v1/collect": {
            "post": {
                **_op(
                    "queue records in the server's collector (fire-and-forget, durable journal)",
                    _json(obj),
                    scope="write",
                    body={"oneOf": [_COLLECT_RECORD, {"type": "array", "minItems": 1, "items": _COLLECT_RECORD}]},
                ),
                "responses": {
                    "202": _json(
                        {
                            "type": "object",
                            "properties": {
                                "accepted": {"type": "integer"},
                                "ids": {"type": "array", "items": {"type": "integer"}},
                            },
                        },
                        "Accepted: queued and journaled; applied in batches",
                    ),
                    "4XX": _REF_PROBLEM,
                    "5XX": _REF_PROBLEM,
                },
            }
        },
        "/v1/sessions": {
            "get": _op(
                "sessions of every process (alive=true|false|all)",
                _json(obj),
                scope="read",
                params=[{"name": "alive", "in": "query", "schema": {"enum": ["true", "false", "all"]}}],
            )
        },
        "/v1/sessions/{session_id}/stop": {
            "post": _op(
                "ask a live session to stop",
                _json(obj),
                scope="admin",
                params=[{"name": "session_id", "in": "path", "required": True, "schema": {"type": "string"}}],
            )
        },
        "/v1/check": {"get": _op("verify every file (read-only)", _json(obj), scope="admin")},
        "/v1/stats": {"get": _op("every figure /metrics shows, as JSON", _json(obj), scope="admin")},
        "/v1/health": {"get": _op("findings with a recommended action each", _json(obj), scope="admin")},
        "/v1/changes": {
            "get": _op(
                "WebSocket: changes and session events; resume with ?cursor=",
                {"description": "switching protocols"},
                scope="read",
                params=[
                    {"name": "prefix", "in": "query", "schema": {"type": "string"}},
                    {"name": "cursor", "in": "query", "schema": {"type": "string"}},
                    {"name": "token", "in": "query", "schema": {"type": "string"}},
                    {
                        "name": "batch",
                        "in": "query",
                        "schema": {"enum": ["auto", "1", "0"], "default": "auto"},
                        "description": "frames: auto (an array when several messages are due), 1 (always arrays), "
                        "0 (one message per frame)",
                    },
                ],
                extra={"101": {"description": "WebSocket upgrade"}},
            )
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "filemem serve", "version": "1", "description": "See docs/server.md."},
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Record": {
                    "type": "object",
                    "properties": {
                        "namespace": {"type": "string"},
                        "key": {"type": "string"},
                        "value": _ANY,
                        "version": {"type": "integer"},
                        "created_at": {"type": "number"},
                        "updated_at": {"type": "number"},
                        "expires_at": {"type": ["number", "null"]},
                    },
                },
                "Problem": {
                    "type": "object",
                    "properties": {
                        "title": {"type": "string"},
                        "status": {"type": "integer"},
                        "detail": {"type": "string"},
                        "exception": {"type": "string"},
                        "current_version": {"type": "integer"},
                    },
                },
            },
            "responses": {
                "Problem": {
                    "description": "an error",
                    "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}},
                }
            },
        },
        "security": [{"bearer": []}],
    }
