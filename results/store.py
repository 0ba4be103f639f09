"""The parquet result store: atomic writes, tolerant reads, resume by cell id.

Layout under the store root::

    cells/<cell_id>.parquet        one file per finished cell (ok or failed)
    cells/part-<hash>.parquet      compacted cells (many cells per file, see ``compact``)
    predictions/<cell_id>.parquet  per-example predictions of a cell
    curves/<cell_id>.parquet       a cell's training curve (step, metric, value, split)
    <table>/<name>.parquet         other tables (e.g. ``kernels``)

Every file is written to a temporary name in the same folder and renamed into place, so
a process killed at any moment leaves complete files or ignorable ``.tmp`` files. A
corrupted file is named in a warning and skipped; the rest of the store still reads.
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from suite.errors import UserError
from suite.results.schema import COLUMNS, SCHEMA_VERSION, STATUS_OK

CELLS = "cells"
PREDICTIONS = "predictions"
CURVES = "curves"


def _atomic_write_parquet(frame: pd.DataFrame, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    frame.to_parquet(tmp, index=False)
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return path


def _read_files(files: Iterable[Path], warn: bool = True) -> tuple[list[pd.DataFrame], list[Path]]:
    frames, bad = [], []
    for file in files:
        try:
            frames.append(pd.read_parquet(file))
        except Exception as exc:  # a corrupted file must not hide the rest of the store
            bad.append(file)
            if warn:
                print(f"warning: skipping unreadable result file {file}: {exc}", file=sys.stderr)
    return frames, bad


class ResultStore:
    """A folder of parquet files holding results; safe against kills and concurrent readers."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    # -- writing --------------------------------------------------------------------------
    def write_cell(self, rows: list[dict]) -> Path:
        """Write all rows of one cell (same ``cell_id``) atomically, replacing an older record."""
        if not rows:
            raise ValueError("a cell record needs at least one row")
        cell_id = rows[0]["cell_id"]
        frame = pd.DataFrame(rows)
        for column in COLUMNS:
            if column not in frame:
                frame[column] = None
        frame["schema_version"] = SCHEMA_VERSION
        frame = frame[COLUMNS + [c for c in frame.columns if c not in COLUMNS]]
        return _atomic_write_parquet(frame, self.root / CELLS / f"{cell_id}.parquet")

    def write_predictions(self, cell_id: str, frame: pd.DataFrame) -> Path:
        frame = frame.copy()
        frame.insert(0, "cell_id", cell_id)
        return _atomic_write_parquet(frame, self.root / PREDICTIONS / f"{cell_id}.parquet")

    def write_curve(self, cell_id: str, frame: pd.DataFrame) -> Path:
        frame = frame.copy()
        frame.insert(0, "cell_id", cell_id)
        return _atomic_write_parquet(frame, self.root / CURVES / f"{cell_id}.parquet")

    def load_curves(self, cell_ids: Iterable[str] | None = None) -> pd.DataFrame:
        """Training curves of the given cells (all when None), long form with a cell_id column."""
        files = self.files(CURVES) if cell_ids is None else \
            [f for f in (self.root / CURVES / f"{c}.parquet" for c in cell_ids) if f.exists()]
        frames, _ = _read_files(files)
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

    def write_table(self, table: str, frame: pd.DataFrame, name: str | None = None) -> Path:
        """Append a batch of rows to another table (e.g. kernel timings) as one new file."""
        if table in (CELLS, PREDICTIONS, CURVES):
            raise ValueError(f"use write_cell / write_predictions / write_curve for '{table}'")
        name = name or f"{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}"
        return _atomic_write_parquet(frame, self.root / table / f"{name}.parquet")

    def compact(self) -> int:
        """Merge single-cell files into one part file, so large stores read fast. Returns cells merged.

        The part file is renamed into place before the single files are removed; a kill in
        between leaves duplicates, which ``load`` resolves (newest record of a cell wins).
        """
        folder = self.root / CELLS
        singles = sorted(p for p in folder.glob("*.parquet") if not p.name.startswith("part-"))
        if len(singles) < 2:
            return 0
        frames, _ = _read_files(singles)
        if not frames:
            return 0
        merged = pd.concat(frames, ignore_index=True)
        digest = hashlib.sha1("".join(p.name for p in singles).encode()).hexdigest()[:12]
        _atomic_write_parquet(merged, folder / f"part-{digest}.parquet")
        for p in singles:
            p.unlink(missing_ok=True)
        return len(singles)

    # -- reading --------------------------------------------------------------------------
    def files(self, table: str = CELLS) -> list[Path]:
        folder = self.root / table
        return sorted(folder.glob("*.parquet")) if folder.is_dir() else []

    def load(self, table: str = CELLS, warn: bool = True, skipped: list[Path] | None = None) -> pd.DataFrame:
        """One table as a DataFrame; unreadable files are warned about and appended to ``skipped``."""
        frames, bad = _read_files(self.files(table), warn=warn)
        if skipped is not None:
            skipped.extend(bad)
        frames = [f for f in frames if not f.empty]
        if not frames:
            return pd.DataFrame(columns=COLUMNS if table == CELLS else None)
        frame = pd.concat(frames, ignore_index=True)
        if table == CELLS and "finished_at" in frame:
            # The newest record of each cell wins (a --force re-run, or a half-done compaction).
            newest = frame.groupby("cell_id")["finished_at"].transform("max")
            frame = frame[frame["finished_at"] == newest].reset_index(drop=True)
        return frame

    def ok_cell_ids(self) -> set[str]:
        frame = self.load(warn=False)
        if frame.empty:
            return set()
        return set(frame.loc[frame["status"] == STATUS_OK, "cell_id"].unique())

    def load_predictions(self, cell_ids: Iterable[str] | None = None,
                         skipped: list[Path] | None = None) -> pd.DataFrame:
        if cell_ids is None:
            files = self.files(PREDICTIONS)
        else:
            files = [self.root / PREDICTIONS / f"{c}.parquet" for c in cell_ids]
            files = [f for f in files if f.exists()]
        frames, bad = _read_files(files)
        if skipped is not None:
            skipped.extend(bad)
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def load(path: str | os.PathLike, table: str = CELLS) -> pd.DataFrame:
    """Read a result store into a long-form DataFrame (one row per cell per metric)."""
    root = Path(path)
    if not root.exists():
        raise UserError(f"no result store at '{root}': run 'suite run ... --store {root}' first")
    return ResultStore(root).load(table)
