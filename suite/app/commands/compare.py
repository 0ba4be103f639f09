"""``suite compare STORE``: the leaderboards in the terminal, significance marked.

A thin command: it reads the store, builds the same boards as the site (suite.reports.leaderboard)
and prints them laid out to the terminal's width (suite.reports.terminal), so the two always agree.
"""

from __future__ import annotations

import argparse
import shutil

from suite.app.commands.report import add_comparison_options, comparison_tasks
from suite.reports.terminal import can_encode, clean, format_boards


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "compare",
        help="compare methods against a baseline in the terminal, marking significant differences",
        description="Print, per task family and model, each method's mean ± 95% interval over seeds "
        "per task, its difference from the baseline with Holm-adjusted tests, and every failed cell. "
        "The tables fit the terminal width (COLUMNS), split into blocks of tasks where needed.",
    )
    p.add_argument("store", help="result store folder")
    add_comparison_options(p)
    p.add_argument("--width", type=int, default=None,
                   help="line width to fit (default: the terminal's, or COLUMNS)")
    p.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    from suite.errors import UserError
    from suite.reports import leaderboard, loading, variants

    tasks = comparison_tasks(args)
    width = args.width if args.width is not None else shutil.get_terminal_size((100, 24)).columns
    if width < 40:
        raise UserError(f"--width {width} is too narrow for a table; give 40 or more")
    store, cells, _ = loading.load_store(args.store)
    if cells.empty:
        raise UserError(f"the store at '{clean(args.store)}' holds only kernel timings; "
                        "use 'suite bench kernels --compare' for those")
    cells = loading.select_tasks(cells, tasks)
    boards = leaderboard.build_boards(cells, args.baseline, store.load_predictions, args.metric,
                                  args.alpha, args.store)
    chosen = variants.Baselines.parse(args.baseline)
    missing = [b for b in boards if b.baseline is None and dict(chosen.per_family).get(b.family)]
    if chosen.default is not None and not any(b.baseline == chosen.default for b in boards):
        missing = [b for b in boards if b.baseline is None]
    if missing:  # a baseline the user named that no table it applies to has
        b = missing[0]
        variants = sorted({r.variant for r in b.rows})
        raise UserError(f"no results for the baseline '{clean(chosen.named(b.family))}' in {clean(b.family)} on "
                        f"{clean(b.model_label)}; its methods: {', '.join(clean(v) for v in variants)}. "
                        f"Choose one with --baseline (family=method for one family)")
    print(format_boards(boards, unicode=can_encode("▲▼±Δ…"), width=width))
    return 0


