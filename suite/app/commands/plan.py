"""``suite plan STORE --effect 0.5``: how many seeds a comparison needs, from the variance in the store.

For each task, model and method it reads the primary metric per seed (spread over seeds; with
a single seed, the evaluation set's sampling spread, a lower bound) and prints the seeds per
method a two-sample t-test needs to detect a difference of ``--effect`` at ``--alpha`` with
``--power``, and the smallest difference the seeds already run can detect. See
suite.reports.planning for the statistics.

The effect is in each metric's display unit (suite.reports.format.display_scale: points for
accuracy-like fractions, the stored value otherwise), so one number cannot mean the same thing
for accuracy and a loss: a bare ``--effect`` is taken only when every planned metric shares one
unit, and ``--effect accuracy=0.5,val_loss=0.02`` names one per metric otherwise.
"""

from __future__ import annotations

import argparse
import math

EFFECT_HELP = ("difference to detect, in each metric's display unit (points, i.e. x100, for accuracy-like "
               "metrics; the stored value otherwise): a positive number, taken when every planned metric "
               "shares one unit, or metric=value pairs, e.g. accuracy=0.5,val_loss=0.02, one per metric")


def add_parser(sub: argparse._SubParsersAction) -> None:
    from suite.reports.planning import MAX_SEEDS

    p = sub.add_parser("plan", help="seeds a comparison needs to detect an effect, from the store's variance",
                       description="Seeds per method needed to detect a difference of --effect between two "
                                   "methods (two-sided t-test over seeds), and the smallest difference the "
                                   f"seeds in the store can detect. Seed counts are planned up to {MAX_SEEDS:,} "
                                   f"per method ('>{MAX_SEEDS:,}' beyond); a method whose seeds all scored "
                                   "alike has no spread to plan from, and the output says so.")
    p.add_argument("store", help="result store folder")
    p.add_argument("--effect", required=True, help=EFFECT_HELP)
    p.add_argument("--alpha", type=float, default=0.05, help="significance level (default 0.05)")
    p.add_argument("--power", type=float, default=0.8, help="probability of detecting the effect (default 0.8)")
    p.add_argument("--tasks", default=None, help="only these tasks: families, family:subtask or subtasks")
    p.set_defaults(handler=main)


def parse_effect(text: str) -> float | dict[str, float]:
    """``0.5`` or ``accuracy=0.5,val_loss=0.02``; anything else is a UserError that shows both forms."""
    from suite.errors import UserError

    text = str(text).strip()
    if "=" not in text:
        return _effect_value(text, text)
    effects: dict[str, float] = {}
    for part in _pairs(text):
        name, sep, value = part.partition("=")
        name = name.strip()
        if not sep or not name:
            raise UserError(f"--effect '{text}': '{part.strip()}' is not metric=value; write one number "
                            f"(e.g. 0.5) or metric=value pairs (e.g. accuracy=0.5,val_loss=0.02)")
        if name in effects:
            raise UserError(f"--effect '{text}' names {name} twice")
        effects[name] = _effect_value(value.strip(), part.strip())
    return effects


def _pairs(text: str) -> list[str]:
    """``a=1,b=2`` split at the commas that end a value: metric names may hold commas themselves
    ("exact_match,strict-match"), values never do."""
    pairs, pending = [], ""
    for piece in text.split(","):
        pending = f"{pending},{piece}" if pending else piece
        if "=" in piece:
            pairs.append(pending)
            pending = ""
    return pairs + ([pending] if pending else [])


def _effect_value(value: str, where: str) -> float:
    from suite.errors import UserError

    try:
        effect = float(value)
    except ValueError:
        effect = math.nan
    # nan, inf, 0 and negatives have no sample size; every positive finite float has one.
    if not (math.isfinite(effect) and effect > 0):
        raise UserError(f"--effect '{where}': the difference must be a positive finite number (any value in "
                        f"(0, inf), in the metric's display unit), e.g. 0.5 or accuracy=0.5,val_loss=0.02")
    return effect


def unit_of(metric: str) -> str:
    """The display unit's name, from the leaderboard's own scale."""
    from suite.reports.format import display_scale

    scale = display_scale(metric)
    return "as stored" if scale == 1 else ("points" if scale == 100 else f"x{scale:g}")


def _unit_key(metric: str) -> str:
    # Scaled metrics share a unit (points are points); unscaled ones share it only with
    # themselves, since a loss and a perplexity are both "as stored" but not comparable.
    unit = unit_of(metric)
    return metric if unit == "as stored" else unit


def effects_per_metric(effect: float | dict[str, float], metrics) -> dict[str, float]:
    """The effect to plan each metric with; a UserError where a bare number would mix units or a metric has none."""
    from suite.errors import UserError

    metrics = sorted(set(metrics))
    if isinstance(effect, dict):
        missing = [m for m in metrics if m not in effect]
        if missing:
            raise UserError(f"--effect gives no difference for {', '.join(missing)}; add "
                            f"{','.join(f'{m}=VALUE' for m in missing)} (in {', '.join(_units(missing))})")
        return {m: effect[m] for m in metrics}
    if len({_unit_key(m) for m in metrics}) > 1:
        pairs = ",".join(f"{m}={effect:g}" for m in metrics)
        raise UserError(f"--effect {effect:g} is ambiguous: the planned metrics have different units "
                        f"({'; '.join(_units(metrics))}); give one difference per metric, e.g. "
                        f"--effect {pairs} with your values, or plan one kind at a time with --tasks")
    return dict.fromkeys(metrics, effect)


def _units(metrics) -> list[str]:
    return [f"{m} {unit_of(m)}" for m in metrics]


def spread_rows(cells, predictions) -> list[dict]:
    """One row per (task, model, method): its metric, seeds, spread, and why it cannot be planned from, if so."""
    from suite.reports.format import display_scale
    from suite.reports.planning import example_spread, seed_spread

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
        rows.append({"task": f"{task}:{subtask}" if subtask else task, "model": model, "method": variant,
                     "metric": metric, "seeds": len(scores),
                     "sigma": math.nan if spread is None else spread.sigma,
                     "source": "-" if spread is None else spread.source,
                     "note": _no_plan_reason(spread, metric), "spread": spread})
    return rows


def _no_plan_reason(spread, metric: str) -> str:
    """Why no t-test can be planned from this spread ("" when one can)."""
    from suite.reports.planning import FLAT_TOLERANCE

    if spread is None:
        return "one seed and no per-example records: nothing to plan from; run a second seed"
    if not math.isfinite(spread.sigma):
        return "the scores are too large for their spread to be a finite number: nothing to plan from"
    if not spread.flat:
        return ""
    unit = unit_of(metric)
    if spread.source == "examples":
        return (f"one seed, and all {spread.count} evaluation examples scored {spread.mean:.6g} ({unit}): no "
                f"spread to plan from; run a second seed to measure the spread over seeds")
    if spread.low == spread.high:
        return (f"all {spread.count} seeds scored {spread.mean:.6g} ({unit}): no spread to plan from; a constant "
                f"score often means the method is stuck (majority class)")
    return (f"the {spread.count} seeds differ only by float rounding (sd {spread.sigma:.3g} {unit}, below "
            f"{FLAT_TOLERANCE:g} x max(1, |mean score|)): too small to plan from")


def plan_rows(cells, predictions, effect: float | dict[str, float], alpha: float, power: float) -> list[dict]:
    """Rows of spread_rows with the effect, the seeds needed for it (None: more than MAX_SEEDS) and the
    difference detectable now; rows with a note have neither."""
    from suite.reports.planning import detectable_effect, seeds_needed

    rows = spread_rows(cells, predictions)
    effects = effects_per_metric(effect, [r["metric"] for r in rows])
    for r in rows:
        r["effect"] = effects[r["metric"]]
        if r["note"]:
            r["needed"], r["detectable"] = None, math.nan
        else:
            r["needed"] = seeds_needed(r["effect"], r["sigma"], alpha, power)
            r["detectable"] = detectable_effect(r["sigma"], r["seeds"], alpha, power)
    return rows


def _not_planned(r: dict) -> str:
    return "no spread" if r["spread"] is not None and r["spread"].flat else "-"


def _needed_text(r: dict, cap: int) -> str:
    if r["note"]:
        return _not_planned(r)
    if r["needed"] is None:
        return f">{cap:,}"
    return f"{r['needed']:,}" + ("+" if r["source"] == "examples" else "")


def _detectable_text(r: dict, cap: int) -> str:
    if r["note"]:
        return _not_planned(r)
    if not math.isfinite(r["detectable"]):
        return "-"  # a single seed: no t-test over seeds yet
    return ("<=" if r["seeds"] > cap else "") + f"{r['detectable']:.3g}"


def main(args: argparse.Namespace) -> int:
    from suite.errors import UserError
    from suite.reports import loading
    from suite.reports.planning import MAX_SEEDS, check_levels

    effect = parse_effect(args.effect)
    check_levels(args.alpha, args.power)
    store, cells, _ = loading.load_store(args.store)
    if cells.empty:
        raise UserError(f"the store at '{args.store}' holds no training results to plan from")
    tasks = [t for t in (args.tasks or "").split(",") if t.strip()] or None
    cells = loading.select_tasks(cells, tasks)
    rows = plan_rows(cells, store.load_predictions, effect, args.alpha, args.power)
    if not rows:
        raise UserError(f"the store at '{args.store}' has no finished primary scores to plan from")
    units = {unit_of(r["metric"]) for r in rows}
    effects = {r["metric"]: r["effect"] for r in rows}
    one_unit = len({_unit_key(m) for m in effects}) == 1
    unit = f" ({units.pop()})" if one_unit else ""  # else the footer names each metric's unit
    needed = f"seeds for {next(iter(effects.values())):g}" if len(set(effects.values())) == 1 else "seeds needed"
    header = ["task", "model", "method", "metric", "seeds", f"spread sd{unit}", "from", f"{needed}{unit}",
              f"detectable now{unit}"]
    from suite.reports.format import scrub_paths
    from suite.reports.terminal import clean

    # Store text (names a shared store holds) goes to the terminal without control sequences or local paths.
    body = [[clean(scrub_paths(r["task"])), clean(scrub_paths(r["model"])), clean(r["method"]), clean(r["metric"]),
             str(r["seeds"]),
             "-" if math.isnan(r["sigma"]) else f"{r['sigma']:.3g}", r["source"],
             _needed_text(r, MAX_SEEDS), _detectable_text(r, MAX_SEEDS)] for r in rows]
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]
    for line in [header, ["-" * w for w in widths], *body]:
        print("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip())
    notes = [clean(f"  {r['task']} {r['model']} {r['method']}: {r['note']}") for r in rows if r["note"]]
    if notes:
        print("\nnot planned:\n" + "\n".join(notes))
    print("\neffect to detect, in each metric's display unit: "
          + "; ".join(f"{m} {e:g} {unit_of(m)}" for m, e in effects.items()))
    if isinstance(effect, dict) and set(effect) - set(effects):
        print(f"(--effect also names {', '.join(sorted(set(effect) - set(effects)))}, not planned here)")
    print(f"two-sided two-sample t-test over seeds, alpha {args.alpha:g}, power {args.power:g}; 'seeds' spread "
          f"is measured over seeds, 'examples' is the evaluation set's sampling spread of a single seed, a "
          f"lower bound (so the seeds shown with + are a lower bound too); seed counts are planned up to "
          f"{MAX_SEEDS:,} per method: '>{MAX_SEEDS:,}' needs more, '<=' is the bound at {MAX_SEEDS:,}")
    return 0
