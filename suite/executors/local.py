"""The local executor: the cells one after the other, in this process, on the run's device."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from suite.executor import Executor
from suite.registry import register_executor
from suite.runner import CellResult, RunSettings, run_cell
from suite.sweep import Cell


@register_executor("local", kind="executor", summary="run cells one after the other in this process")
class LocalExecutor(Executor):
    def run(self, cells: Sequence[Cell], settings: RunSettings) -> Iterator[CellResult]:
        for cell in cells:
            yield run_cell(cell, settings)
