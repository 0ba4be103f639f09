"""The Executor contract: where cells run. The driver writes the store; executors never do.

An executor takes the cells still to run and the run settings, and yields one
``CellResult`` per cell as each finishes (in any order). Local runs them one after the
other in this process; cluster executors (Ray, SLURM) register under their own names in
``suite.executors`` (or through the ``suite.executors`` entry-point group) and plug into
``suite run --executor NAME`` without touching the core.

Semantics every executor keeps: a cell that fails is yielded as a ``failed`` result, not
raised; a UserError (the user's input is wrong) propagates and stops the sweep; on
KeyboardInterrupt, outstanding cells are cancelled and finished results were already yielded.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:  # pragma: no cover
    from suite.runner import CellResult, RunSettings
    from suite.sweep import Cell


class Executor:
    """Base class of executor plugins; ``options`` come from the CLI (``--executor-opt k=v``)."""

    name: ClassVar[str] = ""
    kind: ClassVar[str] = "executor"

    def __init__(self, **options: Any):
        self.options = options

    def run(self, cells: Sequence[Cell], settings: RunSettings) -> Iterator[CellResult]:
        raise NotImplementedError
