"""The WebSocket change stream: every change announced, resume by cursor, explicit missed, slow clients."""

from __future__ import annotations

import asyncio
import json
import socket
import time
import weakref
from pathlib import Path
from typing import Any

import pytest

import filemem

from .conftest import ServerProc, assert_announced, make_tokens, start_server, websockets

# Messages of a batched frame not handed out yet, per connection.
_BUFFERED: weakref.WeakKeyDictionary[Any, list[dict[str, Any]]] = weakref.WeakKeyDictionary()


async def _recv(ws: Any, timeout: float = 30.0) -> dict[str, Any]:
    """The next message; a frame is one message or (by default, when several are due) an array of them."""
    buffered = _BUFFERED.setdefault(ws, [])
    if not buffered:
        frame = json.loads(await asyncio.wait_for(ws.recv(), timeout))
        buffered.extend(frame if isinstance(frame, list) else [frame])
    return buffered.pop(0)


async def _changes(ws: Any, n: int) -> list[dict[str, Any]]:
    out = []
    while len(out) < n:
        msg = await _recv(ws)
        if msg["type"] == "change":
            out.append(msg)
    return out


async def _until(ws: Any, key: str, op: str = "put") -> list[dict[str, Any]]:
    """Messages up to and including the change naming ``key`` with ``op``."""
    out: list[dict[str, Any]] = []
    while not out or out[-1].get("key") != key or out[-1].get("op") != op:
        out.append(await _recv(ws))
    return out


def _seq(cursor: str) -> int:
    return int(cursor.rsplit("-", 1)[1])


def test_changes_from_another_process_in_order(server: ServerProc) -> None:
    async def main() -> list[dict[str, Any]]:
        async with websockets.connect(server.ws_url(prefix="ws/order")) as ws:
            hello = await _recv(ws)
            assert hello["type"] == "hello" and hello["head"].startswith(hello["epoch"])
            with filemem.Store(server.path) as store:  # this test process is "another process"
                for i in range(30):
                    store.put("ws/order", f"k{i}", {"i": i})
                store.delete("ws/order", "k3")
            return await _until(ws, "k3", "delete")

    got = asyncio.run(main())
    puts = [m for m in got if m.get("op") == "put"]
    assert_announced(got, "ws/order", [f"k{i}" for i in range(30)])
    assert all(m["namespace"] == "ws/order" and m["value"] == {"i": int(m["key"][1:])} for m in puts)
    assert got[-1]["op"] == "delete" and got[-1]["key"] == "k3"
    seqs = [_seq(m["cursor"]) for m in got]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)


def test_writes_through_the_server_are_streamed_too(server: ServerProc) -> None:
    async def main() -> list[dict[str, Any]]:
        async with websockets.connect(server.ws_url(prefix="ws/http")) as ws:
            await _recv(ws)
            await asyncio.to_thread(server.request, "PUT", "/v1/ns/ws/http/records/a", body={"value": 1})
            await asyncio.to_thread(
                server.request,
                "POST",
                "/v1/batch",
                body={
                    "ops": [
                        {"op": "put", "namespace": "ws/http", "key": "b", "value": 2},
                        {"op": "delete", "namespace": "ws/http", "key": "a"},
                    ]
                },
            )
            return await _changes(ws, 3)

    got = asyncio.run(main())
    assert [(m["key"], m["op"]) for m in got[:1]] == [("a", "put")]
    assert {(m["key"], m["op"]) for m in got[1:]} == {("b", "put"), ("a", "delete")}


def test_resume_from_cursor_gets_exactly_what_followed(server: ServerProc) -> None:
    ns = "ws/resume"

    async def main() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        with filemem.Store(server.path) as store:
            async with websockets.connect(server.ws_url(prefix=ns)) as ws:
                await _recv(ws)
                for i in range(5):
                    store.put(ns, f"a{i}", i)
                first = await _changes(ws, 5)
            # disconnected: these happen while nobody listens
            for i in range(7):
                store.put(ns, f"b{i}", i)
            await asyncio.sleep(0.5)
            async with websockets.connect(server.ws_url(prefix=ns, cursor=first[-1]["cursor"])) as ws:
                await _recv(ws)
                second = await _until(ws, "b6")
        return first, second

    first, second = asyncio.run(main())
    assert_announced(first, ns, [f"a{i}" for i in range(5)])
    assert_announced(second, ns, [f"b{i}" for i in range(7)])
    assert all(m["type"] == "change" for m in second)  # nothing missed, nothing repeated
    assert _seq(second[0]["cursor"]) > _seq(first[-1]["cursor"])


def test_sessions_stream_started_changed_ended(server: ServerProc) -> None:
    async def main() -> list[dict[str, Any]]:
        async with websockets.connect(server.ws_url()) as ws:
            await _recv(ws)
            with filemem.Store(server.path) as store, store.session(agent="ws-agent", namespace="ws/sess") as s:
                sid = s.id
                await asyncio.sleep(0.5)  # session events are polled: let each state be seen
                s.set_status("working", progress=0.25)
                await asyncio.sleep(0.5)
            events: list[dict[str, Any]] = []
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                msg = await _recv(ws)
                if msg["type"] == "session" and msg["session"]["id"] == sid:
                    events.append(msg)
                    if msg["event"] in ("ended", "crashed"):
                        break
            return events

    events = asyncio.run(main())
    kinds = [e["event"] for e in events]
    assert kinds[0] == "started" and kinds[-1] == "ended"
    assert events[-1]["session"]["agent"] == "ws-agent"


def test_scoped_token_sees_only_its_prefix_and_forbidden_prefix_closes(server: ServerProc) -> None:
    async def main() -> list[dict[str, Any]]:
        async with websockets.connect(server.ws_url(token="acme")) as ws:
            await _recv(ws)
            with filemem.Store(server.path) as store:
                store.put("tenant/acme-corp", "secret", 1)
                store.put("tenant/acmex", "secret", 1)
                store.put("tenant/acme/x", "mine", 1)
                store.put("tenant/acme", "mine2", 1)
            got = await _changes(ws, 2)
            with pytest.raises(asyncio.TimeoutError):
                await _recv(ws, timeout=1.0)  # nothing else is ever delivered
            return got

    got = asyncio.run(main())
    assert [(m["namespace"], m["key"]) for m in got] == [("tenant/acme/x", "mine"), ("tenant/acme", "mine2")]

    async def forbidden(**params: str) -> int:
        async with websockets.connect(server.ws_url(**params)) as ws:
            with pytest.raises(websockets.ConnectionClosed) as info:
                await _recv(ws)
            return info.value.rcvd.code

    assert asyncio.run(forbidden(token="acme", prefix="tenant/acme-corp")) == 4403
    assert asyncio.run(forbidden(token="not-a-token")) == 4401
    assert asyncio.run(forbidden(token=None)) == 4401


def test_old_epoch_and_garbage_cursor_get_missed(server: ServerProc) -> None:
    async def main(cursor: str) -> dict[str, Any]:
        async with websockets.connect(server.ws_url(prefix="ws/epoch", cursor=cursor)) as ws:
            await _recv(ws)
            return await _recv(ws)

    for cursor in ("0abc-5", "garbage"):
        msg = asyncio.run(main(cursor))
        assert msg["type"] == "missed" and msg["from"] == cursor and msg["to"] == msg["cursor"]


def test_retention_overrun_gives_missed_then_the_rest(tmp_path: Path) -> None:
    token_file = str(tmp_path / "tokens.json")
    tokens = make_tokens(token_file)
    srv = start_server(str(tmp_path / "store"), token_file, "--retain", "10", tokens=tokens)
    ns = "ws/retain"
    try:

        async def main() -> tuple[str, list[dict[str, Any]]]:
            with filemem.Store(srv.path) as store:
                async with websockets.connect(srv.ws_url(prefix=ns)) as ws:
                    await _recv(ws)
                    store.put(ns, "first", 0)
                    cursor = (await _until(ws, "first"))[-1]["cursor"]
                for i in range(30):
                    store.put(ns, f"k{i:02d}", i)
                await asyncio.sleep(1.0)
                async with websockets.connect(srv.ws_url(prefix=ns, cursor=cursor)) as ws:
                    await _recv(ws)
                    out = [await _recv(ws)]
                    out += await _until(ws, "k29")
            return cursor, out

        cursor, got = asyncio.run(main())
    finally:
        srv.stop()
    missed, rest = got[0], got[1:]
    assert missed["type"] == "missed" and missed["from"] == cursor
    # after the missed message: exactly the retained tail, in order, starting right after "to"
    assert [_seq(m["cursor"]) for m in rest] == list(range(_seq(missed["to"]) + 1, _seq(missed["to"]) + 11))
    assert rest[-1]["key"] == "k29"


def test_slow_client_gets_missed_and_never_slows_a_fast_one(tmp_path: Path) -> None:
    token_file = str(tmp_path / "tokens.json")
    tokens = make_tokens(token_file)
    # The ring holds 1,000 of the 3,000 messages: slack for the fast client on a loaded machine (at 100 it
    # could fall out of the ring too and get a missed), far less than the stalled client's backlog.
    srv = start_server(str(tmp_path / "store"), token_file, "--retain", "1000", "--ws-send-timeout", "2", tokens=tokens)
    ns = "ws/slow"
    n = 3000
    filler = "x" * 900  # about 1 KB per message: enough to fill the slow client's socket buffers
    try:

        async def fast() -> list[dict[str, Any]]:
            out: list[dict[str, Any]] = []
            async with websockets.connect(srv.ws_url(prefix=ns)) as ws:
                await _recv(ws)
                while not out or out[-1].get("key") != f"k{n - 1:04d}":
                    out.append(await _recv(ws, timeout=60))
            return out

        async def slow(go: asyncio.Event) -> list[dict[str, Any]]:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a client on a thin pipe
            sock.connect(("127.0.0.1", srv.port))
            out: list[dict[str, Any]] = []
            async with websockets.connect(srv.ws_url(prefix=ns), sock=sock, max_queue=1) as ws:
                await _recv(ws)
                await go.wait()  # reads nothing while the writer writes
                try:
                    while not out or out[-1].get("key") != f"k{n - 1:04d}":
                        out.append(await _recv(ws))
                except websockets.ConnectionClosed as exc:
                    out.append({"type": "closed", "code": exc.rcvd.code if exc.rcvd else None})
            return out

        def write() -> None:
            with filemem.Store(srv.path, durability="flush") as store:
                for i in range(n):
                    store.put(ns, f"k{i:04d}", {"i": i, "pad": filler})

        async def main() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
            go = asyncio.Event()
            f = asyncio.create_task(fast())
            s = asyncio.create_task(slow(go))
            await asyncio.sleep(0.5)  # both connected
            await asyncio.to_thread(write)
            fast_got = await asyncio.wait_for(f, 120)  # the fast client got everything while the slow one stalled
            go.set()
            return fast_got, await asyncio.wait_for(s, 120)

        fast_got, slow_got = asyncio.run(main())
        closed_slow = srv.request("GET", "/v1/stats").body["websocket"]["closed_slow"]
    finally:
        srv.stop()
    assert_announced(fast_got, ns, [f"k{i:04d}" for i in range(n)])
    # The fast client was never held back: every message, none missed, cursors one apart.
    assert [m["type"] for m in fast_got if m["type"] != "change"] == []
    _assert_gaps_announced(fast_got)
    with filemem.Store(srv.path, watch="off") as store:
        logged = store._engine.store_version >= 2
    if logged:
        # the log's feed names every key once, in commit order (format 1 may send key-null hints instead)
        assert [m["key"] for m in fast_got] == [f"k{i:04d}" for i in range(n)]
    # The stalled client either fell out of the ring (an explicit missed) or was closed for not
    # reading (4008, resume with its last cursor); test_hub.py shows the missed path deterministically.
    if slow_got[-1]["type"] == "closed":
        # 4008, or no close frame at all when the stalled socket could not take one
        assert slow_got[-1]["code"] in (4008, None)
        assert closed_slow >= 1
        slow_got.pop()
    _assert_gaps_announced(slow_got)


def _assert_gaps_announced(messages: list[dict[str, Any]]) -> None:
    """Every gap is announced: between consecutive messages the cursor moves by one, or a missed spans the jump."""
    last = None
    for m in messages:
        if m["type"] == "missed":
            assert last is None or _seq(m["from"]) == last
            last = _seq(m["to"])
        else:
            assert last is None or _seq(m["cursor"]) == last + 1, (last, m)
            last = _seq(m["cursor"])


def test_frames_auto_array_and_single(server: ServerProc) -> None:
    """Default frames: one message alone, several due at once as one array; batch=1 and batch=0 force a shape."""
    ns = "ws/frames"

    async def follow(batch: str | None, go: asyncio.Event, first: asyncio.Event) -> list[Any]:
        params = {"prefix": ns} if batch is None else {"prefix": ns, "batch": batch}
        frames: list[Any] = []
        async with websockets.connect(server.ws_url(**params)) as ws:
            json.loads(await ws.recv())  # hello
            go.set()
            keys: set[str] = set()
            while len(keys) < 6:
                frame = json.loads(await asyncio.wait_for(ws.recv(), 30))
                frames.append(frame)
                first.set()
                keys |= {m["key"] for m in (frame if isinstance(frame, list) else [frame]) if m.get("key")}
        return frames

    async def main() -> dict[str | None, list[Any]]:
        out: dict[str | None, list[Any]] = {}
        for batch in (None, "1", "0"):
            go, first = asyncio.Event(), asyncio.Event()
            task = asyncio.create_task(follow(batch, go, first))
            await asyncio.wait_for(go.wait(), 30)
            await asyncio.to_thread(server.request, "PUT", f"/v1/ns/{ns}/records/one-{batch}", body={"value": 1})
            await asyncio.wait_for(first.wait(), 60)  # that one arrived alone before the next write
            ops = [{"op": "put", "namespace": ns, "key": f"b{i}-{batch}", "value": i} for i in range(5)]
            reply = await asyncio.to_thread(server.request, "POST", "/v1/batch", body={"ops": ops})
            assert reply.status == 200  # five keys, one write
            out[batch] = await asyncio.wait_for(task, 60)
        return out

    got = asyncio.run(main())
    auto, arrays, single = got[None], got["1"], got["0"]
    assert isinstance(auto[0], dict) and auto[0]["key"] == "one-None"
    assert isinstance(auto[1], list) and [m["key"] for m in auto[1]] == [f"b{i}-None" for i in range(5)]
    assert all(isinstance(f, list) for f in arrays) and [m["key"] for m in arrays[0]] == ["one-1"]
    assert all(isinstance(f, dict) for f in single) and len(single) == 6
    for frames in (auto, arrays, single):
        msgs = [m for f in frames for m in (f if isinstance(f, list) else [f])]
        seqs = [_seq(m["cursor"]) for m in msgs]
        assert seqs == list(range(seqs[0], seqs[0] + 6))  # in cursor order, nothing skipped


def test_bad_batch_value_closes_4400(server: ServerProc) -> None:
    async def main() -> int | None:
        async with websockets.connect(server.ws_url(batch="sometimes")) as ws:
            try:
                await asyncio.wait_for(ws.recv(), 30)
            except websockets.ConnectionClosed as exc:
                return exc.rcvd.code if exc.rcvd else None
        return None

    assert asyncio.run(main()) == 4400


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 65535, 65536, 70001])
def test_text_frame_is_what_a_websocket_parser_reads(size: int) -> None:
    """The hub's one-per-text frame bytes, read by the websockets library's own frame parser (all 3 length forms)."""
    from websockets.protocol import Protocol, Side, State

    from filemem.server._wsframes import text_frame

    text = "é" * (size // 2) + "a" * (size % 2)  # multi-byte UTF-8: the length is of the bytes
    parser = Protocol(Side.CLIENT, state=State.OPEN, max_size=None)
    parser.receive_data(text_frame(text) + text_frame("next"))
    frames = parser.events_received()
    assert [(f.opcode.name, f.fin, f.data.decode()) for f in frames] == [("TEXT", True, text), ("TEXT", True, "next")]


# Format 2: each commit's keys are announced one by one (format 1 names a big write's keys as one key-null hint).
@pytest.mark.store_format(2)
def test_direct_frames_carry_big_batches_in_order(tmp_path: Path) -> None:
    """Under ``filemem serve`` followers get the hub's encoded frames written as they are; a >64 KiB frame too."""
    token_file = str(tmp_path / "tokens.json")
    srv = start_server(str(tmp_path / "store"), token_file, tokens=make_tokens(token_file))
    ns = "ws/direct"
    n = 150
    value = "v" * 900  # inlined (<= 1 KiB): 150 of them make one array frame past 64 KiB

    def write() -> None:  # one commit
        with filemem.Store(srv.path) as store, store.batch() as b:
            for i in range(n):
                b.put(ns, f"k{i:03d}", value)

    async def main() -> list[dict[str, Any]]:
        async with websockets.connect(srv.ws_url(prefix=ns), max_size=None) as ws:
            json.loads(await ws.recv())  # hello
            await asyncio.to_thread(write)
            return await asyncio.wait_for(_changes(ws, n), 60)

    try:
        got = asyncio.run(main())
        stats = srv.request("GET", "/v1/stats").body["websocket"]
    finally:
        srv.stop()
    assert [m["key"] for m in got] == [f"k{i:03d}" for i in range(n)]
    assert all(m["value"] == value and m["op"] == "put" for m in got)
    assert [_seq(m["cursor"]) for m in got] == list(range(_seq(got[0]["cursor"]), _seq(got[0]["cursor"]) + n))
    # The direct path carried them, not the ASGI send (the hello frame takes that one).
    assert stats["frames_direct"] >= 1 and stats["frames_ordinary"] == 0
