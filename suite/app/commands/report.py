"""``suite report STORE -o SITE``: render a result store into a static leaderboard site."""

from __future__ import annotations

import argparse

COMPACT_HINT = 500  # single-cell files from which reading them dominates a render


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report",
        help="render a result store into a static HTML leaderboard site",
        description="Render STORE into a self-contained static site (no CDN; opens from file:// "
        "and publishes to any static host, e.g. GitHub Pages), with the store's rows as CSV and "
        "parquet under data/. Corrupted result files are named and skipped. The output folder is "
        "checked for writability first; files a previous render wrote there and this one does "
        "not are removed (other files are left alone).",
    )
    p.add_argument("store", help="result store folder (what 'suite run --store' wrote)")
    p.add_argument("-o", "--out", default="site", help="output folder for the site (default: site)")
    p.add_argument("--force", action="store_true",
                   help="write the site into a folder that holds other files (never deleted)")
    add_comparison_options(p)
    p.set_defaults(handler=main)


def add_comparison_options(p: argparse.ArgumentParser) -> None:
    """Options shared by ``suite report`` and ``suite compare``, so both read a store alike."""
    p.add_argument("--baseline", default=None,
                   help="method variant the others are tested against: one for every task family "
                   "(lora), or one per family (glue=lora,lm=bf16-train). Default per family: the "
                   "baseline its task declares, else bf16-train where training recipes are ranked, "
                   "else lora; a table without its baseline's row has no tests")
    p.add_argument("--tasks", default=None, help="only these tasks: comma-separated families "
                   "('glue'), family:subtask ('glue:sst2') or subtasks")
    p.add_argument("--metric", default=None, help="rank by this metric instead of each task's primary one")
    p.add_argument("--alpha", type=float, default=0.05,
                   help="significance level for the marks, after Holm correction (default: 0.05)")


def comparison_tasks(args: argparse.Namespace) -> list[str] | None:
    """Validate the shared options; return the task filter (None: every task)."""
    from suite.errors import UserError

    if not 0 < args.alpha < 1:
        raise UserError(f"--alpha must lie between 0 and 1, got {args.alpha}")
    return [t for t in (args.tasks or "").split(",") if t.strip()] or None


def main(args: argparse.Namespace) -> int:
    from suite.reports.site import render_site

    tasks = comparison_tasks(args)
    result = render_site(args.store, args.out, baseline=args.baseline, alpha=args.alpha,
                         metric=args.metric, tasks=tasks, force=args.force)
    print(f"wrote {result.out / 'index.html'}: {result.n_cells} ok cells, {result.n_failed} failed, "
          f"{result.n_pages} pages, {result.n_figures} figures in {result.seconds:.1f} s")
    if result.single_files >= COMPACT_HINT:
        print(f"note: the store holds {result.single_files} single-cell files; 'suite store compact "
              f"{args.store}' folds them into one part file and makes the next render faster")
    if result.removed:
        print(f"removed {len(result.removed)} stale file(s) a previous render left in {result.out}")
    missing = [f"{b.family} · {b.model}" for b in result.boards if b.baseline is None]
    if missing:
        print(f"note: no baseline row in {', '.join(missing)}: no significance marks there "
              "(choose one with --baseline family=method)")
    return 0
