"""``suite export STORE --board NAME --format latex|markdown|csv``: one leaderboard as a paper table.

A thin command: it reads the store and builds the boards as ``suite compare`` does
(suite.reports.leaderboard), picks one, and writes it with suite.reports.export, so the numbers
are the site's and the terminal's.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from suite.app.commands.report import add_comparison_options, comparison_tasks

FORMATS = ("latex", "markdown", "csv")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="write one leaderboard as a LaTeX, Markdown or CSV table for a paper",
        description="Write one board (a task family on a model, as the site names it) as a table: per "
        "method its non-default arguments, learning rate, seeds, each task's mean ± 95% interval over "
        "seeds, and its difference from the baseline with the Holm-adjusted test; the caption states "
        "the protocol. LaTeX needs \\usepackage{booktabs}.",
    )
    p.add_argument("store", help="result store folder")
    p.add_argument("--board", required=True,
                   help="the board: a task family (where one model ran it), the site's board name "
                   "(glue-all-MiniLM-L6-v2-1a2b3c4d, with or without its hash), and /subtask for one "
                   "task's columns (glue/sst2)")
    p.add_argument("--format", choices=FORMATS, default="latex", help="table format (default: latex)")
    p.add_argument("-o", "--output", default=None, help="file to write (default: standard output)")
    p.add_argument("--statistic", choices=("mean", "median"), default="mean",
                   help="each task's score: the mean ± 95%% interval over seeds (default), or the median with "
                        "the range over seeds (as the LoRA paper reports)")
    p.add_argument("--costs", action="store_true",
                   help="add the board's cost columns (parameters, memory, time)")
    add_comparison_options(p)
    p.set_defaults(handler=main)


def check_output_file(path: str) -> Path:
    """Refuse an output the table cannot be written to before reading the store."""
    from suite.errors import UserError

    out = Path(path)
    if out.is_dir():
        raise UserError(f"-o '{out}' is a folder; give a file name for the table")
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise UserError(f"cannot write '{out}': the folder '{parent}' does not exist; create it or choose "
                        "another -o")
    if out.exists() and not os.access(out, os.W_OK):
        raise UserError(f"cannot write '{out}': the file is not writable; choose another -o or fix its permissions")
    try:
        with tempfile.NamedTemporaryFile(dir=parent, prefix=".suite-write-test-"):
            pass
    except OSError as exc:
        raise UserError(f"cannot write to the folder '{parent}': {exc.strerror or exc}; choose another -o "
                        "or fix its permissions") from None
    return out


def main(args: argparse.Namespace) -> int:
    from suite.errors import UserError
    from suite.reports import export, leaderboard, loading
    from suite.reports.terminal import clean

    tasks = comparison_tasks(args)
    out = check_output_file(args.output) if args.output else None
    store, cells, _ = loading.load_store(args.store)
    if cells.empty:
        raise UserError(f"the store at '{clean(args.store)}' holds only kernel timings: no board to export")
    cells = loading.select_tasks(cells, tasks)
    boards = leaderboard.build_boards(cells, args.baseline, store.load_predictions, args.metric,
                                      args.alpha, args.store)
    board, subtask = export.select_board(boards, args.board)
    text = export.render(board, args.format, subtask, args.costs, args.statistic)
    if out is None:
        sys.stdout.write(text)
    else:
        out.write_text(text, encoding="utf-8")
        print(f"wrote {clean(str(out))}: {board.family} on {board.model_label}"
              f"{f' ({subtask})' if subtask else ''}, {len(board.rows)} rows, {args.format}")
    return 0
