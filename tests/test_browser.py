"""The site in a real headless Chromium, driven over the DevTools protocol (no network needed).

Needs Debian's ``chromium`` and the ``websocket-client`` package; skipped with a message
where either is absent. Saves a screenshot of the overview (path printed; kept in pytest's
temporary folder, or under $SUITE_SCREENSHOT_DIR when that is set).
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import re
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from benchmarks import synthetic_store as synthetic
from suite.reports.site import render_site

EVIL = "<script>window.__pwned=1;console.error('pwned')</script>"

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
websocket = pytest.importorskip("websocket", reason="websocket-client is not installed (pip install websocket-client)")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (apt-get install chromium)")


class Page:
    """A minimal DevTools client: send commands, collect console errors and exceptions."""

    def __init__(self, ws_url: str):
        self.ws = websocket.create_connection(ws_url, timeout=30, suppress_origin=True)
        self.ids = itertools.count(1)
        self.events: list[dict] = []
        self.errors: list[str] = []

    def call(self, method: str, **params):
        msg_id = next(self.ids)
        self.ws.send(json.dumps({"id": msg_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == msg_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            self._event(msg)

    def _event(self, msg: dict) -> None:
        self.events.append(msg)
        method, params = msg.get("method"), msg.get("params", {})
        if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            self.errors.append(" ".join(str(a.get("value", a.get("description"))) for a in params.get("args", [])))
        elif method == "Runtime.exceptionThrown":
            self.errors.append(json.dumps(params.get("exceptionDetails", {}))[:500])
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            self.errors.append(params["entry"].get("text", ""))

    def navigate(self, url: str) -> None:
        mark = len(self.events)
        self.call("Page.navigate", url=url)
        self.wait_for("Page.loadEventFired", since=mark)

    def wait_for(self, method: str, since: int, timeout: float = 30.0) -> dict:
        for msg in self.events[since:]:
            if msg.get("method") == method:
                return msg
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg = json.loads(self.ws.recv())
            if "id" not in msg:
                self._event(msg)
                if msg.get("method") == method:
                    return msg
        raise TimeoutError(method)

    def js(self, expression: str):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(result["exceptionDetails"])
        return result["result"].get("value")

    def click(self, selector: str) -> None:
        """A real mouse click at the element's centre (not a synthetic element.click())."""
        box = self.js(f"(() => {{ const r = document.querySelector({json.dumps(selector)})"
                      ".getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; })()")
        for kind in ("mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", type=kind, x=box[0], y=box[1], button="left", clickCount=1)


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("store")
    store = synthetic.write_store(root, subtasks=("sst2", "mrpc", "cola"), skill={"full": 0.93},
                                  n_examples=200)
    rows, preds = synthetic.make_cell(EVIL, "sst2", 0, skill=0.7)
    store.write_cell(rows)
    store.write_predictions(rows[0]["cell_id"], preds)
    rows, _ = synthetic.make_cell("lora", "sst2", 5, failed=f"boom {EVIL}")
    store.write_cell(rows)
    store.write_table("kernels", synthetic.kernel_rows())
    out = tmp_path_factory.mktemp("site")
    render_site(root, out, baseline="lora")
    return out


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    profile = tmp_path_factory.mktemp("chromium-profile")
    proc = subprocess.Popen(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-extensions",
         "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--remote-debugging-port=0",
         "--window-size=1400,1100", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    try:
        port = None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and port is None:
            line = proc.stderr.readline()
            if not line and proc.poll() is not None:
                break
            m = re.search(r"DevTools listening on ws://[^:]+:(\d+)/", line)
            if m:
                port = int(m.group(1))
        if port is None:
            pytest.skip("Chromium started but did not open a DevTools port")
        # Keep draining stderr so Chromium never blocks on a full pipe.
        import threading

        threading.Thread(target=lambda: [None for _ in proc.stderr], daemon=True).start()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as resp:
            targets = json.load(resp)
        page_target = next(t for t in targets if t.get("type") == "page")
        page = Page(page_target["webSocketDebuggerUrl"])
        for domain in ("Page", "Runtime", "Log"):
            page.call(f"{domain}.enable")
        yield page
        page.ws.close()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def _column_values(page: Page, index: int) -> list[str]:
    return page.js(
        f"Array.from(document.querySelectorAll('table.leaderboard tbody tr'))"
        f".map(r => r.cells[{index}].getAttribute('data-sort'))"
    )


def test_overview_in_chromium(browser: Page, site: Path, tmp_path: Path):
    url = (site / "index.html").resolve().as_uri()
    browser.navigate(url)
    browser.js("new Promise(r => setTimeout(r, 300))")  # let lazy images decode

    assert browser.js("document.title").startswith("Leaderboard")
    assert browser.js("document.querySelectorAll('table.leaderboard tbody tr').length") == 4
    # Figures: every <img> loaded and has a size (SVG read from file://).
    imgs = browser.js("Promise.all(Array.from(document.images).map(i => i.decode().then(() => "
                      "[i.getAttribute('src'), i.naturalWidth]).catch(() => [i.getAttribute('src'), 0])))")
    assert imgs and all(w > 0 for _, w in imgs), imgs

    # The hostile method name is shown as text, and nothing ran.
    names = browser.js("Array.from(document.querySelectorAll('table.leaderboard tbody th')).map(t => t.firstChild.textContent)")
    assert EVIL in names
    assert browser.js("typeof window.__pwned") == "undefined"
    assert browser.js("document.querySelectorAll('main script').length") == 0

    # Sorting by a real click on a header: sst2 is column 3 (method, GLUE score, avg rank, cola, sst2).
    headers = browser.js("Array.from(document.querySelectorAll('table.leaderboard thead th')).map(t => t.textContent.trim())")
    col = next(i for i, h in enumerate(headers) if h.startswith("sst2"))
    selector = f"table.leaderboard thead th:nth-child({col + 1}) button.sort-btn"
    browser.click(selector)
    values = [float(v) for v in _column_values(browser, col) if v]
    assert values == sorted(values, reverse=True) and len(values) == 4
    assert browser.js(f"document.querySelector('table.leaderboard thead th:nth-child({col + 1})')"
                      ".getAttribute('aria-sort')") == "descending"
    browser.click(selector)
    values = [float(v) for v in _column_values(browser, col) if v]
    assert values == sorted(values)
    # Method column sorts as text.
    browser.click("table.leaderboard thead th:nth-child(1) button.sort-btn")
    names = browser.js("Array.from(document.querySelectorAll('table.leaderboard tbody th')).map(t => t.getAttribute('data-sort'))")
    assert names == sorted(names, key=str.lower)

    shot = base64.b64decode(browser.call("Page.captureScreenshot", format="png")["data"])
    target = Path(os.environ.get("SUITE_SCREENSHOT_DIR", tmp_path))
    target.mkdir(parents=True, exist_ok=True)
    (target / "overview.png").write_bytes(shot)
    print(f"screenshot: {target / 'overview.png'}")
    assert shot[:8] == b"\x89PNG\r\n\x1a\n"

    assert browser.errors == [], browser.errors


@pytest.mark.parametrize("page_glob", ["kernels.html", "task-*sst2*.html", "cells/*.html"])
def test_other_pages_load_without_errors(browser: Page, site: Path, page_glob: str):
    page = sorted(site.glob(page_glob))[0]
    browser.errors.clear()
    browser.navigate(page.resolve().as_uri())
    assert browser.js("document.querySelector('main h1') !== null")
    assert browser.js("typeof window.__pwned") == "undefined"
    assert browser.errors == [], browser.errors
