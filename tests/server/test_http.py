"""Every HTTP route against a real server: records, ETags and 412, paging, search, batch, sessions, errors."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import filemem
from filemem.server._metrics import render

from .conftest import ServerProc, make_tokens, start_server


def _rec(ns: str, key: str) -> str:
    return f"/v1/ns/{ns}/records/{key}"


def test_whoami(server: ServerProc) -> None:
    r = server.request("GET", "/v1/whoami", token="acme")
    assert r.status == 200
    assert r.body == {"name": "acme", "scopes": ["read", "write"], "prefixes": ["tenant/acme"]}
    assert server.request("GET", "/v1/whoami").body["prefixes"] == []


def test_put_get_delete_with_etags(server: ServerProc) -> None:
    ns = "http/crud"
    r = server.request("PUT", _rec(ns, "k"), body={"value": {"x": 1}, "ttl": None})
    assert r.status == 200 and r.body["version"] >= 1
    assert r.headers["etag"] == f'"{r.body["version"]}"'
    v1 = r.body["version"]
    g = server.request("GET", _rec(ns, "k"))
    assert g.status == 200 and g.headers["etag"] == f'"{v1}"'
    assert g.body["namespace"] == ns and g.body["key"] == "k" and g.body["value"] == {"x": 1}
    assert g.body["version"] == v1 and g.body["expires_at"] is None
    assert {"created_at", "updated_at"} <= set(g.body)
    assert server.request("GET", _rec(ns, "k"), headers={"If-None-Match": f'"{v1}"'}).status == 304
    # If-Match with the current version writes; a stale one is 412 with the current version
    ok = server.request("PUT", _rec(ns, "k"), body={"value": 2}, headers={"If-Match": f'"{v1}"'})
    assert ok.status == 200
    v2 = ok.body["version"]
    stale = server.request("PUT", _rec(ns, "k"), body={"value": 3}, headers={"If-Match": f'"{v1}"'})
    assert stale.status == 412
    assert stale.headers["content-type"] == "application/problem+json"
    assert stale.body["exception"] == "ConflictError" and stale.body["current_version"] == v2
    assert server.request("GET", _rec(ns, "k")).body["value"] == 2
    # If-None-Match: * creates only
    assert server.request("PUT", _rec(ns, "k"), body={"value": 4}, headers={"If-None-Match": "*"}).status == 412
    assert server.request("PUT", _rec(ns, "new"), body={"value": 4}, headers={"If-None-Match": "*"}).status == 200
    # conditional delete
    assert server.request("DELETE", _rec(ns, "k"), headers={"If-Match": f'"{v1}"'}).status == 412
    d = server.request("DELETE", _rec(ns, "k"), headers={"If-Match": f'"{v2}"'})
    assert d.status == 200 and d.body["deleted"] is True
    missing = server.request("GET", _rec(ns, "k"))
    assert missing.status == 404 and missing.headers["content-type"] == "application/problem+json"
    assert server.request("DELETE", _rec(ns, "k")).body["deleted"] is False


def test_ttl_is_kept(server: ServerProc) -> None:
    r = server.request("PUT", _rec("http/ttl", "k"), body={"value": 1, "ttl": 3600})
    assert r.status == 200
    got = server.request("GET", _rec("http/ttl", "k")).body
    assert got["expires_at"] is not None and got["expires_at"] > time.time() + 3000


def test_paging_records_and_keys(server: ServerProc) -> None:
    ns = "http/paging"
    body = {"ops": [{"op": "put", "namespace": ns, "key": f"k{i:03d}", "value": i} for i in range(25)]}
    assert server.request("POST", "/v1/batch", body=body).status == 200
    seen: list[str] = []
    cursor = ""
    while True:
        r = server.request("GET", f"/v1/ns/{ns}/records?limit=7&cursor={cursor}")
        assert r.status == 200
        seen += [it["key"] for it in r.body["items"]]
        assert all(it["value"] == int(it["key"][1:]) for it in r.body["items"])
        if r.body["next"] is None:
            break
        cursor = r.body["next"]
    assert seen == [f"k{i:03d}" for i in range(25)]
    keys = server.request("GET", f"/v1/ns/{ns}/keys?limit=10").body
    assert keys["keys"] == [f"k{i:03d}" for i in range(10)] and keys["next"]
    rest = server.request("GET", f"/v1/ns/{ns}/keys?limit=100&cursor={keys['next']}").body
    assert rest["keys"] == [f"k{i:03d}" for i in range(10, 25)] and rest["next"] is None
    assert server.request("GET", f"/v1/ns/{ns}/keys?limit=0").status == 400
    assert server.request("GET", f"/v1/ns/{ns}/keys?cursor=%%%").status == 400


def test_namespaces_by_whole_segments(server: ServerProc) -> None:
    for ns in ("nsl/acme/a", "nsl/acme/b", "nsl/acme-corp/a"):
        server.request("PUT", _rec(ns, "k"), body={"value": 1})
    server.request("PUT", _rec("nsl/acme/a", "k2"), body={"value": 1})
    got = server.request("GET", "/v1/namespaces?prefix=nsl/acme").body["namespaces"]
    assert got == [{"namespace": "nsl/acme/a", "records": 2}, {"namespace": "nsl/acme/b", "records": 1}]
    depth = server.request("GET", "/v1/namespaces?prefix=nsl&max_depth=2").body["namespaces"]
    assert [n["namespace"] for n in depth] == ["nsl/acme", "nsl/acme-corp"]


def test_search(server: ServerProc) -> None:
    ns = "http/search"
    ops = [
        {"op": "put", "namespace": ns, "key": "a", "value": {"text": "login timeout on the portal", "ok": False}},
        {"op": "put", "namespace": ns, "key": "b", "value": {"text": "login worked", "ok": True}},
        {"op": "put", "namespace": ns, "key": "c", "value": {"text": "unrelated", "ok": False}},
    ]
    server.request("POST", "/v1/batch", body={"ops": ops})
    r = server.request("POST", "/v1/search", body={"prefix": ns, "query": "login timeout", "limit": 5})
    assert r.status == 200
    keys = [h["item"]["key"] for h in r.body["hits"]]
    assert keys[0] == "a" and set(keys) == {"a", "b"}
    assert all(isinstance(h["score"], float) for h in r.body["hits"])
    f = server.request("POST", "/v1/search", body={"prefix": ns, "filter": {"ok": False}, "limit": 1, "offset": 1})
    assert [h["item"]["key"] for h in f.body["hits"]] == ["c"]
    bad = server.request("POST", "/v1/search", body={"prefix": ns, "filter": {"ok": {"$regex": "x"}}})
    assert bad.status == 400 and bad.body["exception"] == "InvalidQueryError"


def test_batch_all_or_nothing(server: ServerProc) -> None:
    ns = "http/batch"
    v = server.request("PUT", _rec(ns, "guard"), body={"value": 1}).body["version"]
    ops = [
        {"op": "put", "namespace": ns, "key": "x", "value": 1},
        {"op": "delete", "namespace": ns, "key": "guard"},
        {"op": "put", "namespace": ns, "key": "guard", "value": 2, "if_version": v + 1000},
    ]
    r = server.request("POST", "/v1/batch", body={"ops": ops})
    assert r.status == 412 and r.body["exception"] == "ConflictError"
    assert server.request("GET", _rec(ns, "x")).status == 404
    assert server.request("GET", _rec(ns, "guard")).body["value"] == 1
    ops[2]["if_version"] = v
    ops.pop(1)
    r = server.request("POST", "/v1/batch", body={"ops": ops})
    assert r.status == 200 and len(r.body["results"]) == 2
    assert server.request("GET", _rec(ns, "guard")).body["value"] == 2
    # a bad op anywhere: 400, nothing written
    bad = [{"op": "put", "namespace": ns, "key": "y", "value": 1}, {"op": "frob", "namespace": ns, "key": "z"}]
    assert server.request("POST", "/v1/batch", body={"ops": bad}).status == 400
    assert server.request("GET", _rec(ns, "y")).status == 404
    bad_key = [
        {"op": "put", "namespace": ns, "key": "y", "value": 1},
        {"op": "put", "namespace": ns, "key": "..", "value": 1},
    ]
    r = server.request("POST", "/v1/batch", body={"ops": bad_key})
    assert r.status == 400 and r.body["exception"] == "InvalidKeyError"
    assert server.request("GET", _rec(ns, "y")).status == 404


def test_bad_input_is_4xx_problem_and_writes_nothing(server: ServerProc) -> None:
    ns = "http/bad"
    cases = [
        server.request("PUT", _rec(ns, "k"), raw=b"{not json"),
        server.request("PUT", _rec(ns, "k"), raw=b'{"value": NaN}'),
        server.request("PUT", _rec(ns, "k"), body={"nope": 1}),
        server.request("PUT", _rec(ns, "k"), body={"value": 1, "ttl": -1}),
        server.request("PUT", _rec(ns, "k"), raw=json.dumps({"value": "x" * 70_000}).encode()),
        server.request("PUT", _rec(ns, "%2E%2E"), body={"value": 1}),
        server.request("PUT", "/v1/ns/a//b/records/k", body={"value": 1}),
        server.request("PUT", _rec(ns, "k"), body={"value": 1}, headers={"If-Match": "abc"}),
        server.request("POST", "/v1/search", raw=b"[1,2"),
    ]
    statuses = [c.status for c in cases]
    assert statuses == [400, 400, 400, 400, 413, 400, 400, 400, 400], [c.text for c in cases]
    for c in cases:
        assert c.headers["content-type"] == "application/problem+json"
        assert {"title", "status", "detail", "exception"} <= set(c.body)
    assert cases[3].body["exception"] == "InvalidValueError"
    assert cases[5].body["exception"] == "InvalidKeyError"
    assert server.request("GET", f"/v1/ns/{ns}/keys").body["keys"] == []
    nf = server.request("GET", "/v1/nope")
    assert nf.status == 404 and nf.headers["content-type"] == "application/problem+json"
    assert server.request("PATCH", _rec(ns, "k")).status == 405


def test_sessions_list_and_stop(server: ServerProc) -> None:
    with filemem.Store(server.path) as store, store.session(agent="http-worker", namespace="http/sess") as s:
        s.set_status("running", progress=0.5)
        got = server.request("GET", "/v1/sessions?alive=true").body["sessions"]
        mine = [x for x in got if x["id"] == s.id]
        assert mine and mine[0]["agent"] == "http-worker" and mine[0]["progress"] == 0.5
        assert mine[0]["namespace"] == "http/sess" and mine[0]["alive"] is True
        assert server.request("POST", f"/v1/sessions/{s.id}/stop", token="reader").status == 403
        r = server.request("POST", f"/v1/sessions/{s.id}/stop")
        assert r.status == 200 and r.body["requested"] is True
        deadline = time.monotonic() + 10
        while not s.stop_requested and time.monotonic() < deadline:
            time.sleep(0.02)
        assert s.stop_requested
    assert server.request("GET", "/v1/sessions?alive=maybe").status == 400


def test_check_stats_health(server: ServerProc) -> None:
    r = server.request("GET", "/v1/check")
    assert r.status == 200 and r.body["ok"] is True and r.body["findings"] == []
    h = server.request("GET", "/v1/health")
    assert h.status == 200 and isinstance(h.body["ok"], bool)
    for f in h.body["findings"]:
        assert {"code", "severity", "message", "action"} <= set(f)
    assert server.request("GET", "/health/live", token=None).body == {"ok": True}
    ready = server.request("GET", "/health/ready", token=None)
    assert ready.status == 200 and ready.body["ok"] is True
    assert {c["name"] for c in ready.body["checks"]} >= {"store-open", "watcher", "change-hub", "dead-letters"}


def _metric_values(text: str) -> dict[str, float]:
    out = {}
    for line in text.splitlines():
        m = re.match(r"^([a-z_]+(?:\{[^}]*\})?) ([0-9.e+-]+)$", line)
        if m:
            out[m.group(1)] = float(m.group(2))
    return out


def test_metrics_match_stats(server: ServerProc) -> None:
    server.request("PUT", _rec("http/metrics", "k"), body={"value": 1})
    server.request("GET", _rec("http/metrics", "k"))
    m = server.request("GET", "/metrics")
    assert m.status == 200 and m.headers["content-type"].startswith("text/plain")
    values = _metric_values(m.text)
    for family in (
        'filemem_operations_total{kind="put"}',
        'filemem_operation_seconds_count{kind="get"}',
        "filemem_cache_hits_total",
        "filemem_cache_misses_total",
        "filemem_lock_waits_total",
        "filemem_lock_timeouts_total",
        "filemem_collector_queue_depth",
        "filemem_collector_breaker_open",
        "filemem_dead_letters",
        "filemem_sessions_live",
        "filemem_websocket_clients",
    ):
        assert family in values, family
    # The same figures as /v1/stats: /metrics is rendered from the same snapshot.
    stats = server.request("GET", "/v1/stats").body
    again = _metric_values(server.request("GET", "/metrics").text)
    rendered = {}
    for fam in render(stats):
        for sample in fam.samples:
            rendered[sample.name] = sample.value
    for name in (
        "filemem_shard_writes_total",
        "filemem_cache_misses_total",
        "filemem_dead_letters",
        "filemem_sessions_live",
        "filemem_lock_waits_total",
        "filemem_splits_total",
    ):
        assert rendered[name] == again[name], name
    assert stats["operations"]["put"] >= 1
    assert server.request("GET", "/metrics", token="acme").status == 403


def test_static_and_index_need_no_token(server: ServerProc) -> None:
    r = server.request("GET", "/", token=None)
    assert r.status == 200 and r.headers["content-type"].startswith("text/html")
    assert server.request("GET", "/static/does-not-exist.js", token=None).status == 404


def test_no_token_or_bad_token_is_401(server: ServerProc) -> None:
    for token in (None, "not-a-token"):
        r = server.request("GET", "/v1/namespaces", token=token)
        assert r.status == 401 and r.headers["content-type"] == "application/problem+json"
        assert r.headers["www-authenticate"].startswith("Bearer")


def test_stats_report_the_library_figures(server: ServerProc) -> None:
    import subprocess
    import sys

    stats = server.request("GET", "/v1/stats").body
    cli = subprocess.run(
        [sys.executable, "-m", "filemem", "stats", "--json", server.path], capture_output=True, text=True, check=True
    )
    process = json.loads(cli.stdout)["process"]
    # The same figures, named the same: store.stats() of the server process and of the CLI's process.
    assert set(stats["store"]) == set(process)
    assert set(stats["store"]["cache"]) == set(process["cache"])
    with filemem.Store(server.path) as store:
        assert set(store.stats()) == set(stats["store"])


def test_maintain_runs_in_the_background_and_is_counted(tmp_path: Path) -> None:
    token_file = str(tmp_path / "t.json")
    tokens = make_tokens(token_file)
    with filemem.Store(tmp_path / "store") as store:
        for i in range(20):
            store.put("mnt", f"k{i}", i, ttl=0.05)
    time.sleep(0.2)  # expired: something for maintain() to sweep
    srv = start_server(str(tmp_path / "store"), token_file, "--maintain", "0.3", tokens=tokens)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            stats = srv.request("GET", "/v1/stats").body
            if stats["maintain"]["runs"] >= 1 and stats["maintain"]["actions"] >= 1:
                break
            time.sleep(0.2)
        assert stats["maintain"]["enabled"] is True and stats["maintain"]["runs"] >= 1
        assert stats["maintain"]["last"]["counts"]["expired_dropped"] + stats["maintain"]["actions"] >= 1
        values = _metric_values(srv.request("GET", "/metrics").text)
        assert values["filemem_maintain_runs_total"] >= 1
        assert values["filemem_maintain_actions_total"] >= 1
    finally:
        srv.stop()
