"""``suite scaling STORE``: fit the low-precision scaling law over a grid of sizes and budgets.

A thin command over suite.reports.scaling: it reads the store's pretraining cells, fits the
baseline's law and each recipe's parameter and data efficiency with bootstrap intervals over
seeds, prints the residuals, and, given speed-ups, the compute-optimal choice per recipe.
"""

from __future__ import annotations

import argparse
import math

from suite.errors import UserError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "scaling",
        help="fit L(N, D, P) = E + A/(N eff_N)^alpha + B/(D eff_D)^beta over a grid of model sizes, "
             "token budgets and training recipes",
        description="Fit the baseline's scaling law (E, A, alpha, B, beta) on its pretraining cells, then "
        "each recipe's parameter efficiency eff_N and data efficiency eff_D with the baseline's law held "
        "(Quartet's form), with bootstrap intervals over seeds and the residual at every grid point. "
        "With --speedup, the best model per recipe at each --flops budget and the speed-up each recipe "
        "needs to match BF16 there.",
        epilog="example:\n  suite scaling suite-results/ --speedup fp8-train=1.6,mxfp4-train=3 --flops 1e17,1e19",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("store", help="result store folder")
    p.add_argument("--baseline", default="bf16-train", help="the recipe whose law is fitted (default bf16-train)")
    p.add_argument("--tasks", help="comma-separated pretraining tasks to read (default: every task with the metric)")
    p.add_argument("--metric", default="val_loss", help="the loss to fit (default val_loss)")
    p.add_argument("--bootstrap", type=int, default=200, help="bootstrap draws over seeds (0: no intervals)")
    p.add_argument("--speedup", help="time per token of each recipe relative to the baseline's, as "
                   "recipe=factor pairs (fp8-train=1.6 is 1.6x faster)")
    p.add_argument("--flops", default="1e18", help="compute budgets in baseline FLOPs (6 N D) for --speedup, "
                   "comma-separated (default 1e18)")
    p.set_defaults(handler=main)


def parse_speedups(text: str | None) -> dict[str, float]:
    out: dict[str, float] = {}
    for part in (text or "").split(","):
        if not part.strip():
            continue
        name, sep, value = part.partition("=")
        try:
            factor = float(value)
        except ValueError:
            factor = math.nan
        if not sep or not name.strip() or not math.isfinite(factor) or factor <= 0:
            raise UserError(f"--speedup: '{part.strip()}' is not recipe=factor with a positive factor")
        out[name.strip()] = factor
    return out


def parse_budgets(text: str) -> list[float]:
    try:
        budgets = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        budgets = []
    if not budgets or not all(math.isfinite(b) and b > 0 for b in budgets):
        raise UserError(f"--flops: '{text}' is not a comma-separated list of positive numbers")
    return budgets


def main(args: argparse.Namespace) -> int:
    from suite.reports import loading, scaling
    from suite.reports.terminal import clean

    if args.bootstrap < 0 or args.bootstrap > 100_000:
        raise UserError(f"--bootstrap {args.bootstrap}: give 0 (no intervals) to 100000 draws")
    speedups = parse_speedups(args.speedup)
    budgets = parse_budgets(args.flops)
    _, cells, _ = loading.load_store(args.store)
    tasks = [t.strip() for t in args.tasks.split(",")] if args.tasks else None
    points, left_out = scaling.points_from_cells(cells, args.metric, tasks)
    recipes = {p.recipe for p in points}
    unknown = sorted(set(speedups) - recipes)
    if unknown:
        raise UserError(f"--speedup names {', '.join(unknown)}, which has no cells here; recipes: "
                        f"{', '.join(sorted(recipes))}")
    fit = scaling.fit_scaling(points, args.baseline, bootstrap=args.bootstrap)
    say = lambda text: print("\n".join(clean(line) for line in text.splitlines()))  # noqa: E731
    say(scaling.format_fit(fit, args.metric))
    if left_out:
        say(f"\nleft out: cells of {', '.join(left_out)} (not a named pretraining size, or no step count)")
    if speedups:
        say("\n" + scaling.format_compute(fit, speedups, budgets))
    return 0
