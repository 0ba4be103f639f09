"""The driver of a sweep: hands the cells to an executor, writes each record as it arrives, reports.

Only the driver writes the store, so every executor (local, Ray, SLURM) gets the same
resume and failure semantics: a record is written the moment its cell finishes, and an
interrupted or failed sweep keeps every record that arrived before. The one exception is
declared by the executor: a result that arrives without rows was written where its cell
ran (a SLURM job writes its own record so that the driver need not stay alive), and the
driver reports it without writing it again.

The driver also records the sweep (its cells, executor, options and job ids) in the
store's ``sweeps`` table, so ``suite status STORE`` can tell later what is done, failed or
outstanding, even for a sweep submitted with ``--no-wait``. Each call records under a name of
its own (the run id and random bits): run ids have one-second resolution, and two drivers
started in the same second must each keep their record.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from suite.app.executor import Executor
from suite.app.runner import CellResult, RunSettings, now
from suite.app.sweep import Cell
from suite.errors import UserError
from suite.faults import checkpoint
from suite.results.schema import STATUS_OK
from suite.results.store import ResultStore, new_sweep_record


@dataclass
class CellOutcome:
    """How a cell of this sweep ended, for the summary."""

    cell: Cell
    status: str
    error: str = ""
    primary: tuple[str, float] | None = None
    costs: dict[str, float] | None = None


def store_result(store: ResultStore, result: CellResult) -> None:
    """Write a cell's records: per-example records and its curve first, so an ok row never lacks them.

    A write that fails (a full disk, a store gone read-only) is tried once more; if it fails again
    the computed result is saved to a fallback folder, named, and the sweep stops with one
    message (exit 2): what was computed is never lost, and nothing runs into the same wall.
    """
    try:
        _write_all(store, result)
    except OSError as first:
        time.sleep(RETRY_PAUSE_S)
        try:
            _write_all(store, result)
        except OSError:
            kept = keep_unsaved(store, result)
            raise UserError(f"cannot write to the result store {store.uri} ({first.strerror or first}); "
                            f"the finished cell {result.cell_id} is kept in {kept}. Free space or fix the "
                            f"store's permissions, then copy that folder's files into the store (or run the "
                            f"sweep again)") from None


RETRY_PAUSE_S = 1.0


def _write_all(store: ResultStore, result: CellResult) -> None:
    if result.records is not None:
        store.write_predictions(result.cell_id, result.records)
    if result.curve is not None:
        store.write_curve(result.cell_id, result.curve)
    checkpoint("driver.records_written")
    store.write_cell(result.rows)


def keep_unsaved(store: ResultStore, result: CellResult) -> str:
    """Save a result the store would not take to a fallback folder (same layout as a store)."""
    import os
    import tempfile

    base = os.environ.get("SUITE_UNSAVED_DIR") or os.path.join(tempfile.gettempdir(), "suite-unsaved")
    fallback = ResultStore(os.path.join(base, f"{result.cell_id}-{now().replace(':', '')}"))
    _write_all(fallback, result)
    return str(fallback.root)


def sweep_manifest(cells: Sequence[Cell], executor: Executor, settings: RunSettings,
                   started_at: str) -> dict[str, Any]:
    """What ``suite status`` needs to know about a sweep: its cells and where they went."""
    options = executor.options
    return {
        "run_id": settings.run_id,
        "started_at": started_at,
        "executor": executor.name or type(executor).__name__,
        "options": dataclasses.asdict(options) if dataclasses.is_dataclass(options) else {},
        "waits": executor.waits,
        "cells": [{"cell_id": c.cell_id, "label": c.label, "task": c.task_name, "model": c.model,
                   "seed": c.seed} for c in cells],
        "engine": executor.describe(),
    }


def run_sweep(cells: Sequence[Cell], store: ResultStore, executor: Executor,
              settings: RunSettings) -> list[CellOutcome]:
    """Run ``cells`` on ``executor``; write and report each result as it arrives.

    On Ctrl-C (or any error) the executor's generator is closed, which cancels the cells
    still outstanding; every record that arrived before is already in the store. The
    sweep's manifest is written with its first result and again at the end (with the job
    ids the executor learnt); a sweep that stopped before any result (an executor that
    refused to start) leaves none, so ``suite status`` never reports cells nobody ran.
    """
    by_id = {cell.cell_id: cell for cell in cells}
    outcomes: list[CellOutcome] = []
    manifest = sweep_manifest(cells, executor, settings, now())
    record = new_sweep_record(settings.run_id)
    results = executor.run(list(cells), settings)
    finished = False
    try:
        for done, result in enumerate(results, 1):
            if done == 1:
                store.write_sweep(record, manifest | {"engine": executor.describe()})
            if result.rows:  # no rows: the cell's own job wrote its record (see the module doc)
                store_result(store, result)
                checkpoint("driver.cell_written")
            cell = by_id[result.cell_id]
            outcome = CellOutcome(cell, result.status, result.error, result.primary, result.costs)
            outcomes.append(outcome)
            trial = f", trial {cell.trial} on held-out training data" if cell.stage == "trial" else ""
            where = f"[{done}/{len(cells)}] {cell.shown_label} on {cell.task_name} ({cell.model}, seed {cell.seed}{trial})"
            if result.status != STATUS_OK:
                print(f"{where}: failed: {result.error}", file=sys.stderr)
            elif result.primary:
                print(f"{where}: {result.primary[0]} = {result.primary[1]:.4f}", file=sys.stderr)
            else:
                print(f"{where}: ok", file=sys.stderr)
        finished = True
    finally:
        close = getattr(results, "close", None)
        if close is not None:  # a generator: its cleanup cancels what is still outstanding
            close()
        if cells and (finished or outcomes):  # with the job ids: status can ask the cluster about them
            store.write_sweep(record, manifest | {"engine": executor.describe()})
    return outcomes
