"""Named kill points for the fault-injection tests: a process stops dead at the point it is told.

``SUITE_FAULT=<point>`` makes the process that reaches ``checkpoint("<point>")`` exit at once
with ``FAULT_EXIT`` (no cleanup, no flush, as a kill would), so tests can show that a kill at
every step of a write, a compaction or a sweep loses nothing and counts nothing twice. With
the variable unset a checkpoint costs one dictionary lookup.
"""

from __future__ import annotations

import os

FAULT_EXIT = 77
POINTS = (
    "store.write.tmp_written",  # a record's temporary file is complete, not yet renamed into place
    "store.compact.part_written",  # the compacted part file is in place, the single files not yet removed
    "driver.records_written",  # a cell's predictions and curve are written, its record not yet
    "driver.cell_written",  # a cell's record is written, the next cell not yet started
)


def checkpoint(point: str) -> None:
    """Exit immediately when the environment asks to fault at ``point``."""
    wanted = os.environ.get("SUITE_FAULT")
    if wanted and wanted == point:
        os._exit(FAULT_EXIT)
