"""The example browser: a cell's per-example predictions beside the gold answer, and two methods side
by side on the same examples.

Which pages exist, and why: a store of a few cells gets one example page per cell that stored
predictions (``examples/cell-<id>.html``); a larger one (more than ``CELL_PAGES_MAX`` such
cells: the 10,000-cell benchmark, a large sweep) gets one page per method and task, showing
one seed (the lowest that the baseline shares), so the number of pages follows the rows of the
boards, not the cells. Either way a page renders at most ``MAX_ROWS`` examples (disagreements
with the other method first) and links the full CSV of the shown cell's predictions.

Side by side: the two cells' predictions joined on (split, example_id); the four counts of
(this method right or wrong) x (the other right or wrong) are the McNemar table of the pair.
Correct and incorrect exist only where the stored ``correct`` column is 0/1 (a regression
task stores a signed error there: the page shows it, with no correct/incorrect toggle).

Predictions are model output: every value reaches the page through the autoescaping
templates, and generated text is cut to ``MAX_TEXT`` characters on the page (never in the CSV).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd

MAX_ROWS = 500  # examples rendered on one page; the CSV has every one
MAX_TEXT = 2000  # characters of a generation shown on the page
CELL_PAGES_MAX = 100  # cells with predictions up to which every cell gets its own example page
FOLDER = "examples"
CSV_FOLDER = "data/predictions"
TEXT_COLUMNS = ("generated", "prediction_strict")  # answer-generation columns shown when stored
BOTH_RIGHT, ONLY_A, ONLY_B, BOTH_WRONG = "both right", "only this right", "only other right", "both wrong"
ORDER = {ONLY_A: 0, ONLY_B: 1, BOTH_WRONG: 2, BOTH_RIGHT: 3}


@dataclass
class Shown:
    """A cell an example page shows: its method, seed, page and CSV links."""

    cell_id: str
    variant: str
    seed: object
    cell_href: str  # relative to the site root
    csv: str  # relative to the site root


@dataclass
class View:
    """One example page: a cell, and the cell of another method (the baseline) on the same seed."""

    page: str  # relative to the site root
    board_slug: str
    board_label: str
    subtask: str
    task_href: str
    method_href: str
    a: Shown
    b: Shown | None = None
    seeds_a: list = field(default_factory=list)  # every (seed, cell id) of a with predictions (count table)
    seeds_b: dict = field(default_factory=dict)  # seed -> cell id of b


def is_binary(correct: pd.Series) -> bool:
    """Whether ``correct`` says right/wrong (0/1), not a score such as a regression's signed error."""
    values = pd.to_numeric(correct, errors="coerce").dropna().unique()
    return len(values) > 0 and set(values.tolist()) <= {0.0, 1.0}


def four_counts(a: pd.DataFrame, b: pd.DataFrame) -> dict[str, int]:
    """The McNemar table of two cells on their shared examples (joined on split and example_id)."""
    return _counts(_keys(a), _right(a), _unique(_keys(b)), _right(b))


def _counts(ka: pd.Index, ra: np.ndarray, kb: pd.Index, rb: np.ndarray) -> dict[str, int]:
    """``four_counts`` from each cell's keys (``kb`` unique) and right/wrong, computed once per cell."""
    pos = kb.get_indexer(ka)
    hit = pos >= 0
    ca, cb = ra[hit], rb[pos[hit]]
    return {BOTH_RIGHT: int((ca & cb).sum()), ONLY_A: int((ca & ~cb).sum()), ONLY_B: int((~ca & cb).sum()),
            BOTH_WRONG: int((~ca & ~cb).sum())}


def _keys(frame: pd.DataFrame) -> pd.Index:
    """(split, example_id) as one text key per row: ids may be numbers in one file and text in another."""
    split = frame["split"].fillna("").astype(str) if "split" in frame else pd.Series("", index=frame.index)
    return pd.Index(split.to_numpy(dtype=object) + "\x1f" + frame["example_id"].astype(str).to_numpy(dtype=object))


def _pairs(a: pd.DataFrame, b: pd.DataFrame) -> np.ndarray:
    """For each row of ``a``, the row of ``b`` on the same example (its first, if stored twice), or -1."""
    return _unique(_keys(b)).get_indexer(_keys(a))


def _unique(kb: pd.Index) -> pd.Index:
    """Keys of the other cell made unique: a repeated example's first row answers, the others match nothing."""
    if kb.is_unique:
        return kb
    return pd.Index([k if not d else f"\x00{i}" for i, (k, d) in enumerate(zip(kb, kb.duplicated(), strict=True))])


def _right(frame: pd.DataFrame) -> np.ndarray:
    return pd.to_numeric(frame["correct"], errors="coerce").fillna(0).to_numpy() > 0.5


def join(a: pd.DataFrame, b: pd.DataFrame) -> pd.DataFrame:
    """Rows of ``a`` that ``b`` shares (same split and example_id), ``b``'s answer columns beside them
    (suffix ``_b``), and the case of the pair."""
    pos = _pairs(a, b)
    hit = pos >= 0
    out = _keyed(a).iloc[np.flatnonzero(hit)].reset_index(drop=True)
    rows = pos[hit]
    for col in b.columns:
        if col not in ("split", "example_id", "label", "cell_id"):
            out[f"{col}_b"] = b[col].to_numpy()[rows]
    ca, cb = _right(a)[hit], _right(b)[rows]
    out["case"] = np.select([ca & cb, ca, cb], [BOTH_RIGHT, ONLY_A, ONLY_B], BOTH_WRONG)
    return out


def _keyed(frame: pd.DataFrame) -> pd.DataFrame:
    out = frame.copy()
    if "split" not in out:
        out["split"] = ""
    out["split"] = out["split"].fillna("").astype(str)
    out["example_id"] = out["example_id"].astype(str)  # ids may be numbers in one file, text in another
    return out.drop(columns=[c for c in ("cell_id",) if c in out])


def ordered(frame: pd.DataFrame, paired: bool, binary: bool, limit: int | None = None) -> pd.DataFrame:
    """The page's order: disagreements first (this method right, then the other right), then both
    wrong, then both right; one cell alone: wrong answers first. Ties by split and example id.
    ``limit``: only the first rows of that order (one sort, then a take)."""
    ids = frame["example_id"].astype(str).to_numpy(dtype=object)
    num = pd.to_numeric(frame["example_id"], errors="coerce").to_numpy(dtype=float)
    split = frame["split"].astype(str).to_numpy(dtype=object)
    if paired:
        key = frame["case"].map(ORDER).to_numpy()
    elif binary:
        key = _right(frame).astype(int)
    else:
        key = np.zeros(len(frame), dtype=int)
    order = np.lexsort((ids, num, split, key))  # the last key sorts first
    return frame.iloc[order[:limit] if limit is not None else order]


def _text(value, limit: int = MAX_TEXT) -> tuple[str, bool]:
    """A stored value as display text (control characters kept out), and whether it was cut."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "", False
    if isinstance(value, float):
        return f"{value:.6g}", False
    text = _scrub_text(str(value))
    if not text.isprintable():  # control characters (a terminal escape in a generation) never reach the page
        text = "".join(c if c.isprintable() or c in "\n\t" else "\ufffd" for c in text)
    return (text[:limit], True) if len(text) > limit else (text, False)


def _scrub_text(text: str) -> str:
    """Model output may name local folders (a prompt with a path, a hostile generation): published without."""
    from suite.reports.format import scrub_paths

    return scrub_paths(text) if "/" in text or "~" in text else text


def public_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """A cell's predictions as published in its CSV: every text column with local paths removed."""
    out = frame.copy()
    for col in out.columns:
        if out[col].dtype == object or pd.api.types.is_string_dtype(out[col]):
            out[col] = out[col].map(lambda v: _scrub_text(v) if isinstance(v, str) else v)
    return out


def page_rows(frame: pd.DataFrame, paired: bool, binary: bool, limit: int = MAX_ROWS) -> list[SimpleNamespace]:
    """The first ``limit`` rows of the page, as plain text fields for the template."""
    out = []
    for r in frame.head(limit).to_dict("records"):
        gen, cut = _text(r.get("generated"))
        gen_b, cut_b = _text(r.get("generated_b")) if paired else ("", False)
        row = {"split": _text(r.get("split"))[0], "id": _text(r.get("example_id"))[0],
               "label": _text(r.get("label"))[0], "prediction": _text(r.get("prediction"))[0],
               "strict": _text(r.get("prediction_strict"))[0], "generated": gen, "cut": cut,
               "correct": _state(r.get("correct"), binary),
               "score": _text(r.get("correct"))[0]}
        if paired:
            row.update(prediction_b=_text(r.get("prediction_b"))[0], strict_b=_text(r.get("prediction_strict_b"))[0],
                       generated_b=gen_b, cut_b=cut_b, correct_b=_state(r.get("correct_b"), binary), case=r["case"])
        row["search"] = " ".join(str(v) for k, v in row.items() if k in (
            "split", "id", "label", "prediction", "strict", "generated", "prediction_b", "strict_b", "generated_b")
                                 ).lower()
        out.append(SimpleNamespace(**row))  # jinja reads an attribute first: a namespace answers at once
    return out


def _state(value, binary: bool) -> str:
    if not binary:
        return ""
    try:
        return "correct" if float(value) > 0.5 else "incorrect"
    except (TypeError, ValueError):
        return "incorrect"


def plan_views(boards: Sequence, task_pages: dict, method_pages: dict, cell_file, has_predictions: set[str],
               scrub) -> tuple[list[View], dict[str, str], dict[tuple[str, str, str], list[tuple[object, str]]]]:
    """The example pages of a render: (views, cell id -> its example page, (board, subtask, variant) ->
    [(seed, page)] for the method pages). Per cell where the store is small, else per method and task."""
    from suite.reports import board as board_mod

    per_cell = len(has_predictions) <= CELL_PAGES_MAX
    views: list[View] = []
    cell_page: dict[str, str] = {}
    method_links: dict[tuple[str, str, str], list[tuple[object, str]]] = {}
    for b in boards:
        for sub in dict.fromkeys(c.key[0] for c in b.columns):
            col = next(c for c in b.columns if c.key[0] == sub)
            entries = {r.variant: r.entries[col.key] for r in b.rows if col.key in r.entries}
            base = entries.get(b.baseline) if b.baseline else None
            base_seeds = ({s: c for s, c in zip(base.seeds, base.cell_ids, strict=True) if c in has_predictions}
                          if base else {})
            href = task_pages[(b.slug, sub)]
            for variant, e in entries.items():
                mine = [(s, c) for s, c in zip(e.seeds, e.cell_ids, strict=True) if c in has_predictions]
                if not mine:
                    continue
                mine.sort(key=lambda x: (x[0] not in base_seeds, _seed_key(x[0])))
                other = base_seeds if variant != b.baseline else {}
                chosen = mine if per_cell else mine[:1]
                for seed, cid in chosen:
                    stem = (f"cell-{cell_file(cid)[:-5]}" if per_cell else
                            f"method-{board_mod.slugify(f'{href[5:-5]}-{scrub(variant)}', key=f'{b.slug}|{sub}|{variant}')}")
                    page = f"{FOLDER}/{stem}.html"
                    if per_cell and cid in cell_page:  # one cell on two boards: its first page
                        page = cell_page[cid]
                    else:
                        b_cell = other.get(seed)
                        views.append(View(
                            page, b.slug, f"{b.family} · {b.model_label}", scrub(sub), href,
                            method_pages.get((b.slug, variant), ""),
                            _shown(cid, variant, seed, cell_file, scrub),
                            _shown(b_cell, b.baseline, seed, cell_file, scrub) if b_cell else None,
                            seeds_a=mine, seeds_b=dict(other)))
                    method_links.setdefault((b.slug, sub, variant), []).append((seed, page))
                    if per_cell:
                        cell_page.setdefault(cid, page)
                if not per_cell:
                    for _, cid in mine:
                        cell_page.setdefault(cid, method_links[(b.slug, sub, variant)][0][1])
    return views, cell_page, method_links


def _seed_key(seed) -> tuple:
    try:
        return (0, float(seed), "")
    except (TypeError, ValueError):
        return (1, 0.0, str(seed))


def _shown(cid: str, variant: str, seed, cell_file, scrub) -> Shown:
    stem = cell_file(cid)[:-5]
    return Shown(cid, scrub(variant), seed, f"cells/{cell_file(cid)}", f"{CSV_FOLDER}/{stem}.csv")


def write_views(views: Sequence[View], store_path: str, out: Path, common: dict) -> bool:
    """Render a group of example pages and the CSV of each shown cell (in a worker)."""
    from suite.reports.site import _env, _write
    from suite.results.store import ResultStore

    ids = sorted({v.a.cell_id for v in views} | {v.b.cell_id for v in views if v.b}
                 | {c for v in views if v.b for c in v.seeds_b.values()} | {c for v in views for _, c in v.seeds_a})
    try:
        preds = ResultStore(store_path).load_predictions(ids)
    except Exception:  # noqa: BLE001 - unreadable files: the pages say the cell has no predictions
        preds = pd.DataFrame()
    by_cell = {str(k): g.drop(columns="cell_id") for k, g in preds.groupby("cell_id", sort=False)} \
        if not preds.empty and "cell_id" in preds else {}
    binary = {c for c, f in by_cell.items() if is_binary(f["correct"])}  # each cell's keys and answers, once
    keys = {c: _unique(_keys(by_cell[c])) for c in binary}
    right = {c: _right(by_cell[c]) for c in binary}
    tpl = _env().get_template("examples.html")
    written_csv: set[str] = set()
    for v in views:
        a = by_cell.get(v.a.cell_id)
        b = by_cell.get(v.b.cell_id) if v.b else None
        for shown, frame in ((v.a, a), (v.b, b)):
            if shown is not None and frame is not None and shown.csv not in written_csv:
                public_frame(frame).to_csv(out / shown.csv, index=False)
                written_csv.add(shown.csv)
        per_seed = []
        for seed, cid in v.seeds_a:
            other = v.seeds_b.get(seed)
            if cid in binary and other in binary:
                per_seed.append({"seed": seed, "counts": _counts(keys[cid], right[cid], keys[other], right[other]),
                                 "shown": cid == v.a.cell_id})
        _write(out / v.page, tpl.render(**context(v, a, b), per_seed=per_seed, root="../", **common))
    return True


def context(v: View, a: pd.DataFrame | None, b: pd.DataFrame | None) -> dict:
    """The template's context of one example page."""
    if a is None:
        a = pd.DataFrame(columns=["split", "example_id", "prediction", "label", "correct"])
    binary = is_binary(a["correct"]) and (b is None or is_binary(b["correct"]))
    paired = b is not None and binary
    frame = join(a, b) if paired else _keyed(a)
    counts = {k: int((frame["case"] == k).sum()) for k in ORDER} if paired else {}
    rows = page_rows(ordered(frame, paired, binary, MAX_ROWS), paired, binary)
    columns = {c: c in a for c in TEXT_COLUMNS}
    title = f"{v.a.variant} · {v.subtask or v.board_label} · examples"
    return dict(title=title, v=v, rows=rows, n_total=len(frame), cap=MAX_ROWS, paired=paired, binary=binary,
                counts=counts, order=list(ORDER), columns=columns, n_a=len(a), n_b=0 if b is None else len(b),
                max_text=MAX_TEXT)
