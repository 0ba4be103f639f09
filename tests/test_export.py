"""``suite export``: the paper tables read back by parsers written here and checked against numbers
recomputed from the raw store values (Student-t intervals, paired t-tests, Holm by hand), not
against the board that produced them; and the site's citations and configuration lines."""

from __future__ import annotations

import io
import json
import math
import re
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest
from scipy import stats as sps

from benchmarks import synthetic_store as synthetic
from suite.app.cli import main as cli_main
from suite.results.store import ResultStore

ODD = "my_odd%&#$~^\\{x}"  # every LaTeX special character in a method name
SUBTASKS = ("sst2", "mrpc", "stsb")
BASELINE = "lora"
ALPHA = 0.05


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("export-store")
    store = synthetic.write_store(root, methods=("lora", "pissa", "full"), subtasks=SUBTASKS,
                                  skill={"full": 0.95}, n_examples=300)
    for seed in (0, 1, 2):
        for sub in SUBTASKS:
            rows, preds = synthetic.make_cell(ODD, sub, seed, skill=0.8, n_examples=300)
            store.write_cell(rows)
            store.write_predictions(rows[0]["cell_id"], preds)
    # One seed of lora at r=16, trained for 5 epochs: its arguments and its recipe set it apart.
    rows, _ = synthetic.make_cell("lora", "sst2", 0, variant="lora:r=16", with_predictions=False)
    for r in rows:
        r["recipe"] = json.dumps({"lr": 2e-4, "epochs": 5, "batch_size": 32})
    store.write_cell(rows)
    return root


def _export(store_dir: Path, tmp_path: Path, fmt: str, *extra: str) -> str:
    out = tmp_path / f"table.{fmt}"
    assert cli_main(["export", str(store_dir), "--board", "glue", "--format", fmt, "--baseline", BASELINE,
                     "-o", str(out), *extra]) == 0
    return out.read_text(encoding="utf-8")


# -- expected values, from the raw store -------------------------------------------------------

ROW_KEYS = {("lora", "defaults"): "lora", ("pissa", "defaults"): "pissa", ("full", "defaults"): "full",
            (ODD, "defaults"): ODD, ("lora", "r=16; recipe epochs=5"): "lora:r=16"}


def _raw(store_dir: Path) -> pd.DataFrame:
    frame = ResultStore(store_dir).load()
    frame = frame[(frame["status"] == "ok") & (frame["is_primary"] == True)]  # noqa: E712
    return frame.assign(variant=frame["variant"].astype(str))


def _expected(store_dir: Path) -> dict:
    """(variant, subtask) -> mean, half-width, n, delta, Holm p (x100 where the site shows points)."""
    raw = _raw(store_dir)
    out, pvals = {}, {}
    for (variant, sub), g in raw.groupby(["variant", "subtask"]):
        g = g.sort_values("seed")
        v = g["value"].to_numpy(float) * 100  # every primary GLUE score is in points
        half = sps.t.ppf(0.975, v.size - 1) * v.std(ddof=1) / math.sqrt(v.size) if v.size > 1 else math.nan
        out[(variant, sub)] = {"mean": v.mean(), "half": half, "n": v.size, "seeds": g["seed"].tolist(),
                               "values": v}
    for (variant, sub), e in out.items():
        b = out[(BASELINE, sub)]
        e["delta"] = e["mean"] - b["mean"]
        if variant != BASELINE and e["n"] >= 3 and variant != "lora:r=16":
            mine = dict(zip(e["seeds"], e["values"], strict=True))
            base = dict(zip(b["seeds"], b["values"], strict=True))
            seeds = sorted(set(mine) & set(base))
            pvals[(variant, sub)] = sps.ttest_rel([mine[s] for s in seeds], [base[s] for s in seeds]).pvalue
    keys = sorted(pvals, key=lambda k: pvals[k])  # Holm by hand
    running = 0.0
    for rank, k in enumerate(keys):
        running = max(running, min(1.0, (len(keys) - rank) * pvals[k]))
        out[k]["holm"] = running
    return out


# -- parsers, written here ---------------------------------------------------------------------

LATEX_UNDO = {r"\textbackslash{}": "\\", r"\textasciitilde{}": "~", r"\textasciicircum{}": "^",
              r"\textless{}": "<", r"\textgreater{}": ">", r"\textbar{}": "|", r"$\pm$": "±", r"$-$": "−",
              r"$\Delta$": "Δ", r"$\bigtriangleup$": "▲", r"$\bigtriangledown$": "▼", r"\dag{}": "†",
              r"\ldots{}": "…", r"$\times$": "×", r"$\alpha$": "α", r"$\cdot$": "·", "--": "–",
              **{"\\" + c: c for c in "_%&#${}"}}
LATEX_TOKEN = re.compile("|".join(re.escape(k) for k in sorted(LATEX_UNDO, key=len, reverse=True)))


def parse_latex(text: str) -> tuple[str, list[list[str]]]:
    """The tabular's column spec and its rows (header first) as plain cells."""
    spec = re.search(r"\\begin\{tabular\}\{([a-z]+)\}", text).group(1)
    body = text.split("\\toprule", 1)[1].split("\\bottomrule", 1)[0].replace("\\midrule", "")
    rows = []
    for line in body.split("\\\\"):
        if not line.strip():
            continue
        cells = re.split(r"(?<!\\)&", line)
        rows.append([LATEX_TOKEN.sub(lambda m: LATEX_UNDO[m.group(0)], c.strip()) for c in cells])
    return spec, rows


def parse_markdown(text: str) -> list[list[str]]:
    """The pipe table's rows (header first, the alignment row left out), escapes undone."""
    rows = []
    for line in text.splitlines():
        if not line.startswith("|"):
            continue
        cells, cur, i = [], "", 1
        while i < len(line):
            ch = line[i]
            if ch == "\\" and i + 1 < len(line):
                cur += line[i + 1]
                i += 2
                continue
            if ch == "|":
                cells.append(cur.strip())
                cur = ""
            else:
                cur += ch
            i += 1
        if not all(set(c) <= set(":-") for c in cells):
            rows.append(cells)
    return rows


def _number(text: str) -> float:
    return float(text.replace("−", "-").replace(",", ""))


def _check_rows(rows: list[list[str]], expected: dict) -> None:
    header, body = rows[0], rows[1:]
    assert header[:4] == ["Method", "Configuration", "LR", "Seeds"]
    assert all(len(r) == len(header) for r in body)
    assert {(r[0], r[1]) for r in body} == set(ROW_KEYS)
    for r in body:
        variant = ROW_KEYS[(r[0], r[1])]
        assert r[2] == "0.0002"
        for sub in SUBTASKS:
            score, delta = r[header.index(sub)], r[header.index(f"Δ {sub}†")]
            exp = expected.get((variant, sub))
            if exp is None:
                assert score == "–" and delta == "–"
                continue
            mean, _, half = score.partition(" ± ")
            assert _number(mean) == pytest.approx(exp["mean"], abs=0.005 + 1e-9)
            if exp["n"] > 1:
                assert _number(half) == pytest.approx(exp["half"], abs=0.005 + 1e-9)
            else:
                assert not half
            if variant == BASELINE:
                assert delta == "baseline"
                continue
            m = re.fullmatch(r"([+−][0-9.]+)( [▲▼])? \((.*)\)", delta)
            assert m, delta
            assert _number(m.group(1)) == pytest.approx(exp["delta"], abs=0.01 + 1e-9)
            if "holm" not in exp:
                assert m.group(3) == "n.s., n<3 seeds" and not m.group(2)
                continue
            p_text = m.group(3).removeprefix("p=")
            if p_text.startswith("<"):
                assert exp["holm"] < 1e-4
            else:
                assert _number(p_text) == pytest.approx(exp["holm"], rel=0.05, abs=5e-4)
            significant = exp["holm"] < ALPHA
            assert (m.group(2) or "").strip() == ("" if not significant else "▲" if exp["delta"] > 0 else "▼")
    assert {r[3] for r in body if r[0] != "lora" or r[1] == "defaults"} == {"3"}


def test_markdown_table_matches_the_store(store_dir, tmp_path):
    text = _export(store_dir, tmp_path, "markdown")
    rows = parse_markdown(text)
    _check_rows(rows, _expected(store_dir))
    assert "Holm" in text and "95% Student-t" in text and f"baseline {BASELINE}" in text
    assert "paired t-test over seeds" in text


def test_latex_table_matches_the_store_and_is_well_formed(store_dir, tmp_path):
    text = _export(store_dir, tmp_path, "latex")
    spec, rows = parse_latex(text)
    assert all(len(r) == len(spec) for r in rows)  # every row has the tabular's column count
    _check_rows(rows, _expected(store_dir))
    depth = 0
    for m in re.finditer(r"\\.|[{}]", text):  # braces balance, escaped ones aside
        if m.group(0) == "{":
            depth += 1
        elif m.group(0) == "}":
            depth -= 1
            assert depth >= 0
    assert depth == 0
    for raw in ("my_odd", "%&", "{x}"):
        assert raw not in text  # never unescaped
    assert r"my\_odd\%\&\#\$\textasciitilde{}\textasciicircum{}\textbackslash{}\{x\}" in text
    assert all(ch.isascii() for ch in text)  # pdflatex takes it without unicode set-up
    assert "\\toprule" in text and "\\midrule" in text and "\\bottomrule" in text
    caption = re.search(r"\\caption\{(.*)\}\n", text).group(1)
    assert "Holm" in caption and "interval" in caption and "lora" in caption


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="pdflatex is not installed")
def test_latex_table_compiles(store_dir, tmp_path):
    table = _export(store_dir, tmp_path, "latex", "--costs")
    doc = tmp_path / "doc.tex"
    doc.write_text("\\documentclass{article}\n\\usepackage{booktabs}\n\\begin{document}\n"
                   f"{table}\n\\end{{document}}\n", encoding="utf-8")
    done = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", doc.name],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-2000:]


def test_csv_is_the_site_long_form_with_configuration(store_dir, tmp_path):
    frame = pd.read_csv(io.StringIO(_export(store_dir, tmp_path, "csv")), keep_default_na=False)
    expected = _expected(store_dir)
    tasks = frame[frame["subtask"].isin(SUBTASKS)]
    assert len(tasks) == len(expected)
    for r in tasks.itertuples():
        exp = expected[(r.variant, r.subtask)]
        assert float(r.mean) * 100 == pytest.approx(exp["mean"], abs=1e-6)
        assert int(r.n) == exp["n"]
    config = dict(zip(frame["variant"], frame["configuration"], strict=True))
    assert config["lora:r=16"] == "r=16; recipe epochs=5" and config["pissa"] == "defaults"


def test_costs_and_one_task(store_dir, tmp_path):
    rows = parse_markdown(_export(store_dir, tmp_path, "markdown", "--costs", "--board", "glue/sst2"))
    header = rows[0]
    assert "sst2" in header and "mrpc" not in header and "Trainable parameters" in header
    full = next(r for r in rows if r[0] == "full")
    assert full[header.index("Trainable parameters")] == "22.7M"


def test_unknown_board_and_unwritable_output_are_refused(store_dir, tmp_path, capsys):
    assert cli_main(["export", str(store_dir), "--board", "nope"]) != 0
    err = capsys.readouterr().err
    assert "--board 'nope'" in err and "glue" in err and "glue-all-MiniLM-L6-v2-" in err
    assert cli_main(["export", str(store_dir), "--board", "glue/qqp"]) != 0
    assert "sst2, mrpc, stsb" in capsys.readouterr().err
    # Refused before any work: the store named does not even exist.
    missing = str(tmp_path / "no-store")
    assert cli_main(["export", missing, "--board", "glue", "-o", str(tmp_path / "nofolder" / "t.tex")]) != 0
    assert "nofolder" in capsys.readouterr().err
    assert cli_main(["export", missing, "--board", "glue", "-o", str(tmp_path)]) != 0
    assert "is a folder" in capsys.readouterr().err
    assert not (tmp_path / "nofolder").exists()


# -- the site ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def site(store_dir, tmp_path_factory) -> Path:
    from suite.reports.site import render_site

    out = tmp_path_factory.mktemp("export-site")
    render_site(store_dir, out, baseline=BASELINE, workers=1)
    return out


def _method_th(index: str, variant: str) -> str:
    import html

    m = re.search(r'<th scope="row" class="method" data-sort="' + re.escape(html.escape(variant, quote=True))
                  + r'">(.*?)</th>', index, re.S)
    assert m, variant
    return m.group(1)


def test_site_links_methods_to_their_papers_and_lists_references(site):
    index = (site / "index.html").read_text(encoding="utf-8")
    lora = _method_th(index, "lora")
    assert re.search(r'<a class="cite" href="https://arxiv\.org/abs/2106\.09685"[^>]*>lora</a>', lora)
    assert "<a" not in _method_th(index, "full")  # no paper registered: plain text
    refs = index.split('id="references"', 1)[1]
    assert "https://arxiv.org/abs/2106.09685" in refs and "https://arxiv.org/abs/2404.02948" in refs


def test_site_rows_show_their_configuration_and_differing_recipe(site):
    index = (site / "index.html").read_text(encoding="utf-8")
    row = _method_th(index, "lora:r=16")
    assert '<span class="args">r=16</span>' in row and "epochs 5" in row
    assert 'class="config"' not in _method_th(index, "pissa")
    odd = _method_th(index, ODD)
    assert "my_odd%&amp;#$~^\\{x}" in odd  # escaped as HTML, never markup


def test_site_links_the_exported_tables(site, store_dir, tmp_path):
    index = (site / "index.html").read_text(encoding="utf-8")
    (tex,) = (site / "data").glob("board-*.tex")
    (md,) = (site / "data").glob("board-*.md")
    assert f'href="data/{tex.name}"' in index and f'href="data/{md.name}"' in index
    assert parse_markdown(md.read_text(encoding="utf-8")) == parse_markdown(_export(store_dir, tmp_path, "markdown"))
    assert str(store_dir) not in tex.read_text(encoding="utf-8")


def test_a_tuned_baseline_shows_its_selected_lr_and_the_caption_says_it_was_tuned(tmp_path):
    """A tuned cell's recipe holds the selected values (suite.app.tuning.with_values): the LR column
    reads it from there and says it was tuned; the caption says how the baseline was chosen."""
    store = ResultStore(tmp_path / "store")
    for seed in (0, 1, 2):
        for method, stage, lr in (("lora", "tuned", 1e-3), ("pissa", "", 2e-4)):
            rows, _ = synthetic.make_cell(method, "sst2", seed, with_predictions=False)
            for r in rows:
                r.update(recipe=json.dumps({"lr": lr, "epochs": 3, "batch_size": 32}), stage=stage,
                         tuned=json.dumps({"lr": lr}) if stage else "", search_id="s" if stage else "", trial=-1)
            store.write_cell(rows)
    out = tmp_path / "t.md"
    assert cli_main(["export", str(tmp_path / "store"), "--board", "glue", "--format", "markdown",
                     "-o", str(out)]) == 0
    text = out.read_text(encoding="utf-8")
    rows = {r[0]: r for r in parse_markdown(text)}
    assert rows["lora (tuned)"][1:3] == ["defaults", "0.001 (tuned)"]
    assert rows["pissa"][1:3] == ["defaults", "0.0002"]
    assert "baseline lora (tuned)'s" in text and "Baseline hyperparameters: tuned" in text
    assert "Rows differ in lr" in text


def test_the_median_table_is_each_task_s_median_and_range_over_seeds(store_dir, tmp_path):
    """--statistic median (the LoRA paper's statistic): each score the median of the stored per-seed
    values (numpy's median, independent of the export) with their range; the caption says so."""
    import numpy as np

    text = _export(store_dir, tmp_path, "markdown", "--statistic", "median")
    rows = parse_markdown(text)
    header, body = rows[0], rows[1:]
    expected = _expected(store_dir)
    checked = 0
    for row in body:
        key = next((v for (name, config), v in ROW_KEYS.items() if row[0] == name and row[1] == config), None)
        for sub in SUBTASKS:
            column = next(i for i, h in enumerate(header) if h.lower().startswith(sub) and not h.startswith("Δ"))
            e = expected.get((key, sub))
            if e is None:
                continue
            shown = [float(x) for x in re.findall(r"-?\d+\.\d+", row[column])]
            want = [np.median(e["values"])] + ([e["values"].min(), e["values"].max()] if e["n"] > 1 else [])
            assert len(shown) == len(want), (row[0], sub, row[column])
            for got, value in zip(shown, want, strict=True):  # as displayed: to 2 decimals at most
                assert abs(got - value) <= 0.051, (row[0], sub, row[column], want)
            checked += 1
    assert checked >= 12
    assert "median over" in text and "range over seeds" in text
