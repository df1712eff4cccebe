"""Sending one encoded WebSocket frame to many clients: the bytes are built once, written as they are (layer L7).

A server-to-client WebSocket frame is not masked, so the frame carrying a
given text is the same bytes for every client. The change stream sends each
message (or array of messages) to every follower; going through the ASGI
``send`` once per client re-frames the same text per client (Starlette's
send, uvicorn's send, the websockets protocol's framing and a join), which
was about a third of the server's time with 200 followers.

:class:`._wsproto.FrameWriterProtocol` (what ``filemem serve`` runs) is
uvicorn's ``websockets-sansio`` protocol with one addition: the connection's
ASGI scope carries :data:`EXTENSION`, a
function that writes an already-encoded frame straight to the socket and
returns True, or returns False (and writes nothing) whenever the ordinary
path must be taken: the handshake not done, a close sent or received, the
connection lost, or the transport's buffer above its high-water mark (the
ordinary path then waits for it to drain, and the slow-client watchdog sees
that wait).

Invariant: the direct write only ever puts whole frames on the wire, between
the protocol's own frames (the event loop is one thread), so the stream stays
a valid WebSocket stream; it never bypasses flow control. Behind any other
ASGI server the extension is absent and every frame takes the ordinary path.
This module needs no ASGI server (the app imports it).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final

__all__ = ["EXTENSION", "frame_writer", "text_frame"]

#: The ASGI scope extension carrying the direct frame writer.
EXTENSION: Final = "filemem.ws.write_frame"

_FIN_TEXT: Final = 0x81


def text_frame(text: str) -> bytes:
    """One unmasked, unfragmented WebSocket text frame (RFC 6455 §5.2) carrying ``text``.

    Example::

        >>> text_frame("hi")
        b'\\x81\\x02hi'
    """
    payload = text.encode()
    n = len(payload)
    if n < 126:
        head = bytes((_FIN_TEXT, n))
    elif n < 1 << 16:
        head = bytes((_FIN_TEXT, 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((_FIN_TEXT, 127)) + n.to_bytes(8, "big")
    return head + payload


def frame_writer(scope: Mapping[str, Any]) -> Callable[[bytes], bool] | None:
    """The direct frame writer in a WebSocket connection's ``scope`` (None: another ASGI server)."""
    writer = scope.get("extensions", {}).get(EXTENSION)
    return writer if callable(writer) else None
