"""Reading a store for the reports: the cells and kernel rows, the files left out as unreadable,
the rows of the tasks asked for, and the ok and failed cells apart."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from suite.errors import UserError
from suite.reports.board import PredictionLoader
from suite.results.store import CELLS, ResultStore


@dataclass
class Skipped:
    """Store files that could not be read and were left out, so the site can name them."""

    root: Path
    paths: list[Path] = field(default_factory=list)

    def loader(self, store: ResultStore) -> PredictionLoader:
        """``store.load_predictions``, but recording the prediction files it had to skip."""

        def load(cell_ids: list[str]) -> pd.DataFrame:
            return store.load_predictions(cell_ids, skipped=self.paths)

        return load

    def as_list(self) -> list[str]:
        out = []
        for p in dict.fromkeys(self.paths):
            try:
                out.append(str(Path(p).relative_to(self.root)))
            except ValueError:
                out.append(str(p))
        return out


def load_store(store_path: str | Path) -> tuple[ResultStore, pd.DataFrame, pd.DataFrame]:
    """Read cells and kernel rows; a missing or empty store is a UserError (corrupt files are skipped)."""
    store, cells, kern, _ = load_store_report(store_path)
    return store, cells, kern


def load_store_report(store_path: str | Path) -> tuple[ResultStore, pd.DataFrame, pd.DataFrame, Skipped]:
    """``load_store`` plus the unreadable files it skipped (each also named on stderr)."""
    root = Path(store_path)
    if not root.exists():
        raise UserError(f"no result store at '{root}': run 'suite run ... --store {root}' first")
    if not root.is_dir():
        raise UserError(f"'{root}' is a file, not a result store folder")
    store = ResultStore(root)
    skipped = Skipped(root)
    cells = _load_table(store, CELLS, skipped)
    kern = _load_table(store, "kernels", skipped)
    if cells.empty and kern.empty:
        raise UserError(f"the result store at '{root}' holds no results: run "
                        f"'suite run --methods ... --tasks ... --store {root}' first")
    return store, cells, kern, skipped


def _load_table(store: ResultStore, table: str, skipped: Skipped) -> pd.DataFrame:
    """``ResultStore.load``, keeping the names of unreadable files for the overview page."""
    return store.load(table, skipped=skipped.paths)



# -- building ------------------------------------------------------------------------------


def truthy(series: pd.Series) -> pd.Series:
    return series.map(lambda v: bool(v) if v is not None and v == v else False)


def select_tasks(frame: pd.DataFrame, tasks: Iterable[str] | None) -> pd.DataFrame:
    """Keep rows of the named tasks: a family, "family:subtask" or a bare subtask."""
    if not tasks:
        return frame
    wanted = [t.strip() for t in tasks if t and t.strip()]
    mask = pd.Series(False, index=frame.index)
    for t in wanted:
        if ":" in t:
            fam, sub = t.split(":", 1)
            mask |= (frame["task"] == fam) & (frame["subtask"] == sub)
        else:
            mask |= (frame["task"] == t) | (frame["subtask"] == t)
    if not mask.any():
        known = sorted(set(frame["task"].dropna()) | {f"{a}:{b}" for a, b in
                       frame[["task", "subtask"]].dropna().itertuples(index=False) if b})
        raise UserError(f"no results for tasks {', '.join(wanted)} in this store; "
                        f"it has: {', '.join(known) or 'none'}")
    return frame[mask]


def ok_and_failed(frame: pd.DataFrame, where: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split a store's rows; an empty store or one with only failures is a UserError."""
    if frame.empty or "status" not in frame:
        raise UserError(f"the result store at '{where}' holds no results: run "
                        f"'suite run --methods ... --tasks ... --store {where}' first")
    ok = frame[frame["status"] == "ok"]
    failed = frame[frame["status"] != "ok"]
    if ok.empty:
        n = failed["cell_id"].nunique()
        errors = failed.drop_duplicates("cell_id")["error"].fillna("").astype(str)
        common = errors.value_counts().index[0] if len(errors) else ""
        raise UserError(f"all {n} cells in '{where}' failed, nothing to rank; most common "
                        f"error: {common[:300]!r}. Fix the cause and re-run the failed cells "
                        f"('suite run ... --store {where}' retries them)")
    return ok, failed


def parsed_recipes(texts: Iterable) -> dict[str, dict]:
    """Each distinct stored recipe (JSON text) as a dict; one that does not parse as an object reads
    as empty, so a hand-edited store cannot stop a report."""
    import json

    out: dict[str, dict] = {}
    for text in dict.fromkeys(t for t in texts if isinstance(t, str)):
        try:
            value = json.loads(text)
        except ValueError:
            value = {}
        out[text] = value if isinstance(value, dict) else {}
    return out
