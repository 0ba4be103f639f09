"""The views a researcher reaches for, in a real headless Chromium: the interactive Pareto plot
(hover, axis choice, filters, reference lines, emulated timings, degenerate axes), the view kept
in the URL, and wide tables that scroll inside their own box with the method column pinned.

Coordinates are checked against values recomputed here from the raw store rows (means over seeds,
medians over tasks), never against what the page computed. Reuses the DevTools client and the
browser fixture of ``tests/test_browser.py``.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from benchmarks import synthetic_store as synthetic
from suite.reports.site import render_site
from suite.results.store import ResultStore
from tests.test_browser import CHROMIUM, EVIL, Page, browser  # noqa: F401 - the fixture is used by name

needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (apt-get install chromium)")

LM_METHODS = {  # name -> (val_loss offset, peak memory MB, tokens/s, emulated)
    "bf16-train": (0.00, 900.0, 12_000.0, False),
    "fp8-train-with-a-long-recipe-name": (0.02, 700.0, 15_000.0, True),
    "mxfp4-train": (0.05, 600.0, 18_000.0, False),
    "nvfp4-train": (0.08, 650.0, 17_000.0, False),
}


def _lm_cell(store: ResultStore, method: str, seed: int) -> None:
    """A pretraining cell: val_loss and its evaluations during training, perplexity, costs (every
    recipe trains the same 1.04M parameters: a degenerate parameter axis)."""
    offset, memory, tps, emulated = LM_METHODS[method]
    cid = synthetic.cell_id_for(method, seed, "lm-views")
    luck = (0.0, 0.3, -0.2)[seed]
    loss = 2.4 + luck + offset + 0.003 * seed
    base = {"cell_id": cid, "run_id": "t", "method": method, "variant": method, "method_args": "[]",
            "method_kind": "train", "task": "lm", "subtask": "", "model": "llama-tiny", "seed": seed,
            "recipe": json.dumps({"max_steps": 300}), "config": "{}", "data_source": "synthetic",
            "synthetic_data": True, "started_at": "2025-01-01T00:00:00", "finished_at": "2025-01-01T00:01:00",
            "status": "ok", "error": ""}
    rows = [dict(base, metric="val_loss", value=loss, split="valid", is_primary=True, higher_is_better=False),
            dict(base, metric="perplexity", value=math.exp(loss), split="valid", is_primary=False,
                 higher_is_better=False)]
    rows += [dict(base, metric=f"val_loss@step{step}", value=loss + bump, split="valid", is_primary=False,
                  higher_is_better=False) for step, bump in ((100, 0.5), (200, 0.2))]
    costs = {"train_time_s": 30.0 + 10 * offset * 100 + seed, "train_steps": 300.0,
             "train_tokens_per_s": tps + 10 * seed, "peak_memory_mb": memory + seed,
             "trainable_params": 1_040_000.0, "train_gemm_emulated": 1.0 if emulated else 0.0}
    rows += [dict(base, metric=k, value=v, split="cost", is_primary=False, higher_is_better=False)
             for k, v in costs.items()]
    store.write_cell(rows)


@pytest.fixture(scope="module")
def views(tmp_path_factory) -> tuple[Path, Path]:
    """(store, site): GLUE (lora, pissa, full, a hostile name, a majority-class method) and lm recipes."""
    root = tmp_path_factory.mktemp("views") / "store"
    store = synthetic.write_store(root, subtasks=("sst2", "mrpc"), n_examples=120)
    rows, preds = synthetic.make_cell(EVIL, "sst2", 0, skill=0.7, n_examples=120)
    store.write_cell(rows)
    store.write_predictions(rows[0]["cell_id"], preds)
    for seed in range(3):
        for method in LM_METHODS:
            _lm_cell(store, method, seed)
    out = tmp_path_factory.mktemp("views-site")
    render_site(root, out, baseline=None, workers=1)
    return root, out


@pytest.fixture(scope="module")
def frame(views) -> pd.DataFrame:
    return ResultStore(views[0]).load()


def _lm_page(site: Path) -> Path:
    return next(site.glob("task-lm-*.html"))


def _glue_index(site: Path) -> Path:
    return site / "index.html"


def _mean(frame: pd.DataFrame, task: str, variant: str, metric: str, subtask: str | None = None) -> float:
    rows = frame[(frame["task"] == task) & (frame["variant"] == variant) & (frame["metric"] == metric)
                 & (frame["status"] == "ok")]
    if subtask is not None:
        rows = rows[rows["subtask"] == subtask]
    return float(rows["value"].mean())


# -- the page without scripts -------------------------------------------------------------------------


def test_static_svg_is_inline_escaped_and_readable_without_scripts(views):
    _, site = views
    index = _glue_index(site).read_text(encoding="utf-8")
    assert index.count('<svg class="pareto-svg"') == 2  # one plot per board, not one per axis pair
    assert EVIL not in index and "&lt;script&gt;" in index
    svg = re.search(r'<svg class="pareto-svg".*?</svg>', index, re.S).group(0)
    # lora, pissa, full on the GLUE score; the hostile name ran sst2 only, so it has no GLUE score and
    # waits (hidden, its values kept, its name escaped) for an axis it has
    assert svg.count("<circle") == 3 and svg.count('class="pt"') == 4
    assert 'data-method="pissa"' in svg and ">pissa<" in svg and 'data-method="&lt;script&gt;' in svg
    assert "better ↑" in svg and "← better" in svg
    assert "log scale" in svg  # trainable parameters, as its spec says
    lm = _lm_page(site).read_text(encoding="utf-8")
    assert lm.count('<svg class="pareto-svg"') == 1
    assert str(views[0]) not in index + lm and "/tmp/" not in index + lm


# -- in the browser -----------------------------------------------------------------------------------


def _invert(page: Page, method: str, fig: int = 0) -> tuple[float, float]:
    """The values a drawn point stands for, read back through the plot's declared box and ranges."""
    got = page.js(f"""(() => {{
        const svg = document.querySelectorAll('svg.pareto-svg')[{fig}];
        const g = Array.from(svg.querySelectorAll('g.pt')).find(g => g.getAttribute('data-method') === {json.dumps(method)});
        const c = g.querySelector('circle');
        return [svg.getAttribute('data-box'), svg.getAttribute('data-x-range'), svg.getAttribute('data-y-range'),
                Number(c.getAttribute('cx')), Number(c.getAttribute('cy'))]; }})()""")
    left, top, right, bottom = (float(v) for v in got[0].split())

    def back(rng: str, pix: float, a: float, b: float) -> float:
        lo, hi, scale = rng.split()
        t = float(lo) + (pix - a) / (b - a) * (float(hi) - float(lo))
        return 10 ** t if scale == "log" else t

    return back(got[1], got[3], left, right), back(got[2], got[4], bottom, top)


def _choose(page: Page, axis: str, label_start: str, fig: int = 0) -> None:
    page.js(f"""(() => {{
        const s = document.querySelectorAll('figure.pareto-plot select.pareto-{axis}')[{fig}];
        const o = Array.from(s.options).find(o => o.textContent.startsWith({json.dumps(label_start)}));
        s.value = o.value; s.dispatchEvent(new Event('change', {{bubbles: true}})); }})()""")


def _shown_points(page: Page, fig: int = 0) -> list[str]:
    return page.js(f"Array.from(document.querySelectorAll('svg.pareto-svg')[{fig}].querySelectorAll('g.pt'))"
                   ".filter(g => !g.hasAttribute('hidden') && g.getBoundingClientRect().width > 0)"
                   ".map(g => g.getAttribute('data-method'))")


@needs_chromium
def test_hover_shows_the_method_name(browser: Page, views):  # noqa: F811
    _, site = views
    browser.errors.clear()
    browser.navigate(_glue_index(site).resolve().as_uri())
    _choose(browser, "y", "sst2")  # the hostile name ran sst2 only
    _choose(browser, "x", "peak memory")  # lora and pissa train the same parameters: apart on memory
    for name in ("pissa", EVIL):
        box = browser.js("(() => { const g = Array.from(document.querySelectorAll('svg.pareto-svg g.pt'))"
                         f".find(g => g.getAttribute('data-method') === {json.dumps(name)});"
                         " const r = g.querySelector('circle').getBoundingClientRect();"
                         " window.scrollTo(0, window.scrollY + r.top - 200);"
                         " const q = g.querySelector('circle').getBoundingClientRect();"
                         " return [q.x + q.width / 2, q.y + q.height / 2]; })()")
        browser.call("Input.dispatchMouseEvent", type="mouseMoved", x=box[0], y=box[1])
        tip = browser.js("(() => { const t = document.querySelector('.pareto-tip');"
                         " return t.hidden ? '' : t.querySelector('.tip-name').textContent; })()")
        assert tip == name
    assert browser.js("typeof window.__pwned") == "undefined"
    assert browser.errors == [], browser.errors


@needs_chromium
def test_switching_axes_moves_points_to_the_store_values(browser: Page, views, frame):  # noqa: F811
    _, site = views
    browser.errors.clear()
    browser.navigate(_glue_index(site).resolve().as_uri())
    glue = frame[frame["task"] == "glue"]
    for variant in ("lora", "pissa", "full"):  # default: GLUE score (mean of task means) against parameters
        x, y = _invert(browser, variant)
        params = np.median([_mean(glue, "glue", variant, "trainable_params", s) for s in ("sst2", "mrpc")])
        score = np.mean([_mean(glue, "glue", variant, "accuracy", "sst2"),
                         _mean(glue, "glue", variant, "f1_accuracy_mean", "mrpc")]) * 100
        assert x == pytest.approx(params, rel=1e-3) and y == pytest.approx(score, abs=0.01)
    assert browser.js("document.querySelector('svg.pareto-svg').getAttribute('data-x-range')").endswith("log")
    _choose(browser, "x", "peak memory")
    _choose(browser, "y", "sst2")
    memories = {}
    for variant in ("lora", "pissa", "full"):
        x, y = _invert(browser, variant)
        memories[variant] = max(_mean(glue, "glue", variant, "peak_memory_mb", s) for s in ("sst2", "mrpc"))
        assert x == pytest.approx(memories[variant], rel=1e-4)
        assert y == pytest.approx(_mean(glue, "glue", variant, "accuracy", "sst2") * 100, abs=0.01)
    lo, hi, scale = browser.js("document.querySelector('svg.pareto-svg').getAttribute('data-x-range')").split()
    span = max(memories.values()) - min(memories.values())
    assert scale == "linear" and float(lo) > 0.5 * min(memories.values())  # fitted, not from zero
    assert min(memories.values()) - 0.1 * span < float(lo) < min(memories.values())
    text = browser.js("document.querySelector('svg.pareto-svg').textContent")
    assert "peak memory" in text and "← better" in text and "better ↑" in text
    # The majority-class rate of sst2's evaluation labels, from the stored predictions.
    preds = ResultStore(views[0]).load_predictions(list(glue[(glue["subtask"] == "sst2")]["cell_id"].unique()[:1]))
    majority = float(preds["label"].value_counts(normalize=True).iloc[0]) * 100
    refs = browser.js("Array.from(document.querySelector('svg.pareto-svg').querySelectorAll('g.ref text'))"
                      ".map(t => t.textContent)")
    assert any(r.startswith("majority-class rate: ") and float(r.split(": ")[1]) == pytest.approx(majority, abs=0.05)
               for r in refs), refs
    assert browser.errors == [], browser.errors


@needs_chromium
def test_typing_a_filter_hides_the_points_and_refits_the_front(browser: Page, views):  # noqa: F811
    _, site = views
    browser.errors.clear()
    browser.navigate(_glue_index(site).resolve().as_uri())
    _choose(browser, "y", "sst2")
    assert sorted(_shown_points(browser)) == sorted(["lora", "pissa", "full", EVIL])
    browser.click("#filter-text")
    for ch in "pis":
        browser.call("Input.dispatchKeyEvent", type="keyDown", text=ch, key=ch, unmodifiedText=ch)
        browser.call("Input.dispatchKeyEvent", type="keyUp", key=ch)
    assert _shown_points(browser) == ["pissa"]
    assert browser.js("document.querySelector('svg.pareto-svg g.pt[data-method=\"pissa\"] circle')"
                      ".classList.contains('front')")  # alone, it is the front of what is shown
    assert _shown_points(browser, 1) == []  # the lm board: no recipe matches
    assert browser.errors == [], browser.errors


@needs_chromium
def test_emulated_timings_and_a_degenerate_axis_are_said(browser: Page, views, frame):  # noqa: F811
    _, site = views
    browser.errors.clear()
    browser.navigate(_lm_page(site).resolve().as_uri())
    text = browser.js("document.querySelector('svg.pareto-svg').textContent")
    assert "all 4 points at 1.04M: axis not drawn" not in text  # the default x axis is one that varies
    _choose(browser, "x", "trainable parameters")
    text = browser.js("document.querySelector('svg.pareto-svg').textContent")
    assert "all 4 points at 1.04M: axis not drawn" in text
    _choose(browser, "x", "tokens/s")
    emulated = "fp8-train-with-a-long-recipe-name"
    assert emulated not in _shown_points(browser) and len(_shown_points(browser)) == 3
    assert "1 row with emulated GEMMs left out" in browser.js("document.querySelector('svg.pareto-svg').textContent")
    lm = frame[frame["task"] == "lm"]
    for variant in ("bf16-train", "mxfp4-train"):
        x, y = _invert(browser, variant)
        assert x == pytest.approx(_mean(lm, "lm", variant, "train_tokens_per_s"), rel=1e-4)
        assert y == pytest.approx(_mean(lm, "lm", variant, "val_loss"), abs=1e-4)
    assert "better →" in browser.js("document.querySelector('svg.pareto-svg text.x-title').textContent")
    _choose(browser, "x", "peak memory")  # memory is no speed: the emulated run is back
    assert emulated in _shown_points(browser)
    assert browser.errors == [], browser.errors


@needs_chromium
def test_the_view_is_kept_in_the_url_and_restored_on_reload(browser: Page, views):  # noqa: F811
    _, site = views
    browser.errors.clear()
    browser.navigate(_glue_index(site).resolve().as_uri())
    browser.js("(() => { const s = document.getElementById('filter-text'); s.value = 'a';"
               " s.dispatchEvent(new Event('input', {bubbles: true})); })()")
    headers = browser.js("Array.from(document.querySelector('table.leaderboard').tHead.rows[0].cells)"
                         ".map(t => t.textContent.trim())")
    col = next(i for i, h in enumerate(headers) if h.startswith("sst2"))
    selector = f"table.leaderboard thead th:nth-child({col + 1}) button.sort-btn"
    browser.click(selector)
    browser.click(selector)  # ascending after the first click's descending
    browser.js("(() => { const d = document.querySelector('details.col-toggles'); d.open = true;"
               " const i = d.querySelectorAll('input[data-column]')[0]; i.checked = false;"
               " i.dispatchEvent(new Event('change', {bubbles: true})); })()")
    _choose(browser, "x", "peak memory")
    before = browser.js("[location.hash, document.querySelector('svg.pareto-svg').getAttribute('data-x'),"
                        " Array.from(document.querySelector('table.leaderboard').tBodies[0].rows).filter(r => !r.hidden)"
                        ".map(r => r.getAttribute('data-method')), document.querySelectorAll('td.col-hidden').length]")
    assert "q=a" in before[0] and f"s0={col}.a" in before[0] and "h0=" in before[0] and "p0=" in before[0]
    mark = len(browser.events)
    browser.call("Page.reload", ignoreCache=True)
    browser.wait_for("Page.loadEventFired", since=mark)
    after = browser.js("[location.hash, document.querySelector('svg.pareto-svg').getAttribute('data-x'),"
                       " Array.from(document.querySelector('table.leaderboard').tBodies[0].rows).filter(r => !r.hidden)"
                       ".map(r => r.getAttribute('data-method')), document.querySelectorAll('td.col-hidden').length]")
    assert after == before
    assert browser.js("document.getElementById('filter-text').value") == "a"
    assert browser.js(f"document.querySelector('table.leaderboard thead th:nth-child({col + 1})')"
                      ".getAttribute('aria-sort')") == "ascending"
    values = [float(v) for v in browser.js(
        f"Array.from(document.querySelector('table.leaderboard').tBodies[0].rows).filter(r => !r.hidden)"
        f".map(r => r.cells[{col}].getAttribute('data-sort')).filter(v => v)")]
    assert values == sorted(values)
    assert "peak memory" in browser.js("(() => { const s = document.querySelector('select.pareto-x');"
                                       " return s.options[s.selectedIndex].textContent; })()")
    # The points follow the restored filter too: every shown name contains "a".
    assert all("a" in name.lower() for name in _shown_points(browser))
    browser.navigate("about:blank")
    assert browser.errors == [], browser.errors


@needs_chromium
@pytest.mark.parametrize("width", [390, 2600])
def test_the_wide_lm_table_scrolls_in_its_box_with_the_method_pinned(browser: Page, views, width):  # noqa: F811
    _, site = views
    browser.errors.clear()
    browser.call("Emulation.setDeviceMetricsOverride", width=width, height=1000, deviceScaleFactor=1,
                 mobile=width < 640)
    try:
        browser.navigate(_lm_page(site).resolve().as_uri())
        n_cols = browser.js("document.querySelector('table.task-table').tHead.rows[0].cells.length")
        assert n_cols >= 17
        page = browser.js("[document.documentElement.scrollWidth, window.innerWidth]")
        assert page[0] <= page[1]  # the page itself never scrolls sideways
        wrap = "document.querySelector('.table-wrap')"
        if width == 2600:  # the columns that used to be off-screen: the gap, its interval, step time, tokens/s
            rights = browser.js("Array.from(document.querySelector('table.task-table').tHead.rows[0].cells)"
                                ".filter(c => /^(Gap vs|vs seed noise|Step time|Tokens\\/s)/.test(c.textContent.trim()))"
                                ".map(c => c.getBoundingClientRect().right)")
            assert len(rights) == 4 and max(rights) <= width
        else:
            assert browser.js(f"{wrap}.scrollWidth > {wrap}.clientWidth")
        if browser.js(f"{wrap}.scrollWidth > {wrap}.clientWidth"):  # it scrolls in its own box
            browser.js(f"{wrap}.scrollLeft = 100000")
            assert browser.js(f"{wrap}.scrollLeft") > 0
        for row in ("thead th.method", "tbody tr:first-child th.method"):
            box = browser.js(f"(() => {{ const w = {wrap}.getBoundingClientRect(); const m = document"
                             f".querySelector('table.task-table {row}').getBoundingClientRect();"
                             " return [w.left, m.left, m.right]; })()")
            assert box[0] - 1 <= box[1] < box[0] + 100 and box[2] > box[1]  # pinned at the box's left
        fig = browser.js("document.querySelector('svg.pareto-svg').getBoundingClientRect().right")
        assert fig <= width
    finally:
        browser.call("Emulation.clearDeviceMetricsOverride")
    assert browser.errors == [], browser.errors


def test_front_and_ranges_follow_each_axis_direction():
    from suite.reports import pareto

    # tokens/s (higher is better) against val_loss (lower is better): (150, 1.9) beats (100, 2.0).
    assert pareto.front([100, 200, 150], [2.0, 2.5, 1.9], True, False) == [False, True, True]
    assert pareto.front([100, 200, 150], [2.0, 2.5, 1.9], False, True) == [True, True, False]
    lo, hi, log = pareto.axis_range([600.0, 700.0, 900.0], [], False)
    assert (lo, hi, log) == (pytest.approx(582.0), pytest.approx(918.0), False)  # fitted, not from zero
    lo, hi, log = pareto.axis_range([1e5, 1e7], [], True)
    assert log and (lo, hi) == (pytest.approx(5 - 0.12), pytest.approx(7 + 0.12))
    assert pareto.axis_range([1.04e6] * 4, [], True) is None  # degenerate: said, not drawn
    assert not pareto.axis_range([-1.0, 2.0], [], True)[2]  # a log axis needs positive values


def test_reference_lines_are_the_baseline_and_the_majority_rate(views, frame):
    from suite.reports import leaderboard, pareto

    glue = next(b for b in leaderboard.build_boards(frame, predictions=ResultStore(views[0]).load_predictions)
                if b.family == "glue")
    plot = pareto.board_plot(glue)
    sst2 = next(q for q in plot.quantities if q.label == "sst2 (accuracy)")
    refs = dict((what, value) for value, what in sst2.refs)
    lora = frame[(frame["variant"] == "lora") & (frame["subtask"] == "sst2") & (frame["metric"] == "accuracy")]
    assert refs["baseline lora"] == pytest.approx(lora["value"].mean() * 100)
    one = ResultStore(views[0]).load_predictions([lora["cell_id"].iloc[0]])
    assert refs["majority-class rate"] == pytest.approx(one["label"].value_counts(normalize=True).iloc[0] * 100)
