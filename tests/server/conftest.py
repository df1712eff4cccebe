"""Fixtures for the server tests: a real ``filemem serve`` subprocess on 127.0.0.1 and a small HTTP client.

The server runs as its own process (``python -m filemem serve --port 0``),
exactly as users start it; tests talk to it over loopback with the standard
library's HTTP client and the ``websockets`` asyncio client.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
pytest.importorskip("prometheus_client")
websockets = pytest.importorskip("websockets")

from filemem.server import add_token  # noqa: E402

_BANNER = re.compile(r"on http://127\.0\.0\.1:(\d+)")


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: Any
    text: str


@dataclass
class ServerProc:
    """A running ``filemem serve`` and how to reach it."""

    proc: subprocess.Popen[str]
    port: int
    path: str
    token_file: str
    tokens: dict[str, str] = field(default_factory=dict)
    banner: list[str] = field(default_factory=list)

    @property
    def base(self) -> str:
        return f"127.0.0.1:{self.port}"

    def request(
        self,
        method: str,
        path: str,
        *,
        token: str | None = "admin",
        body: Any = None,
        raw: bytes | None = None,
        headers: dict[str, str] | None = None,
        timeout: float = 30.0,
    ) -> Reply:
        """One HTTP request; ``token`` names a token of this server (None: send none)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            hdrs = dict(headers or {})
            if token is not None:
                hdrs["Authorization"] = f"Bearer {self.tokens.get(token, token)}"
            data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
            if data is not None:
                hdrs.setdefault("Content-Type", "application/json")
            conn.request(method, path, body=data, headers=hdrs)
            resp = conn.getresponse()
            text = resp.read().decode()
            try:
                parsed = json.loads(text) if text else None
            except ValueError:
                parsed = None
            return Reply(resp.status, {k.lower(): v for k, v in resp.getheaders()}, parsed, text)
        finally:
            conn.close()

    def ws_url(self, token: str | None = "admin", **params: str) -> str:
        query = dict(params)
        if token is not None:
            query["token"] = self.tokens.get(token, token)
        from urllib.parse import urlencode

        return f"ws://127.0.0.1:{self.port}/v1/changes?{urlencode(query)}"

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def start_server(
    store_path: str, token_file: str | None, *extra: str, port: int = 0, tokens: dict[str, str] | None = None
) -> ServerProc:
    """Start ``filemem serve`` and wait until it listens."""
    cmd = [sys.executable, "-m", "filemem", "serve", store_path, "--port", str(port)]
    if token_file is not None:
        cmd += ["--token-file", token_file]
    cmd += list(extra)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    banner: list[str] = []
    deadline = time.monotonic() + 60
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        banner.append(line)
        m = _BANNER.search(line)
        if m:
            server = ServerProc(proc, int(m.group(1)), store_path, token_file or "", dict(tokens or {}), banner)
            _wait_ready(server)
            return server
    proc.kill()
    proc.wait(10)
    raise RuntimeError(f"server did not start: {''.join(banner)}")


def _wait_ready(server: ServerProc) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if server.request("GET", "/health/live", token=None, timeout=5).status == 200:
                return
        except (OSError, http.client.HTTPException):  # not listening yet, or a reply cut short
            pass
        time.sleep(0.05)
    raise RuntimeError("server never became live")


def make_tokens(token_file: str) -> dict[str, str]:
    """The tokens the tests use, by name."""
    return {
        "admin": add_token(token_file, "admin", ["read", "write", "admin"]),
        "reader": add_token(token_file, "reader", ["read"]),
        "acme": add_token(token_file, "acme", ["read", "write"], ["tenant/acme"]),
        "acme-ro": add_token(token_file, "acme-ro", ["read"], ["tenant/acme"]),
        "two": add_token(token_file, "two", ["read"], ["tenant/acme", "tenant/beta"]),
    }


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProc]:
    """One server per test module, with the tokens of :func:`make_tokens`."""
    root: Path = tmp_path_factory.mktemp("served")
    token_file = str(root / "tokens.json")
    tokens = make_tokens(token_file)
    srv = start_server(str(root / "store"), token_file, "--max-body-bytes", "65536", tokens=tokens)
    try:
        yield srv
    finally:
        srv.stop()


async def ws_collect(url: str, count: int, timeout: float = 30.0) -> list[dict[str, Any]]:
    """Connect, and return the first ``count`` messages after the hello."""
    out: list[dict[str, Any]] = []
    async with websockets.connect(url, max_size=None) as ws:
        hello = json.loads(await asyncio.wait_for(ws.recv(), timeout))
        assert hello["type"] == "hello"
        while len(out) < count:
            out.append(json.loads(await asyncio.wait_for(ws.recv(), timeout)))
    return out


def assert_announced(messages: list[dict[str, Any]], namespace: str, keys: list[str]) -> int:
    """Every key in ``keys`` was announced: by a change naming it, or (when the feed read a shard
    only after later writes replaced it and could not name them all) covered by a ``key: null``
    change of the namespace. Versions of one key only ever grow. Changes in different shards
    of a namespace may arrive out of commit order (docs/server.md). Returns how many keys only a
    null change covered."""
    named = [m for m in messages if m["type"] == "change" and m["namespace"] == namespace]
    versions: dict[str, int] = {}
    for m in named:
        if m["key"] is not None and m["op"] == "put":
            assert m["version"] > versions.get(m["key"], 0), f"{m['key']}: version went back"
            versions[m["key"]] = m["version"]
    seen = {m["key"] for m in named if m["key"] is not None}
    missing = [k for k in keys if k not in seen]
    nulls = sum(1 for m in named if m["key"] is None)
    assert not missing or nulls, f"keys {missing[:10]} were never announced (a silent gap)"
    return len(missing)
