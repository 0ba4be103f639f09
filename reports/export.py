"""One leaderboard as a table for a paper: LaTeX (booktabs), Markdown (a pipe table) or CSV (the
site's long form, ``reports.site.board_frame``).

It renders the board as ``reports.leaderboard`` built it, so the exported numbers are the site's
and ``suite compare``'s: per row the method, its non-default arguments and the recipe fields
where it differs from the table, the learning rate, the seeds, each task's mean ± the half-width
of its 95% interval, and its difference from the baseline with the seed-level test's
Holm-adjusted p and its mark. The caption states the protocol a reader needs to weigh it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from suite.errors import UserError
from suite.reports import citations, stats
from suite.reports.board import PROTOCOL_LEGEND, Board
from suite.reports.format import display_scale, f_pval, f_score, f_signed, format_value, scrub_paths

FORMATS = ("latex", "markdown", "csv")
SUFFIXES = {"latex": ".tex", "markdown": ".md", "csv": ".csv"}
# Short names of the seed-level tests, shown in a Δ cell where a table mixes tests.
TEST_CODES = {"seed-paired-t": "paired t", "seed-welch-t": "Welch t", "seed-permutation": "permutation"}


@dataclass
class Table:
    """A rendered-neutral table: header, rows of text cells (unicode marks), caption, notes."""

    title: str
    header: list[str]
    rows: list[list[str]]
    caption: str
    label: str
    align: list[str] = field(default_factory=list)  # "l" or "r" per column


def board_names(boards: list[Board]) -> list[str]:
    """The names ``--board`` accepts for these boards: each slug, and each family where one board has it."""
    families = [b.family for b in boards]
    names = [b.slug for b in boards]
    names += sorted({f for f in families if families.count(f) == 1})
    return names


def select_board(boards: list[Board], name: str) -> tuple[Board, str | None]:
    """The board ``name`` names and the task (subtask) it restricts the columns to, if any.

    ``name`` is a board's slug as the site writes it (``glue-all-MiniLM-L6-v2-1a2b3c4d``), that
    slug without its hash, or a task family with one board; ``family/subtask`` (or
    ``family:subtask``) keeps one task's columns. Unknown names are refused with the known ones."""
    text = str(name).strip()
    head, sep, sub = text.replace(":", "/").partition("/")
    subtask = sub.strip() if sep else None
    key = head.strip() if sep else text
    found = [b for b in boards if key in (b.slug, b.slug.rsplit("-", 1)[0])]
    if not found:
        found = [b for b in boards if b.family == key]
    if len(found) != 1:
        known = ", ".join(board_names(boards)) or "none"
        why = "names several boards (one per model)" if found else "is no board of this store"
        raise UserError(f"--board '{scrub_paths(text)}' {why}; the boards are: {known} "
                        "(add /subtask for one task's columns)")
    board = found[0]
    if subtask is not None:
        subtasks = list(dict.fromkeys(c.key[0] for c in board.columns))
        if subtask not in subtasks:
            raise UserError(f"--board '{scrub_paths(text)}': {board.family} on {board.model_label} has no task "
                            f"'{scrub_paths(subtask)}'; its tasks: {', '.join(scrub_paths(s) for s in subtasks)}")
    return board, subtask


STATISTICS = ("mean", "median")


def build_table(board: Board, subtask: str | None = None, costs: bool = False, statistic: str = "mean") -> Table:
    """The board (or one task's columns of it) as a paper table, with the caption that states its protocol.
    ``statistic`` "median": each task's score is the median over seeds with their range (what the LoRA
    paper reports); the differences from the baseline stay the mean's, with their test."""
    columns = [c for c in board.columns if subtask is None or c.key[0] == subtask]
    base = next((r for r in board.rows if r.variant == board.baseline), None)
    mark = board.protocol.mark
    cost_specs = board.cost_columns if costs else []
    header = ["Method", "Configuration", "LR", "Seeds"]
    for c in columns:
        header.append(scrub_paths(c.label))
        if base is not None:
            header.append(f"Δ {scrub_paths(c.label)}{mark}")
    header += [s.heading[:1].upper() + s.heading[1:] for s in cost_specs]
    tests = {e.test.test for r in board.rows for c in columns
             if (e := r.entries.get(c.key)) is not None and e.test is not None and e.test.test in TEST_CODES}
    rows = []
    for r in board.rows:
        status = board.protocol.statuses.get(r.variant)
        lr = board.recipe.value(r.variant, "lr") if board.recipe else ""
        if lr and status is not None and any(s.startswith("lr=") for s in status.selected):
            lr += " (tuned)" if status.tuned else " (inherited)"
        seeds = sorted({r.entries[c.key].summary.n for c in columns if c.key in r.entries})
        row = [scrub_paths(citations.method_names(r.variant)), configuration(board, r.variant), lr or "–",
               "–" if not seeds else str(seeds[0]) if len(seeds) == 1 else f"{seeds[0]}–{seeds[-1]}"]
        for c in columns:
            e = r.entries.get(c.key)
            row.append("–" if e is None else _median(e, c.metric) if statistic == "median" else _score(e, c.metric))
            if base is not None:
                row.append(_delta(e, base.entries.get(c.key), c.metric, r is base, len(tests) > 1))
        # One task's columns show that task's costs; the whole board the row's, over its tasks.
        own = r.entries.get(columns[0].key) if subtask is not None and columns else None
        spent, emulated = (own.costs, own.emulated) if own is not None else (r.costs, r.emulated)
        row += [format_value(spent.get(s.name, math.nan), s.name)
                + (" (emulated)" if s.timing and emulated and s.name in spent else "") for s in cost_specs]
        rows.append(row)
    where = f"{board.family}/{scrub_paths(subtask)}" if subtask else board.family
    return Table(title=f"{where} on {board.model_label}", header=header, rows=rows,
                 caption=caption(board, columns, tests, cost_specs, statistic), label=f"tab:{board.slug}",
                 align=["l", "l", "l", "r"] + ["r"] * (len(header) - 4))


def configuration(board: Board, variant: str) -> str:
    """A row's non-default method arguments and, where its recipe differs from the table's, those fields."""
    args = citations.configuration(variant)
    differs = board.recipe.differing(variant) if board.recipe else {}
    recipe = ", ".join(f"{k}={v}" for k, v in differs.items() if k != "lr")
    text = "; ".join(x for x in (args, f"recipe {recipe}" if recipe else "") if x)
    return scrub_paths(text) or "defaults"


def _score(e, metric: str) -> str:
    text = f_score(e.summary.mean, metric)
    if e.summary.n > 1 and not math.isnan(e.summary.half_width):
        text += f" ± {f_score(e.summary.half_width, metric)}"
    return text


def _median(e, metric: str) -> str:
    """The median over seeds and, with more than one, the range they span."""
    values = sorted(v for v in e.values if not math.isnan(v))
    if not values:
        return "–"
    mid = len(values) // 2
    median = values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2
    text = f_score(median, metric)
    return text + (f" ({f_score(values[0], metric)}–{f_score(values[-1], metric)})" if len(values) > 1 else "")


def _delta(e, b, metric: str, is_base: bool, name_test: bool) -> str:
    """Mean minus the baseline's, its mark (▲/▼ where the Holm-adjusted test is significant) and p."""
    if is_base:
        return "baseline"
    if e is None or b is None:
        return "–"
    text = f_signed(e.summary.mean - b.summary.mean, metric)
    if e.significant:
        text += " ▲" if e.better else " ▼"
    if e.test is None or math.isnan(e.p_adjusted):
        reason = e.test.reason if e.test is not None and e.test.reason else "no test"
        return f"{text} (n.s., {reason})"
    test = f"{TEST_CODES.get(e.test.test, e.test.test)}, " if name_test else ""
    return f"{text} ({test}p={f_pval(e.p_adjusted)})"


def caption(board: Board, columns: list, tests: set[str], cost_specs: list, statistic: str = "mean") -> str:
    """The protocol in words: seeds, interval, test, Holm correction, baseline and its tuning, caveats."""
    entries = [e for r in board.rows for c in columns if (e := r.entries.get(c.key)) is not None]
    seeds = sorted({e.summary.n for e in entries})
    n_seeds = "–" if not seeds else str(seeds[0]) if len(seeds) == 1 else f"{seeds[0]} to {seeds[-1]}"
    kinds = sorted({stats.INTERVAL_LABELS[e.summary.interval] for e in entries if e.summary.interval
                    and e.summary.n > 1})
    if statistic == "median":
        parts = [f"{board.family} on {board.model_label}: median over {n_seeds} seeds (in brackets, the range "
                 f"over seeds); the differences from the baseline are of the means."]
    else:
        parts = [f"{board.family} on {board.model_label}: mean over {n_seeds} seeds"
                 + (f" ± the half-width of its 95% {' or '.join(kinds)} interval over seeds" if kinds else "")
                 + "."]
    scaled = list(dict.fromkeys(scrub_paths(c.label) for c in columns if display_scale(c.metric) != 1))
    if scaled:
        parts.append(f"Scores in points (×100): {', '.join(scaled)}.")
    shown_part = len(columns) < len(board.columns)
    if board.baseline is not None:
        name = scrub_paths(board.baseline)
        n_tests = sum(1 for r in board.rows if r.variant != board.baseline for c in board.columns
                      if (e := r.entries.get(c.key)) is not None and e.test is not None
                      and not math.isnan(e.test.p_value))
        test_words = " or ".join(stats.TEST_LABELS[t] for t in sorted(tests)) or "a test over seeds"
        parts.append(f"Δ: the mean minus the baseline {name}'s, with the {test_words} (seeds as the unit "
                     f"of replication) and its p-value Holm-adjusted across the {n_tests} comparisons with the "
                     f"baseline on this board{' (all its tasks, not only those shown)' if shown_part else ''}; ▲/▼: significantly better/worse at α = {board.alpha:g}; "
                     "n.s. with fewer than 3 seeds.")
        status = board.protocol.statuses.get(board.baseline)
        if status is not None:
            parts.append(f"Baseline hyperparameters: {scrub_paths(status.summary)}.")
        if board.protocol.mark:
            parts.append(f"{board.protocol.mark} {PROTOCOL_LEGEND[:1].upper()}{PROTOCOL_LEGEND[1:]}. "
                         f"{scrub_paths(board.protocol.warning)}")
    else:
        parts.append("No baseline row on this board: no differences or tests.")
    if board.recipe and board.recipe.common:
        parts.append("Recipe: " + ", ".join(f"{k}={v}" for k, v in board.recipe.common.items()) + ".")
    if board.recipe and board.recipe.differs:
        usual = [f"{k}={board.recipe.usual[k]}" for k in board.recipe.differs if k in board.recipe.usual]
        parts.append("Rows differ in " + ", ".join(board.recipe.differs)
                     + (f"; most ran {', '.join(usual)}" if usual else "")
                     + ": the configuration names a row's own values.")
    if cost_specs:
        parts.append("Costs are means over seeds" + (", per row over its tasks as each cost declares (the "
                     "largest peak memory, the summed train time, ...)." if not shown_part else " on this task."))
    if any(s.timing for s in cost_specs) and any(r.emulated for r in board.rows):
        parts.append("Times marked emulated ran their low-precision GEMMs emulated (quantise-dequantise in "
                     "higher precision): they measure the emulation, not the recipe's speed.")
    if board.synthetic:
        parts.append("Some results were trained or evaluated on generated (synthetic) data.")
    if board.mixed:
        parts.append("Its rows mix " + ", ".join(board.mixed) + ": differences may come from that.")
    return " ".join(parts)


# -- LaTeX ------------------------------------------------------------------------------------

LATEX_SPECIAL = {
    "\\": r"\textbackslash{}", "{": r"\{", "}": r"\}", "_": r"\_", "%": r"\%", "&": r"\&", "#": r"\#",
    "$": r"\$", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
    "<": r"\textless{}", ">": r"\textgreater{}", "|": r"\textbar{}",
    # Marks and signs the tables use, written with base LaTeX (no package beyond booktabs).
    "±": r"$\pm$", "−": r"$-$", "Δ": r"$\Delta$", "▲": r"$\bigtriangleup$", "▼": r"$\bigtriangledown$",
    "†": r"\dag{}", "–": "--", "…": r"\ldots{}", "×": r"$\times$", "α": r"$\alpha$", "·": r"$\cdot$",
    "’": "'", "≤": r"$\leq$", "≥": r"$\geq$",
}


def latex_escape(text: str) -> str:
    """Text safe in a LaTeX document: every special character escaped (one pass, so an escape's own
    backslash is never escaped again); other characters outside ASCII as '?', which pdflatex would refuse."""
    return "".join(LATEX_SPECIAL.get(ch, ch if ch.isascii() else "?") for ch in str(text))


def to_latex(table: Table) -> str:
    cols = "".join(table.align)
    lines = [
        "% Requires \\usepackage{booktabs}. Written by suite export.",
        "\\begin{table}",
        "\\centering",
        "\\small",
        f"\\caption{{{latex_escape(table.caption)}}}",
        f"\\label{{{latex_escape(table.label)}}}",
        f"\\begin{{tabular}}{{{cols}}}",
        "\\toprule",
        " & ".join(latex_escape(h) for h in table.header) + " \\\\",
        "\\midrule",
    ]
    lines += [" & ".join(latex_escape(c) for c in row) + " \\\\" for row in table.rows]
    lines += ["\\bottomrule", "\\end{tabular}", "\\end{table}", ""]
    return "\n".join(lines)


# -- Markdown ---------------------------------------------------------------------------------


MARKDOWN_SPECIAL = frozenset("\\|*_`[]<>")


def markdown_escape(text: str) -> str:
    """A cell safe in a pipe table: backslashes, pipes and emphasis or code marks escaped (a method
    named ``a*b*`` stays text), no line breaks."""
    text = "".join("\\" + ch if ch in MARKDOWN_SPECIAL else ch for ch in str(text))
    return " ".join(text.split())



def to_markdown(table: Table) -> str:
    lines = [f"**{markdown_escape(table.title)}**", ""]
    lines.append("| " + " | ".join(markdown_escape(h) for h in table.header) + " |")
    lines.append("|" + "|".join(":---" if a == "l" else "---:" for a in table.align) + "|")
    lines += ["| " + " | ".join(markdown_escape(c) for c in row) + " |" for row in table.rows]
    lines += ["", markdown_escape(table.caption), ""]
    return "\n".join(lines)


def render(board: Board, fmt: str, subtask: str | None = None, costs: bool = False, statistic: str = "mean") -> str:
    """The board in ``fmt`` ("latex", "markdown" or "csv"; the CSV holds every seed's value)."""
    if fmt == "csv":
        from suite.reports.site import board_frame

        frame = board_frame(board)
        if subtask is not None and "subtask" in frame:
            frame = frame[frame["subtask"] == scrub_paths(subtask)]
        return frame.to_csv(index=False)
    if fmt not in FORMATS:
        raise UserError(f"--format '{fmt}' is none of {', '.join(FORMATS)}")
    table = build_table(board, subtask, costs, statistic)
    return to_latex(table) if fmt == "latex" else to_markdown(table)
