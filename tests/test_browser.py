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
        """A real mouse click at the element's centre (not a synthetic element.click()), scrolled into
        view first as a reader would: a click outside the viewport reaches nothing."""
        box = self.js(f"(() => {{ const e = document.querySelector({json.dumps(selector)}); "
                      "e.scrollIntoView({block: 'center', inline: 'nearest'}); const r = e.getBoundingClientRect(); "
                      "return [r.x + r.width / 2, r.y + r.height / 2]; })()")
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
    for seed in range(3):  # a method whose every cell failed
        rows, _ = synthetic.make_cell("prefix", "sst2", seed, failed=f"RuntimeError: no prefix at {root}/x.py")
        store.write_cell(rows)
    rows, preds = synthetic.make_cell("pissa", "mrpc", 7, commit="beefcafe")  # a second commit
    store.write_cell(rows)
    store.write_predictions(rows[0]["cell_id"], preds)
    store.write_table("kernels", synthetic.kernel_rows())
    out = tmp_path_factory.mktemp("site")
    render_site(root, out, baseline="lora")
    return out


@pytest.fixture(scope="module")
def served(site):
    """The site over HTTP on localhost (downloads and fetch() need an origin; file:// has none)."""
    import functools
    import http.server
    import threading

    handler = functools.partial(_QuietHandler, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


try:
    import http.server as _http_server

    class _QuietHandler(_http_server.SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:  # keep pytest's output clean
            pass
except ImportError:  # pragma: no cover
    _QuietHandler = None


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
    assert browser.js("document.querySelectorAll('table.leaderboard tbody tr').length") == 5  # + failed prefix
    # Figures: every <img> loaded and has a size (SVG read from file://); the Pareto plot is inline SVG.
    imgs = browser.js("Promise.all(Array.from(document.images).map(i => i.decode().then(() => "
                      "[i.getAttribute('src'), i.naturalWidth]).catch(() => [i.getAttribute('src'), 0])))")
    assert all(w > 0 for _, w in imgs), imgs
    assert browser.js("document.querySelectorAll('svg.pareto-svg circle').length") > 0

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
    assert values == sorted(values, reverse=True) and len(values) == 4  # the failed row has none
    assert browser.js(f"document.querySelector('table.leaderboard thead th:nth-child({col + 1})')"
                      ".getAttribute('aria-sort')") == "descending"
    browser.click(selector)
    values = [float(v) for v in _column_values(browser, col) if v]
    assert values == sorted(values)
    # Method column (after the rank) sorts as text.
    browser.click("table.leaderboard thead th:nth-child(2) button.sort-btn")
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


def _visible_methods(page: Page, table: str = "table.leaderboard") -> list[str]:
    return page.js(f"Array.from(document.querySelectorAll('{table} tbody tr'))"
                   ".filter(r => r.offsetParent !== null).map(r => r.getAttribute('data-method'))")


def test_ranked_rows_failed_row_and_mixed_commit_warning(browser: Page, site: Path):
    browser.errors.clear()
    browser.navigate((site / "index.html").resolve().as_uri())
    ranks = browser.js("Array.from(document.querySelectorAll('table.leaderboard tbody tr'))"
                       ".map(r => r.cells[0].getAttribute('data-sort'))")
    numbers = [int(r) for r in ranks if r]
    assert numbers == sorted(numbers) and numbers[0] == 1 and ranks[-1] == ""  # ranked, failed row last
    assert _visible_methods(browser)[-1] == "prefix"
    failed = browser.js("document.querySelector('tr[data-method=\"prefix\"] th').innerText")
    assert "failed 3/3" in failed and "RuntimeError: no prefix at <path>/x.py" in failed
    warning = browser.js("(() => { const w = document.querySelector('.note.warn.mixed');"
                         " return w && w.offsetParent !== null ? w.innerText : ''; })()")
    assert "git_commit" in warning and "beefcafe" in warning
    body = browser.js("document.documentElement.outerHTML")
    assert str(site.parent) not in body and "/tmp/" not in body
    assert browser.errors == [], browser.errors


def test_filter_hides_rows_on_real_keystrokes(browser: Page, site: Path):
    browser.errors.clear()
    browser.navigate((site / "index.html").resolve().as_uri())
    assert len(_visible_methods(browser)) == 5
    browser.click("#filter-text")
    for ch in "pis":
        browser.call("Input.dispatchKeyEvent", type="keyDown", text=ch, key=ch, unmodifiedText=ch)
        browser.call("Input.dispatchKeyEvent", type="keyUp", key=ch)
    assert browser.js("document.getElementById('filter-text').value") == "pis"
    assert _visible_methods(browser) == ["pissa"]
    assert "1 of 5 rows" in browser.js("document.getElementById('filter-count').textContent")
    for _ in range(3):  # deleting the text brings every row back
        browser.call("Input.dispatchKeyEvent", type="rawKeyDown", key="Backspace", code="Backspace",
                     windowsVirtualKeyCode=8)
        browser.call("Input.dispatchKeyEvent", type="keyUp", key="Backspace", code="Backspace",
                     windowsVirtualKeyCode=8)
    assert len(_visible_methods(browser)) == 5
    # Method kind: "baseline" (full fine-tuning) only.
    browser.js("(() => { const s = document.getElementById('filter-kind'); s.value = 'baseline';"
               " s.dispatchEvent(new Event('change')); })()")
    assert _visible_methods(browser) == ["full"]
    # Column toggles: unticking a column hides its cells in every row.
    browser.js("(() => { const s = document.getElementById('filter-kind'); s.value = '';"
               " s.dispatchEvent(new Event('change')); })()")
    browser.click("details.col-toggles summary")
    browser.click("details.col-toggles input[type=checkbox]")
    hidden = browser.js("document.querySelectorAll('table.leaderboard tbody td.col-hidden').length")
    assert hidden == 5
    assert browser.errors == [], browser.errors


def test_csv_download_parses_back_into_the_table(browser: Page, served: str, site: Path):
    import csv
    import io

    browser.errors.clear()
    browser.navigate(f"{served}/index.html")
    href = browser.js("document.querySelector('.data-links a').getAttribute('href')")
    assert href.startswith("data/board-") and href.endswith(".csv")
    text = browser.js(f"fetch({json.dumps(href)}).then(r => r.ok ? r.text() : 'HTTP ' + r.status)")
    rows = list(csv.DictReader(io.StringIO(text)))
    shown = browser.js(
        "(() => { const t = document.querySelector('table.leaderboard');"
        " const heads = Array.from(t.tHead.rows[0].cells).map(h => h.querySelector('button') ?"
        " h.querySelector('button').firstChild.textContent.trim() : h.textContent.trim());"
        " const col = heads.indexOf('sst2');"
        " return Array.from(t.tBodies[0].rows).map(r => [r.getAttribute('data-method'),"
        " r.cells[col].getAttribute('data-sort')]); })()")
    by_variant = {r["variant"]: r for r in rows if r["column"] == "sst2"}
    checked = 0
    for variant, value in shown:
        if value:
            assert float(by_variant[variant]["mean"]) == pytest.approx(float(value), rel=1e-12)
            checked += 1
    assert checked == 4
    cells = browser.js("fetch('data/cells.csv').then(r => r.status)")
    assert cells == 200
    assert browser.errors == [], browser.errors


def test_narrow_screen_keeps_the_method_column_and_fits_the_plot(browser: Page, site: Path):
    browser.errors.clear()
    browser.call("Emulation.setDeviceMetricsOverride", width=420, height=900, deviceScaleFactor=1, mobile=True)
    try:
        browser.navigate((site / "index.html").resolve().as_uri())
        browser.js("new Promise(r => setTimeout(r, 200))")
        wrap_width = browser.js("document.querySelector('.table-wrap').clientWidth")
        assert wrap_width <= 420
        browser.js("document.querySelector('.table-wrap').scrollLeft = 10000")
        left = browser.js("(() => { const w = document.querySelector('.table-wrap').getBoundingClientRect();"
                          " const m = document.querySelector('table.leaderboard tbody th.method')"
                          ".getBoundingClientRect(); return [w.left, m.left, m.right]; })()")
        assert browser.js("document.querySelector('.table-wrap').scrollLeft") > 0
        assert left[0] - 1 <= left[1] < left[0] + 100 and left[2] > left[1]  # still in view
        plot = browser.js("document.querySelector('section.board svg.pareto-svg').getBoundingClientRect().right")
        assert 0 < plot <= 420  # the Pareto plot shrinks to the screen
    finally:
        browser.call("Emulation.clearDeviceMetricsOverride")
    assert browser.errors == [], browser.errors
