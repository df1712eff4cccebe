"""The server is just another process on the store: SIGKILL it mid-write, mix it with library agents."""

from __future__ import annotations

import asyncio
import json
import signal
import threading
import time
from pathlib import Path
from typing import Any

import filemem
from tests.helpers import reap

from .conftest import ServerProc, make_tokens, start_server, websockets

_M = 40


def _library_agent(path: str, n: int) -> None:
    with filemem.Store(path) as store:
        for _ in range(n):
            store.update("rel/counter", "n", lambda v: (v or 0) + 1)


def _http_increment(srv: ServerProc, n: int, errors: list[str]) -> None:
    done = 0
    while done < n:
        got = srv.request("GET", "/v1/ns/rel/counter/records/n")
        if got.status == 404:
            r = srv.request("PUT", "/v1/ns/rel/counter/records/n", body={"value": 1}, headers={"If-None-Match": "*"})
        else:
            r = srv.request(
                "PUT",
                "/v1/ns/rel/counter/records/n",
                body={"value": got.body["value"] + 1},
                headers={"If-Match": got.headers["etag"]},
            )
        if r.status == 200:
            done += 1
        elif r.status not in (412, 503):
            errors.append(r.text)
            return


def test_library_agents_and_server_clients_keep_counters_exact(server: ServerProc, spawn_ctx: Any) -> None:
    procs = [spawn_ctx.Process(target=_library_agent, args=(server.path, _M)) for _ in range(2)]
    errors: list[str] = []
    threads = [threading.Thread(target=_http_increment, args=(server, _M, errors)) for _ in range(2)]
    try:
        for p in procs:
            p.start()
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)
    finally:
        reap(procs, timeout=300)
    assert not errors
    assert all(p.exitcode == 0 for p in procs)
    with filemem.Store(server.path) as store:
        assert store.get("rel/counter", "n") == 4 * _M
    assert server.request("GET", "/v1/ns/rel/counter/records/n").body["value"] == 4 * _M


def _writer(srv_port: list[int], token: str, ns: str, stop: threading.Event, acked: dict[str, int]) -> None:
    import http.client

    i = 0
    while not stop.is_set():
        key = f"k{i:05d}"
        conn = http.client.HTTPConnection("127.0.0.1", srv_port[0], timeout=10)
        try:
            conn.request(
                "PUT",
                f"/v1/ns/{ns}/records/{key}",
                body=json.dumps({"value": i}),
                headers={"Authorization": f"Bearer {token}"},
            )
            resp = conn.getresponse()
            resp.read()
        except (OSError, http.client.HTTPException):
            # The server is down, or died mid-reply (IncompleteRead, BadStatusLine: HTTPException, not
            # OSError): try the same write again. Writing the same value twice is harmless.
            time.sleep(0.05)
            continue
        finally:
            conn.close()
        if resp.status == 200:
            acked[key] = i
            i += 1


def _resumed(seen: list[dict[str, Any]]) -> bool:
    """Whether the follower reconnected with a cursor and received a change since."""
    connects = [i for i, m in enumerate(list(seen)) if m["type"] == "connected"]
    return (
        len(connects) >= 2
        and seen[connects[-1]]["cursor"] is not None
        and any(m["type"] == "change" for m in seen[connects[-1] :])
    )


def test_sigkill_the_server_while_clients_write(tmp_path: Path) -> None:
    token_file = str(tmp_path / "tokens.json")
    tokens = make_tokens(token_file)
    store_path = str(tmp_path / "store")
    srv = start_server(store_path, token_file, tokens=tokens)
    port = [srv.port]
    stop = threading.Event()
    acked: list[dict[str, int]] = [{} for _ in range(3)]
    writers = [
        threading.Thread(target=_writer, args=(port, tokens["admin"], f"kill/c{n}", stop, acked[n])) for n in range(3)
    ]
    seen: list[dict[str, Any]] = []
    ws_done = threading.Event()

    def follow() -> None:
        # A WebSocket client that reconnects with its last cursor whenever the server goes away.
        async def main() -> None:
            cursor: str | None = None
            while not ws_done.is_set():
                params = {"prefix": "kill"} if cursor is None else {"prefix": "kill", "cursor": cursor}
                try:
                    async with websockets.connect(srv_now().ws_url(**params)) as ws:
                        seen.append({"type": "connected", "cursor": cursor})
                        while not ws_done.is_set():
                            try:
                                frame = json.loads(await asyncio.wait_for(ws.recv(), 0.2))
                            except TimeoutError:
                                continue
                            # One message, or an array of them when several were due.
                            for msg in frame if isinstance(frame, list) else [frame]:
                                seen.append(msg)
                                cursor = msg.get("cursor", cursor)
                except (TimeoutError, OSError, websockets.WebSocketException):
                    # Down, closed, or died mid-handshake (InvalidMessage): reconnect with the cursor.
                    await asyncio.sleep(0.1)

        asyncio.run(main())

    current = [srv]

    def srv_now() -> ServerProc:
        return current[0]

    follower = threading.Thread(target=follow)
    try:
        follower.start()
        for w in writers:
            w.start()
        time.sleep(2.0)
        before = sum(len(a) for a in acked)
        srv.stop(signal.SIGKILL)
        assert srv.proc.returncode == -signal.SIGKILL
        time.sleep(0.3)
        current[0] = start_server(store_path, token_file, "--port", str(port[0]), tokens=tokens)
        time.sleep(2.0)
        # On a loaded machine the follower may take a while to get back: wait (bounded) until it
        # has resumed and heard of a write made through the new server, then stop the writers.
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and not _resumed(seen):
            time.sleep(0.2)
        stop.set()
        for w in writers:
            w.join(60)
        time.sleep(1.0)
        ws_done.set()
        follower.join(60)
    finally:
        stop.set()
        ws_done.set()
        current[0].stop()
        srv.stop()
    after = sum(len(a) for a in acked)
    assert before > 0 and after > before  # writes went on after the restart
    with filemem.Store(store_path) as store:
        for n, got in enumerate(acked):
            for key, value in got.items():
                assert store.get(f"kill/c{n}", key) == value, (n, key)
        assert [f.code for f in store.check() if f.severity == "error"] == []
    # The follower reconnected with its cursor, was told it missed what the dead server had, and resumed.
    connects = [i for i, m in enumerate(seen) if m["type"] == "connected"]
    assert len(connects) >= 2
    resumed = seen[connects[-1] :]
    assert resumed[0]["cursor"] is not None
    assert resumed[1]["type"] == "hello"
    assert resumed[2]["type"] == "missed" and resumed[2]["reason"] == "epoch"
    assert any(m["type"] == "change" for m in resumed[3:])
