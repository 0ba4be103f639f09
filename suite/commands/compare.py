"""``suite compare STORE --baseline lora``: the leaderboard in the terminal, significance marked.

It renders the same model as the site's overview (suite.reports.summary), so the two
always agree: the same means, intervals, tests and Holm-adjusted marks.
"""

from __future__ import annotations

import argparse
import sys

from suite.commands.report import add_comparison_options, comparison_tasks


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "compare",
        help="compare methods against a baseline in the terminal, marking significant differences",
        description="Print, per task family and model, each method's mean ± 95%% CI over seeds per "
        "task, and its difference from the baseline with a paired permutation test on the same "
        "evaluation examples (Holm-adjusted).",
    )
    p.add_argument("store", help="result store folder")
    add_comparison_options(p)
    p.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    from suite.errors import UserError
    from suite.reports import summary

    tasks = comparison_tasks(args)
    store, cells, _ = summary.load_store(args.store)
    if cells.empty:
        raise UserError(f"the store at '{args.store}' holds only kernel timings; "
                        "use 'suite bench kernels --compare' for those")
    cells = summary.select_tasks(cells, tasks)
    boards = summary.build_boards(cells, args.baseline, store.load_predictions, args.metric,
                                  args.alpha, args.store)
    variants = sorted({r.variant for b in boards for r in b.rows})
    if args.baseline not in variants:
        raise UserError(f"no results for the baseline '{args.baseline}'; methods in this store: "
                        f"{', '.join(variants)}. Choose one with --baseline")
    print(format_boards(boards, unicode=_can_encode("▲▼±Δ")))
    return 0


def _can_encode(text: str) -> bool:
    try:
        text.encode(sys.stdout.encoding or "ascii")
        return True
    except (UnicodeEncodeError, LookupError):
        return False


def format_boards(boards, unicode: bool = True) -> str:
    from suite.reports.format import f_cost, f_num, f_pval, f_score, f_signed

    up, down, pm, delta = ("▲", "▼", "±", "Δ") if unicode else ("+", "-", "+-", "d")
    out: list[str] = []
    for b in boards:
        title = f"{b.family} · {b.model}" if unicode else f"{b.family} / {b.model}"
        if b.synthetic:
            title += "  [synthetic data]"
        out.append(title)
        if b.baseline is None:
            out.append("  (no baseline rows here: no tests)")
        for a in b.aggregates:  # the family's benchmark-level scores, headline first
            partial = "" if a.complete else f" of the benchmark's {a.expected}, so not its full score"
            out.append(f"  {a.label}: over {len(a.members)} task(s){partial}: {', '.join(a.members)}")
        head = ["method"]
        head += [a.label for a in b.aggregates]
        if len(b.columns) > 1:
            head.append("avg rank")
        head += [f"{c.label} ({c.metric})" for c in b.columns]
        head += ["params", "peak mem", "train time"]
        table = [head]
        for r in b.rows:
            line = [r.variant + (" (baseline)" if r.variant == b.baseline else "")]
            line += [f_score(r.aggregates.get(a.name), scale=a.scale) for a in b.aggregates]
            if len(b.columns) > 1:
                line.append(f_num(r.avg_rank, 2))
            for c in b.columns:
                e = r.entries.get(c.key)
                if e is None:
                    line.append("-")
                    continue
                text = f_score(e.summary.mean, c.metric)
                if e.summary.n > 1:
                    text += f" {pm}{f_score(e.summary.half_width, c.metric)}"
                text += f" n={e.summary.n}"
                if e.significant:
                    text += f" {up if e.better else down}"
                line.append(text)
            line += [f_cost(r.costs.get(k), k) for k in ("trainable_params", "peak_memory_mb", "train_time_s")]
            table.append(line)
        out += _align(table if unicode else [[x.replace("–", "-").replace("−", "-") for x in r] for r in table])
        if b.baseline is not None:
            out.append(f"  {delta} vs {b.baseline} (Holm-adjusted p; {up}/{down}: p < {b.alpha}):")
            dtable = [["method"] + [c.label for c in b.columns]]
            base = next(r for r in b.rows if r.variant == b.baseline)
            for r in b.rows:
                if r is base:
                    continue
                line = [r.variant]
                for c in b.columns:
                    e, be = r.entries.get(c.key), base.entries.get(c.key)
                    if e is None or be is None or e.test is None:
                        line.append("-")
                        continue
                    mark = f" {up if e.better else down}" if e.significant else ""
                    kind = "" if e.test.test.startswith("paired") else " (seeds)"
                    p = f_pval(e.p_adjusted)
                    p = f"p{p}" if p.startswith("<") else f"p={p}"
                    line.append(f"{f_signed(e.summary.mean - be.summary.mean, c.metric)} {p}{kind}{mark}")
                dtable.append(line)
            if not unicode:
                dtable = [[x.replace("–", "-").replace("−", "-") for x in r] for r in dtable]
            out += _align(dtable, indent="    ")
            out += _gap_table(b, unicode)
        out.append("")
    out.append(f"scores: mean {pm} half-width of the 95% bootstrap CI over n seeds (points x100 for "
               "accuracy/F1/MCC/correlations); tests: paired sign-flip permutation on per-example "
               "correctness, '(seeds)' where predictions are missing.")
    return "\n".join(out)


def _gap_table(b, unicode: bool) -> list[str]:
    """Lower-is-better columns (losses): each method's gap to the baseline, paired by seed, data
    and recipe, with its 95% t-interval over the pairs and whether it exceeds the seed noise;
    beside it the costs a training recipe is judged by (step time, tokens/s, peak memory)."""
    from suite.reports.format import f_memory, f_num, f_score, f_signed

    columns = b.gap_columns
    if not columns:
        return []
    base = next(r for r in b.rows if r.variant == b.baseline)
    head = ["method"]
    for c in columns:
        head += [f"{c.label} {c.metric}", "gap", "95% CI (seeds)", "vs seed noise"]
    head += ["step ms", "tokens/s", "peak mem"]
    table = [head]
    for r in [base] + [r for r in b.rows if r is not base]:
        line = [r.variant + (" (baseline)" if r is base else "")]
        first = None
        for c in columns:
            e = r.entries.get(c.key)
            first = first or e
            if e is None:
                line += ["-", "-", "-", "-"]
                continue
            line.append(f_score(e.summary.mean, c.metric))
            g = e.gap
            if r is base or g is None:
                line += ["", "", f"std {f_score(e.summary.std, c.metric)}" if r is base and e.summary.n > 1 else ""]
                continue
            rel = f" ({g.relative * 100:+.1f}%)" if g.relative == g.relative else ""
            line.append(f"{f_signed(g.mean, c.metric)}{rel}")
            if g.n > 1:
                line.append(f"[{f_signed(g.low, c.metric)}, {f_signed(g.high, c.metric)}] n={g.n}")
                line.append("beyond" if g.distinguishable else "within")
            else:
                line += [f"n={g.n}", "one seed: unknown"]
        costs = first.costs if first is not None else {}
        step = first.step_time_s if first is not None else float("nan")
        line += [f_num(step * 1000, 0), f_num(costs.get("train_tokens_per_s"), 0),
                 f_memory(costs.get("peak_memory_mb"))]
        table.append(line)
    if not unicode:
        table = [[x.replace("–", "-").replace("−", "-") for x in row] for row in table]
    delta = "Δ" if unicode else "d"
    out = [f"  {delta} gap to {b.baseline} over seeds (pairs: same seed, data and recipe; 95% Student-t "
           f"interval of the mean gap; 'beyond': it excludes 0, the gap exceeds the seed noise):"]
    return out + _align(table, indent="    ")


def _align(rows: list[list[str]], indent: str = "  ") -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for n, r in enumerate(rows):
        cells = [r[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(r[1:], widths[1:], strict=True)]
        lines.append(indent + "  ".join(cells).rstrip())
        if n == 0:
            lines.append(indent + "  ".join("-" * w for w in widths))
    return lines
