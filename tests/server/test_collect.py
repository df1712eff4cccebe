"""POST /v1/collect: the server's fire-and-forget collector, its figures, its scope checks and its journal."""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import filemem
from filemem import _locks

from .conftest import ServerProc, make_tokens, start_server


def _metric_values(text: str) -> dict[str, float]:
    out = {}
    for line in text.splitlines():
        m = re.match(r"^([a-z_]+(?:\{[^}]*\})?) (\S+)$", line)
        if m:
            out[m.group(1)] = float(m.group(2))
    return out


def _until(what: Callable[[], Any], timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = what()
        if got or time.monotonic() > deadline:
            return got
        time.sleep(0.05)


def _collector(server: ServerProc) -> dict[str, Any]:
    stats: dict[str, Any] = server.request("GET", "/v1/stats").body["collector"]
    return stats


@contextmanager
def _shard_held(path: str, ns: str) -> Iterator[None]:
    """Hold the write lock of ``ns``'s shard (a ``store.update`` that waits): nothing can be applied there."""
    entered, release = threading.Event(), threading.Event()

    def hold(old: Any) -> Any:
        entered.set()
        release.wait(60)
        return old

    with filemem.Store(path, lock_timeout_s=60) as store:
        store.put(ns, "hold", 0)
        if store._engine.log is not None:
            # Format 2: an update does not hold a lock while its function runs;
            # every write waits for the log's append lock, so hold that one.
            held = _locks.exclusive(os.path.join(store._engine.log.dir, "append.lock"), 30.0)
            try:
                yield
            finally:
                held.release()
            return
        t = threading.Thread(target=store.update, args=(ns, "hold", hold))
        t.start()
        try:
            assert entered.wait(30)
            yield
        finally:
            release.set()
            t.join(60)


def test_a_record_and_a_list_are_applied_and_counted(server: ServerProc) -> None:
    before = _collector(server)
    assert before["enabled"] is True
    r = server.request("POST", "/v1/collect", body={"namespace": "col/a", "key": "one", "value": {"n": 1}})
    assert r.status == 202 and r.body["accepted"] == 1 and len(r.body["ids"]) == 1
    records = [{"namespace": "col/a", "key": f"k{i}", "value": i, "priority": "high"} for i in range(50)]
    r = server.request("POST", "/v1/collect", body=records)
    assert r.status == 202 and r.body["accepted"] == 50
    assert _until(lambda: _collector(server)["applied"] >= before["applied"] + 51)
    assert server.request("GET", "/v1/ns/col/a/records/one").body["value"] == {"n": 1}
    with filemem.Store(server.path) as store:
        assert [store.get("col/a", f"k{i}") for i in range(50)] == list(range(50))
    after = _collector(server)
    assert after["collected"] == before["collected"] + 51
    assert after["accepted"] >= before["accepted"] + 51  # journaled
    values = _metric_values(server.request("GET", "/metrics").text)
    assert values["filemem_collector_collected_total"] >= after["collected"]
    assert values["filemem_collector_applied_total"] >= after["applied"]
    assert values['filemem_operations_total{kind="collect"}'] >= 2


def test_queue_depth_is_real_while_the_store_cannot_take_the_records(server: ServerProc) -> None:
    ns = "col/held"
    with _shard_held(server.path, ns):
        records = [{"namespace": ns, "key": f"k{i}", "value": i} for i in range(7)]
        assert server.request("POST", "/v1/collect", body=records).status == 202

        def depth() -> float:
            return _metric_values(server.request("GET", "/metrics").text)["filemem_collector_queue_depth"]

        assert _until(lambda: depth() >= 7)
        assert depth() >= 7  # still queued: the store cannot take them
        assert server.request("GET", f"/v1/ns/{ns}/records/k0").status == 404  # not applied while held
    assert _until(lambda: _collector(server)["queue_depth"] == 0)
    assert server.request("GET", f"/v1/ns/{ns}/records/k6").body["value"] == 6
    assert _metric_values(server.request("GET", "/metrics").text)["filemem_collector_queue_depth"] == 0
    ready = server.request("GET", "/health/ready", token=None).body["checks"]
    assert [c["ok"] for c in ready if c["name"] == "collector"] == [True]


def test_scopes_read_only_token_and_prefixes(server: ServerProc) -> None:
    before = _collector(server)["collected"]
    record = {"namespace": "col/scoped", "key": "k", "value": 1}
    r = server.request("POST", "/v1/collect", token="reader", body=record)
    assert r.status == 403 and r.body["exception"] == "HTTPError"
    r = server.request("POST", "/v1/collect", token="acme", body=record)  # outside tenant/acme
    assert r.status == 403
    mixed = [{"namespace": "tenant/acme/x", "key": "in", "value": 1}, {**record, "namespace": "tenant/acme-corp"}]
    assert server.request("POST", "/v1/collect", token="acme", body=mixed).status == 403  # refused whole
    assert _collector(server)["collected"] == before
    r = server.request("POST", "/v1/collect", token="acme", body=mixed[:1])
    assert r.status == 202
    assert _until(lambda: server.request("GET", "/v1/ns/tenant/acme/x/records/in").status == 200)
    assert server.request("GET", "/v1/ns/tenant/acme-corp/records/k").status == 404


def test_bad_input_is_a_problem_and_queues_nothing(server: ServerProc) -> None:
    before = _collector(server)["collected"]
    good = {"namespace": "col/bad", "key": "fine", "value": 1}
    cases: list[tuple[Any, int, str]] = [
        ([], 400, "HTTPError"),
        ("just a string", 400, "HTTPError"),
        ({**good, "ttl": 5}, 400, "HTTPError"),
        ({"namespace": "col/bad", "key": "k"}, 400, "InvalidValueError"),
        ({**good, "priority": "urgent"}, 400, "InvalidValueError"),
        ([good, {**good, "key": "../escape"}], 400, "InvalidKeyError"),
        ([good, {**good, "namespace": "a//b"}], 400, "InvalidKeyError"),
        ([good, {**good, "key": 7}], 400, "InvalidKeyError"),
    ]
    for body, status, exception in cases:
        r = server.request("POST", "/v1/collect", body=body)
        assert r.status == status, (body, r.body)
        assert r.headers["content-type"].startswith("application/problem+json")
        assert r.body["exception"] == exception, (body, r.body)
    raw = server.request("POST", "/v1/collect", raw=b"{not json")
    assert raw.status == 400 and raw.body["exception"] == "HTTPError"
    time.sleep(0.3)
    assert _collector(server)["collected"] == before
    assert server.request("GET", "/v1/ns/col/bad/records/fine").status == 404


def test_readonly_server_refuses_collect(tmp_path: Path) -> None:
    token_file = str(tmp_path / "t.json")
    tokens = make_tokens(token_file)
    filemem.Store(tmp_path / "store").close()
    srv = start_server(str(tmp_path / "store"), token_file, "--readonly", tokens=tokens)
    try:
        r = srv.request("POST", "/v1/collect", body={"namespace": "a", "key": "k", "value": 1})
        assert r.status == 403 and r.body["exception"] == "ReadOnlyError"
        assert _collector(srv)["enabled"] is False
    finally:
        srv.stop()


def test_sigkill_after_202_loses_no_journaled_record(tmp_path: Path) -> None:
    """Records accepted (journaled) but not yet applied when the server dies are applied by the next opener."""
    token_file = str(tmp_path / "t.json")
    tokens = make_tokens(token_file)
    path = str(tmp_path / "store")
    filemem.Store(path).close()
    srv = start_server(path, token_file, tokens=tokens)
    ns = "col/kill"
    try:
        with _shard_held(path, ns):  # the server's collector cannot apply them
            records = [{"namespace": ns, "key": f"k{i}", "value": i} for i in range(20)]
            assert srv.request("POST", "/v1/collect", body=records).status == 202
            assert _until(lambda: _collector(srv)["accepted"] >= 20)  # in the journal, fsynced
            assert _collector(srv)["applied"] == 0
            srv.stop(signal.SIGKILL)
            assert srv.proc.returncode == -signal.SIGKILL
    finally:
        srv.stop()
    with filemem.Store(path) as store:  # opening the store replays the dead server's journal
        got = _until(lambda: [store.get(ns, f"k{i}") for i in range(20)] == list(range(20)), timeout=60)
        assert got, [store.get(ns, f"k{i}") for i in range(20)]
        assert [f.code for f in store.check() if f.severity == "error"] == []
