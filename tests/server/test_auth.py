"""Tokens, scopes and whole-segment prefixes on every route: ``tenant/acme`` never reaches ``tenant/acme-corp``."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

import filemem
from filemem.server import Principal, add_token, ensure_token_file, load_tokens

from .conftest import ServerProc, start_server


@pytest.fixture(scope="module", autouse=True)
def _data(server: ServerProc) -> None:
    with filemem.Store(server.path) as store:
        for ns in ("tenant/acme", "tenant/acme/notes", "tenant/acme-corp", "tenant/acme-corp/notes", "tenant/beta"):
            store.put(ns, "doc", {"text": f"secret plan of {ns}", "owner": ns})


def test_principal_prefixes_are_whole_segments() -> None:
    p = Principal("p", frozenset({"read"}), (("tenant", "acme"),))
    assert p.covers(("tenant", "acme")) and p.covers(("tenant", "acme", "x"))
    assert not p.covers(("tenant", "acme-corp")) and not p.covers(("tenant",)) and not p.covers(("tenantacme",))
    assert p.may_see_under(("tenant",)) and not p.may_see_under(("tenant", "acme-corp"))
    assert p.can("read") and not p.can("write")
    assert Principal("a", frozenset({"admin"})).can("write")


def test_token_file_is_0600_and_holds_no_token(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    token = ensure_token_file(path)
    assert token is not None and ensure_token_file(path) is None  # shown once
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert token not in path.read_text()
    who = load_tokens(path).authenticate(token)
    assert who is not None and who.name == "admin" and who.can("admin")
    assert load_tokens(path).authenticate(token + "x") is None
    with pytest.raises(filemem.InvalidValueError):
        add_token(path, "admin", ["read"])  # names are unique
    with pytest.raises(filemem.InvalidValueError):
        add_token(path, "x", ["root"])
    assert json.loads(path.read_text())["tokens"][0]["scopes"] == ["read", "write", "admin"]


def test_record_routes_respect_prefixes(server: ServerProc) -> None:
    for path in (
        "/v1/ns/tenant/acme-corp/records/doc",
        "/v1/ns/tenant/acme-corp/notes/records/doc",
        "/v1/ns/tenant/records/doc",
        "/v1/ns/tenant/beta/records/doc",
    ):
        assert server.request("GET", path, token="acme").status == 403, path
        assert server.request("PUT", path, token="acme", body={"value": 1}).status == 403, path
        assert server.request("DELETE", path, token="acme").status == 403, path
    for path in ("/v1/ns/tenant/acme-corp/records", "/v1/ns/tenant/acme-corp/keys"):
        r = server.request("GET", path, token="acme")
        assert r.status == 403 and r.headers["content-type"] == "application/problem+json"
    ok = server.request("GET", "/v1/ns/tenant/acme/notes/records/doc", token="acme")
    assert ok.status == 200 and ok.body["value"]["owner"] == "tenant/acme/notes"
    assert server.request("GET", "/v1/ns/tenant/acme/keys", token="acme").body["keys"] == ["doc"]
    # nothing was written by the refused calls
    with filemem.Store(server.path) as store:
        assert store.get("tenant/acme-corp", "doc")["owner"] == "tenant/acme-corp"


def test_scopes(server: ServerProc) -> None:
    assert server.request("PUT", "/v1/ns/tenant/acme/records/w", token="acme-ro", body={"value": 1}).status == 403
    assert server.request("PUT", "/v1/ns/tenant/acme/records/w", token="acme", body={"value": 1}).status == 200
    assert server.request("DELETE", "/v1/ns/tenant/acme/records/w", token="reader").status == 403
    assert server.request("POST", "/v1/batch", token="reader", body={"ops": []}).status == 403
    for path in ("/v1/stats", "/v1/check", "/v1/health", "/metrics"):
        assert server.request("GET", path, token="acme").status == 403, path
        assert server.request("GET", path, token="reader").status == 200, path  # whole-store read


def test_namespaces_listing_is_filtered(server: ServerProc) -> None:
    got = server.request("GET", "/v1/namespaces?prefix=tenant", token="acme").body["namespaces"]
    names = {n["namespace"] for n in got}
    assert names == {"tenant/acme", "tenant/acme/notes"}
    assert server.request("GET", "/v1/namespaces?prefix=tenant/acme-corp", token="acme").body["namespaces"] == []
    everything = server.request("GET", "/v1/namespaces", token="acme").body["namespaces"]
    assert {n["namespace"] for n in everything} == {"tenant/acme", "tenant/acme/notes"}
    two = server.request("GET", "/v1/namespaces?max_depth=2", token="two").body["namespaces"]
    assert {n["namespace"] for n in two} == {"tenant/acme", "tenant/beta"}


def test_search_never_crosses_a_prefix(server: ServerProc) -> None:
    for prefix in ("", "tenant", "tenant/acme"):
        r = server.request("POST", "/v1/search", token="acme", body={"prefix": prefix, "query": "secret plan"})
        assert r.status == 200, (prefix, r.text)
        owners = {h["item"]["value"]["owner"] for h in r.body["hits"]}
        assert owners == {"tenant/acme", "tenant/acme/notes"}, prefix
    assert server.request("POST", "/v1/search", token="acme", body={"prefix": "tenant/acme-corp"}).status == 403
    # a token with two prefixes must name one of them
    assert server.request("POST", "/v1/search", token="two", body={"prefix": "tenant"}).status == 403
    r = server.request("POST", "/v1/search", token="two", body={"prefix": "tenant/beta", "query": "secret"})
    assert {h["item"]["namespace"] for h in r.body["hits"]} == {"tenant/beta"}


def test_batch_refuses_any_op_outside_and_writes_nothing(server: ServerProc) -> None:
    ops = [
        {"op": "put", "namespace": "tenant/acme", "key": "b1", "value": 1},
        {"op": "put", "namespace": "tenant/acme-corp", "key": "b1", "value": 1},
    ]
    assert server.request("POST", "/v1/batch", token="acme", body={"ops": ops}).status == 403
    assert server.request("GET", "/v1/ns/tenant/acme/records/b1", token="acme").status == 404
    r = server.request("POST", "/v1/batch", token="acme", body={"ops": ops[:1]})
    assert r.status == 200


def test_sessions_are_filtered_by_namespace(server: ServerProc) -> None:
    with (
        filemem.Store(server.path) as store,
        store.session(agent="corp", namespace="tenant/acme-corp") as corp,
        store.session(agent="mine", namespace="tenant/acme/jobs") as mine,
        store.session(agent="free") as free,
    ):
        got = {s["id"] for s in server.request("GET", "/v1/sessions", token="acme").body["sessions"]}
        assert mine.id in got and corp.id not in got and free.id not in got
        everyone = {s["id"] for s in server.request("GET", "/v1/sessions").body["sessions"]}
        assert {mine.id, corp.id, free.id} <= everyone
        assert server.request("POST", f"/v1/sessions/{corp.id}/stop", token="acme").status == 403


def test_readonly_server_refuses_writes(tmp_path: Path) -> None:
    token_file = str(tmp_path / "t.json")
    token = add_token(token_file, "admin", ["read", "write", "admin"])
    with filemem.Store(tmp_path / "store") as store:
        store.put("a", "k", 1)
    srv = start_server(str(tmp_path / "store"), token_file, "--readonly", tokens={"admin": token})
    try:
        r = srv.request("PUT", "/v1/ns/a/records/k", body={"value": 2})
        assert r.status == 403 and r.body["exception"] == "ReadOnlyError"
        assert srv.request("GET", "/v1/ns/a/records/k").body["value"] == 1
        ready = srv.request("GET", "/health/ready", token=None)
        assert ready.status == 200 and ready.body["checks"][0]["detail"] == "read-only by choice"
    finally:
        srv.stop()
