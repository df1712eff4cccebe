"""``filemem serve``: the command's refusals, the token file, the install hint; the OpenAPI document."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
from starlette.routing import Mount, Route, WebSocketRoute

import filemem
from filemem._cli import main
from filemem.server import create_app

from .conftest import ServerProc, start_server


def _serve(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "filemem", "serve", *args], capture_output=True, text=True, check=False, timeout=60
    )


def test_non_loopback_without_token_is_refused(tmp_path: Path) -> None:
    for host in ("0.0.0.0", "192.0.2.1", "::"):
        r = _serve(str(tmp_path / "store"), "--host", host)
        assert r.returncode == 2
        assert "refusing to serve" in r.stderr and "--token-file" in r.stderr
    assert not (tmp_path / "store").exists()  # refused before the store was opened


def test_without_the_extra_it_says_how_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "uvicorn" else real(name, *a))
    assert main(["serve", str(tmp_path / "store"), "--port", "0"]) == 2
    assert 'pip install "filemem[server]"' in capsys.readouterr().err


def test_admin_token_printed_once_and_add_token(tmp_path: Path) -> None:
    token_file = tmp_path / "tokens.json"
    srv = start_server(str(tmp_path / "store"), str(token_file))
    try:
        printed = [line for line in srv.banner if "admin token" in line]
        assert len(printed) == 1
        token = printed[0].rsplit(" ", 1)[1].strip()
        assert srv.request("GET", "/v1/whoami", token=token).body["name"] == "admin"
    finally:
        srv.stop()
    again = start_server(str(tmp_path / "store"), str(token_file))
    try:
        assert not [line for line in again.banner if "admin token" in line]
        r = _serve(
            str(tmp_path / "store"),
            "--token-file",
            str(token_file),
            "--add-token",
            "ci",
            "--scope",
            "read",
            "--prefix",
            "tenant/acme",
        )
        assert r.returncode == 0
        new = r.stdout.strip()
        # the running server read its tokens at start; a new one works after a restart
        assert again.request("GET", "/v1/whoami", token=new).status == 401
    finally:
        again.stop()
    third = start_server(str(tmp_path / "store"), str(token_file))
    try:
        assert third.request("GET", "/v1/whoami", token=new).body == {
            "name": "ci",
            "scopes": ["read"],
            "prefixes": ["tenant/acme"],
        }
    finally:
        third.stop()


def test_openapi_lists_every_route(server: ServerProc, tmp_path: Path) -> None:
    doc = server.request("GET", "/openapi.json", token=None).body
    assert doc["openapi"].startswith("3.")
    with filemem.Store(tmp_path / "s") as store:
        app = create_app(store)
        served: set[tuple[str, str]] = set()
        for r in app.routes:
            if isinstance(r, Route):
                path = r.path.replace("{namespace:path}", "{namespace}")
                served |= {(path, m.lower()) for m in (r.methods or set()) if m != "HEAD"}
            elif isinstance(r, WebSocketRoute):
                served.add((r.path, "get"))
            elif isinstance(r, Mount):
                served.add((r.path + "/{path}", "get"))
    documented = {(p, m) for p, ops in doc["paths"].items() for m in ops}
    assert served - documented == set()
    assert documented - served == set()
