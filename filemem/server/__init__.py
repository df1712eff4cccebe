"""``filemem serve``: the store over HTTP and WebSocket, with live updates, metrics, health and a dashboard (layer L7).

Over the public API only; needs the ``server`` extra (``pip install "filemem[server]"``),
imported when the server starts, so ``import filemem`` never needs it.
"""
