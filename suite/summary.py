"""The table printed at the end of a run: method x task primary metric and the costs."""

from __future__ import annotations

import sys


def print_summary(store, cells: list, outcomes: list) -> int:
    """Print one row per method x task (mean over seeds) for the sweep's cells; return the exit code."""
    frame = store.load(warn=False)
    ids = {c.cell_id for c in cells}
    frame = frame[frame["cell_id"].isin(ids)] if not frame.empty else frame
    failed = [o for o in outcomes if o.status != "ok"]
    if frame.empty:
        print("no results", file=sys.stderr)
        return 1 if failed else 0
    ok = frame[frame["status"] == "ok"]
    rows = []
    for (variant, task, subtask), group in ok.groupby(["variant", "task", "subtask"], sort=True):
        primary = group[group["is_primary"].astype(bool)]
        cost = group[group["split"] == "cost"].groupby("metric")["value"].mean()
        rows.append([
            variant, f"{task}:{subtask}" if subtask else task,
            f"{primary['metric'].iloc[0]}={primary['value'].mean():.4f}" if len(primary) else "-",
            str(group["seed"].nunique()),
            f"{cost.get('train_time_s', float('nan')):.1f}",
            f"{cost.get('peak_memory_mb', float('nan')):.0f}",
            f"{int(cost.get('trainable_params', 0)):,}",
        ])
    header = ["method", "task", "primary (mean)", "seeds", "train s", "peak MB", "trainable"]
    _print_table(header, rows)
    _print_glue_scores(ok)
    if failed:
        print(f"\n{len(failed)} cell(s) failed (stored with their errors):", file=sys.stderr)
        for o in failed:
            print(f"  {o.cell.spec.label} on {o.cell.task_name} seed {o.cell.seed}: {o.error}", file=sys.stderr)
        return 1
    return 0


def _print_table(header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))
    print(line)
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)))


def _print_glue_scores(ok) -> None:
    """The GLUE score per method (mean over seeds of each task score), naming the tasks it covers."""
    from suite.stats import glue_score, glue_task_score

    glue = ok[(ok["task"] == "glue") & (ok["split"] != "cost")]
    if glue.empty:
        return
    print()
    for variant, group in glue.groupby("variant", sort=True):
        task_scores = {}
        for subtask, rows in group.groupby("subtask"):
            per_seed = [glue_task_score(subtask, _metric_map(r)) for _, r in rows.groupby("seed")]
            per_seed = [v for v in per_seed if v is not None]
            task_scores[subtask] = sum(per_seed) / len(per_seed) if per_seed else None
        score, used = glue_score(task_scores)
        if used:
            print(f"GLUE score {variant}: {100 * score:.2f} over {len(used)} task(s): {', '.join(sorted(used))}")


def _metric_map(rows) -> dict[tuple[str, str], float]:
    keys = zip(rows["metric"], rows["split"], strict=True)
    return dict(zip(keys, rows["value"], strict=True))
