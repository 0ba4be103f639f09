"""``suite store compact STORE``: fold a store's one-file-per-cell records into one part file.

``suite run`` writes one file per finished cell (so concurrent writers never collide) and
compacts at its end; a store filled by ``--no-wait`` jobs, by cluster workers or by an
interrupted run is left as thousands of small files, which every reader (``suite report``,
``suite compare``) then opens one by one. This command exposes ``ResultStore.compact()``:
safe beside running writers and other compactions, and it never deletes a file it could
not read (see ``suite.results.store``).
"""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "store",
        help="maintain a result store (compact its per-cell files for fast reads)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    c = actions.add_parser("compact", help="fold the per-cell files into one part file; the "
                           "results read back identical")
    c.add_argument("store", help="result store folder or URI")
    c.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    from suite.errors import UserError
    from suite.results.store import CELLS, ResultStore

    store = ResultStore(args.store)
    if not store.exists():
        raise UserError(f"no result store at '{args.store}': nothing to compact")
    before = len(store.files(CELLS))
    try:
        folded = store.compact()
    except OSError as exc:
        raise UserError(f"cannot compact the result store {store.uri}: {exc.strerror or exc} "
                        "(is it writable, with free space?)") from None
    after = len(store.files(CELLS))
    if folded:
        print(f"compacted {store.uri}: {folded} cell files folded into one part file "
              f"({before} -> {after} files)")
    else:
        print(f"{store.uri}: nothing to compact ({before} cell file{'s' if before != 1 else ''})")
    return 0
