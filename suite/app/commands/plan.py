"""``suite plan STORE --effect 0.5``: how many seeds a comparison needs, from the variance in the store.

For each task, model and method it reads the primary metric per seed (spread over seeds; with
a single seed, the evaluation set's sampling spread, a lower bound) and prints the seeds per
method a two-sample t-test needs to detect a difference of ``--effect`` (in the units the
leaderboard shows: points for accuracy-like metrics) at ``--alpha`` with ``--power``, and the
smallest difference the seeds already run can detect. See suite.reports.planning for the statistics.
"""

from __future__ import annotations

import argparse
import math


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plan", help="seeds a comparison needs to detect an effect, from the store's variance",
                       description="Seeds per method needed to detect a difference of --effect between two "
                                   "methods (two-sided t-test over seeds), and the smallest difference the "
                                   "seeds in the store can detect.")
    p.add_argument("store", help="result store folder")
    p.add_argument("--effect", type=float, required=True,
                   help="difference to detect, in the leaderboard's units (points for accuracy-like metrics)")
    p.add_argument("--alpha", type=float, default=0.05, help="significance level (default 0.05)")
    p.add_argument("--power", type=float, default=0.8, help="probability of detecting the effect (default 0.8)")
    p.add_argument("--tasks", default=None, help="only these tasks: families, family:subtask or subtasks")
    p.set_defaults(handler=main)


def plan_rows(cells, predictions, effect: float, alpha: float, power: float) -> list[dict]:
    """One row per (task, model, method): its spread, seeds needed for ``effect``, detectable effect now."""
    from suite.reports.format import display_scale
    from suite.reports.planning import detectable_effect, example_spread, seed_spread, seeds_needed

    ok = cells[(cells["status"] == "ok") & cells["is_primary"].fillna(False).astype(bool)]
    rows = []
    for (task, subtask, model, variant), group in ok.groupby(["task", "subtask", "model", "variant"], sort=True):
        metric = str(group["metric"].iloc[0])
        scale = display_scale(metric)
        scores = [float(v) * scale for v in group.groupby("seed")["value"].mean()]
        spread = seed_spread(scores)
        if spread is None:
            ids = list(group["cell_id"].unique())
            frame = predictions(ids)
            if not frame.empty and "correct" in frame:
                spread = example_spread([float(v) * scale for v in frame["correct"]], seeds=len(scores))
        name = f"{task}:{subtask}" if subtask else task
        if spread is None:
            rows.append({"task": name, "model": model, "method": variant, "metric": metric, "seeds": len(scores),
                         "sigma": math.nan, "source": "-", "needed": None, "detectable": math.nan})
            continue
        rows.append({"task": name, "model": model, "method": variant, "metric": metric, "seeds": len(scores),
                     "sigma": spread.sigma, "source": spread.source,
                     "needed": seeds_needed(effect, spread.sigma, alpha, power),
                     "detectable": detectable_effect(spread.sigma, len(scores), alpha, power)})
    return rows


def main(args: argparse.Namespace) -> int:
    from suite.errors import UserError
    from suite.reports import leaderboard

    if not (math.isfinite(args.effect) and args.effect > 0):
        raise UserError(f"--effect {args.effect} must be a positive difference, e.g. 0.5 (points)")
    store, cells, _ = leaderboard.load_store(args.store)
    if cells.empty:
        raise UserError(f"the store at '{args.store}' holds no training results to plan from")
    tasks = [t for t in (args.tasks or "").split(",") if t.strip()] or None
    cells = leaderboard.select_tasks(cells, tasks)
    rows = plan_rows(cells, store.load_predictions, args.effect, args.alpha, args.power)
    header = ["task", "model", "method", "seeds", "spread (sd)", "from", f"seeds for {args.effect:g}",
              "detectable now"]
    body = [[r["task"], r["model"], r["method"], str(r["seeds"]),
             "-" if math.isnan(r["sigma"]) else f"{r['sigma']:.3g}", r["source"],
             "-" if r["needed"] is None else str(r["needed"]) + ("+" if r["source"] == "examples" else ""),
             "-" if not math.isfinite(r["detectable"]) else f"{r['detectable']:.3g}"] for r in rows]
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]
    for line in [header, ["-" * w for w in widths], *body]:
        print("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip())
    print(f"\ntwo-sided two-sample t-test over seeds, alpha {args.alpha:g}, power {args.power:g}; 'seeds' spread "
          f"is measured over seeds, 'examples' is the evaluation set's sampling spread of a single seed, a "
          f"lower bound (so the seeds shown with + are a lower bound too)")
    return 0
