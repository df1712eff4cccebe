"""``/v1/changes``: the WebSocket stream of changes and session events, with resume (layer L7).

Protocol (see docs/server.md): the server first sends ``{"type": "hello",
"epoch", "head"}``, then ``change``, ``session`` and ``missed`` messages,
each with a ``cursor``. A client that reconnects with ``?cursor=<last seen>``
gets every retained message after it, or a ``missed`` message first.

Frames (``?batch=``): by default (``auto``) a frame is one message (a JSON
object) when one message is due, and a JSON array of the messages due, in
cursor order, when several are: the per-frame cost (a socket write per client)
then does not grow with the write rate. ``batch=1`` always sends arrays,
``batch=0`` always one message per frame.

Invariant: a client's task only ever waits on its own socket; a client that
does not take a frame within ``send_timeout_s`` is closed with code 4008.
Messages are encoded once by the hub; every client is sent the same string.
Under ``filemem serve`` (``batch=auto`` or ``1``) the hub itself writes the
same frame bytes to each client's socket while it keeps up (a
:class:`._hub.Follower`; :mod:`._wsframes`), and the client's task only sends
what the hub hands back to it.
Authentication failures close with 4401 (no or unknown token) or 4403
(scope or namespace not allowed) right after the handshake, so browsers see
the reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, Final

from starlette.websockets import WebSocket, WebSocketDisconnect

from .. import InvalidKeyError
from ._problems import ApiError
from ._shapes import namespace_of
from ._wsframes import frame_writer

if TYPE_CHECKING:
    from ._app import Server

__all__ = ["CLOSE_FORBIDDEN", "CLOSE_SLOW", "CLOSE_UNAUTHORIZED", "changes_endpoint", "frame_mode"]

CLOSE_UNAUTHORIZED: Final = 4401
CLOSE_FORBIDDEN: Final = 4403
CLOSE_SLOW: Final = 4008
CLOSE_BAD_REQUEST: Final = 4400
CLOSE_GOING_AWAY: Final = 1001


def frame_mode(raw: str | None) -> str | None:
    """``?batch=`` as ``"auto"``, ``"array"`` or ``"single"`` (None: not a valid value)."""
    value = (raw or "auto").lower()
    if value in ("auto", ""):
        return "auto"
    if value in ("1", "true", "yes"):
        return "array"
    if value in ("0", "false", "no"):
        return "single"
    return None


def changes_endpoint(server: Server) -> Callable[[WebSocket], Coroutine[Any, Any, None]]:
    """The WebSocket endpoint bound to ``server``."""

    async def endpoint(ws: WebSocket) -> None:
        await ws.accept()
        try:
            who = server.principal(ws, query_token=True)
            if not who.can("read"):
                raise ApiError(403, "Forbidden", f"token {who.name!r} lacks the 'read' scope")
            raw = ws.query_params.get("prefix", "").strip("/")
            prefix = namespace_of(raw) if raw else ()
            if not who.may_see_under(prefix):
                raise ApiError(403, "Forbidden", f"token {who.name!r} may not follow {raw!r}")
            mode = frame_mode(ws.query_params.get("batch"))
            if mode is None:
                raise ApiError(400, "Bad Request", "batch must be auto, 1 or 0")
        except ApiError as exc:
            code = {401: CLOSE_UNAUTHORIZED, 400: CLOSE_BAD_REQUEST}.get(exc.status, CLOSE_FORBIDDEN)
            await ws.close(code, exc.detail[:120])
            return
        except InvalidKeyError as exc:
            await ws.close(CLOSE_FORBIDDEN, str(exc)[:120])
            return
        after = ws.query_params.get("cursor") or None
        hub = server.hub
        timeout = server.config.send_timeout_s
        hub.clients += 1
        try:
            await ws.send_text(json.dumps({"type": "hello", "epoch": hub.epoch, "head": str(hub.cursor)}))

            loop = asyncio.get_running_loop()
            # When the frame being sent was handed over (0.0: none in flight). A watchdog reads it a few
            # times per timeout: a timer per frame per client cost the loop a tenth of its time.
            sending_since = [0.0]

            async def send(texts: list[str]) -> None:
                # The ordinary path: each frame through the ASGI send, which waits while the
                # client's socket buffer is full (the watchdog times that wait).
                frames = texts if mode == "single" or (mode == "auto" and len(texts) == 1) else [hub.batch_frame(texts)]
                for frame in frames:
                    sending_since[0] = loop.time()
                    await ws.send_text(frame)
                    hub.frames_ordinary += 1
                sending_since[0] = 0.0

            async def read_loop() -> None:
                # Any ASGI server, and one message per frame: this task sends every frame.
                async with contextlib.aclosing(hub.read(who, prefix, after)) as stream:
                    async for texts in stream:
                        await send(texts)

            async def follow_loop(write: Callable[[bytes], bool]) -> None:
                # Under ``filemem serve``: the hub writes each wake-up's frame itself while this
                # task is parked; the task sends only what the hub hands back (see Follower).
                pos, first = hub.start_position(after)
                if first:
                    await send(first)
                follower = hub.follow(who, prefix, pos, write, arrays=mode == "array")
                try:
                    while not hub.closed:
                        while follower.pos <= hub.last_seq:
                            texts, follower.pos = hub.take(follower.pos, who, prefix, follower.everything)
                            if texts:
                                await send(texts)
                        follower.parked = True
                        await follower.wake.wait()
                        follower.wake.clear()
                finally:
                    hub.unfollow(follower)

            write_frame = frame_writer(ws.scope)

            async def send_loop() -> None:
                if write_frame is not None and mode != "single":
                    await follow_loop(write_frame)
                else:
                    await read_loop()

            async def watchdog() -> None:
                # Returns (the client is too slow) once one frame has been in flight for ``timeout``.
                while True:
                    await asyncio.sleep(min(1.0, timeout / 4))
                    since = sending_since[0]
                    if since and loop.time() - since >= timeout:
                        return

            async def receive_loop() -> None:
                # Clients send nothing we need; reading is how a disconnect is noticed.
                while True:
                    message = await ws.receive()
                    if message["type"] == "websocket.disconnect":
                        return

            sender = asyncio.create_task(send_loop())
            receiver = asyncio.create_task(receive_loop())
            guard = asyncio.create_task(watchdog())
            done, pending = await asyncio.wait({sender, receiver, guard}, return_when=asyncio.FIRST_COMPLETED)
            for task in pending:
                task.cancel()
            for task in pending:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            if guard in done:
                hub.clients_closed_slow += 1
                with contextlib.suppress(Exception):
                    await ws.close(CLOSE_SLOW, "client too slow: resume with your last cursor")
            elif sender in done and sender.exception() is None:  # the hub closed: the server is shutting down
                with contextlib.suppress(Exception):
                    await ws.close(CLOSE_GOING_AWAY, "server shutting down")
        except (WebSocketDisconnect, RuntimeError):
            pass
        finally:
            hub.clients -= 1

    return endpoint
