"""The example browser in headless Chromium: the text filter and the correct/incorrect/disagreement
toggle on real input events, model output inert, no console errors. Reuses the DevTools client of
tests/test_browser.py (skipped where Chromium or websocket-client is absent)."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks import synthetic_store as synthetic
from suite.reports import examples
from suite.reports.site import render_site
from tests.test_browser import CHROMIUM, Page, browser  # noqa: F401 - browser is a fixture

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (apt-get install chromium)")
EVIL = "<img src=x onerror=\"window.__pwned=1;console.error('pwned')\">"


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("store")
    store = synthetic.write_store(root, methods=("lora", "full"), subtasks=("sst2",), seeds=(0,), n_examples=120)
    cells = store.load()
    cid = str(cells.loc[cells.variant == "full", "cell_id"].iloc[0])
    preds = store.load_predictions([cid]).drop(columns="cell_id")
    preds["generated"] = [f"think {i} {EVIL}" if i % 7 == 0 else f"think {i}" for i in range(len(preds))]
    store.write_predictions(cid, preds)
    out = tmp_path_factory.mktemp("site")
    render_site(root, out, baseline="lora", workers=1)
    return out


def _visible(page: Page) -> int:
    return page.js("Array.from(document.querySelectorAll('table.examples tbody tr'))"
                   ".filter(r => r.offsetParent !== null).length")


def test_filter_and_disagreement_toggle(browser: Page, site: Path):  # noqa: F811 - the imported fixture
    (page,) = [p for p in (site / "examples").glob("cell-*.html") if "beside" in p.read_text(encoding="utf-8")]
    browser.errors.clear()
    browser.navigate(page.resolve().as_uri())
    assert _visible(browser) == 120
    counts = browser.js("Object.fromEntries(Array.from(document.querySelectorAll('table.counts td.num'))"
                        ".map(td => [td.dataset.case, Number(td.textContent)]))")
    assert sum(counts.values()) == 120
    browser.click("input[name=ex-show][value=disagree]")
    assert _visible(browser) == counts[examples.ONLY_A] + counts[examples.ONLY_B]
    assert "of 120 rows shown" in browser.js("document.getElementById('ex-count').textContent")
    browser.click("input[name=ex-show][value=incorrect]")
    wrong = browser.js("document.querySelectorAll('table.examples tbody tr[data-state=incorrect]').length")
    assert _visible(browser) == wrong == counts[examples.ONLY_B] + counts[examples.BOTH_WRONG]
    browser.click("input[name=ex-show][value=all]")
    browser.click("#ex-text")
    for ch in "think 7":  # the generations of examples 7 and 70-79
        browser.call("Input.dispatchKeyEvent", type="keyDown", text=ch, key=ch, unmodifiedText=ch)
        browser.call("Input.dispatchKeyEvent", type="keyUp", key=ch)
    assert browser.js("document.getElementById('ex-text').value") == "think 7"
    assert _visible(browser) == 11
    assert browser.js("typeof window.__pwned") == "undefined"
    assert browser.js("document.querySelectorAll('table.examples img').length") == 0  # text, never markup
    assert browser.errors == [], browser.errors
