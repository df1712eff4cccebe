"""The dashboard in a real headless Chromium against a real ``filemem serve`` (issue 15).

Chromium is Debian's ``chromium`` with ``chromium-driver``, driven by Selenium
(no browser download). Without them the browser tests skip locally with the
apt-get line to run; under CI (``CI`` set) they fail instead, so CI cannot
pass without running them.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import filemem
from tests.server.conftest import ServerProc

STATIC = Path(filemem.__file__).parent / "server" / "static"
INSTALL = "apt-get install -y chromium chromium-driver && pip install selenium"


def _require_browser() -> tuple[str, str]:
    """(chromium, chromedriver) paths; skip (locally) or fail (CI) when they are missing."""
    missing = []
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("the selenium package")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if chromium is None:
        missing.append("chromium")
    if driver is None:
        missing.append("chromium-driver")
    if missing:
        why = f"dashboard browser tests need {', '.join(missing)}: {INSTALL}"
        if os.environ.get("CI"):
            pytest.fail(why + " (CI must run them)")
        pytest.skip(why)
    assert chromium is not None and driver is not None
    return chromium, driver


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One headless Chromium for the module (each test signs in afresh)."""
    chromium, driver_path = _require_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1400,1100",
    ):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(driver_path), options=opts)
    try:
        yield driver
    finally:
        driver.quit()


def _wait(fn: Any, timeout: float = 10.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = fn()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def _sign_in(driver: Any, server: ServerProc, token: str) -> None:
    from selenium.webdriver.common.by import By

    # Clear the tab's token on a page of the same origin that runs no app:
    # cleared under the app, an earlier test's token could be written back by
    # the sign-in the app had started with it (a race that a loaded machine
    # lost: the next load signed itself in and never drew the login form).
    driver.get(f"http://{server.base}/static/app.css")
    driver.execute_script("sessionStorage.clear()")
    driver.get(f"http://{server.base}/")
    driver.get_log("browser")  # start each test with an empty console log

    def shown() -> Any:
        # Present is not enough under load: the page may not have laid the form
        # out yet ("element not interactable"), so wait until it can be typed in.
        found = driver.find_elements(By.ID, "token")
        return found[0] if found and found[0].is_displayed() and found[0].is_enabled() else None

    # The first page of a fresh browser: 30 s, since a full parallel suite on
    # two cores once kept Chromium from drawing it within 10 (it passes alone
    # in under 2).
    box = _wait(shown, timeout=30.0, what="the login form")
    box.send_keys(server.tokens.get(token, token))
    driver.find_element(By.CSS_SELECTOR, "#login-form button").click()


def _text(driver: Any, element_id: str) -> str:
    # Read in the page in one step: the views re-render while we look, and a
    # found element may be replaced before its text is read.
    return str(driver.execute_script("return document.getElementById(arguments[0]).innerText", element_id))


def _rows(driver: Any, body_id: str) -> list[dict[str, str]]:
    """Each row of a table body: its text, class and data attributes (read in one step)."""
    got: list[dict[str, str]] = driver.execute_script(
        "return [...document.getElementById(arguments[0]).rows].map("
        "r => ({text: r.innerText, cls: r.className, ...r.dataset}))",
        body_id,
    )
    return got


def _live(driver: Any) -> None:
    _wait(lambda: _text(driver, "conn") == "live", 15, "the WebSocket to say hello")


def _put_from_another_process(store_path: str, writes: list[tuple[str, str, Any]]) -> float:
    """Put records from a fresh Python process; return the wall-clock time the last put returned."""
    code = (
        "import json, sys, time, filemem\n"
        "with filemem.Store(sys.argv[1]) as s:\n"
        "    for ns, key, value in json.loads(sys.argv[2]):\n"
        "        s.put(ns, key, value)\n"
        "    print(time.time(), flush=True)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, store_path, json.dumps(writes)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return float(out.stdout.strip().splitlines()[-1])


def _watch_tail(driver: Any, needle: str) -> None:
    """Record in the page the moment a tail entry containing ``needle`` is added (window.__seenAt)."""
    driver.execute_script(
        """
        const needle = arguments[0];
        window.__seenAt = null;
        const list = document.getElementById("tail-list");
        new MutationObserver((records, obs) => {
          for (const r of records) for (const n of r.addedNodes) {
            if (n.textContent.includes(needle) && window.__seenAt === null) {
              window.__seenAt = Date.now() / 1000;
              obs.disconnect();
            }
          }
        }).observe(list, {childList: true});
        """,
        needle,
    )


# ---------------------------------------------------------------------- without a browser


def test_the_page_is_self_contained_and_never_uses_innerhtml() -> None:
    html = (STATIC / "index.html").read_text()
    refs = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert refs and all(r.startswith("/static/") for r in refs), refs  # no CDN, nothing remote
    assert "<script>" not in html and "style=" not in html  # nothing inline: the CSP forbids it
    assert "script-src 'self'" in html
    js = (STATIC / "app.js").read_text()
    js = "\n".join(line for line in js.splitlines() if not line.strip().startswith("//"))  # code, not comments
    assert not re.search(r"innerHTML|outerHTML|insertAdjacentHTML|document\.write|eval\(", js)
    assert "http://" not in js and "https://" not in js


def test_the_server_serves_the_page_and_its_files(server: ServerProc) -> None:
    page = server.request("GET", "/", token=None)
    assert page.status == 200 and page.headers["content-type"].startswith("text/html")
    assert '<script src="/static/app.js"' in page.text
    for name, kind in (("app.js", "javascript"), ("app.css", "text/css")):
        got = server.request("GET", f"/static/{name}", token=None)
        assert got.status == 200 and kind in got.headers["content-type"], (name, got.headers)
        assert got.text == (STATIC / name).read_text()


# ---------------------------------------------------------------------- in Chromium


def test_a_put_by_another_process_shows_in_the_live_tail_within_a_second(browser: Any, server: ServerProc) -> None:
    _sign_in(browser, server, "admin")
    _live(browser)
    assert _text(browser, "who").startswith("admin (read, write, admin)")
    _watch_tail(browser, "tail-key-1")
    acked = _put_from_another_process(server.path, [("dash/tail", "tail-key-1", {"text": "hello from a child"})])
    seen = _wait(lambda: browser.execute_script("return window.__seenAt"), 10, "the put in the live tail")
    assert seen - acked < 1.0, f"shown {seen - acked:.3f} s after the writer's put returned"
    tail = _text(browser, "tail-list")
    assert "dash/tail / tail-key-1" in tail and "hello from a child" in tail, tail
    # The namespace list catches up by itself, and the tail entry opens the record.
    _wait(lambda: "dash/tail" in _text(browser, "namespaces-body"), 10, "the new namespace")
    browser.find_element("css selector", "#tail-list li[data-op='put']").click()
    _wait(lambda: "hello from a child" in _text(browser, "record-value"), 10, "the record viewer")
    assert "tail-key-1" in _text(browser, "record-meta")


def test_a_scoped_token_sees_only_what_it_allows(browser: Any, server: ServerProc) -> None:
    _put_from_another_process(
        server.path,
        [
            ("tenant/acme/notes", "a1", {"text": "acme secret plan"}),
            ("tenant/acme-corp/notes", "c1", {"text": "acme-corp secret plan"}),
            ("other/team", "o1", {"text": "other secret plan"}),
        ],
    )
    _sign_in(browser, server, "acme-ro")
    _live(browser)
    assert "tenant/acme" in _text(browser, "who")
    rows = _wait(
        lambda: (
            [r.get_attribute("data-namespace") for r in browser.find_elements("css selector", "#namespaces-body tr")]
            or None
        ),
        10,
        "the namespace list",
    )
    assert rows == ["tenant/acme/notes"], rows
    _wait(lambda: "whole store" in _text(browser, "health-note"), 10, "the health panel to say why it is empty")
    # Live: a change outside the prefix never reaches this page; one inside does.
    _watch_tail(browser, "a2")
    _put_from_another_process(
        server.path, [("tenant/acme-corp/notes", "c2", {"text": "corp"}), ("tenant/acme/notes", "a2", {"text": "ok"})]
    )
    _wait(lambda: browser.execute_script("return window.__seenAt"), 10, "the in-prefix change")
    tail = _text(browser, "tail-list")
    assert "tenant/acme/notes / a2" in tail and "acme-corp" not in tail and "c2" not in tail
    # Search across the store returns only what the token covers.
    browser.find_element("id", "search-query").send_keys("secret plan")
    browser.find_element("css selector", "#search-form button").click()
    hits = _wait(lambda: _text(browser, "search-results"), 10, "search results")
    assert "tenant/acme/notes / a1" in hits and "acme-corp" not in hits and "other" not in hits
    # Asking for a record outside the prefix shows the server's refusal, not the value.
    browser.find_element("id", "record-ns").send_keys("tenant/acme-corp/notes")
    browser.find_element("id", "record-key").send_keys("c1")
    browser.find_element("css selector", "#record-form button").click()
    err = _wait(lambda: _text(browser, "record-error"), 10, "the refusal")
    assert "acme-ro" in err and _text(browser, "record-value") == ""


def test_untrusted_values_are_shown_as_text(browser: Any, server: ServerProc) -> None:
    evil = '<img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script>'
    _sign_in(browser, server, "admin")
    _live(browser)
    _watch_tail(browser, "evil<b>key")
    _put_from_another_process(server.path, [("dash/evil", "evil<b>key", {"html": evil})])
    _wait(lambda: browser.execute_script("return window.__seenAt"), 10, "the evil record in the tail")
    assert evil.replace('"', '\\"') in _text(browser, "tail-list")  # shown as JSON text
    browser.find_element("id", "record-ns").send_keys("dash/evil")
    browser.find_element("id", "record-key").send_keys("evil<b>key")
    browser.find_element("css selector", "#record-form button").click()
    _wait(lambda: "onerror" in _text(browser, "record-value"), 10, "the record viewer")
    time.sleep(0.3)
    assert browser.execute_script("return window.__pwned === undefined")
    assert browser.find_elements("css selector", "#tail-list img, #record-value img, b") == []


def test_sessions_show_status_progress_and_crashes(browser: Any, server: ServerProc, tmp_path: Path) -> None:
    code = (
        "import os, signal, sys, time, filemem\n"
        "with filemem.Store(sys.argv[1]) as s:\n"
        "    ses = s.session(agent=sys.argv[2], namespace='dash/agents')\n"
        "    ses.set_status('crawling', progress=float(sys.argv[3]))\n"
        "    open(sys.argv[4], 'w').close()\n"
        "    time.sleep(120)\n"
    )
    ready = [str(tmp_path / "ready-live"), str(tmp_path / "ready-doomed")]
    procs = [
        subprocess.Popen([sys.executable, "-c", code, server.path, agent, progress, flag])
        for agent, progress, flag in (("dash-live", "0.4", ready[0]), ("dash-doomed", "0.7", ready[1]))
    ]
    try:
        _wait(lambda: all(os.path.exists(r) for r in ready), 30, "the agents' sessions")
        _sign_in(browser, server, "admin")
        _live(browser)

        def row(agent: str) -> dict[str, str] | None:
            return next((r for r in _rows(browser, "sessions-body") if r["text"].startswith(agent)), None)

        live = _wait(lambda: row("dash-live"), 10, "the live session")
        assert live["state"] == "running"
        assert "crawling" in live["text"] and "40%" in live["text"]
        procs[1].kill()
        procs[1].wait(10)
        doomed = _wait(
            lambda: (r := row("dash-doomed")) is not None and r["state"] == "crashed" and r,
            15,
            "the crash to be marked",
        )
        assert "crashed" in doomed["cls"]
        assert "crashed" in _text(browser, "sessions-count")
        # An admin token may ask a live session to stop; the session sees the request.
        browser.execute_script(
            "[...document.getElementById('sessions-body').rows]"
            ".find(r => r.innerText.startsWith('dash-live')).querySelector('button').click()"
        )
        _wait(lambda: "stopping" in (row("dash-live") or {}).get("text", ""), 15, "the stop request")
        with filemem.Store(server.path, readonly=True) as ro:
            (info,) = [i for i in ro.sessions() if i.agent == "dash-live"]
            assert info.stop_requested
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait(10)


def test_an_unknown_token_is_refused_at_the_door(browser: Any, server: ServerProc) -> None:
    _sign_in(browser, server, "not-a-token")
    msg = _wait(lambda: _text(browser, "login-error"), 10, "the refusal")
    assert "not known" in msg
    assert browser.execute_script("return sessionStorage.getItem('filemem.token')") is None
    assert not browser.find_element("id", "main-view").is_displayed()
    severe = [e for e in browser.get_log("browser") if e["level"] == "SEVERE" and "favicon" not in e["message"]]
    # The 401 of the refused token is the only error the console may show.
    assert all("401" in e["message"] for e in severe), severe
