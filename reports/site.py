"""Render a result store into a static, self-contained site (works from file:// and any web host).

Layout of the output folder::

    index.html              overview: one leaderboard per task family x model, Pareto figures
    tasks.html              list of task pages
    task-<slug>.html        one page per task: every metric, costs, tests, cells, failures
    cells/<cell_id>.html    one page per cell: metrics, resolved config, provenance
    kernels.html            kernel timings, peers side by side, history across commits
    figures/*.svg           matplotlib figures
    static/                 the stylesheet and the sorting script (no CDN)

Templates autoescape everything; figures are <img> files, so no user-controlled text
(method names, arguments, error messages) can become markup or script.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import jinja2
import numpy as np
import pandas as pd
from suite.reports import figures, kernels, summary
from suite.reports.format import (
    f_cost,
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
)
from suite.results.schema import PROVENANCE_COLUMNS

from suite import __version__
from suite.errors import UserError

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


def make_env() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(PACKAGE_DIR / "templates")),
        autoescape=True,  # every template, whatever its file name
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(score=f_score, signed=f_signed, pval=f_pval, sortkey=f_sortkey, num=f_num,
                       pct=f_pct, params=f_params, memory=f_memory, duration=f_duration, cost=f_cost,
                       raw=f_raw)
    return env


# -- rendering ---------------------------------------------------------------------------------


def _pretty_json(text) -> str:
    if text is None or (isinstance(text, float) and math.isnan(text)):
        return ""
    try:
        return json.dumps(json.loads(text), indent=2, sort_keys=True, ensure_ascii=False)
    except (TypeError, ValueError):
        return str(text)


def cell_file(cell_id: str) -> str:
    return f"{cell_id}.html" if _SAFE_ID.match(cell_id) else f"{summary.slugify(cell_id)}.html"


load_store = summary.load_store


def render_site(
    store_path: str | Path,
    out: str | Path,
    baseline: str | None = "lora",
    alpha: float = 0.05,
    metric: str | None = None,
    tasks: list[str] | None = None,
) -> RenderResult:
    start = time.perf_counter()
    timings: dict[str, float] = {}
    clock = [start]

    def lap(stage: str) -> None:
        now = time.perf_counter()
        timings[stage] = timings.get(stage, 0.0) + now - clock[0]
        clock[0] = now

    store, cells, kern = load_store(store_path)
    lap("load")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"output '{out}' is a file; give a folder for the site")
    if not cells.empty and tasks:
        cells = summary.select_tasks(cells, tasks)
    boards = (summary.build_boards(cells, baseline, store.load_predictions, metric, alpha, str(store_path))
              if not cells.empty else [])
    if not boards and kern.empty:
        raise UserError("nothing to render")
    lap("statistics")

    (out / "cells").mkdir(parents=True, exist_ok=True)
    (out / "figures").mkdir(exist_ok=True)
    static = out / "static"
    static.mkdir(exist_ok=True)
    for f in (PACKAGE_DIR / "static").iterdir():
        if f.is_file():
            shutil.copyfile(f, static / f.name)

    env = make_env()
    kernel_groups = kernels.build_kernel_groups(kern)
    n_ok = int(cells.loc[cells["status"] == "ok", "cell_id"].nunique()) if not cells.empty else 0
    n_failed = int(cells.loc[cells["status"] != "ok", "cell_id"].nunique()) if not cells.empty else 0
    common = {
        "suite_version": __version__,
        "generated_at": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "n_cells": n_ok + n_failed,
        "has_kernels": bool(kernel_groups),
    }
    pages = 0
    n_fig = 0

    # Task pages first: the overview links to them.
    task_pages: dict[tuple[str, str], str] = {}
    for b in boards:
        for sub in dict.fromkeys(c.key[0] for c in b.columns):
            task_pages[(b.slug, sub)] = f"task-{summary.slugify(f'{b.slug}-{sub}')}.html"

    # Overview figures.
    fig_paths: dict[str, str] = {}
    for b in boards:
        ylabel = b.aggregate_label or b.columns[0].label
        pts = []
        for r in b.rows:
            if b.aggregate_label:
                y = r.aggregate
            else:
                e = r.entries.get(b.columns[0].key)
                y = e.summary.mean if e else math.nan
            pts.append(figures.Point(r.variant, y * summary.display_scale(
                "glue_score" if b.family == "glue" else b.columns[0].metric), r.costs))
        name = f"figures/pareto-{b.slug}.svg"
        hib = True if b.aggregate_label else b.columns[0].higher_is_better
        if figures.pareto_svg(pts, ylabel, out / name, hib):
            fig_paths[b.slug] = name
            n_fig += 1

    lap("figures")

    # Per-task pages.
    ok = cells[cells["status"] == "ok"] if not cells.empty else cells
    failed = cells[cells["status"] != "ok"].drop_duplicates("cell_id") if not cells.empty else cells
    other_stats = _other_metric_stats(ok)
    cell_task_href: dict[str, str] = {}
    task_list = []
    tpl_task = env.get_template("task.html")
    for b in boards:
        for sub in dict.fromkeys(c.key[0] for c in b.columns):
            href = task_pages[(b.slug, sub)]
            cols = [c for c in b.columns if c.key[0] == sub]
            chosen = {(c.key[1], c.key[2]) for c in cols}
            sub_stats = other_stats.get((b.family, b.model, sub), {})
            other_keys = sorted({k for per in sub_stats.values() for k in per if k not in chosen})
            other = [{"key": k, "metric": k[1], "label": f"{k[1]} ({k[0]})"} for k in other_keys]
            rows, pts = [], []
            for r in b.rows:
                entry = r.entries.get(cols[0].key)
                if entry is None:
                    continue
                base = next((x for x in b.rows if x.variant == b.baseline), None)
                base_entry = base.entries.get(cols[0].key) if base else None
                delta = (entry.summary.mean - base_entry.summary.mean) if base_entry else math.nan
                for cid in entry.cell_ids:
                    cell_task_href[cid] = href
                rows.append({
                    "row": r, "entry": entry, "delta": delta, "costs": entry.costs,
                    "other": sub_stats.get(r.variant, {}),
                    "cells": [{"seed": s, "href": f"cells/{cell_file(c)}"}
                              for s, c in zip(entry.seeds, entry.cell_ids, strict=True)],
                })
                pts.append(figures.Point(r.variant, entry.summary.mean * summary.display_scale(cols[0].metric),
                                         entry.costs))
            fig_name = f"figures/pareto-{href[5:-5]}.svg"
            fig = fig_name if figures.pareto_svg(pts, f"{cols[0].label} ({cols[0].metric})", out / fig_name,
                                                 cols[0].higher_is_better) else ""
            n_fig += bool(fig)
            fails = failed[(failed["task"] == b.family) & (failed["model"] == b.model)
                           & (failed["subtask"].fillna("") == sub)] if not failed.empty else failed
            failures = [{"variant": f["variant"], "seed": f["seed"], "error": f["error"],
                         "href": f"cells/{cell_file(f['cell_id'])}"} for f in fails.to_dict("records")]
            for f in fails["cell_id"] if not fails.empty else []:
                cell_task_href[f] = href
            (out / href).write_text(tpl_task.render(
                title=f"{b.family}:{sub}" if sub else b.family, root="", board=b, subtask=sub,
                columns=cols, other_metrics=other, rows=rows, failures=failures, figure=fig,
                cost_labels=[("trainable_params", "Params"), ("peak_memory_mb", "Peak mem"),
                             ("train_time_s", "Train time")], **common), encoding="utf-8")
            pages += 1
            task_list.append({"href": href, "family": b.family, "subtask": sub, "model": b.model,
                              "n_rows": len(rows), "n_cells": sum(len(r["cells"]) for r in rows),
                              "n_failed": len(failures)})

    (out / "index.html").write_text(env.get_template("index.html").render(
        title="Leaderboard", root="", boards=boards, figures=fig_paths, task_pages=task_pages,
        baseline=next((b.baseline for b in boards if b.baseline), None), alpha=alpha,
        n_ok=n_ok, n_failed=n_failed, **common), encoding="utf-8")
    (out / "tasks.html").write_text(env.get_template("tasks.html").render(
        title="Tasks", root="", tasks=task_list, **common), encoding="utf-8")
    pages += 2

    lap("pages")
    pages += _render_cells(env, cells, out, cell_task_href, common)
    lap("cells")

    if kernel_groups:
        for g in kernel_groups:
            name = f"figures/kernel-{summary.slugify(g.kernel)}.svg"
            if figures.history_svg(g.history, g.kernel, out / name):
                g.figure = name
                n_fig += 1
        (out / "kernels.html").write_text(env.get_template("kernels.html").render(
            title="Kernels", root="", groups=kernel_groups,
            threshold_pct=round(kernels.REGRESSION_THRESHOLD * 100), **common), encoding="utf-8")
        pages += 1

    lap("kernels")
    return RenderResult(out, n_ok, n_failed, pages, n_fig, time.perf_counter() - start, boards, timings)


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


def _render_cells(env, cells: pd.DataFrame, out: Path, task_href: dict[str, str], common: dict) -> int:
    """One page per cell. Rows are split by cell with one sort, not a pandas groupby per cell."""
    if cells.empty:
        return 0
    tpl = env.get_template("cell.html")
    frame = cells.sort_values("cell_id", kind="stable")
    ids = frame["cell_id"].to_numpy()
    starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
    ends = np.r_[starts[1:], len(ids)]
    first = frame.iloc[starts].to_dict("records")
    split = frame["split"].to_numpy()
    metric = frame["metric"].to_numpy()
    value = frame["value"].to_numpy()
    primary = frame["is_primary"].to_numpy()
    provenance = [c for c in PROVENANCE_COLUMNS if c in frame]
    folder = out / "cells"
    for c, s, e in zip(first, starts, ends, strict=True):
        metrics = [{"split": split[i], "metric": metric[i], "value": value[i], "is_primary": primary[i] is True
                    or primary[i] == 1} for i in range(s, e) if isinstance(metric[i], str)]
        href = task_href.get(c["cell_id"])
        html = tpl.render(
            title=f"{c['variant']} · {c['task']}", root="../", c=c, metrics=metrics,
            method_args=_pretty_json(c.get("method_args")), config=_pretty_json(c.get("config")),
            recipe=_pretty_json(c.get("recipe")), provenance=provenance,
            task_href=f"../{href}" if href else "", **common)
        (folder / cell_file(str(c["cell_id"]))).write_text(html, encoding="utf-8")
    return len(first)
