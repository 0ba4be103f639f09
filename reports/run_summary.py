"""The table printed at the end of a run: method x task primary metric and the costs."""

from __future__ import annotations

import sys

from suite.reports.terminal import clean


def print_summary(store, cells: list, outcomes: list) -> int:
    """Print one row per method x task (mean over seeds) for the sweep's cells; return the exit code."""
    frame = store.load(warn=False)
    ids = {c.cell_id for c in cells}
    frame = frame[frame["cell_id"].isin(ids)] if not frame.empty else frame
    failed = [o for o in outcomes if o.status != "ok"]
    if frame.empty:
        print("no results", file=sys.stderr)
        return 1 if failed else 0
    from suite.reports.variants import canonical_variants

    ok = canonical_variants(frame[frame["status"] == "ok"])  # the rows' names as the reports give them
    rows = []
    several_models = ok["model"].nunique() > 1  # a row per model then, never a mean over models
    for (variant, task, subtask, model), group in ok.groupby(["variant", "task", "subtask", "model"], sort=True):
        primary = group[group["is_primary"].map(_is_true)]
        cost = group[group["split"] == "cost"].groupby("metric")["value"].mean()
        rows.append([
            variant, *([str(model)] if several_models else []), f"{task}:{subtask}" if subtask else task,
            f"{primary['metric'].iloc[0]}={primary['value'].mean():.4f}" if len(primary) else "-",
            str(group["seed"].nunique()),
            f"{cost.get('train_time_s', float('nan')):.1f}",
            f"{cost.get('peak_memory_mb', float('nan')):.0f}",
            f"{int(cost.get('trainable_params', 0)):,}",
        ])
    header = ["method", *(["model"] if several_models else []), "task", "primary (mean)", "seeds", "train s",
              "peak MB", "trainable"]
    _print_table(header, rows)
    _print_aggregates(ok)
    if failed:
        print(f"\n{len(failed)} cell(s) failed (stored with their errors):", file=sys.stderr)
        for o in failed:
            print(clean(f"  {o.cell.shown_label} on {o.cell.task_name} seed {o.cell.seed}: {o.error}"), file=sys.stderr)
        return 1
    return 0


def _print_table(header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))
    print(line)
    print("  ".join("-" * w for w in widths))
    for r in rows:  # labels come from the command line and the store: no control sequences reach the terminal
        print(clean("  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True))))


def _print_aggregates(ok) -> None:
    """Each method's benchmark-level scores, as its task family defines them (found through the
    registry), from the seed means of each task's primary score; naming the tasks covered."""
    from suite.reports.format import common_scale, f_score
    from suite.reports.stats import aggregate_label, family_aggregates, family_subtask_order

    primary = ok[(ok["split"] != "cost") & ok["is_primary"].map(_is_true)]
    if primary.empty:
        return
    primary = primary.assign(subtask=primary["subtask"].fillna("").astype(str))
    lines = []
    several_models = primary.groupby("task")["model"].nunique().to_dict()
    for (family, model, variant), group in primary.groupby(["task", "model", "variant"], sort=True):
        # The seed mean of each seed's primary score per task: what ``aggregate`` takes.
        per_seed = group.groupby(["subtask", "seed"])["value"].mean()
        scores = per_seed.groupby(level="subtask").mean().to_dict()
        who = f"{variant} ({model})" if several_models.get(family, 1) > 1 else str(variant)
        for agg in family_aggregates(family, scores):
            metrics = group.loc[group["subtask"].isin(agg.members), "metric"].unique()
            value = f_score(agg.value, scale=common_scale(metrics))
            members = ", ".join(family_subtask_order(family, agg.members))
            lines.append(f"{aggregate_label(agg)} {who}: {value} over {len(agg.members)} task(s): {members}")
    if lines:
        print()
        print("\n".join(lines))


def _is_true(value) -> bool:
    """A stored flag: None and NaN (a row written without it) are false."""
    return value is not None and value == value and bool(value)
