"""uvicorn's websockets-sansio protocol with a direct frame writer in the scope (layer L7; see :mod:`._wsframes`).

Invariant: :meth:`FrameWriterProtocol._write_frame` writes only whole,
already-encoded frames, only on an open connection whose transport is below
its high-water mark; otherwise it writes nothing and returns False, and the
caller takes the ordinary ASGI send (which waits for the buffer to drain).
Needs uvicorn (imported by ``_run`` only).
"""

from __future__ import annotations

from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.protocol import State

from ._wsframes import EXTENSION

__all__ = ["FrameWriterProtocol"]


class FrameWriterProtocol(WebSocketsSansIOProtocol):
    """uvicorn's websockets-sansio protocol whose scope offers :data:`EXTENSION` (see the module docstring)."""

    def handle_connect(self, event: Any) -> None:
        super().handle_connect(event)
        scope = getattr(self, "scope", None)
        if scope is not None:  # None: the handshake was refused, no app runs
            scope["extensions"][EXTENSION] = self._write_frame

    def _write_frame(self, frame: bytes) -> bool:
        if (
            self.disconnected
            or self.close_sent
            or not self.handshake_complete
            or self.initial_response is not None
            or not self.writable.is_set()
            or self.conn.state is not State.OPEN
            or self.transport.is_closing()
        ):
            return False
        self.transport.write(frame)
        return True
