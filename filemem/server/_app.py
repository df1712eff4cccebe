"""The ASGI application of ``filemem serve``: routes, authentication, request limits (layer L7).

Invariants: every ``/v1`` route authenticates first and checks scope and
namespace before it touches the store; a body is read up to the configured
limit and parsed completely before anything is written; store calls run in
worker threads (the library blocks on locks and fsync), never on the loop.
The server is just another process on the store: it goes through the public
API, so it takes the library's locks like any agent.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import HTTPConnection, Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles

from .. import FileMemError, Store
from ..admin import to_json_value
from ._auth import ANONYMOUS_ADMIN, Principal, TokenSet
from ._collect import CollectorHost, collect_route
from ._health import HealthAdapter
from ._hub import ChangeHub
from ._metrics import Figures
from ._openapi import openapi_document
from ._problems import ApiError, problem, problem_of
from ._records import record_routes
from ._ws import changes_endpoint

__all__ = ["ServerConfig", "create_app"]

STATIC_DIR: Final = os.path.join(os.path.dirname(__file__), "static")
T = TypeVar("T")


@dataclass
class ServerConfig:
    """How the server runs (the options of ``filemem serve``).

    ``tokens``: None runs without authentication (loopback only; the command
    refuses anything else). ``max_body_bytes``: larger request bodies get 413.
    ``retain``: change messages kept for resuming clients. ``send_timeout_s``:
    a WebSocket client that does not take a message within this long is
    closed (code 4008). ``ready_max_dead_letters``: /health/ready fails past it.
    """

    tokens: TokenSet | None = None
    readonly: bool = False
    max_body_bytes: int = 1024 * 1024
    retain: int = 10_000
    send_timeout_s: float = 10.0
    ready_max_dead_letters: int = 1000
    maintain_interval_s: float | None = None
    extra_figures: list[Callable[[], dict[str, Any]]] = field(default_factory=list)


class Server:
    """State shared by the handlers of one app: the store, the hub, the figures, the config."""

    def __init__(self, store: Store, config: ServerConfig) -> None:
        self.store = store
        self.config = config
        self.hub = ChangeHub(store, retain=config.retain)
        self.health = HealthAdapter(store, config)
        self.collectors = CollectorHost(store)
        self.figures = Figures(store, self.hub, self._extra)

    def _extra(self) -> dict[str, Any]:
        out: dict[str, Any] = self.health.figures()
        out.update(self.collectors.figures())
        for fn in self.config.extra_figures:
            out.update(fn())
        return out

    # ------------------------------------------------------------------ auth

    def principal(self, conn: HTTPConnection, *, query_token: bool = False) -> Principal:
        """Who the request is, or ApiError 401."""
        tokens = self.config.tokens
        if tokens is None:
            return ANONYMOUS_ADMIN
        header = conn.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            token = conn.query_params.get("token", "") if query_token else ""
            if not token:
                raise ApiError(401, "Unauthorized", "send Authorization: Bearer <token>")
        who = tokens.authenticate(token.strip())
        if who is None:
            raise ApiError(401, "Unauthorized", "unknown token")
        return who

    def require(self, conn: HTTPConnection, scope: str, namespace: tuple[str, ...] | None = None) -> Principal:
        """The principal, checked for ``scope`` and (if given) ``namespace``; else 401/403."""
        who = self.principal(conn)
        if not who.can(scope):
            raise ApiError(403, "Forbidden", f"token {who.name!r} lacks the {scope!r} scope")
        if namespace is not None and not who.covers(namespace):
            raise ApiError(403, "Forbidden", f"token {who.name!r} may not use namespace {'/'.join(namespace)!r}")
        return who

    def require_whole_store(self, conn: HTTPConnection) -> Principal:
        """Store-wide figures and findings: admin, or a read token for the whole store."""
        who = self.principal(conn)
        if not (who.can("admin") or (who.can("read") and who.unrestricted)):
            raise ApiError(
                403, "Forbidden", f"token {who.name!r} is limited to some namespaces; this needs the whole store"
            )
        return who

    # ------------------------------------------------------------------ store calls

    async def call(self, kind: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a blocking store call in a worker thread, timed and counted as ``kind``."""

        def timed() -> T:
            started = time.perf_counter()
            error: str | None = None
            try:
                return fn(*args, **kwargs)
            except FileMemError as exc:
                error = type(exc).__name__
                raise
            finally:
                self.figures.observe(kind, time.perf_counter() - started, error)

        return await run_in_threadpool(timed)

    async def body(self, request: Request) -> Any:
        """The request's JSON body, read up to the limit (413 past it, 400 if malformed)."""
        limit = self.config.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise ApiError(413, "Content Too Large", f"the body is {declared} bytes; the limit is {limit}")
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise ApiError(413, "Content Too Large", f"the body passed the limit of {limit} bytes")
            chunks.append(chunk)
        raw = b"".join(chunks)
        if not raw:
            raise ApiError(400, "Bad Request", "a JSON body is required")
        try:
            return json.loads(raw, parse_constant=_no_constant)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ApiError(400, "Bad Request", f"malformed JSON: {exc}") from None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _wrap(server: Server, handler: Callable[[Server, Request], Any]) -> Callable[[Request], Any]:
    async def endpoint(request: Request) -> Response:
        try:
            result: Response = await handler(server, request)
        except ApiError as exc:
            result = problem(exc.status, exc.title, exc.detail, **exc.extra)
        except FileMemError as exc:
            result = problem_of(exc)
        server.figures.requests.labels(f"{result.status_code // 100}xx").inc()
        return result

    return endpoint


# ---------------------------------------------------------------------- small routes


async def _index(server: Server, request: Request) -> Response:
    path = os.path.join(STATIC_DIR, "index.html")
    if os.path.exists(path):
        return FileResponse(path, media_type="text/html")
    return HTMLResponse("<!doctype html><title>filemem</title><p>filemem serve is running; see /openapi.json.</p>")


async def _openapi(server: Server, request: Request) -> Response:
    return JSONResponse(openapi_document())


async def _whoami(server: Server, request: Request) -> Response:
    return JSONResponse(server.principal(request).as_json())


async def _live(server: Server, request: Request) -> Response:
    return JSONResponse({"ok": True})


async def _ready(server: Server, request: Request) -> Response:
    ok, checks = await run_in_threadpool(server.health.ready, server.hub, server.collectors.collector)
    return JSONResponse({"ok": ok, "checks": checks}, status_code=200 if ok else 503)


async def _health(server: Server, request: Request) -> Response:
    server.require_whole_store(request)
    findings = await server.call("health", server.health.findings)
    ok = not any(f["severity"] == "error" for f in findings)
    return JSONResponse({"ok": ok, "findings": findings})


async def _metrics(server: Server, request: Request) -> Response:
    server.require_whole_store(request)
    body = await run_in_threadpool(generate_latest, server.figures.registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST)


async def _stats(server: Server, request: Request) -> Response:
    server.require_whole_store(request)
    snap = await server.call("stats", server.figures.snapshot)
    return JSONResponse(to_json_value(snap))


async def _check(server: Server, request: Request) -> Response:
    server.require_whole_store(request)
    findings = await server.call("check", server.store.check, False)
    return JSONResponse(
        {
            "ok": not findings,
            "findings": [
                {
                    "code": f.code,
                    "path": os.path.relpath(f.path, server.store.path) if f.path else "",
                    "message": f.message,
                    "severity": f.severity,
                    "fixed": f.fixed,
                    "action": f.action,
                }
                for f in findings
            ],
        }
    )


async def _not_found(request: Request, exc: Exception) -> Response:
    return problem(404, "Not Found", f"no route {request.url.path}")


async def _method_not_allowed(request: Request, exc: Exception) -> Response:
    return problem(405, "Method Not Allowed", f"{request.method} is not allowed on {request.url.path}")


def create_app(store: Store, config: ServerConfig | None = None) -> Starlette:
    """The ASGI app serving ``store`` (the caller opens and closes the store).

    Example::

        import uvicorn
        from filemem.server import ServerConfig, create_app, load_tokens

        with filemem.Store("./memories") as store:
            app = create_app(store, ServerConfig(tokens=load_tokens("tokens.json")))
            uvicorn.run(app, host="127.0.0.1", port=8765)
    """
    server = Server(store, config or ServerConfig())

    def route(path: str, handler: Callable[[Server, Request], Any], methods: list[str]) -> Route:
        return Route(path, _wrap(server, handler), methods=methods)

    routes: list[BaseRoute] = [
        route("/", _index, ["GET"]),
        route("/openapi.json", _openapi, ["GET"]),
        route("/health/live", _live, ["GET"]),
        route("/health/ready", _ready, ["GET"]),
        route("/metrics", _metrics, ["GET"]),
        route("/v1/whoami", _whoami, ["GET"]),
        route("/v1/stats", _stats, ["GET"]),
        route("/v1/check", _check, ["GET"]),
        route("/v1/health", _health, ["GET"]),
        *[route(path, handler, methods) for path, handler, methods in [*record_routes(), collect_route()]],
        WebSocketRoute("/v1/changes", changes_endpoint(server)),
        Mount("/static", app=StaticFiles(directory=STATIC_DIR, check_dir=False), name="static"),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        server.hub.start(asyncio.get_running_loop())
        await run_in_threadpool(server.collectors.open)
        tasks = server.health.start_background()
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            server.hub.close()
            # Drains the queue; what it cannot apply in time stays in the journal for the next opener.
            await run_in_threadpool(server.collectors.close)

    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={404: _not_found, 405: _method_not_allowed},
    )
    app.state.server = server
    return app
