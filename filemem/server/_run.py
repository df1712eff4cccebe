"""Running the server: open the store, build the app, serve with uvicorn until stopped (layer L7).

Needs the ``server`` extra (imported here, never at ``import filemem``).
Invariant: the store is closed after uvicorn stops (its locks and watcher
go with it); uvicorn's access log is off because ``?token=`` would land in it.
"""

from __future__ import annotations

import argparse
import gc
import socket
import sys
from typing import Final

import uvicorn

from .. import Store
from .._cli._base import EXIT_OK, Output
from ._app import ServerConfig, create_app
from ._auth import TokenSet
from ._wsproto import FrameWriterProtocol

__all__ = ["run"]

#: The GIL switch interval of the server process. The watcher thread reads each
#: changed shard's header as soon as it can; with the default 5 ms it waits
#: behind the event loop, and a header read late already belongs to a later
#: write (whose keys are then announced as a namespace-wide re-read).
_SWITCH_INTERVAL_S: Final = 0.0005


def run(args: argparse.Namespace, tokens: TokenSet | None, sock: socket.socket, out: Output) -> int:
    """Serve until interrupted; the socket is already bound."""
    config = ServerConfig(
        tokens=tokens,
        readonly=args.readonly,
        max_body_bytes=args.max_body_bytes,
        retain=args.retain,
        send_timeout_s=args.ws_send_timeout,
        maintain_interval_s=args.maintain,
    )
    sys.setswitchinterval(_SWITCH_INTERVAL_S)
    with Store(args.path, readonly=args.readonly, lock_timeout_s=args.lock_timeout) as store:
        app = create_app(store, config)
        host, port = sock.getsockname()[:2]
        shown = f"[{host}]" if ":" in host else host
        out.line(
            f"filemem serve: {store.path} on http://{shown}:{port} ({'read-only' if args.readonly else 'read-write'}"
            f"{', no authentication' if tokens is None else f', {len(tokens)} token(s)'})"
        )
        out.stream.flush()
        server = uvicorn.Server(
            uvicorn.Config(
                app,
                log_level="warning",
                access_log=False,
                # websockets-sansio, plus writing the hub's encoded frames to followers as they are.
                ws=FrameWriterProtocol,
                # Compressing every frame for every client cost the loop most of its time
                # (one deflate per client per frame); change messages are small.
                ws_per_message_deflate=False,
                lifespan="on",
            )
        )
        # What exists now (modules, the app, the store's caches) lives as long as the process. Frozen,
        # the collector never walks it again: a full collection over it paused the event loop, and
        # every follower's delivery with it, for tens of ms (40 ms seen with 200 followers).
        gc.collect()
        gc.freeze()
        server.run(sockets=[sock])
    return EXIT_OK
