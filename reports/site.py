"""Render a result store into a static, self-contained site (works from file:// and any web host).

Layout of the output folder::

    index.html              overview: one leaderboard per task family x model, Pareto figures
    tasks.html              list of task pages
    task-<slug>.html        one page per task: every metric, costs, tests, cells, failures
    cells/<cell_id>.html    one page per cell: method, recipe, metrics, curve, provenance (raw JSON collapsed)
    method-<slug>.html      one page per board row: its scores, cells, examples and curves against the baseline
    examples/*.html         the example browser (per cell in small stores, else per method and task; see examples.py)
    kernels.html            kernel timings, peers side by side, history across commits
    figures/*.svg           matplotlib figures: tuned-value and training curves, kernel histories, the
                            scaling law (the Pareto plots are inline SVG in the pages: reports.pareto,
                            static/pareto.js)
    data/                   the store's rows as CSV and parquet (cells, predictions, curves, kernels),
                            each leaderboard as a CSV, linked from every page, and predictions/<cell>.csv
                            of each cell an example page shows
    static/                 the stylesheet, the sorting and the filter scripts (no CDN)
    .suite-site.json        the files this render wrote: the next render into the folder removes
                            the ones it no longer writes, and never touches any other file

Templates autoescape everything; figures are <img> files, and the inline Pareto SVG escapes every
text it holds (reports.pareto), so no user-controlled text (method names, arguments, error
messages) can become markup or script.
"""

from __future__ import annotations

import datetime as _dt
import functools
import json
import math
import multiprocessing as mp
import os
import re
import shutil
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import jinja2
import numpy as np
import pandas as pd

from suite import __version__, metrics
from suite.errors import UserError
from suite.reports import (
    board,
    cell_page,
    citations,
    export,
    figures,
    kernel_figures,
    kernels,
    leaderboard,
    loading,
    pareto,
    scaling_page,
    stats,
    variants,
    views,
)
from suite.reports.format import (
    display_scale,
    f_bytes,
    f_duration,
    f_memory,
    f_num,
    f_params,
    f_pct,
    f_pval,
    f_raw,
    f_score,
    f_signed,
    f_sortkey,
    first_line,
    format_value,
    scrub_paths,
)
from suite.results.schema import PREDICTION_COLUMNS, PROVENANCE_COLUMNS
from suite.results.store import ResultStore

PACKAGE_DIR = Path(__file__).parent
_SAFE_ID = re.compile(r"^[A-Za-z0-9_-]{1,80}$")


@dataclass
class RenderResult:
    out: Path
    n_cells: int
    n_failed: int
    n_pages: int
    n_figures: int
    seconds: float
    boards: list
    timings: dict  # seconds per stage: load, statistics, figures, pages, cells
    removed: list = field(default_factory=list)  # stale files of a previous render, removed
    single_files: int = 0  # one-cell store files read (``suite store compact`` folds them)


def make_env() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(PACKAGE_DIR / "templates")),
        autoescape=True,  # every template, whatever its file name
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(score=f_score, signed=f_signed, pval=f_pval, sortkey=f_sortkey, num=f_num,
                       pct=f_pct, params=f_params, memory=f_memory, duration=f_duration, cost=format_value,
                       raw=f_raw, bytes=f_bytes, scrub=scrub_paths)
    env.globals["cost_columns"] = _cost_labels
    env.globals["protocol_legend"] = board.PROTOCOL_LEGEND
    env.globals["method_parts"] = _method_parts
    env.globals["row_configuration"] = _row_configuration
    return env


def _method_parts(variant: str) -> SimpleNamespace:
    """A row label for the tables: each method's name with its paper's link (``citations``), the
    suffix (" (tuned)"), and the non-default arguments shown on the row's configuration line."""
    parts, suffix = citations.split_label(variant)
    return SimpleNamespace(parts=parts, suffix=suffix)


def _row_configuration(recipe, variant: str) -> SimpleNamespace:
    """A row's configuration line: its non-default arguments and the recipe fields where it differs
    from its table's common recipe (``recipe``: the board's, or the task's on a task page)."""
    return SimpleNamespace(args=citations.configuration(variant),
                           recipe=recipe.differing(variant) if recipe else {})


@functools.lru_cache(maxsize=1)
def _env() -> jinja2.Environment:
    """One environment per process: each template is compiled once, and forked workers inherit it."""
    return make_env()


# -- rendering ---------------------------------------------------------------------------------


def _pretty_json(text) -> str:
    if text is None or (isinstance(text, float) and math.isnan(text)):
        return ""
    try:
        return json.dumps(json.loads(text), indent=2, sort_keys=True, ensure_ascii=False)
    except (TypeError, ValueError):
        return str(text)


def cell_file(cell_id: str) -> str:
    return f"{cell_id}.html" if _SAFE_ID.match(cell_id) else f"{board.slugify(cell_id)}.html"


load_store = loading.load_store


def render_site(
    store_path: str | Path,
    out: str | Path,
    baseline: str | None = None,
    alpha: float = 0.05,
    metric: str | None = None,
    tasks: list[str] | None = None,
    workers: int | None = None,
    force: bool = False,
) -> RenderResult:
    """Render the site. ``workers`` processes write cell pages and figures (default: one per
    CPU, forked so they share the loaded store; 1 renders everything in this process)."""
    start = time.perf_counter()
    timings: dict[str, float] = {}
    clock = [start]

    def lap(stage: str) -> None:
        now = time.perf_counter()
        timings[stage] = timings.get(stage, 0.0) + now - clock[0]
        clock[0] = now

    out = Path(out)
    check_output(out, force)
    singles = single_cell_files(store_path)
    store, cells, kern, skipped = loading.load_store_report(store_path)
    lap("load")
    if not cells.empty and tasks:
        cells = loading.select_tasks(cells, tasks)
    boards = (leaderboard.build_boards(cells, baseline, skipped.loader(store), metric, alpha, str(store_path))
              if not cells.empty else [])
    if not boards and kern.empty:
        raise UserError("nothing to render")
    lap("statistics")

    cells = variants.canonical_variants(cells)  # pages name a configuration as its board row does
    written = _prepare_output(out)  # every file this render writes, relative to ``out`` (the manifest)
    kernel_groups = kernels.build_kernel_groups(kern)
    n_ok = int(cells.loc[cells["status"] == "ok", "cell_id"].nunique()) if not cells.empty else 0
    n_failed = int(cells.loc[cells["status"] != "ok", "cell_id"].nunique()) if not cells.empty else 0
    data_files = _plan_data(cells, kern, boards, store_path)
    common = {
        "suite_version": __version__,
        "generated_at": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "n_cells": n_ok + n_failed,
        "has_kernels": bool(kernel_groups),
        "data": data_files,
    }
    scaling = scaling_page.build(cells)  # a pretraining grid's law, where the store has one
    common["has_scaling"] = scaling is not None
    plan = FigurePlan(out)
    task_pages = _task_page_names(boards)
    plots = {b.slug: pareto.context(pareto.board_plot(b)) for b in boards}  # inline SVG, one per board
    tuning_figs = {key: plan.tuning(curves, metric, f"figures/tuning-{task_pages[key][5:-5]}")
                   for key, (curves, metric) in _tuning_curves(boards).items() if key in task_pages}
    tuning_figs = {key: name for key, name in tuning_figs.items() if name}
    task_ctx, task_list, cell_task_href = _task_pages(boards, cells, store, task_pages, plan, common, tuning_figs)
    extra = views.plan(boards, cells, store, str(store_path), task_pages, plan, common, cell_file)
    data_files.update(extra.data)
    for href, ctx in task_ctx:  # curves and method pages beside each task table
        ctx.update(curves=extra.task_curves.get(href), method_pages=extra.method_pages)
    for g in kernel_groups:
        name = f"figures/kernel-{board.slugify(g.kernel)}.svg"
        if g.history:
            plan.jobs.append((kernel_figures.history_svg, (g.history, g.kernel, out / name), [name]))
            g.figure = name
    lap("plan")

    env = _env()
    by_board: dict[str, list[dict]] = {}
    for (slug, sub), name in tuning_figs.items():
        by_board.setdefault(slug, []).append({"src": name, "subtask": scrub_paths(sub)})
    index = dict(title="Leaderboard", root="", boards=boards, plots=plots, task_pages=task_pages,
                 tuning_figures=by_board,
                 references_list=citations.references([r.variant for b in boards for r in b.rows]),
                 baselines=sorted({f"{b.family}: {b.baseline}" for b in boards if b.baseline}), alpha=alpha,
                 n_ok=n_ok, n_failed=n_failed, skipped=skipped.as_list(),
                 kinds=sorted({r.kind for b in boards for r in b.rows if r.kind}),
                 families=sorted({b.family for b in boards}), **common)
    pages_html = [(href, "task.html", ctx) for href, ctx in task_ctx]
    pages_html += [("index.html", "index.html", index),
                   ("tasks.html", "tasks.html", dict(title="Tasks", root="", tasks=task_list, **common))]
    if kernel_groups:
        pages_html.append(("kernels.html", "kernels.html", dict(
            title="Kernels", root="", groups=kernel_groups, gate=kernels.gate_settings(),
            has_samples=kernels.has_samples(kern), **common)))
    if scaling is not None:
        scaling.csv = f"{DATA}/scaling.csv"
        scaling_page.frame(scaling).to_csv(out / scaling.csv, index=False)
        written.append(scaling.csv)
        if scaling.fit is not None:
            table = scaling_page.efficiency_table(scaling.fit)
            for fmt, text in (("latex", export.to_latex(table)), ("markdown", export.to_markdown(table))):
                name = f"{DATA}/scaling{export.SUFFIXES[fmt]}"
                (out / name).write_text(text, encoding="utf-8")
                scaling.tables[fmt] = name
                written.append(name)
        scaling.figure = "figures/scaling.svg"
        plan.jobs.append((scaling_page.draw, (scaling, out / scaling.figure), [scaling.figure]))
        pages_html.append(("scaling.html", "scaling.html", dict(
            title="Scaling law", root="", fit=scaling.fit, refused=scaling.refused, figure=scaling.figure,
            csv=scaling.csv, tables=scaling.tables, law_names=list(scaling_page.scaling.LAW_PARAMETERS),
            **common)))
    chunks = _cell_chunks(cells, cell_task_href, out, common, extra.cells)
    data_job = (_write_data, (out, cells, kern, boards, data_files, store_path))
    n_pages, figs, files = _write_all(env, out, pages_html, plan.jobs, chunks, data_job, workers, lap)
    written += files
    removed = remove_stale(out, written)
    n_pages += sum(1 for f in figs if f.endswith(".html"))  # method and example pages are jobs of the plan
    n_figs = sum(1 for f in figs if f.endswith(".svg"))
    return RenderResult(out, n_ok, n_failed, n_pages, n_figs, time.perf_counter() - start, boards, timings,
                        removed, singles)


def _prepare_output(out: Path) -> list[str]:
    """The output folders, and the static files copied in (returned, for the manifest)."""
    written = []
    for folder in ("cells", "figures", DATA, "static"):
        (out / folder).mkdir(parents=True, exist_ok=True)
    for f in (PACKAGE_DIR / "static").iterdir():
        if f.is_file():
            shutil.copyfile(f, out / "static" / f.name)
            written.append(f"static/{f.name}")
    return written


@dataclass
class FigurePlan:
    """Figures named now and drawn later (possibly in another process), so pages can link them before
    the files exist: whether a figure is drawn is known from its points."""

    out: Path
    jobs: list[tuple] = field(default_factory=list)  # (function, arguments, file names)

    def tuning(self, curves: list, metric: str, stem: str) -> str:
        """A task's tuned-value curves (one panel per searched value); "" when no trial has a score."""
        if not any(p.mean == p.mean for c in curves for p in c.points):
            return ""
        name = f"{stem}.svg"
        ylabel = f"{metric} on held-out training data" if metric else "held-out score"
        self.jobs.append((figures.tuning_curves, (curves, ylabel, display_scale(metric), self.out / name), [name]))
        return name


def _tuning_curves(boards: list) -> dict[tuple[str, str], tuple[list, str]]:
    """(board slug, subtask) -> the curves of every search on that task and the metric they score."""
    out: dict[tuple[str, str], tuple[list, str]] = {}
    for b in boards:
        for search in b.searches:
            curves, metric = out.setdefault((b.slug, search.subtask), ([], search.metric))
            curves.extend(search.curves)
    return out


def _task_page_names(boards: list) -> dict[tuple[str, str], str]:
    """(board slug, subtask) -> its page's file name (readable, free of local paths, unique)."""
    return {(b.slug, sub): f"task-{board.slugify(f'{b.slug}-{scrub_paths(sub)}', key=f'{b.slug}-{sub}')}.html"
            for b in boards for sub in dict.fromkeys(c.key[0] for c in b.columns)}


def _task_pages(boards: list, cells: pd.DataFrame, store: ResultStore, task_pages: dict, plan: FigurePlan,
                common: dict, tuning_figs: dict | None = None) -> tuple[list[tuple[str, dict]], list[dict], dict[str, str]]:
    """Every task page's context, the task list, and which task page each cell belongs to."""
    ok = cells[cells["status"] == "ok"] if not cells.empty else cells
    if not ok.empty and "stage" in ok:  # trials score held-out training data: never beside a row's scores
        ok = ok[ok["stage"].fillna("").astype(str) != "trial"]
    failed = cells[cells["status"] != "ok"].drop_duplicates("cell_id") if not cells.empty else cells
    if not failed.empty and "stage" in failed:
        failed = failed[failed["stage"].fillna("").astype(str) != "trial"]
    if not failed.empty:
        failed = failed.assign(subtask=failed["subtask"].fillna(""))
        failed_by = {k: g for k, g in failed.groupby(["task", "model", "subtask"], sort=False, dropna=False)}
    else:
        failed_by = {}
    other_stats = _other_metric_stats(ok)
    cell_task_href: dict[str, str] = {}
    task_list, task_ctx = [], []
    for b in boards:
        for sub in dict.fromkeys(c.key[0] for c in b.columns):
            href = task_pages[(b.slug, sub)]
            fails = failed_by.get((b.family, b.model, sub))
            rows = _task_rows(b, sub, other_stats.get((b.family, b.model, sub), {}), fails)
            cols = [c for c in b.columns if c.key[0] == sub]
            chosen = {(c.key[1], c.key[2]) for c in cols}
            sub_stats = other_stats.get((b.family, b.model, sub), {})
            other_keys = sorted({k for per in sub_stats.values() for k in per if k not in chosen})
            other = [{"key": k, "metric": k[1], "label": f"{k[1]} ({k[0]})"} for k in other_keys]
            for r in rows:
                for cell in r["cells"]:
                    cell_task_href[cell["id"]] = href
            plot = pareto.context(pareto.task_plot(b, cols, rows))
            show_gap = cols[0].key in {c.key for c in b.gap_columns}
            failures = [] if fails is None else [
                {"variant": f["variant"], "seed": f["seed"], "error": scrub_paths(f["error"]),
                 "href": f"cells/{cell_file(f['cell_id'])}"} for f in fails.to_dict("records")]
            for f in fails["cell_id"] if fails is not None else []:
                cell_task_href[f] = href
            task_ctx.append((href, dict(
                title=f"{b.family}:{scrub_paths(sub)}" if sub else b.family, root="", board=b,
                subtask=scrub_paths(sub), columns=cols, other_metrics=other, rows=rows, failures=failures,
                plot=plot, show_gap=show_gap, recipe=b.recipes.get(sub),
                tuning_figure=(tuning_figs or {}).get((b.slug, sub), ""),
                searches=[x for x in b.searches if x.subtask == sub],
                cost_labels=_cost_labels(b), **common)))
            task_list.append({"href": href, "family": b.family, "subtask": scrub_paths(sub), "model": b.model_label,
                              "n_rows": len(rows), "n_cells": sum(len(r["cells"]) for r in rows),
                              "n_failed": len(failures)})
    return task_ctx, task_list, cell_task_href


def _task_rows(b, sub: str, sub_stats: dict, fails: pd.DataFrame | None) -> list[dict]:
    """One task page's rows, ranked by its first column; a method whose every cell of the task failed
    keeps a row with its first error."""
    cols = [c for c in b.columns if c.key[0] == sub]
    base = next((x for x in b.rows if x.variant == b.baseline), None)
    base_entry = base.entries.get(cols[0].key) if base else None
    failed_here = {} if fails is None else {str(v): g for v, g in fails.groupby("variant", sort=False)}
    scored = [(r, r.entries[cols[0].key]) for r in b.rows if cols[0].key in r.entries]
    sign = -1.0 if cols[0].higher_is_better else 1.0
    scored.sort(key=lambda x: (math.isnan(x[1].summary.mean), sign * x[1].summary.mean
                               if not math.isnan(x[1].summary.mean) else 0.0, x[0].variant))
    task_ranks = stats.competition_ranks([e.summary.mean for _, e in scored], cols[0].higher_is_better)
    rows = []
    for (r, entry), task_rank in zip(scored, task_ranks, strict=True):
        rows.append({
            "row": r, "entry": entry, "costs": entry.costs, "gap": entry.gap, "rank": task_rank, "failed": None,
            "delta": (entry.summary.mean - base_entry.summary.mean) if base_entry else math.nan,
            "step_ms": entry.step_time_s * 1000, "other": sub_stats.get(r.variant, {}),
            "cells": [{"seed": s, "id": c, "href": f"cells/{cell_file(c)}"}
                      for s, c in zip(entry.seeds, entry.cell_ids, strict=True)],
        })
    for r in b.rows:
        if cols[0].key in r.entries or r.variant not in failed_here:
            continue
        g = failed_here[r.variant]
        error = next((e for e in g["error"].fillna("").astype(str) if e.strip()), "")
        rows.append({"row": r, "entry": None, "delta": math.nan, "costs": {}, "gap": None,
                     "rank": None, "step_ms": math.nan, "other": {},
                     "failed": {"n": len(g), "error": first_line(scrub_paths(error))},
                     "cells": [{"seed": s, "id": c, "href": f"cells/{cell_file(c)}"}
                               for s, c in zip(g["seed"], g["cell_id"], strict=True)]})
    return rows


def _write_all(env, out: Path, pages: list[tuple[str, str, dict]], fig_jobs: list[tuple], chunks: list[tuple],
               data_job: tuple, workers: int | None, lap) -> tuple[int, list[str], list[str]]:
    """Write the pages here while worker processes draw the figures, write the cell pages and the
    data files; returns (pages written, figure files drawn, every file written)."""
    written: list[str] = []
    pool = _pool(workers, len(chunks) + len(fig_jobs) + 1)
    try:
        pending = ([pool.submit(fn, *a) for fn, a, _ in fig_jobs]
                   + [pool.submit(_render_cell_chunk, *c) for c in chunks]
                   + [pool.submit(data_job[0], *data_job[1])]) if pool else []
        for name, template, ctx in pages:
            _write(out / name, env.get_template(template).render(**ctx))
            written.append(name)
        n_pages = len(pages)
        lap("pages")
        if pool:
            results = [f.result() for f in pending]
            drawn = results[:len(fig_jobs)]
            cell_counts = results[len(fig_jobs):-1]
            written += results[-1]
        else:
            drawn = [fn(*a) for fn, a, _ in fig_jobs]
            lap("figures")
            cell_counts = [_render_cell_chunk(*c) for c in chunks]
            written += data_job[0](*data_job[1])
        n_pages += sum(cell_counts)
        figs = [name for ok_, (_, _, names) in zip(drawn, fig_jobs, strict=True) if ok_ for name in names]
        written += figs
        written += [f"cells/{cell_file(str(r['cell_id']))}" for c in chunks for r in c[0]]
        lap("cells+figures" if pool else "cells")
    finally:
        if pool:
            pool.shutdown(cancel_futures=True)
    return n_pages, figs, written


def _cost_labels(board) -> list[dict]:
    """The board's declared cost columns (suite.metrics): key, heading (memory named by what it
    measured), tooltip, and whether it times the run (marked where GEMMs were emulated)."""
    return [{"key": s.name, "label": _memory_heading(board.memory_label) if s.name == "peak_memory_mb"
             else s.heading[:1].upper() + s.heading[1:], "title": s.summary, "timing": s.timing}
            for s in board.cost_columns]


def _memory_heading(label: str) -> str:
    if "CUDA" in label and "RSS" in label:
        return "Peak mem (mixed)"
    return "Peak mem (CUDA)" if "CUDA" in label else "Peak RSS" if "RSS" in label else "Peak mem"


# -- output folder -----------------------------------------------------------------------------

MANIFEST = ".suite-site.json"  # the files the last render wrote, so the next one can remove stale ones
DATA = "data"


def check_output(out: Path, force: bool = False) -> None:
    """Fail before any work when the site cannot or should not be written to ``out``: a file, no
    write access (tried, not guessed: a folder under /proc looks writable to root), or a folder of
    someone else's files (not empty, and no manifest of an earlier render) unless ``force``."""
    if out.exists() and not out.is_dir():
        raise UserError(f"output '{out}' is a file; give a folder for the site")
    if out.is_dir() and not force and not (out / MANIFEST).exists() and any(out.iterdir()):
        raise UserError(f"output folder '{out}' holds files that no 'suite report' wrote; choose a new or empty "
                        f"folder, or add --force to write the site among them")
    probe = out
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        raise UserError(f"cannot write the site to '{out}': '{probe}' is not a writable folder; "
                        f"choose another -o folder or fix its permissions")
    created = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".suite-write-test-"):
            pass
    except OSError as exc:
        raise UserError(f"cannot write the site to '{out}': {exc.strerror or exc}; choose another "
                        f"-o folder (or free space)") from None
    finally:
        if created and out.is_dir() and not any(out.iterdir()):
            out.rmdir()  # a refused render leaves nothing behind


def remove_stale(out: Path, written: list[str]) -> list[str]:
    """Delete the files a previous render listed in its manifest and this one did not write, then
    record this render's files. Only listed files go: the user's own files in ``out`` stay."""
    manifest = out / MANIFEST
    root = out.resolve()
    removed = []
    try:
        previous = json.loads(manifest.read_text(encoding="utf-8")).get("files", [])
    except (OSError, ValueError, AttributeError):
        previous = []
    keep = set(written)
    for rel in previous:
        if not isinstance(rel, str) or rel in keep:
            continue
        path = (out / rel).resolve()
        if root not in path.parents or not path.is_file():
            continue  # never outside the site folder, never a folder
        path.unlink()
        removed.append(rel)
    manifest.write_text(json.dumps({"generator": f"suite {__version__}", "files": sorted(keep)}, indent=0),
                        encoding="utf-8")
    return removed


def single_cell_files(store_path: str | Path) -> int:
    """How many one-cell files the store holds beside its part files: reading thousands of them
    is what makes a large render slow, and ``suite store compact`` folds them. The report itself
    only reads the store (it may be read-only, shared, or being written)."""
    folder = Path(store_path) / "cells"
    try:
        return sum(1 for p in folder.iterdir() if p.suffix == ".parquet" and not p.name.startswith("part-"))
    except OSError:
        return 0


# -- published data ----------------------------------------------------------------------------

# Free-text columns that may hold a local path (a model folder, a data folder, an image folder's
# subtask, a file named in an argument or an error): published with the paths removed.
PUBLIC_TEXT = ("error", "config", "data_source", "model", "subtask", "variant", "method_args")
PREDICTIONS_CSV_MAX_ROWS = 500_000  # larger prediction tables are published as parquet only
CSV_LEFT_OUT = ("config",)  # columns only in cells.parquet


def _plan_data(cells: pd.DataFrame, kern: pd.DataFrame, boards: list, store_path: str | Path) -> dict:
    """Names of the data files the site publishes (written later, possibly by a worker)."""
    data: dict = {"boards": {}}
    if not cells.empty:
        data["cells_csv"] = f"{DATA}/cells.csv"
        data["cells_parquet"] = f"{DATA}/cells.parquet"
        folder = Path(store_path) / "predictions"
        if folder.is_dir() and any(p.suffix == ".parquet" for p in folder.iterdir()):
            data["predictions_parquet"] = f"{DATA}/predictions.parquet"
    if not kern.empty:
        data["kernels_csv"] = f"{DATA}/kernels.csv"
        data["kernels_parquet"] = f"{DATA}/kernels.parquet"
    data["exports"] = {}
    for b in boards:
        data["boards"][b.slug] = f"{DATA}/board-{b.slug}.csv"
        data["exports"][b.slug] = {fmt: f"{DATA}/board-{b.slug}{export.SUFFIXES[fmt]}" for fmt in ("latex", "markdown")}
    return data


def _public_predictions(preds: pd.DataFrame) -> pd.DataFrame:
    """Predictions as published: local paths removed from every text value (image files, and
    generations that name a folder), and a column that mixes numbers and text (GLUE labels beside
    GSM8K answers) written as text, which one parquet column can hold."""
    out = {}
    for name in preds.columns:
        column = preds[name]
        if column.dtype == object or pd.api.types.is_string_dtype(column):
            kinds = {type(v) for v in column.dropna()}
            if str in kinds:
                column = column.map(lambda v: scrub_paths(v) if isinstance(v, str) else v)
            if len(kinds) > 1:
                column = column.map(lambda v: v if v is None or v != v else str(v))
        out[name] = column
    return pd.DataFrame(out, index=preds.index)


def _write_data(out: Path, cells: pd.DataFrame, kern: pd.DataFrame, boards: list, data: dict,
                store_path: str | Path) -> list[str]:
    """The store's rows as CSV and parquet, each board as a CSV; returns the files written."""
    written = []
    if not cells.empty:
        public = _public_cells(cells)
        # The CSV leaves out the resolved configuration (long JSON repeated on every metric row,
        # most of the file); the parquet file has every column.
        public.drop(columns=[c for c in CSV_LEFT_OUT if c in public]).to_csv(out / data["cells_csv"], index=False)
        public.to_parquet(out / data["cells_parquet"], index=False)
        written += [data["cells_csv"], data["cells_parquet"]]
        if data.get("predictions_parquet"):
            preds = _load_predictions(store_path, cells)
            if preds is None or preds.empty:  # unreadable files: an empty table keeps the link valid
                preds = pd.DataFrame(columns=PREDICTION_COLUMNS)
            else:
                preds = _public_predictions(preds)
            preds.to_parquet(out / data["predictions_parquet"], index=False)
            written.append(data["predictions_parquet"])
            if len(preds) <= PREDICTIONS_CSV_MAX_ROWS:
                preds.to_csv(out / DATA / "predictions.csv", index=False)
                written.append(f"{DATA}/predictions.csv")
    if not kern.empty:
        kern.to_csv(out / data["kernels_csv"], index=False)
        kern.to_parquet(out / data["kernels_parquet"], index=False)
        written += [data["kernels_csv"], data["kernels_parquet"]]
    for b in boards:
        board_frame(b).to_csv(out / data["boards"][b.slug], index=False)
        written.append(data["boards"][b.slug])
        for fmt, name in data["exports"][b.slug].items():  # the paper tables of ``suite export``
            _write(out / name, export.render(b, fmt))
            written.append(name)
    return written


def _public_cells(cells: pd.DataFrame) -> pd.DataFrame:
    """The cells as published: local paths removed from the free-text columns (errors, configs, data
    sources), each metric's direction as declared (suite.metrics), and whether the cell ran emulated GEMMs."""
    out = cells.copy()
    for col in PUBLIC_TEXT:
        if col in out:
            uniq = {v: scrub_paths(v) for v in out[col].dropna().unique()}
            out[col] = out[col].map(lambda v, u=uniq: u.get(v, v) if v is not None and v == v else v)
    if "metric" in out and "higher_is_better" in out:
        declared = {m: spec.higher_is_better for m in out["metric"].dropna().unique()
                    if isinstance(m, str) and (spec := metrics.spec_of(m)) is not None}
        is_declared = out["metric"].isin(set(declared))
        out.loc[is_declared, "higher_is_better"] = out.loc[is_declared, "metric"].map(declared)
    if "metric" in out:
        flags = out[(out["metric"] == "train_gemm_emulated") & (out["value"] > 0)]
        out["emulated_gemms"] = out["cell_id"].isin(set(flags["cell_id"]))
    return out


def _load_predictions(store_path: str | Path, cells: pd.DataFrame) -> pd.DataFrame | None:
    try:
        return ResultStore(store_path).load_predictions(sorted(set(cells["cell_id"].astype(str))))
    except Exception:  # noqa: BLE001 - unreadable prediction files are named on the overview already
        return None


def board_frame(board) -> pd.DataFrame:
    """A leaderboard in long form, one row per method x column, values as stored (not x100)."""
    records = []
    for r in board.rows:
        base = {"board": f"{board.family} · {board.model_label}", "rank": r.rank, "variant": r.variant,
                "method": r.method, "configuration": export.configuration(board, r.variant),
                "kind": r.kind, "stage": r.stage, "status": r.status,
                "cells_ok": r.n_ok_cells, "cells_failed": r.n_failed_cells, "error": r.error,
                **{c.name: r.costs.get(c.name, math.nan) for c in board.cost_columns},
                "emulated_gemms": r.emulated, **_protocol_fields(board, r.variant)}
        for a in board.aggregates:
            low, high, n = r.intervals.get(a.name, (math.nan, math.nan, 0))
            records.append(dict(base, column=a.label, subtask="", split="", metric="aggregate",
                                higher_is_better=a.higher_is_better,
                                mean=r.aggregates.get(a.name, math.nan), ci_low=low, ci_high=high,
                                interval="t" if n else "", n=n, std=math.nan, p_holm=math.nan, test=""))
        if not r.entries:
            records.append(dict(base, column="", subtask="", split="", metric="", mean=math.nan,
                                ci_low=math.nan, ci_high=math.nan, interval="", n=0, std=math.nan,
                                p_holm=math.nan, test=""))
        for c in board.columns:
            e = r.entries.get(c.key)
            if e is None:
                continue
            records.append(dict(base, column=c.label, subtask=scrub_paths(c.key[0]), split=c.key[1], metric=c.metric,
                                higher_is_better=c.higher_is_better,
                                mean=e.summary.mean, ci_low=e.summary.ci_low, ci_high=e.summary.ci_high,
                                interval=e.summary.interval, n=e.summary.n, std=e.summary.std,
                                p_holm=e.p_adjusted, test=e.test.test if e.test else ""))
    frame = pd.DataFrame.from_records(records)
    if "rank" in frame:
        frame["rank"] = frame["rank"].astype("Int64")  # integers, empty where a row has no rank
    return frame


def _protocol_fields(board, variant: str) -> dict[str, object]:
    """How a row's hyperparameters were chosen, as the board says it: ``hyperparameters`` is
    "tuned", "inherited" (at the baseline's selected values) or "defaults"; ``tuning`` the
    sentence; ``grid_edge`` the selected values at an edge of their grid; ``baseline_off_optimum``
    why the board's gaps may overstate ("" where the baseline ran at its tuned optimum)."""
    status = board.protocol.statuses.get(variant)
    if status is None:
        how = ""
    else:
        how = "inherited" if status.inherited_from else "tuned" if status.tuned else "defaults"
    return {"hyperparameters": how, "tuning": scrub_paths(status.summary) if status else "",
            "grid_edge": "; ".join(e.text for e in status.edges) if status else "",
            "baseline_off_optimum": board.protocol.off_optimum if board.baseline else ""}


def _pool(workers: int | None, n_jobs: int):
    """A forked process pool, or None to render in this process (one CPU, few jobs, no fork)."""
    if workers is None:
        workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    workers = min(workers, n_jobs)
    if workers < 2 or "fork" not in mp.get_all_start_methods():
        return None
    # Fork: workers start at once with the templates compiled and the modules imported; the
    # jobs carry plain data and only touch jinja, matplotlib and the file system.
    return ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("fork"))


def _write(path: Path, text: str) -> None:
    with open(path, "wb") as fh:
        fh.write(text.encode("utf-8"))


def _other_metric_stats(ok: pd.DataFrame) -> dict:
    """(family, model, subtask) -> variant -> (split, metric) -> (mean, std, n) of every eval metric."""
    if ok.empty:
        return {}
    rows = ok[ok["split"] != "cost"]
    agg = rows.groupby(["task", "model", "subtask", "variant", "split", "metric"], dropna=False)["value"].agg(
        ["mean", "std", "count"])
    out: dict = {}
    for (fam, model, sub, variant, split, metric), (mean, std, n) in zip(
            agg.index, agg.itertuples(index=False, name=None), strict=True):
        key = (fam, model, "" if sub is None or sub != sub else sub)
        out.setdefault(key, {}).setdefault(variant, {})[(split, metric)] = (mean, std, int(n))
    return out


CELL_CHUNK = 1000


def _cell_chunks(cells: pd.DataFrame, task_href: dict[str, str], out: Path, common: dict,
                 links: dict[str, dict] | None = None) -> list[tuple]:
    """Split the frame by cell with one sort (no pandas groupby per cell) into jobs of plain data."""
    if cells.empty:
        return []
    frame = cells.sort_values("cell_id", kind="stable")
    ids = frame["cell_id"].to_numpy()
    starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
    ends = np.r_[starts[1:], len(ids)]
    keep = [c for c in frame.columns if c not in ("metric", "value", "split", "is_primary", "higher_is_better")]
    first = frame[keep].iloc[starts].to_dict("records")
    cols = {k: frame[k].to_numpy(dtype=object).tolist() for k in ("split", "metric", "value", "is_primary")}
    jobs = []
    for a in range(0, len(first), CELL_CHUNK):
        b = min(a + CELL_CHUNK, len(first))
        lo, hi = int(starts[a]), int(ends[b - 1])
        recs = first[a:b]
        jobs.append((recs, (starts[a:b] - lo).tolist(), (ends[a:b] - lo).tolist(),
                     {k: v[lo:hi] for k, v in cols.items()},
                     {str(r["cell_id"]): task_href[str(r["cell_id"])] for r in recs
                      if str(r["cell_id"]) in task_href}, out, common,
                     {str(r["cell_id"]): links[str(r["cell_id"])] for r in recs if str(r["cell_id"]) in (links or {})}))
    return jobs


def _render_cell_chunk(records: list[dict], starts: list[int], ends: list[int], cols: dict[str, list],
                       task_href: dict[str, str], out: Path, common: dict, links: dict[str, dict] | None = None) -> int:
    """Write the pages of a run of cells; returns how many. Runs in a worker or in-process."""
    tpl = _env().get_template("cell.html")
    split, metric, value, primary = cols["split"], cols["metric"], cols["value"], cols["is_primary"]
    provenance = [c for c in PROVENANCE_COLUMNS if records and c in records[0]]
    pretty = _JsonCache()
    folder = out / "cells"
    for c, s, e in zip(records, starts, ends, strict=True):
        # Namespaces, not dicts: jinja's ``x.attr`` tries an attribute before an item, and the
        # failed attribute lookup on a dict costs more than the rest of the page.
        metrics = [SimpleNamespace(split=split[i], metric=metric[i], value=value[i],
                                   is_primary=primary[i] is True or primary[i] == 1)
                   for i in range(s, e) if isinstance(metric[i], str)]
        cid = str(c["cell_id"])
        href = task_href.get(cid)
        # Published pages carry no local paths (home folders, the store's location, data folders).
        for key in PUBLIC_TEXT:
            c[key] = scrub_paths(c.get(key))
        html = tpl.render(
            title=f"{c['variant']} · {c['task']}", root="../", c=SimpleNamespace(**c), metrics=metrics,
            method_args=pretty(c.get("method_args")), config=scrub_paths(_pretty_json(c.get("config"))),
            recipe=pretty(c.get("recipe")), provenance=[(k, c.get(k, "")) for k in provenance],
            task_href=f"../{href}" if href else "", links=(links or {}).get(cid, {}),
            recipe_fields=cell_page.recipe_fields(c.get("recipe")), method_fields=cell_page.method_fields(c.get("method_args")),
            **common)
        _write(folder / cell_file(cid), html)
    return len(records)


class _JsonCache(dict):
    """Pretty JSON of values that repeat across cells (method arguments, recipes), made once."""

    def __call__(self, text) -> str:
        key = text if isinstance(text, str) else None
        if key is None:
            return _pretty_json(text)
        hit = self.get(key)
        if hit is None:
            hit = self[key] = _pretty_json(text)
        return hit
