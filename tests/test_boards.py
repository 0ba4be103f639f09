"""Boards that cannot mislead: declared directions, a baseline per family, emulated timings marked,
one row per configuration, no local path in anything published, a column added in one declaration.

Stores are written here in the runner's row shape (benchmarks/synthetic_store.py for GLUE cells,
``_lm_cell`` for pretraining cells), so each test controls exactly what the store holds.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from benchmarks import synthetic_store as synthetic
from suite.app.cli import main
from suite.metrics import MetricSpec
from suite.registry import register_method
from suite.reports import leaderboard, variants
from suite.reports.site import render_site
from suite.results.store import ResultStore


def _lm_cell(store: ResultStore, method: str, seed: int, val_loss: float, *, emulated: bool = False,
             old_flags: bool = False) -> None:
    """A pretraining cell: final val_loss, two evaluations during training, costs. ``old_flags``
    stores the evaluations during training as stores before the metric declarations did (split
    dev, higher-is-better), which reports must not believe."""
    cid = synthetic.cell_id_for(method, seed, "lm")
    base = {"cell_id": cid, "run_id": "t", "method": method, "variant": method, "method_args": "[]",
            "method_kind": "train", "task": "lm", "subtask": "", "model": "llama-tiny", "seed": seed,
            "recipe": json.dumps({"max_steps": 300}), "config": "{}", "data_source": "synthetic",
            "synthetic_data": True, "started_at": "2025-01-01T00:00:00", "finished_at": "2025-01-01T00:01:00",
            "status": "ok", "error": ""}
    split, hib = ("dev", True) if old_flags else ("valid", False)
    rows = [dict(base, metric="val_loss", value=val_loss, split="valid", is_primary=True, higher_is_better=False)]
    rows += [dict(base, metric=f"val_loss@step{step}", value=val_loss + bump, split=split, is_primary=False,
                  higher_is_better=hib) for step, bump in ((100, 0.5), (200, 0.2))]
    costs = {"train_time_s": 30.0 if not emulated else 90.0, "train_steps": 300.0, "train_tokens_per_s": 10_000.0,
             "peak_memory_mb": 700.0, "trainable_params": 1e6, "train_gemm_emulated": 1.0 if emulated else 0.0}
    rows += [dict(base, metric=k, value=v, split="cost", is_primary=False, higher_is_better=False)
             for k, v in costs.items()]
    store.write_cell(rows)


@pytest.fixture(scope="module")
def mixed(tmp_path_factory) -> Path:
    """GLUE (lora, full, pissa x sst2, rte x 3 seeds) and lm (bf16-train real, fp8-train emulated)."""
    root = tmp_path_factory.mktemp("mixed") / "store"
    store = synthetic.write_store(root, methods=("lora", "full", "pissa"), subtasks=("sst2", "rte"), n_examples=40)
    for seed, luck in enumerate((0.0, 0.3, -0.2)):
        _lm_cell(store, "bf16-train", seed, 2.40 + luck, old_flags=True)
        _lm_cell(store, "fp8-train", seed, 2.42 + luck, emulated=True, old_flags=True)
    return root


def test_a_mixed_store_gets_every_board_its_baseline_in_one_render(mixed, tmp_path):
    boards = {b.family: b for b in leaderboard.build_boards(ResultStore(mixed).load())}
    assert boards["glue"].baseline == "lora" and boards["lm"].baseline == "bf16-train"
    lm = boards["lm"]
    (col,) = lm.columns
    fp8 = next(r for r in lm.rows if r.variant == "fp8-train").entries[col.key]
    assert fp8.gap is not None and fp8.gap.n == 3 and fp8.gap.mean == pytest.approx(0.02)
    assert any(e.test is not None for r in boards["glue"].rows for e in r.entries.values())
    site = render_site(mixed, tmp_path / "site", workers=1)
    assert {b.baseline for b in site.boards} == {"lora", "bf16-train"}
    index = (tmp_path / "site" / "index.html").read_text(encoding="utf-8")
    assert "glue: lora" in index and "lm: bf16-train" in index


def test_per_family_baselines_and_their_refusals(mixed, capsys):
    parse = variants.Baselines.parse
    assert parse("glue=full,lm=bf16-train").per_family == (("glue", "full"), ("lm", "bf16-train"))
    assert parse("lora:r=8,alpha=16,lm=bf16-train") == variants.Baselines("lora", (("lm", "bf16-train"),))
    assert parse("lora:r=16").default == "lora:r=16"
    boards = {b.family: b for b in leaderboard.build_boards(ResultStore(mixed).load(), "glue=full")}
    assert boards["glue"].baseline == "full" and boards["lm"].baseline == "bf16-train"
    assert main(["compare", str(mixed), "--baseline", "vtab=lora"]) == 2
    assert "--baseline names task family vtab, which the selected results do not have" in capsys.readouterr().err
    assert main(["compare", str(mixed), "--baseline", "lm=lora"]) == 2
    assert "no results for the baseline 'lora' in lm" in capsys.readouterr().err
    assert main(["compare", str(mixed), "--baseline", "lora,full"]) == 2
    assert "names two methods for every family" in capsys.readouterr().err


def test_evaluations_during_training_rank_lower_is_better_whatever_old_rows_stored(mixed, capsys):
    boards = {b.family: b for b in leaderboard.build_boards(ResultStore(mixed).load(), "bf16-train",
                                                            metric="val_loss@step100")}
    (col,) = boards["lm"].columns
    assert col.higher_is_better is False
    assert [r.variant for r in boards["lm"].rows][:2] == ["bf16-train", "fp8-train"]  # the lower loss first
    assert main(["compare", str(mixed), "--tasks", "lm", "--metric", "val_loss@step100"]) == 0
    out = capsys.readouterr().out
    assert out.index("bf16-train") < out.index("fp8-train")
    cells = pd.read_csv(_render(mixed) / "data" / "cells.csv")
    flags = cells[cells["metric"] == "val_loss@step100"]["higher_is_better"]
    assert not flags.astype(bool).any()


def _render(store: Path, **options) -> Path:
    out = store.parent / ("site-" + "-".join(f"{k}{v}" for k, v in options.items()))
    render_site(store, out, workers=1, **options)
    return out


def test_emulated_timings_are_marked_everywhere_and_never_drawn_as_speed(mixed, capsys):
    from suite.reports import pareto

    assert main(["compare", str(mixed), "--tasks", "lm"]) == 0
    out = capsys.readouterr().out
    fp8 = next(line for line in out.splitlines() if line.strip().startswith("fp8-train") and "ms" not in line
               and "(emul.)" in line)
    assert "(emul.)" in fp8 and "emulated" in out
    site = _render(mixed)
    page = next(p for p in site.glob("task-lm-*.html")).read_text(encoding="utf-8")
    assert page.count(">emulated</span>") >= 2  # step time and tokens/s of fp8-train, not bf16-train's
    board_csv = pd.read_csv(next((site / "data").glob("board-lm-*.csv")))
    assert dict(zip(board_csv["variant"], board_csv["emulated_gemms"], strict=True)) == \
        {"bf16-train": False, "fp8-train": True}
    # The Pareto plot never draws an emulated time as a speed: left out of the time axis, and said.
    (lm,) = [b for b in leaderboard.build_boards(ResultStore(mixed).load()) if b.family == "lm"]
    plot = pareto.board_plot(lm)
    keys = [q.key for q in plot.quantities]
    plot.x = keys.index("train_time_s")
    svg = pareto.render_svg(plot)
    assert svg.count("<circle") == 1 and 'data-method="fp8-train" data-rank="2" data-v="' in svg
    assert "1 row with emulated GEMMs left out of this timing axis" in svg
    plot.x = keys.index("peak_memory_mb")  # memory is not a speed
    svg = pareto.render_svg(plot)
    assert svg.count("<circle") == 2 and "emulated GEMMs left out" not in svg


def test_one_configuration_is_one_row(tmp_path):
    """``lora`` on two seeds and ``lora:r=8`` (r=8 is lora's default) on a third are one method."""
    store = ResultStore(tmp_path / "store")
    for seed, variant in ((0, "lora"), (1, "lora"), (2, "lora:r=8"), (0, "lora:r=16"), (0, "full"), (1, "full"),
                          (2, "full")):
        rows, preds = synthetic.make_cell(variant.partition(":")[0], "sst2", seed, variant=variant, n_examples=40)
        store.write_cell(rows)
    rows, _ = synthetic.make_cell("lora", "sst2", 3, variant="lora:r=8", failed="RuntimeError: out of memory")
    store.write_cell(rows)
    (board,) = leaderboard.build_boards(store.load(), "lora:r=8")
    assert board.failures == {("lora", "sst2"): (1, 4, "RuntimeError: out of memory")}
    rows = {r.variant: r for r in board.rows}
    assert set(rows) == {"lora", "lora:r=16", "full"} and board.baseline == "lora"
    (entry,) = rows["lora"].entries.values()
    assert entry.summary.n == 3 and sorted(entry.seeds) == [0, 1, 2]
    assert variants.canonical_label("x", json.dumps([{"name": "lora", "args": {"r": 8, "alpha": 32.0}}])) \
        == "lora:alpha=32"


@pytest.fixture(scope="module")
def widget_store(tmp_path_factory) -> Path:
    from suite.method import Method

    @register_method("widgeteer", kind="peft", summary="counts widgets (tests)", source="tests")
    class Widgeteer(Method):
        metrics = (MetricSpec("widgets_used", "widgets used", "widgets", higher_is_better=False, split="cost",
                              format="count", column=True, summary="widgets a run used"),)

    root = tmp_path_factory.mktemp("widgets") / "store"
    store = synthetic.write_store(root, methods=("lora",), subtasks=("sst2",), n_examples=40)
    for seed in range(3):
        rows, _ = synthetic.make_cell("widgeteer", "sst2", seed, n_examples=40)
        cost = dict(rows[-1], metric="widgets_used", value=1234.0 + seed, split="cost", is_primary=False,
                    higher_is_better=False)
        store.write_cell([*rows, cost])
    return root


def test_a_column_declared_once_by_a_plugin_reaches_compare_the_site_and_the_csv(widget_store, capsys):
    assert main(["compare", str(widget_store), "--width", "200"]) == 0
    out = capsys.readouterr().out
    assert "widgets used" in out and "1,235" in out
    site = _render(widget_store)
    index = (site / "index.html").read_text(encoding="utf-8")
    assert "Widgets used" in index and "1,235" in index and 'title="widgets a run used"' in index
    frame = pd.read_csv(next((site / "data").glob("board-*.csv")))
    assert frame.loc[frame["variant"] == "widgeteer", "widgets_used"].iloc[0] == pytest.approx(1235.0)
    assert frame.loc[frame["variant"] == "lora", "widgets_used"].isna().all()


def test_nothing_published_names_a_local_folder(tmp_path):
    """Model, data, image and store folders deep under an absolute path: no output file holds it."""
    deep = tmp_path / "home" / "alice" / "projects" / "secret-run"
    model = str(deep / "models" / "my-finetuned-bert")
    store = ResultStore(deep / "stores" / "results")
    for method in ("lora", "full"):
        for seed in range(2):
            rows, preds = synthetic.make_cell(method, "sst2", seed, model=model, n_examples=40)
            rows = [dict(r, data_source=f"dir:{deep / 'data' / 'glue'}",
                         config=json.dumps({"model": model, "data_dir": str(deep / "data")})) for r in rows]
            store.write_cell(rows)
            store.write_predictions(rows[0]["cell_id"], preds.assign(path=str(deep / "images" / "cat.png")))
    rows, _ = synthetic.make_cell("pissa", "sst2", 0, model=model,
                                  failed=f"OSError: cannot open {deep / 'models' / 'my-finetuned-bert'}/weights")
    store.write_cell(rows)
    out = tmp_path / "site"
    render_site(deep / "stores" / "results", out, workers=1)
    leaks = [str(p.relative_to(out)) for p in out.rglob("*") if p.is_file() and
             (str(tmp_path).encode() in p.read_bytes() or "alice" in p.name)]
    assert not leaks, leaks
    index = (out / "index.html").read_text(encoding="utf-8")
    assert "my-finetuned-bert" in index  # the model is still named, by its folder's name
