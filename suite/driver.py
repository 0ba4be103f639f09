"""The driver of a sweep: hands the cells to an executor, writes each record as it arrives, reports.

Only the driver writes the store, so every executor (local, Ray, SLURM) gets the same
resume and failure semantics: a record is written the moment its cell finishes, and an
interrupted or failed sweep keeps every record that arrived before.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass

from suite.executor import Executor
from suite.results.schema import STATUS_OK
from suite.results.store import ResultStore
from suite.runner import CellResult, RunSettings
from suite.sweep import Cell


@dataclass
class CellOutcome:
    """How a cell of this sweep ended, for the summary."""

    cell: Cell
    status: str
    error: str = ""
    primary: tuple[str, float] | None = None
    costs: dict[str, float] | None = None


def store_result(store: ResultStore, result: CellResult) -> None:
    """Write a cell's records: per-example records and its curve first, so an ok row never lacks them."""
    if result.records is not None:
        store.write_predictions(result.cell_id, result.records)
    if result.curve is not None:
        store.write_curve(result.cell_id, result.curve)
    store.write_cell(result.rows)


def run_sweep(cells: Sequence[Cell], store: ResultStore, executor: Executor,
              settings: RunSettings) -> list[CellOutcome]:
    """Run ``cells`` on ``executor``; write and report each result as it arrives."""
    by_id = {cell.cell_id: cell for cell in cells}
    outcomes: list[CellOutcome] = []
    for done, result in enumerate(executor.run(list(cells), settings), 1):
        store_result(store, result)
        cell = by_id[result.cell_id]
        outcome = CellOutcome(cell, result.status, result.error, result.primary, result.costs)
        outcomes.append(outcome)
        where = f"[{done}/{len(cells)}] {cell.spec.label} on {cell.task_name} ({cell.model}, seed {cell.seed})"
        if result.status != STATUS_OK:
            print(f"{where}: failed: {result.error}", file=sys.stderr)
        elif result.primary:
            print(f"{where}: {result.primary[0]} = {result.primary[1]:.4f}", file=sys.stderr)
        else:
            print(f"{where}: ok", file=sys.stderr)
    return outcomes
