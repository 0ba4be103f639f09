"""The views a researcher reaches for beside the tables: training curves on task pages, a page per
method per board (that method against the baseline), the example browser, and what a cell page
links to. The site calls ``plan`` once; everything drawn or written here becomes a job of the
site's plan, so it renders in the figure workers beside the rest.

What scales with what: method pages follow the board rows, example pages the rows per task
(or the cells where few store predictions, see ``examples``), curve figures one per task and
one per method page where curves exist; a cell's own curve figure is drawn only where at most
``CELL_CURVES_MAX`` cells stored curves (else its page links the method page's figure).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import pandas as pd

from suite.reports import board as board_mod
from suite.reports import curves as curves_mod
from suite.reports import examples as examples_mod
from suite.reports.format import scrub_paths

CELL_CURVES_MAX = 100  # cells with curves up to which each cell page gets its own curve figure
CURVES_CSV_MAX_ROWS = 500_000  # a larger curve table is published as parquet only
PAGES_PER_JOB = 200


@dataclass
class Views:
    """What the pages link to: per task page its curve figure, per board row its method page, per cell
    its example page and curve."""

    task_curves: dict[str, dict] = field(default_factory=dict)  # task page -> {"src", "caption"}
    method_pages: dict[tuple[str, str], str] = field(default_factory=dict)  # (board slug, variant) -> page
    cells: dict[str, dict] = field(default_factory=dict)  # cell id -> {"examples", "curve", "method"}
    data: dict[str, str] = field(default_factory=dict)  # "curves_csv", "curves_parquet"
    n_method_pages: int = 0


def method_page_name(b, variant: str) -> str:
    return f"method-{board_mod.slugify(f'{b.slug}-{scrub_paths(variant)}', key=f'{b.slug}|{variant}')}.html"


def plan(boards: list, cells: pd.DataFrame, store, store_path: str, task_pages: dict, fig_plan, common: dict,
         cell_file) -> Views:
    """Name every page and figure of the views and queue their jobs on ``fig_plan``."""
    out: Path = fig_plan.out
    views = Views()
    for b in boards:
        for r in b.rows:
            views.method_pages[(b.slug, r.variant)] = method_page_name(b, r.variant)
    ok_ids = sorted({str(c) for b in boards for r in b.rows for e in r.entries.values() for c in e.cell_ids})
    rows = curves_mod.curve_rows(store, cells, ok_ids)
    with_curves = set(rows["cell_id"].unique()) if not rows.empty else set()
    if not rows.empty:
        views.data = {"curves_parquet": "data/curves.parquet"}
        n_rows = len(rows)
        if n_rows <= CURVES_CSV_MAX_ROWS:
            views.data["curves_csv"] = "data/curves.csv"
        fig_plan.jobs.append((_write_curves, (curves_mod.curves_frame(rows, cells), out, dict(views.data)),
                              list(views.data.values())))

    has_preds = _cells_with_predictions(store_path, set(ok_ids))
    ex_views, cell_examples, method_examples = examples_mod.plan_views(
        boards, task_pages, {k: v for k, v in views.method_pages.items()}, cell_file, has_preds, scrub_paths)
    if ex_views:
        (out / examples_mod.FOLDER).mkdir(parents=True, exist_ok=True)
        (out / examples_mod.CSV_FOLDER).mkdir(parents=True, exist_ok=True)
        groups: dict[tuple[str, str], list] = {}
        for v in ex_views:
            groups.setdefault((v.board_slug, v.subtask), []).append(v)
        for group in groups.values():
            names = [v.page for v in group]
            names += list(dict.fromkeys(s.csv for v in group for s in (v.a, v.b) if s is not None))
            fig_plan.jobs.append((examples_mod.write_views, (group, str(store_path), out, common), names))

    per_cell_figs = 0 < len(with_curves) <= CELL_CURVES_MAX
    pages: list[tuple[str, dict]] = []
    for b in boards:
        order = [r.variant for r in sorted(b.rows, key=lambda r: (r.rank is None, r.rank or 0))]
        per_task: dict[str, dict[str, curves_mod.MethodCurves]] = {}
        for sub in dict.fromkeys(c.key[0] for c in b.columns):
            col = next(c for c in b.columns if c.key[0] == sub)
            href = task_pages[(b.slug, sub)]
            found = {}
            for r in b.rows:
                e = r.entries.get(col.key)
                if e is None or not with_curves.intersection(e.cell_ids):
                    continue
                mc = curves_mod.method_curves(rows, scrub_paths(r.variant), e.cell_ids)
                if mc is not None:
                    found[r.variant] = mc
            per_task[sub] = found
            if found:
                drawn, left = curves_mod.chosen(list(found.values()), [scrub_paths(v) for v in order],
                                                scrub_paths(b.baseline) if b.baseline else None)
                name = f"figures/curves-{href[5:-5]}.svg"
                fig_plan.jobs.append((curves_mod.draw, (drawn, scrub_paths(b.baseline) if b.baseline else None,
                                                        out / name), [name]))
                views.task_curves[href] = {"src": name, "caption": curves_mod.caption(
                    drawn, scrub_paths(b.baseline) if b.baseline else None, left)}
        for r in b.rows:
            page = views.method_pages[(b.slug, r.variant)]
            sections = []
            for sub, found in per_task.items():
                col = next(c for c in b.columns if c.key[0] == sub)
                e = r.entries.get(col.key)
                if e is None:
                    continue
                curve = None
                mine = [m for v, m in found.items() if v in (r.variant, b.baseline)]
                if r.variant in found:
                    name = f"figures/curves-{page[:-5]}-{board_mod.slugify(scrub_paths(sub))}.svg"
                    base = scrub_paths(b.baseline) if b.baseline else None
                    fig_plan.jobs.append((curves_mod.draw, (mine, base, out / name), [name]))
                    curve = {"src": name, "caption": curves_mod.caption(mine, base)}
                sections.append({
                    "subtask": scrub_paths(sub), "label": col.label, "metric": col.metric, "entry": e,
                    "task_href": task_pages[(b.slug, sub)], "curve": curve,
                    "cells": [{"seed": s, "href": f"cells/{cell_file(c)}"} for s, c in zip(e.seeds, e.cell_ids,
                                                                                           strict=True)],
                    "examples": [{"seed": s, "href": p} for s, p in method_examples.get((b.slug, sub, r.variant), [])],
                })
                for c in e.cell_ids:
                    info = views.cells.setdefault(str(c), {"examples": "", "curve": "", "method": page})
                    if curve and not per_cell_figs:
                        info["curve"] = curve["src"]
            head = SimpleNamespace(slug=b.slug, family=b.family, model_label=b.model_label,
                                   baseline=scrub_paths(b.baseline) if b.baseline else "")
            ctx = dict(title=f"{scrub_paths(r.variant)} · {b.family}", root="", board=head, row=r,
                       variant=scrub_paths(r.variant), sections=sections, **common)
            pages.append((page, ctx))
            views.n_method_pages += 1
    for i in range(0, len(pages), PAGES_PER_JOB):  # a few hundred pages per worker job, not one each
        chunk = pages[i:i + PAGES_PER_JOB]
        fig_plan.jobs.append((_write_pages, ("method.html", out, chunk), [p for p, _ in chunk]))
    for cid, page in cell_examples.items():
        views.cells.setdefault(cid, {"examples": "", "curve": "", "method": ""})["examples"] = page
    if per_cell_figs:
        for cid in sorted(with_curves):
            mc = curves_mod.method_curves(rows, "this cell", [cid])
            if mc is None:
                continue
            name = f"figures/cell-{cell_file(cid)[:-5]}.svg"
            fig_plan.jobs.append((curves_mod.draw, ([mc], None, out / name), [name]))
            views.cells.setdefault(cid, {"examples": "", "curve": "", "method": ""})["curve"] = name
    return views


def _cells_with_predictions(store_path, ids: set[str]) -> set[str]:
    """The cells among ``ids`` with a predictions file (a local store's folder listing; none where the
    folder cannot be listed, e.g. an object store: then no example pages)."""
    folder = Path(str(store_path)) / "predictions"
    try:
        return {p.stem for p in folder.iterdir() if p.suffix == ".parquet"} & ids
    except OSError:
        return set()


def _write_curves(frame: pd.DataFrame, out: Path, data: dict) -> bool:
    """The curve points as published: parquet always, CSV while small (in a worker)."""
    frame = frame.assign(**{c: frame[c].map(scrub_paths) for c in ("variant", "model", "subtask") if c in frame})
    frame.to_parquet(out / data["curves_parquet"], index=False)
    if "curves_csv" in data:
        frame.to_csv(out / data["curves_csv"], index=False)
    return True


def _write_pages(template: str, out: Path, pages: list[tuple[str, dict]]) -> bool:
    """Pages of one template (in a worker)."""
    from suite.reports.site import _env, _write

    tpl = _env().get_template(template)
    for name, ctx in pages:
        _write(out / name, tpl.render(**ctx))
    return True

