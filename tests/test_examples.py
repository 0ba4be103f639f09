"""The example browser: the side-by-side counts are a direct count of the stored predictions, model
output is escaped, a page holds at most its cap (the CSV every example), generations are shown with
their extracted answers, and cell pages are a structured view with the raw JSON kept collapsed."""

from __future__ import annotations

import html
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from benchmarks import synthetic_store as synthetic
from suite.reports import examples
from suite.reports.site import render_site
from suite.results.store import ResultStore

EVIL = "<script>window.__pwned=1</script>"


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory) -> Path:
    """lora, full x sst2, stsb x 2 seeds, 600 examples each (over the page cap)."""
    root = tmp_path_factory.mktemp("examples") / "store"
    synthetic.write_store(root, methods=("lora", "full"), subtasks=("sst2", "stsb"), seeds=(0, 1), n_examples=600)
    return root


@pytest.fixture(scope="module")
def gen_dir(tmp_path_factory) -> Path:
    """One cell per method whose predictions are generations (hostile text, the store's folder) with the
    extracted answers and text labels, as GSM8K stores them."""
    root = tmp_path_factory.mktemp("generations") / "store"
    store = ResultStore(root)
    for method in ("lora", "full"):
        rows, preds = synthetic.make_cell(method, "rte", 0, n_examples=30, skill=0.7 if method == "lora" else 0.9)
        preds = preds.assign(
            generated=[f"Step 1 {EVIL} & so the answer is {int(p)} {root}/x" for p in preds["prediction"]],
            prediction=[f"{int(p)}{EVIL}" if i == 0 else str(int(p)) for i, p in enumerate(preds["prediction"])],
            prediction_strict=[str(int(p)) for p in preds["prediction"]], label=preds["label"].astype(int).astype(str))
        store.write_cell(rows)
        store.write_predictions(rows[0]["cell_id"], preds)
    return root


@pytest.fixture(scope="module")
def site(store_dir, tmp_path_factory):
    return render_site(store_dir, tmp_path_factory.mktemp("site"), baseline="lora", workers=1)


def _cell(store_dir: Path, variant: str, subtask: str, seed: int) -> str:
    cells = ResultStore(store_dir).load()
    sel = cells[(cells.variant == variant) & (cells.subtask == subtask) & (cells.seed == seed)]
    return str(sel["cell_id"].iloc[0])


def _direct_counts(store_dir: Path, a: str, b: str) -> dict[str, int]:
    preds = ResultStore(store_dir).load_predictions([a, b])
    right = {cid: {(str(r.split), str(r.example_id)): r.correct > 0.5 for r in g.itertuples()}
             for cid, g in preds.groupby("cell_id")}
    shared = right[a].keys() & right[b].keys()
    pairs = [(right[a][k], right[b][k]) for k in shared]
    return {examples.BOTH_RIGHT: sum(x and y for x, y in pairs), examples.ONLY_A: sum(x and not y for x, y in pairs),
            examples.ONLY_B: sum(y and not x for x, y in pairs), examples.BOTH_WRONG: sum(not x and not y for x, y in pairs)}


def _page_counts(text: str) -> dict[str, dict[str, int]]:
    """seed -> case -> count, read back from the page's counts table."""
    body = re.search(r'<table class="counts">(.*?)</table>', text, re.S).group(1)
    out = {}
    for row in re.findall(r"<tr[^>]*><td>(\d+).*?</tr>", body, re.S):
        cells = re.findall(r'<td class="num" data-case="([^"]+)">(\d+)</td>',
                           re.search(rf"<td>{row}\b.*?</tr>", body, re.S).group(0))
        out[row] = {k: int(v) for k, v in cells}
    return out


def test_side_by_side_counts_are_a_direct_count(store_dir, site):
    for seed in (0, 1):
        a, b = _cell(store_dir, "full", "sst2", seed), _cell(store_dir, "lora", "sst2", seed)
        expected = _direct_counts(store_dir, a, b)
        assert sum(expected.values()) == 600
        preds = ResultStore(store_dir).load_predictions([a, b])
        got = examples.four_counts(preds[preds.cell_id == a], preds[preds.cell_id == b])
        assert got == expected
    page = (site.out / "examples" / f"cell-{_cell(store_dir, 'full', 'sst2', 0)}.html").read_text(encoding="utf-8")
    shown = _page_counts(page)
    for seed in (0, 1):
        a, b = _cell(store_dir, "full", "sst2", seed), _cell(store_dir, "lora", "sst2", seed)
        assert shown[str(seed)] == _direct_counts(store_dir, a, b)


def test_disagreements_come_first_and_the_cap_holds(store_dir, site):
    a, b = _cell(store_dir, "full", "sst2", 0), _cell(store_dir, "lora", "sst2", 0)
    page = (site.out / "examples" / f"cell-{a}.html").read_text(encoding="utf-8")
    cases = re.findall(r'<tr data-state="(?:correct|incorrect)" data-case="([^"]+)"', page)
    assert len(cases) == examples.MAX_ROWS < 600
    counts = _direct_counts(store_dir, a, b)
    n_dis = counts[examples.ONLY_A] + counts[examples.ONLY_B]
    assert cases[:n_dis] == [examples.ONLY_A] * counts[examples.ONLY_A] + [examples.ONLY_B] * counts[examples.ONLY_B]
    assert f"The first {examples.MAX_ROWS} of 600 examples" in page
    csv = re.search(r'href="\.\./(data/predictions/[^"]+\.csv)" download>all as CSV', page).group(1)
    assert len(pd.read_csv(site.out / csv)) == 600


def test_regression_predictions_have_no_right_or_wrong(store_dir, site):
    page = (site.out / "examples" / f"cell-{_cell(store_dir, 'full', 'stsb', 0)}.html").read_text(encoding="utf-8")
    assert 'value="correct"' not in page and 'value="disagree"' not in page
    assert "not scored right/wrong" in page


def test_generations_are_shown_escaped_with_the_extracted_answer(gen_dir, tmp_path):
    out = render_site(gen_dir, tmp_path / "site", baseline="lora", workers=1).out
    cid = _cell(gen_dir, "full", "rte", 0)
    page = (out / "examples" / f"cell-{cid}.html").read_text(encoding="utf-8")
    assert EVIL not in page and html.escape(EVIL) in page
    assert "<th scope=\"col\">strict</th>" in page and "Generation" in page
    assert "so the answer is" in page
    assert str(gen_dir) not in page  # the generations named the store's folder: published without it
    for csv in (out / "data" / "predictions").glob("*.csv"):
        assert str(gen_dir) not in csv.read_text(encoding="utf-8")
    for f in (out / "examples").glob("*.html"):
        assert "<script>window" not in f.read_text(encoding="utf-8")


def test_cell_page_is_structured_with_raw_json_collapsed(store_dir, site):
    cid = _cell(store_dir, "full", "sst2", 0)
    page = (site.out / "cells" / f"{cid}.html").read_text(encoding="utf-8")
    assert page.count("<h2>Recipe</h2>") == 1 and 'class="kv recipe-table"' in page
    assert "<th>lr</th>" in page and "<th>epochs</th>" in page
    assert re.search(r'<details class="raw">.*Resolved configuration', page, re.S)
    assert f'href="../examples/cell-{cid}.html"' in page
    assert 'href="../method-' in page


def test_large_stores_get_pages_per_method_and_task(store_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(examples, "CELL_PAGES_MAX", 2)
    out = render_site(store_dir, tmp_path / "site", baseline="lora", workers=1).out
    pages = sorted(p.name for p in (out / "examples").glob("*.html"))
    assert pages and all(p.startswith("method-") for p in pages)
    assert len(pages) == 4  # 2 methods x 2 tasks, one seed each
    cid = _cell(store_dir, "full", "sst2", 1)
    cell = (out / "cells" / f"{cid}.html").read_text(encoding="utf-8")
    link = re.search(r'href="\.\./(examples/method-[^"]+\.html)"', cell).group(1)
    assert "seed 0" in (out / link).read_text(encoding="utf-8")  # the page of the method's first seed
    assert len(list((out / "data" / "predictions").glob("*.csv"))) == 4


def test_counts_on_unaligned_examples_use_only_the_shared_ones():
    a = pd.DataFrame({"split": ["dev"] * 4, "example_id": [0, 1, 2, 3], "correct": [1.0, 1.0, 0.0, 0.0]})
    b = pd.DataFrame({"split": ["dev"] * 4, "example_id": ["1", "2", "3", "9"], "correct": [0.0, 1.0, 0.0, 1.0]})
    assert examples.four_counts(a, b) == {examples.BOTH_RIGHT: 0, examples.ONLY_A: 1, examples.ONLY_B: 1,
                                          examples.BOTH_WRONG: 1}
    assert not examples.is_binary(pd.Series([-0.5, -1.2])) and examples.is_binary(pd.Series([0.0, 1.0, np.nan]))


def test_a_store_mixing_numeric_and_text_predictions_publishes_them_without_local_paths(gen_dir, store_dir,
                                                                                        tmp_path):
    """GLUE-style numeric predictions beside GSM8K-style text answers in one store: the site-wide
    predictions file is written (one parquet column cannot mix types: they are written as text), and
    no generation publishes the store's folder."""
    import pandas as pd

    mixed = ResultStore(tmp_path / "mixed")
    for source in (store_dir, gen_dir):
        frame = ResultStore(source).load()
        for cid, cell in frame[frame["subtask"].isin(["sst2", "rte"])].groupby("cell_id"):
            mixed.write_cell(cell.to_dict("records"))
            mixed.write_predictions(cid, ResultStore(source).load_predictions([cid]).drop(columns=["cell_id"]))
    out = render_site(tmp_path / "mixed", tmp_path / "site", workers=1).out
    published = pd.read_parquet(out / "data" / "predictions.parquet")
    assert set(published["cell_id"]) == set(mixed.load()["cell_id"])
    assert published["label"].map(type).isin([str]).all() or published["label"].dtype != object
    text = published.astype(str).to_string()
    assert str(gen_dir) not in text and str(tmp_path) not in text
