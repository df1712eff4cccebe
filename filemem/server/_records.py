"""The data routes of the HTTP API: records, keys, namespaces, search, batch, sessions (layer L7).

Invariants: a handler checks the token's scope and namespace prefixes before
it reads or writes, and validates the whole request before the first write
(a batch is one ``store.batch()``: all or nothing). ``If-Match`` and
``If-None-Match: *`` become ``if_version``, so the check and the write are one
atomic step under the library's lock; a mismatch is 412 with the current
version. Lists page by key: the cursor is the last key returned.
"""

from __future__ import annotations

import base64
import binascii
import bisect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .. import ConflictError, InvalidKeyError, InvalidQueryError, InvalidValueError, Store
from ._hub import session_json
from ._problems import ApiError
from ._shapes import namespace_of, record_json

if TYPE_CHECKING:
    from ._app import Server

__all__ = ["record_routes"]

_PAGE_DEFAULT: Final = 100
_PAGE_MAX: Final = 1000
#: Counting records of more namespaces than this in one listing is not cheap: counts are null.
_COUNT_MAX_NAMESPACES: Final = 200
_BATCH_MAX_OPS: Final = 10_000

Handler = Callable[["Server", Request], Any]


def _ns(request: Request) -> tuple[str, ...]:
    return namespace_of(request.path_params["namespace"])


def _int_param(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, "Bad Request", f"{name} must be an integer, not {raw!r}") from None
    if not low <= value <= high:
        raise ApiError(400, "Bad Request", f"{name} must be between {low} and {high}, not {value}")
    return value


def _etag_version(text: str) -> int:
    raw = text.strip()
    if raw.startswith("W/"):
        raw = raw[2:]
    raw = raw.strip('"')
    if not raw.isdigit():
        raise ApiError(400, "Bad Request", f"If-Match must be a record version (an ETag from a GET), not {text!r}")
    return int(raw)


def _cursor_encode(key: str) -> str:
    return base64.urlsafe_b64encode(key.encode("utf-8")).decode("ascii")


def _cursor_decode(text: str | None) -> str | None:
    if not text:
        return None
    try:
        return base64.b64decode(text.encode("ascii"), altchars=b"-_", validate=True).decode("utf-8")
    except (ValueError, binascii.Error, UnicodeError):
        raise ApiError(400, "Bad Request", f"cursor {text!r} is not one this server returned") from None


def _page(request: Request, keys: list[str]) -> tuple[list[str], str | None]:
    limit = _int_param(request, "limit", _PAGE_DEFAULT, 1, _PAGE_MAX)
    after = _cursor_decode(request.query_params.get("cursor"))
    start = 0
    if after is not None:
        start = bisect.bisect_right(keys, after)
    page = keys[start : start + limit]
    more = start + limit < len(keys)
    return page, (_cursor_encode(page[-1]) if more and page else None)


# ---------------------------------------------------------------------- records


async def _get_record(server: Server, request: Request) -> Response:
    ns = _ns(request)
    key = request.path_params["key"]
    server.require(request, "read", ns)
    item = await server.call("get", server.store.get_item, ns, key, consistency="strict")
    if item is None:
        raise ApiError(404, "Not Found", f"no record {key!r} in {'/'.join(ns)!r}", exception="KeyError")
    etag = f'"{item.version}"'
    inm = request.headers.get("if-none-match")
    if inm is not None and (inm.strip() == "*" or etag in [t.strip() for t in inm.split(",")]):
        return Response(status_code=304, headers={"ETag": etag})
    return JSONResponse(record_json(item), headers={"ETag": etag})


def _conditional(request: Request, store: Store, ns: tuple[str, ...], key: str) -> int | None:
    """``if_version`` from If-Match / If-None-Match (``If-Match: *`` reads the current version)."""
    im = request.headers.get("if-match")
    inm = request.headers.get("if-none-match")
    if im is not None and inm is not None:
        raise ApiError(400, "Bad Request", "send If-Match or If-None-Match, not both")
    if inm is not None:
        if inm.strip() != "*":
            raise ApiError(400, "Bad Request", "on a write, If-None-Match may only be * (create only)")
        return 0
    if im is None:
        return None
    if im.strip() == "*":
        item = store.get_item(ns, key, consistency="strict")
        if item is None:
            raise ConflictError(f"If-Match: * but {key!r} is absent", namespace=ns, key=key, current_version=0)
        return item.version
    return _etag_version(im)


async def _put_record(server: Server, request: Request) -> Response:
    ns = _ns(request)
    key = request.path_params["key"]
    server.require(request, "write", ns)
    body = await server.body(request)
    if not isinstance(body, dict) or "value" not in body:
        raise ApiError(400, "Bad Request", 'the body must be {"value": ..., "ttl": seconds or null}')
    unknown = set(body) - {"value", "ttl"}
    if unknown:
        raise ApiError(400, "Bad Request", f"unknown fields {sorted(unknown)}")
    ttl = body.get("ttl")
    store = server.store

    def put() -> int:
        if_version = _conditional(request, store, ns, key)
        return store.put(ns, key, body["value"], ttl=ttl, if_version=if_version)

    version = await server.call("put", put)
    return JSONResponse({"namespace": "/".join(ns), "key": key, "version": version}, headers={"ETag": f'"{version}"'})


async def _delete_record(server: Server, request: Request) -> Response:
    ns = _ns(request)
    key = request.path_params["key"]
    server.require(request, "write", ns)
    store = server.store

    def delete() -> bool:
        return store.delete(ns, key, if_version=_conditional(request, store, ns, key))

    existed = await server.call("delete", delete)
    return JSONResponse({"namespace": "/".join(ns), "key": key, "deleted": existed})


async def _list_records(server: Server, request: Request) -> Response:
    ns = _ns(request)
    server.require(request, "read", ns)
    items = await server.call("list", server.store.items, ns)
    by_key = {it.key: it for it in items}
    page, nxt = _page(request, sorted(by_key))
    return JSONResponse({"items": [record_json(by_key[k]) for k in page], "next": nxt})


async def _list_keys(server: Server, request: Request) -> Response:
    ns = _ns(request)
    server.require(request, "read", ns)
    keys = await server.call("keys", server.store.keys, ns)
    page, nxt = _page(request, keys)
    return JSONResponse({"keys": page, "next": nxt})


async def _namespaces(server: Server, request: Request) -> Response:
    who = server.require(request, "read")
    raw = request.query_params.get("prefix", "").strip("/")
    prefix = namespace_of(raw) if raw else ()
    max_depth = _int_param(request, "max_depth", 0, 0, 1000) or None
    if not who.may_see_under(prefix):
        return JSONResponse({"namespaces": []})
    store = server.store

    def listing() -> list[dict[str, Any]]:
        found = [ns for ns in store.list_namespaces(prefix or None) if who.covers(ns)]
        if max_depth is not None:
            found = sorted({ns[:max_depth] for ns in found})
        count = len(found) <= _COUNT_MAX_NAMESPACES
        return [{"namespace": "/".join(ns), "records": len(store.keys(ns)) if count else None} for ns in found]

    return JSONResponse({"namespaces": await server.call("namespaces", listing)})


# ---------------------------------------------------------------------- search, batch


async def _search(server: Server, request: Request) -> Response:
    who = server.require(request, "read")
    body = await server.body(request)
    if not isinstance(body, dict):
        raise ApiError(400, "Bad Request", 'the body must be {"prefix", "query", "filter", "limit", "offset"}')
    unknown = set(body) - {"prefix", "query", "filter", "limit", "offset"}
    if unknown:
        raise ApiError(400, "Bad Request", f"unknown fields {sorted(unknown)}")
    raw = body.get("prefix") or ""
    if not isinstance(raw, str):
        raise InvalidQueryError("prefix must be a namespace string like a/b")
    prefix = namespace_of(raw.strip("/")) if raw.strip("/") else ()
    if not who.covers(prefix):
        # A narrower token may search the whole store only through one of its prefixes.
        inside = [p for p in who.prefixes if p[: len(prefix)] == prefix]
        if len(inside) != 1:
            raise ApiError(403, "Forbidden", f"token {who.name!r} may not search {raw!r}; search under its prefixes")
        prefix = inside[0]
    limit, offset = body.get("limit", 10), body.get("offset", 0)
    hits = await server.call(
        "search", server.store.search, prefix or None, body.get("query"), body.get("filter"), limit, offset
    )
    return JSONResponse(
        {"hits": [{"item": record_json(h.item), "score": h.score} for h in hits if who.covers(h.item.namespace)]}
    )


def _batch_ops(
    body: Any, server: Server, request: Request
) -> list[tuple[str, tuple[str, ...], str, Any, int | None, Any]]:
    if not isinstance(body, dict) or not isinstance(body.get("ops"), list) or set(body) - {"ops"}:
        raise ApiError(400, "Bad Request", 'the body must be {"ops": [{"op": "put"|"delete", ...}, ...]}')
    raw_ops = body["ops"]
    if len(raw_ops) > _BATCH_MAX_OPS:
        raise ApiError(400, "Bad Request", f"at most {_BATCH_MAX_OPS} ops in one batch, not {len(raw_ops)}")
    ops = []
    for i, raw in enumerate(raw_ops):
        if not isinstance(raw, dict) or raw.get("op") not in ("put", "delete"):
            raise ApiError(400, "Bad Request", f"ops[{i}]: op must be 'put' or 'delete'")
        unknown = set(raw) - {"op", "namespace", "key", "value", "if_version", "ttl"}
        if unknown:
            raise ApiError(400, "Bad Request", f"ops[{i}]: unknown fields {sorted(unknown)}")
        ns_text, key = raw.get("namespace"), raw.get("key")
        if not isinstance(ns_text, str) or not isinstance(key, str):
            raise InvalidKeyError(f"ops[{i}]: namespace and key must be strings")
        if raw["op"] == "put" and "value" not in raw:
            raise InvalidValueError(f"ops[{i}]: a put needs a value")
        ns = namespace_of(ns_text.strip("/"))
        server.require(request, "write", ns)
        ops.append((raw["op"], ns, key, raw.get("value"), raw.get("if_version"), raw.get("ttl")))
    return ops


async def _batch(server: Server, request: Request) -> Response:
    server.require(request, "write")
    body = await server.body(request)
    ops = _batch_ops(body, server, request)
    store = server.store

    def commit() -> list[Any]:
        batch = store.batch()
        for op, ns, key, value, if_version, ttl in ops:
            if op == "put":
                batch.put(ns, key, value, ttl=ttl, if_version=if_version)
            else:
                batch.delete(ns, key, if_version=if_version)
        return batch.commit()

    results = await server.call("batch", commit)
    return JSONResponse({"results": results})


# ---------------------------------------------------------------------- sessions


async def _sessions(server: Server, request: Request) -> Response:
    who = server.require(request, "read")
    alive_raw = request.query_params.get("alive", "all")
    alive = {"true": True, "false": False, "all": None}.get(alive_raw.lower(), "bad")
    if alive == "bad":
        raise ApiError(400, "Bad Request", f"alive must be true, false or all, not {alive_raw!r}")
    infos = await server.call("sessions", server.store.sessions, alive=alive)
    visible = [
        session_json(i) for i in infos if who.unrestricted or (i.namespace is not None and who.covers(i.namespace))
    ]
    return JSONResponse({"sessions": visible})


async def _stop_session(server: Server, request: Request) -> Response:
    server.require(request, "admin")
    session_id = request.path_params["session_id"]
    stopped = await server.call("stop", server.store.request_stop, session_id)
    return JSONResponse({"id": session_id, "requested": stopped})


def record_routes() -> list[tuple[str, Handler, list[str]]]:
    """Path, handler and methods of every data route."""
    return [
        ("/v1/namespaces", _namespaces, ["GET"]),
        ("/v1/ns/{namespace:path}/records/{key}", _get_record, ["GET"]),
        ("/v1/ns/{namespace:path}/records/{key}", _put_record, ["PUT"]),
        ("/v1/ns/{namespace:path}/records/{key}", _delete_record, ["DELETE"]),
        ("/v1/ns/{namespace:path}/records", _list_records, ["GET"]),
        ("/v1/ns/{namespace:path}/keys", _list_keys, ["GET"]),
        ("/v1/search", _search, ["POST"]),
        ("/v1/batch", _batch, ["POST"]),
        ("/v1/sessions", _sessions, ["GET"]),
        ("/v1/sessions/{session_id}/stop", _stop_session, ["POST"]),
    ]
