"""The local executor: the cells one after the other, in this process, on the run's device."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from suite.app.executor import Executor
from suite.registry import register_executor

if TYPE_CHECKING:  # pragma: no cover
    from suite.app.runner import CellResult, RunSettings
    from suite.app.sweep import Cell


@register_executor("local", kind="executor", summary="run cells one after the other in this process")
class LocalExecutor(Executor):
    def run(self, cells: Sequence[Cell], settings: RunSettings) -> Iterator[CellResult]:
        from suite.app.runner import (
            run_cell,  # lazily: listing executors must not load pandas or torch
        )

        for cell in cells:
            yield run_cell(cell, settings)
