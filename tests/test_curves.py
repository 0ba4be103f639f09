"""Training curves on the site: per-step means over seeds and their 95% Student-t bands, recomputed here
from the stored curve rows with numpy and scipy; evaluations during training from curve files and
from ``<metric>@step<N>`` cell rows; long curves thinned for drawing, never averaged."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats as st

from benchmarks import synthetic_store as synthetic
from suite.reports import curves, leaderboard
from suite.reports.site import render_site
from suite.results.store import ResultStore


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory) -> Path:
    """lora, full x sst2, rte x 3 seeds with 30-step curves (accuracy every 10 steps); one extra lora
    seed on sst2 whose curve stops at step 20, so seeds per step differ."""
    root = tmp_path_factory.mktemp("curves") / "store"
    store = synthetic.write_store(root, methods=("lora", "full"), subtasks=("sst2", "rte"), n_examples=40,
                                  curve_steps=30, eval_every=10)
    rows, preds = synthetic.make_cell("lora", "sst2", 3, n_examples=40)
    store.write_cell(rows)
    store.write_curve(rows[0]["cell_id"], synthetic.make_curve(rows[0]["cell_id"], 0.86, 20, 10))
    return root


@pytest.fixture(scope="module")
def site(store_dir, tmp_path_factory):
    return render_site(store_dir, tmp_path_factory.mktemp("site"), baseline="lora", workers=1)


def _expected(stored: pd.DataFrame, ids: list[str], metric: str) -> pd.DataFrame:
    """Mean and 95% t-interval per step, straight from the stored rows."""
    out = []
    sel = stored[stored["cell_id"].isin(ids) & (stored["metric"] == metric)]
    for step, g in sel.groupby("step"):
        v = g["value"].to_numpy(dtype=float)
        n = len(v)
        half = st.t.ppf(0.975, n - 1) * v.std(ddof=1) / np.sqrt(n) if n >= 2 else np.nan
        out.append((float(step), v.mean(), v.mean() - half, v.mean() + half, n))
    return pd.DataFrame(out, columns=["step", "mean", "low", "high", "n"])


def test_bands_are_the_seed_mean_and_t_interval_of_the_stored_rows(store_dir, site):
    store = ResultStore(store_dir)
    stored = store.load_curves()
    cells = store.load()
    boards = leaderboard.build_boards(cells, "lora")
    (b,) = boards
    checked = 0
    for r in b.rows:
        for col in b.columns:
            e = r.entries[col.key]
            rows = curves.curve_rows(store, cells, e.cell_ids)
            mc = curves.method_curves(rows, r.variant, e.cell_ids)
            assert set(mc.bands) == {"train_loss", col.metric}
            for metric, band in mc.bands.items():
                exp = _expected(stored, e.cell_ids, metric)
                np.testing.assert_allclose(band.steps, exp["step"])
                np.testing.assert_allclose(band.mean, exp["mean"], rtol=1e-12)
                np.testing.assert_allclose(band.low, exp["low"], rtol=1e-12)
                np.testing.assert_allclose(band.high, exp["high"], rtol=1e-12)
                np.testing.assert_array_equal(band.n, exp["n"])
                checked += 1
    assert checked == 8
    lora_sst2 = next(r for r in b.rows if r.variant == "lora").entries[b.columns[0].key]
    band = curves.method_curves(curves.curve_rows(store, cells, lora_sst2.cell_ids), "lora",
                                lora_sst2.cell_ids).bands["train_loss"]
    assert band.n[:20].tolist() == [4] * 20 and band.n[20:].tolist() == [3] * 10 and band.seeds_differ


def test_task_and_method_pages_show_the_curves_with_their_band_named(site):
    out = site.out
    task = next(out.glob("task-*sst2*.html")).read_text(encoding="utf-8")
    src = re.search(r'<img src="(figures/curves-[^"]+\.svg)"', task).group(1)
    svg = (out / src).read_text(encoding="utf-8")
    assert "train_loss" in svg and "accuracy" in svg and "lora (baseline)" in svg and "full" in svg
    assert "95% Student-t interval" in task and "Seeds per point differ for lora (train_loss: 4 seeds to step 20, then 3" in task
    method = next(out.glob("method-*full*.html")).read_text(encoding="utf-8")
    assert method.count('class="curve"') == 2  # sst2 and rte: full against lora
    msvg = re.search(r'<img src="(figures/curves-method-[^"]+\.svg)"', method).group(1)
    assert "lora (baseline)" in (out / msvg).read_text(encoding="utf-8")
    assert 'href="method-' in task  # each row's name links its method page
    cell = next((out / "cells").glob("*.html")).read_text(encoding="utf-8")  # a small store: each cell's own figure
    assert re.search(r'<img src="\.\./(figures/cell-[^"]+\.svg)"', cell) and "one seed: no band" in cell


def test_large_stores_link_each_cell_to_its_method_curves(store_dir, tmp_path, monkeypatch):
    from suite.reports import views

    monkeypatch.setattr(views, "CELL_CURVES_MAX", 2)
    out = render_site(store_dir, tmp_path / "site", baseline="lora", workers=1).out
    assert not list((out / "figures").glob("cell-*.svg"))
    cell = next((out / "cells").glob("*.html")).read_text(encoding="utf-8")
    assert re.search(r'<img src="\.\./figures/curves-method-[^"]+\.svg"', cell)


def test_published_curves_are_the_stored_points(store_dir, site):
    stored = ResultStore(store_dir).load_curves()
    published = pd.read_csv(site.out / "data" / "curves.csv")
    key = ["cell_id", "metric", "step"]
    merged = stored.merge(published, on=key, suffixes=("", "_pub"))
    assert len(merged) == len(stored) == len(published)
    np.testing.assert_allclose(merged["value"], merged["value_pub"])


def test_step_metrics_of_cells_without_curve_files_are_drawn(tmp_path):
    """Cells that store evaluations during training only as ``val_loss@step<N>`` rows (no curve files)."""
    from tests.test_boards import _lm_cell

    store = ResultStore(tmp_path / "store")
    for seed, luck in enumerate((0.0, 0.3, -0.2)):
        _lm_cell(store, "bf16-train", seed, 2.40 + luck)
        _lm_cell(store, "fp8-train", seed, 2.42 + luck)
    cells = store.load()
    ids = sorted(cells.loc[cells["variant"] == "fp8-train", "cell_id"].unique())
    rows = curves.curve_rows(store, cells, ids)
    band = curves.method_curves(rows, "fp8-train", ids).bands["val_loss"]
    assert band.steps.tolist() == [100.0, 200.0]
    v100 = np.array([2.42 + luck + 0.5 for luck in (0.0, 0.3, -0.2)])
    assert band.mean[0] == pytest.approx(v100.mean())
    assert band.high[0] - band.mean[0] == pytest.approx(st.t.ppf(0.975, 2) * v100.std(ddof=1) / np.sqrt(3))
    site = render_site(tmp_path / "store", tmp_path / "site", workers=1)
    task = next(site.out.glob("task-*.html")).read_text(encoding="utf-8")
    assert 'src="figures/curves-' in task


def test_long_curves_are_thinned_for_drawing_never_averaged():
    idx, k = curves.thin(1000)
    assert k == 3 and idx[0] == 0 and idx[-1] == 999 and np.all(np.diff(idx[:-1]) == 3)
    assert curves.thin(50) == (pytest.approx(np.arange(50)), 1)
    steps = np.arange(1, 1001, dtype=float)
    b = curves.Band("train_loss", steps, steps, steps, steps, np.full(1000, 2))
    text = curves.caption([curves.MethodCurves("x", {"train_loss": b})], None)
    assert "drawn at every k-th step" in text and "not averaged" in text
