"""Render a generated store of 10,000 cells; the site must take under 10 s (issues 6 and 17).

Run: ``python benchmarks/bench_report.py [--cells 10000] [--predictions]`` (prints the
timings: medians of wall and CPU seconds, the CPU including the render's worker
processes, and the ratio of the two renders), or under pytest-benchmark:
``pytest benchmarks/bench_report.py``.

The store is written one file per cell, as ``suite run`` writes it, then measured twice in
one run: read as 10,000 single files, and after ``suite store compact`` (one part file),
with the ratio of the two render times and the time the compaction itself took. By default
no per-example predictions are written (then every test is the seed-level one);
``--predictions`` adds them (200 examples per cell) to time the paired tests too.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from suite.reports.site import render_site
from suite.results.store import ResultStore

try:  # imported as benchmarks.bench_report (pytest, from the repository root)
    from benchmarks import synthetic_store as synthetic
except ImportError:  # run as a script: its own folder is on the path
    import synthetic_store as synthetic

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


def _cpu() -> float:
    """CPU seconds of this process and its reaped children (the render's worker processes)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def _render(store: Path, out: Path, workers: int | None) -> tuple[float, float, object]:
    shutil.rmtree(out, ignore_errors=True)
    c0, t0 = _cpu(), time.perf_counter()
    r = render_site(store, out, workers=workers)
    return time.perf_counter() - t0, _cpu() - c0, r


def run(cells: int, predictions: bool, repeat: int = 1, workers: int | None = None) -> dict[str, float]:
    """Median wall and CPU seconds (CPU includes the worker processes) over ``repeat`` renders."""
    tmp = Path(tempfile.mkdtemp(prefix="bench-report-"))
    try:
        t0 = time.perf_counter()
        n = generate(tmp / "store", cells, predictions)
        result = {"cells": n, "generate_s": time.perf_counter() - t0}
        for label in ("single_files", "compacted"):
            if label == "compacted":
                t0 = time.perf_counter()
                ResultStore(tmp / "store").compact()  # what `suite store compact` runs
                result["compact_s"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            ResultStore(tmp / "store").load()
            result[f"load_cells_{label}_s"] = time.perf_counter() - t0
            runs = [_render(tmp / "store", tmp / f"site-{label}", workers) for _ in range(repeat)]
            result[f"render_{label}_s"] = statistics.median(w for w, _, _ in runs)
            result[f"render_{label}_cpu_s"] = statistics.median(c for _, c, _ in runs)
            result["pages"] = runs[-1][2].n_pages
            for stage, sec in runs[-1][2].timings.items():
                result[f"  {label}.{stage}_s"] = sec
        result["ratio_single_over_compacted"] = result["render_single_files_s"] / result["render_compacted_s"]
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
    parser.add_argument("--repeat", type=int, default=3, help="renders per store; medians are printed")
    parser.add_argument("--workers", type=int, default=None, help="render processes (default: one per CPU)")
    args = parser.parse_args()
    for key, value in run(args.cells, args.predictions, args.repeat, args.workers).items():
        print(f"{key:>24}: {value:.2f}" if isinstance(value, float) else f"{key:>24}: {value}")
