"""``filemem serve``: the store over HTTP and WebSocket, with live updates, metrics, health and a dashboard (layer L7).

Over the public API only; needs the ``server`` extra (``pip install "filemem[server]"``),
imported when the server starts, so ``import filemem`` never needs it. Token
handling (:func:`add_token`, :func:`load_tokens`) is standard library only.

Example::

    import filemem, uvicorn
    from filemem.server import ServerConfig, add_token, create_app, load_tokens

    token = add_token("tokens.json", "acme-reader", ["read"], ["tenant/acme"])
    with filemem.Store("./memories") as store:
        app = create_app(store, ServerConfig(tokens=load_tokens("tokens.json")))
        uvicorn.run(app, host="127.0.0.1", port=8765)

Modules: ``_auth`` (token file, scopes, prefixes), ``_hub`` (the change feed
numbered and retained for WebSocket clients), ``_app`` (routes, limits),
``_records`` (data routes), ``_collect`` (``POST /v1/collect`` and the
server's collector), ``_ws`` (the WebSocket), ``_metrics``,
``_health``, ``_openapi``, ``_problems`` (problem+json), ``_command`` (the
CLI command) and ``_run``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._auth import Principal, TokenSet, add_token, ensure_token_file, load_tokens

if TYPE_CHECKING:
    from ._app import ServerConfig, create_app

__all__ = ["Principal", "ServerConfig", "TokenSet", "add_token", "create_app", "ensure_token_file", "load_tokens"]


def __getattr__(name: str) -> Any:
    # The app needs Starlette: import it only when asked for.
    if name in ("create_app", "ServerConfig"):
        from . import _app  # noqa: PLC0415 - Starlette only when the app is asked for

        return getattr(_app, name)
    raise AttributeError(f"module 'filemem.server' has no attribute {name!r}")
