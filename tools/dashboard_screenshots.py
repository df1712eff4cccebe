"""Screenshots of the dashboard for docs/: a real ``filemem serve`` on a demo store, a real headless Chromium.

Usage::

    python tools/dashboard_screenshots.py [--out docs]

Needs the ``server`` extra, Selenium and Debian's ``chromium`` + ``chromium-driver``
(``apt-get install -y chromium chromium-driver``). Builds a demo store in a
temporary directory (agents with sessions, one of them killed, memories, a
few expired records for the health panel), starts ``python -m filemem serve``
on it with an admin token and one limited to ``tenant/acme``, and saves:

- ``dashboard.png``         the overview (admin token): health, collector,
                            sessions with a crashed one, namespaces, live tail,
                            a search, a record;
- ``dashboard-scoped.png``  the same page for the ``tenant/acme`` token.

If Pillow is installed the PNGs are reduced to a 256-colour palette (a
dashboard has few colours; the files shrink several times).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any

import filemem

_AGENT = """
import sys, time, filemem
with filemem.Store(sys.argv[1]) as s:
    ses = s.session(agent=sys.argv[2], namespace=sys.argv[3], metadata={"task": sys.argv[4]})
    ses.set_status(sys.argv[4], progress=float(sys.argv[5]))
    open(sys.argv[6], "w").close()
    time.sleep(600)
"""


def _seed(path: str) -> None:
    with filemem.Store(path) as s:
        for i in range(8):
            s.put(
                "agents/planner/facts",
                f"fact-{i}",
                {"text": f"the login page times out after {10 + 5 * i} s", "source": "worker-1", "ok": i % 3 != 0},
            )
        for i in range(24):
            s.put("agents/worker-1/episodic", f"ep-{i}", {"task": "checkout", "step": i, "ok": i % 7 != 3})
        s.put("agents/worker-2/skills", "login", {"steps": ["open /login", "fill form", "submit"], "success": 0.92})
        s.put("tenant/acme/notes", "kickoff", {"text": "acme: migrate the crawler by Friday"})
        s.put("tenant/acme-corp/notes", "kickoff", {"text": "acme-corp: never shown to the acme token"})
        with s.batch() as b:
            for i in range(12):
                b.put("agents/worker-1/scratch", f"tmp-{i}", {"i": i}, ttl=0.3)


def _start_agents(path: str, tmp: str) -> list[subprocess.Popen[bytes]]:
    specs = [
        ("crawler-1", "agents/crawler-1", "crawling docs.example.org", "0.64"),
        ("planner", "agents/planner", "planning next sprint", "0.25"),
        ("crawler-2", "agents/crawler-2", "crawling shop.example.org", "0.41"),
    ]
    procs = []
    for i, (agent, ns, status, progress) in enumerate(specs):
        flag = os.path.join(tmp, f"agent-{i}")
        procs.append(subprocess.Popen([sys.executable, "-c", _AGENT, path, agent, ns, status, progress, flag]))
        deadline = time.monotonic() + 30
        while not os.path.exists(flag):
            if time.monotonic() > deadline:
                raise RuntimeError(f"agent {agent} did not start")
            time.sleep(0.05)
    procs[2].send_signal(signal.SIGKILL)  # crawler-2 crashes: the dashboard marks it
    procs[2].wait(10)
    return procs


def _serve(path: str, token_file: str) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "filemem", "serve", path, "--port", "0", "--token-file", token_file],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        m = re.search(r"on http://127\.0\.0\.1:(\d+)", line)
        if m:
            return proc, int(m.group(1))
    raise RuntimeError("filemem serve did not start")


def _browser() -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1360,1400",
    ):
        opts.add_argument(arg)
    return webdriver.Chrome(service=Service(shutil.which("chromedriver") or "chromedriver"), options=opts)


def _sign_in(driver: Any, base: str, token: str) -> None:
    driver.get(base + "/")
    driver.execute_script("sessionStorage.clear()")
    driver.get(base + "/")
    driver.find_element("id", "token").send_keys(token)
    driver.find_element("css selector", "#login-form button").click()
    deadline = time.monotonic() + 15
    while driver.find_element("id", "conn").text != "live":
        if time.monotonic() > deadline:
            raise RuntimeError("the dashboard never went live")
        time.sleep(0.1)


def _save(driver: Any, path: str) -> None:
    if not driver.save_screenshot(path):
        raise RuntimeError(f"could not write {path}")
    _shrink(path)


def _shrink(path: str) -> None:
    try:
        from PIL import Image
    except ImportError:
        return
    with Image.open(path) as im:
        im.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="docs", help="directory for the PNG files (default docs)")
    args = ap.parse_args()
    from filemem.server import add_token

    os.makedirs(args.out, exist_ok=True)

    tmp = tempfile.mkdtemp(prefix="filemem-shots-")
    path = os.path.join(tmp, "memories")
    token_file = os.path.join(tmp, "tokens.json")
    admin = add_token(token_file, "admin", ["read", "write", "admin"])
    acme = add_token(token_file, "acme", ["read"], ["tenant/acme"])
    _seed(path)
    agents = _start_agents(path, tmp)
    server, port = _serve(path, token_file)
    base = f"http://127.0.0.1:{port}"
    driver = _browser()
    try:
        _sign_in(driver, base, admin)
        with filemem.Store(path) as s:
            for i in range(7):
                s.put("agents/crawler-1/pages", f"page-{i}", {"url": f"https://docs.example.org/p/{i}", "ok": i != 4})
                time.sleep(0.2)
            s.delete("agents/crawler-1/pages", "page-4")
        driver.find_element("id", "search-limit").clear()
        driver.find_element("id", "search-limit").send_keys("4")
        driver.find_element("id", "search-query").send_keys("login times out")
        driver.find_element("css selector", "#search-form button").click()
        time.sleep(1.0)
        driver.find_element("css selector", "#search-results li").click()
        time.sleep(6)  # one polling round: health and sessions settle
        _save(driver, os.path.join(args.out, "dashboard.png"))
        driver.set_window_size(1360, 760)
        _sign_in(driver, base, acme)
        with filemem.Store(path) as s:
            s.put("tenant/acme/notes", "standup", {"text": "acme: crawler migrated"})
            s.put("tenant/acme-corp/notes", "standup", {"text": "never shown"})
        time.sleep(2)
        _save(driver, os.path.join(args.out, "dashboard-scoped.png"))
        print(json.dumps({"saved": [os.path.join(args.out, n) for n in ("dashboard.png", "dashboard-scoped.png")]}))
    finally:
        driver.quit()
        server.terminate()
        server.wait(20)
        if server.stdout is not None:
            server.stdout.close()
        for p in agents:
            if p.poll() is None:
                p.kill()
            p.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
