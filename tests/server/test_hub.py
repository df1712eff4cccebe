"""The change hub on its own: cursors, retention, and the explicit missed of a reader that stalls."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path

import filemem
from filemem.server._auth import ANONYMOUS_ADMIN, Principal
from filemem.server._hub import ChangeHub, Cursor


def test_cursor_parse() -> None:
    assert Cursor.parse("abc123-42") == Cursor("abc123", 42)
    assert str(Cursor("e", 7)) == "e-7"
    for bad in ("", "42", "abc-", "-5", "abc-x", "abc-" + "9" * 30):
        assert Cursor.parse(bad) is None, bad


async def _wait_for(hub: ChangeHub, seq: int) -> None:
    for _ in range(3000):
        if hub.cursor.seq >= seq:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"hub stuck at {hub.cursor}")


def test_stalled_reader_gets_missed_then_the_retained_tail(tmp_path: Path) -> None:
    async def main() -> tuple[list[str], list[str], str]:
        with filemem.Store(tmp_path / "s") as store:
            hub = ChangeHub(store, retain=5)
            hub.start(asyncio.get_running_loop())
            try:
                reader = hub.read(ANONYMOUS_ADMIN, (), None)
                pending = asyncio.ensure_future(reader.__anext__())  # the reader is positioned: from now on
                await asyncio.sleep(0.2)
                await asyncio.to_thread(store.put, "h", "k00", 0)
                first = await asyncio.wait_for(pending, 30)
                # The reader now stalls (pulls nothing) while 12 more changes arrive.
                for i in range(1, 13):
                    await asyncio.to_thread(store.put, "h", f"k{i:02d}", i)
                await _wait_for(hub, 13)
                after = await asyncio.wait_for(reader.__anext__(), 30)
                await reader.aclose()
                return first, after, hub.epoch
            finally:
                hub.close()

    first, after, epoch = asyncio.run(main())
    assert [json.loads(t)["key"] for t in first] == ["k00"]
    missed = json.loads(after[0])
    assert missed["type"] == "missed" and missed["reason"] == "slow"
    assert missed["from"] == f"{epoch}-1" and missed["to"] == f"{epoch}-8"
    tail = [json.loads(t) for t in after[1:]]
    assert [m["cursor"] for m in tail] == [f"{epoch}-{s}" for s in range(9, 14)]
    assert [m["key"] for m in tail] == [f"k{i:02d}" for i in range(8, 13)]


def test_start_positions_and_visibility(tmp_path: Path) -> None:
    async def main() -> None:
        with filemem.Store(tmp_path / "s") as store:
            hub = ChangeHub(store, retain=3)
            hub.start(asyncio.get_running_loop())
            try:
                for i in range(5):
                    await asyncio.to_thread(store.put, ("t", "acme") if i % 2 else ("t", "acme-corp"), f"k{i}", i)
                await _wait_for(hub, 5)
                e = hub.epoch
                assert hub.start_position(None) == (6, [])
                assert hub.start_position(f"{e}-4") == (5, [])
                pos, first = hub.start_position(f"{e}-1")
                assert pos == 3 and json.loads(first[0])["to"] == f"{e}-2"
                pos, first = hub.start_position("other-3")
                assert pos == 6 and json.loads(first[0])["reason"] == "epoch"
                pos, first = hub.start_position(f"{e}-99")  # from the future: not this run's
                assert pos == 6 and json.loads(first[0])["type"] == "missed"
                acme = Principal("a", frozenset({"read"}), (("t", "acme"),))
                seen = [json.loads(en.text)["namespace"] for en in hub._ring if hub.visible(en, acme, ())]
                assert seen == ["t/acme"]
            finally:
                hub.close()

    asyncio.run(main())


def test_a_change_that_fails_to_resolve_becomes_a_missed_never_a_silent_gap(tmp_path: Path) -> None:
    """Whatever goes wrong turning a feed change into messages (not only a FileMemError), readers get ``missed``."""

    def boom(change: filemem.Change) -> None:
        raise RuntimeError("resolving failed")

    async def main() -> tuple[list[str], int]:
        with filemem.Store(tmp_path / "s") as store:
            hub = ChangeHub(store, retain=100)
            hub._resolve = boom  # type: ignore[method-assign]
            hub.start(asyncio.get_running_loop())
            try:
                reader = hub.read(ANONYMOUS_ADMIN, (), None)
                pending = asyncio.ensure_future(reader.__anext__())
                await asyncio.sleep(0.2)
                await asyncio.to_thread(store.put, "h", "k", 1)
                got = await asyncio.wait_for(pending, 30)
                await reader.aclose()
                return got, hub.resolve_errors
            finally:
                hub.close()

    got, errors = asyncio.run(main())
    assert [json.loads(t)["type"] for t in got] == ["missed"] and errors == 1


def _frame_texts(frame: bytes) -> list[dict[str, object]]:
    """The messages in one unmasked text frame the hub wrote (as a client parses it)."""
    n, at = frame[1] & 0x7F, 2
    if n == 126:
        n, at = int.from_bytes(frame[2:4], "big"), 4
    elif n == 127:
        n, at = int.from_bytes(frame[2:10], "big"), 10
    assert frame[0] == 0x81 and len(frame) == at + n
    msgs = json.loads(frame[at:])
    return msgs if isinstance(msgs, list) else [msgs]


def test_a_follower_the_hub_cannot_write_to_goes_back_to_its_task_at_the_first_unsent_message(tmp_path: Path) -> None:
    """The hub's pass writes to parked followers; a refused write hands the follower back, nothing skipped."""

    async def main() -> tuple[list[str], list[str], int, bool, bool]:
        with filemem.Store(tmp_path / "s") as store:
            hub = ChangeHub(store, retain=100)
            hub.start(asyncio.get_running_loop())
            try:
                written: dict[str, list[str]] = {"open": [], "full": []}
                accept = {"full": 2}  # this client's buffer fills after two frames

                def writer(name: str) -> Callable[[bytes], bool]:
                    def write(frame: bytes) -> bool:
                        if name in accept:
                            if accept[name] == 0:
                                return False  # refused: nothing written
                            accept[name] -= 1
                        written[name].extend(str(m["key"]) for m in _frame_texts(frame))
                        return True

                    return write

                followers = {
                    n: hub.follow(ANONYMOUS_ADMIN, (), hub.last_seq + 1, writer(n), arrays=False) for n in written
                }
                for f in followers.values():
                    f.parked = True
                for i in range(6):  # one commit each, a wake-up apart
                    await asyncio.to_thread(store.put, "h", f"k{i}", i)
                    for _ in range(3000):  # until the hub's pass wrote it to the client that keeps up
                        if followers["open"].pos > i + 1:
                            break
                        await asyncio.sleep(0.01)
                full = followers["full"]
                handed_back = full.wake.is_set() and not full.parked
                kept_parked = followers["open"].parked
                return written["open"], written["full"], full.pos, handed_back, kept_parked
            finally:
                hub.close()

    open_keys, full_keys, full_pos, handed_back, kept_parked = asyncio.run(main())
    assert open_keys == [f"k{i}" for i in range(6)]  # every message, in order, written by the hub's pass
    assert full_keys == ["k0", "k1"] and handed_back and kept_parked
    assert full_pos == 3  # its task resumes at the first message it was not sent (seq 3, k2)
