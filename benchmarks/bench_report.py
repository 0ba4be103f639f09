"""Render a generated store of 10,000 cells; the site must take under 10 s (issue 6).

Run: ``python benchmarks/bench_report.py [--cells 10000] [--predictions]`` (prints the
timings), or under pytest-benchmark: ``pytest benchmarks/bench_report.py``.

The store is written one file per cell, as the runner does, then measured twice: read
as 10,000 single files, and after ``ResultStore.compact()`` (one part file). By default
no per-example predictions are written (then every test is the seed-level one);
``--predictions`` adds them (200 examples per cell) to time the paired tests too.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from suite.reports import synthetic
from suite.reports.site import render_site
from suite.results.store import ResultStore

SUBTASKS = ("cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte")


def generate(root: Path, cells: int, predictions: bool = False, n_examples: int = 200) -> int:
    """methods x 8 GLUE tasks x 3 seeds, with as many method variants as needed for ``cells``."""
    store = ResultStore(root)
    n_variants = max(1, cells // (len(SUBTASKS) * 3))
    written = 0
    for v in range(n_variants):
        method = ("lora", "pissa", "full")[v % 3]
        variant = method if v < 3 else f"{method}:r={4 + v}"
        for sub in SUBTASKS:
            for seed in range(3):
                rows, preds = synthetic.make_cell(method, sub, seed, variant=variant,
                                                  skill=0.80 + (v % 17) / 100, params=1e5 * (1 + v),
                                                  n_examples=n_examples, with_predictions=predictions)
                store.write_cell(rows)
                if preds is not None:
                    store.write_predictions(rows[0]["cell_id"], preds)
                written += 1
    return written


def run(cells: int, predictions: bool) -> dict[str, float]:
    tmp = Path(tempfile.mkdtemp(prefix="bench-report-"))
    try:
        t0 = time.perf_counter()
        n = generate(tmp / "store", cells, predictions)
        result = {"cells": n, "generate_s": time.perf_counter() - t0}
        t0 = time.perf_counter()
        render_site(tmp / "store", tmp / "site-single")
        result["render_single_files_s"] = time.perf_counter() - t0
        ResultStore(tmp / "store").compact()
        t0 = time.perf_counter()
        r = render_site(tmp / "store", tmp / "site-compacted")
        result["render_compacted_s"] = time.perf_counter() - t0
        result["pages"] = r.n_pages
        return result
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def test_render_10k_cells_compacted(benchmark, tmp_path):
    n = generate(tmp_path / "store", 10_000)
    ResultStore(tmp_path / "store").compact()
    result = benchmark.pedantic(render_site, args=(tmp_path / "store", tmp_path / "site"), rounds=1, iterations=1)
    assert result.n_cells == n


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=10_000)
    parser.add_argument("--predictions", action="store_true")
    args = parser.parse_args()
    for key, value in run(args.cells, args.predictions).items():
        print(f"{key:>24}: {value:.2f}" if isinstance(value, float) else f"{key:>24}: {value}")
