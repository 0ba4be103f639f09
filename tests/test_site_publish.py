"""A leaderboard a researcher can publish (issue 17): ranked rows, every failure visible,
context above each table, the data downloadable, no local paths, stale pages removed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from benchmarks import synthetic_store as synthetic
from suite.app.cli import main as cli_main
from suite.reports import leaderboard
from suite.reports.site import MANIFEST, render_site
from suite.results.store import ResultStore

HOME = "/home/alice"


def _majority_cell(seed: int) -> tuple[list[dict], pd.DataFrame]:
    """A method that always predicts the majority class: accuracy = the majority-class rate."""
    rows, preds = synthetic.make_cell("const", "sst2", seed, n_examples=300)
    majority = preds["label"].mode().iloc[0]
    preds = preds.assign(prediction=majority, correct=(preds["label"] == majority).astype(float))
    for r in rows:
        if r["metric"] == "accuracy":
            r["value"] = float(preds["correct"].mean())
    return rows, preds


def _with(rows: list[dict], **values) -> list[dict]:
    return [dict(r, **values) for r in rows]


@pytest.fixture(scope="module")
def store_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("publish") / "store"
    store = synthetic.write_store(root, subtasks=("sst2", "mrpc"), skill={"full": 0.95}, n_examples=300)
    for seed in range(3):  # a method whose every cell failed, with local paths in the traceback
        rows, _ = synthetic.make_cell("prefix", "sst2", seed, failed=(
            f"RuntimeError: shapes do not match in {root}/cells\n"
            f'  File "{HOME}/project/prefix.py", line 3, in apply'))
        store.write_cell(_with(rows, data_source=f"dir:{HOME}/data/glue"))
        rows, preds = _majority_cell(seed)
        store.write_cell(rows)
        store.write_predictions(rows[0]["cell_id"], preds)
        # A quantizer: its costs are bits per weight and the model's size.
        rows, _ = synthetic.make_cell("gptq", "sst2", seed, skill=0.84, with_predictions=False)
        rows = _with(rows, method_kind="quant")
        rows.append(dict(rows[-1], metric="bits_per_weight", value=4.25, split="cost"))
        rows.append(dict(rows[-1], metric="model_size_bytes", value=12e6, split="cost"))
        store.write_cell(rows)
        # lora tuned by a search over lr: three trials (never ranked) and the tuned cells.
        rows, _ = synthetic.make_cell("lora", "sst2", seed, variant="lora (tuned)", skill=0.9,
                                      with_predictions=False)
        store.write_cell(_with(rows, stage="tuned", search_id="s1", tuned=json.dumps({"lr": 0.001})))
        rows, _ = synthetic.make_cell("lora", "sst2", 0, variant=f"lora:lr=trial{seed}", skill=0.99,
                                      with_predictions=False)
        store.write_cell(_with(rows, variant="lora", stage="trial", search_id="s1", trial=seed))
    # One cell from another commit: the table mixes provenance.
    rows, _ = synthetic.make_cell("pissa", "mrpc", 7, commit="beefcafe", with_predictions=False)
    store.write_cell(rows)
    return root


@pytest.fixture(scope="module")
def board(store_root):
    store = ResultStore(store_root)
    (b,) = leaderboard.build_boards(store.load(), "lora", store.load_predictions)
    return b


@pytest.fixture(scope="module")
def site(store_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("site")
    return render_site(store_root, out, baseline="lora", workers=1)


def _row(board, variant):
    return next(r for r in board.rows if r.variant == variant)


def test_rows_are_ranked_by_the_primary_score(board, site):
    ranked = [r for r in board.rows if r.rank is not None]
    scores = [r.score for r in ranked]
    assert board.rank_by == "GLUE score (2/8 tasks)" and scores == sorted(scores, reverse=True)
    assert [r.rank for r in ranked] == sorted(r.rank for r in ranked) and ranked[0].rank == 1
    assert board.rows[-1].variant == "prefix"  # all-failed rows last, without a rank
    unranked = [r.variant for r in board.rows if r.rank is None]  # no score on every task: after
    assert unranked == ["const", "gptq", "lora (tuned)", "prefix"]
    index = (site.out / "index.html").read_text()
    order = [v for v in (r.variant for r in board.rows)]
    positions = [index.index(f'data-method="{v}"') for v in order]
    assert positions == sorted(positions)
    base = _row(board, "lora")
    full = _row(board, "full")
    assert full.delta == pytest.approx(full.score - base.score)


def test_a_method_whose_every_cell_failed_keeps_its_row(board, site, store_root):
    prefix = _row(board, "prefix")
    assert prefix.status == "failed" and prefix.failed_label == "failed 3/3" and prefix.rank is None
    assert prefix.error.startswith("RuntimeError: shapes do not match in <path>/")
    assert str(store_root) not in prefix.error
    index = (site.out / "index.html").read_text()
    assert "failed 3/3" in index and "RuntimeError: shapes do not match" in index
    task = next(site.out.glob("task-*sst2*.html")).read_text()
    assert 'data-method="prefix"' in task and "failed 3/3" in task


def test_partial_failures_say_how_many_cells_finished(store_root, tmp_path):
    store = synthetic.write_store(tmp_path / "s", methods=("lora", "pissa"), subtasks=("sst2",), n_examples=50)
    rows, _ = synthetic.make_cell("pissa", "sst2", 9, failed="ValueError: diverged at step 3")
    store.write_cell(rows)
    (b,) = leaderboard.build_boards(store.load(), "lora")
    pissa = _row(b, "pissa")
    assert pissa.status == "partial" and pissa.failed_label == "3/4 ok"
    assert next(iter(pissa.entries.values())).ok_label == "3/4 ok"


def test_no_local_paths_in_pages_or_data(site, store_root):
    secrets = (str(store_root), HOME, str(Path.home()) + "/" if str(Path.home()) != "/" else HOME)
    for page in [*site.out.rglob("*.html"), site.out / "data" / "cells.csv"]:
        text = page.read_text(encoding="utf-8")
        for secret in secrets:
            assert secret not in text, (page, secret)
    cells = list((site.out / "cells").glob("*.html"))
    assert any("&lt;path&gt;/prefix.py" in p.read_text() for p in cells)


def test_mixed_commits_are_flagged_above_the_table(board, site):
    assert board.mixed["git_commit"] == ["0123abc", "beefcafe"]
    index = (site.out / "index.html").read_text()
    assert 'class="note warn mixed"' in index and "beefcafe" in index and "0123abc" in index


def test_a_clean_table_has_no_provenance_warning(tmp_path):
    store = synthetic.write_store(tmp_path / "s", methods=("lora", "full"), subtasks=("sst2",), n_examples=40)
    render_site(store.root, tmp_path / "site", workers=1)
    assert "note warn mixed" not in (tmp_path / "site" / "index.html").read_text()


def test_majority_class_scores_are_flagged(board, site):
    const = _row(board, "const").entries[("sst2", "dev", "accuracy")]
    assert const.chance == "majority" and const.chance_level == pytest.approx(const.summary.mean)
    full = _row(board, "full").entries[("sst2", "dev", "accuracy")]
    assert full.chance == ""
    assert 'class="badge warn chance"' in (site.out / "index.html").read_text()


def test_recipe_memory_and_quantizer_columns_above_and_in_the_table(board, site):
    assert board.recipe.common == {"lr": "0.0002", "epochs": "3", "batch_size": "32"}
    assert board.memory_label == "peak memory: process peak RSS (CPU)"
    assert "bits_per_weight" in {c.name for c in board.cost_columns}
    assert _row(board, "gptq").costs["bits_per_weight"] == 4.25
    index = (site.out / "index.html").read_text()
    assert "lr <code>0.0002</code>" in index and "process peak RSS (CPU)" in index
    assert "Bits/weight" in index and "11.4 MB" in index
    # The Pareto plot offers bits/weight and memory (named by what it measured) as axes.
    assert ">bits/weight</option>" in index and ">peak memory: process peak RSS (CPU) (MB)</option>" in index
    assert ">GLUE score (2/8 tasks)</option>" in index


def test_methods_that_differ_in_recipe_are_named(tmp_path):
    store = synthetic.write_store(tmp_path / "s", methods=("lora",), subtasks=("sst2",), n_examples=40)
    rows, _ = synthetic.make_cell("full", "sst2", 0, n_examples=40)
    store.write_cell(_with(rows, recipe=json.dumps({"lr": 2e-5, "epochs": 3, "batch_size": 32})))
    (b,) = leaderboard.build_boards(store.load(), "lora")
    assert "lr" in b.recipe.differs and "epochs" in b.recipe.common
    assert any("full" in v and "2e-05" in v for v in b.recipe.differs["lr"])


def test_tuned_beside_default_with_budget_and_trials_never_ranked(board, site, store_root):
    assert all(r.stage != "trial" for r in board.rows)
    assert [r.variant for r in board.rows].count("lora") == 1  # trials did not join the default row
    (t,) = board.tuning
    assert (t.method, t.default, t.tuned) == ("lora", "lora", "lora (tuned)")
    assert t.selected == ["lr=0.001"] and t.trials == 3 and t.hardware == "CPU"
    frame = ResultStore(store_root).load()
    trial_time = frame[(frame.stage == "trial") & (frame.metric == "train_time_s")]["value"].sum()
    assert t.hours == pytest.approx(trial_time / 3600)
    tuned = _row(board, "lora (tuned)").entries[("sst2", "dev", "accuracy")].summary.mean
    default = _row(board, "lora").entries[("sst2", "dev", "accuracy")].summary.mean
    assert t.per_column == [("sst2", "accuracy", default, tuned)]
    index = (site.out / "index.html").read_text()
    assert "Default and tuned configurations" in index and "lr=0.001" in index


def test_every_comparison_shows_its_minimum_detectable_effect(board, site):
    from suite.reports.planning import detectable_effect

    pissa = _row(board, "pissa").entries[("sst2", "dev", "accuracy")]
    lora = _row(board, "lora").entries[("sst2", "dev", "accuracy")]
    a, b = np.asarray(pissa.values), np.asarray(lora.values)
    sigma = np.sqrt((a.var(ddof=1) + b.var(ddof=1)) / 2)
    assert pissa.mde == pytest.approx(detectable_effect(sigma, 3), rel=1e-6)
    task = next(site.out.glob("task-*sst2*.html")).read_text()
    assert "MDE, 80% power" in task


def test_data_files_parse_back_into_the_same_numbers(board, site, store_root):
    index = (site.out / "index.html").read_text()
    assert f'href="data/board-{board.slug}.csv"' in index and 'href="data/cells.parquet"' in index
    table = pd.read_csv(site.out / "data" / f"board-{board.slug}.csv")
    for r in board.rows:
        for c in board.columns:
            e = r.entries.get(c.key)
            if e is None:
                continue
            got = table[(table.variant == r.variant) & (table.column == c.label)]
            assert got["mean"].iloc[0] == pytest.approx(e.summary.mean, rel=1e-12)
            assert got["n"].iloc[0] == e.summary.n
    assert table[table.variant == "prefix"]["status"].iloc[0] == "failed"
    cells = pd.read_parquet(site.out / "data" / "cells.parquet")
    frame = ResultStore(store_root).load()
    assert len(cells) == len(frame) and cells["value"].sum() == pytest.approx(frame["value"].sum())
    assert (site.out / "data" / "predictions.parquet").is_file()


def test_a_reused_output_folder_loses_stale_pages_only(store_root, tmp_path):
    out = tmp_path / "site"
    render_site(store_root, out, workers=1)
    (out / "notes.txt").write_text("mine")
    (out / "task-mine.html").write_text("mine too")
    mrpc_pages = list(out.glob("task-*mrpc*.html"))
    assert mrpc_pages
    render_site(store_root, out, workers=1, tasks=["glue:sst2"])
    assert not any(p.exists() for p in mrpc_pages)  # the previous render's page is gone
    assert (out / "notes.txt").read_text() == "mine" and (out / "task-mine.html").is_file()
    listed = json.loads((out / MANIFEST).read_text())["files"]
    assert "index.html" in listed and "notes.txt" not in listed
    assert all((out / f).is_file() for f in listed)


def test_unwritable_output_ends_in_one_message(store_root, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    assert cli_main(["report", str(store_root), "-o", str(blocker / "site")]) == 2
    err = capsys.readouterr().err
    assert "cannot write the site" in err and "Traceback" not in err
    assert cli_main(["report", str(store_root), "-o", str(blocker)]) == 2
    assert "is a file" in capsys.readouterr().err


def test_plot_points_carry_the_rank_column_and_the_name(board, site):
    from markupsafe import escape

    index = (site.out / "index.html").read_text()
    start = index.index('<svg class="pareto-svg"')
    svg = index[start:index.index("</svg>", start)]
    ranked = [r for r in board.rows if r.rank is not None and r.costs.get("trainable_params")]
    assert ranked
    for r in ranked:
        assert f'data-method="{escape(r.variant)}" data-rank="{r.rank}"' in svg
    assert "trainable parameters" in svg and "GLUE score" in svg


def test_every_link_and_image_resolves_to_a_file(site):
    import re

    checked = 0
    for page in site.out.rglob("*.html"):
        for target in re.findall(r'(?:href|src)="([^"#]+)"', page.read_text(encoding="utf-8")):
            if target.startswith(("data:", "http:", "https:")):
                continue
            assert (page.parent / target).resolve().is_file(), (page, target)
            checked += 1
    assert checked > 100
    assert (site.out / "data" / "predictions.parquet").is_file()
    assert 'href="data/predictions.parquet"' in (site.out / "index.html").read_text()
