"""Leaderboards as terminal text: the board model (``reports.board``, built by ``reports.leaderboard``) laid out to a width.

``suite compare`` prints this; the site renders the same boards as HTML, so the two cannot
disagree. Text that comes from the store (method, task and model names, errors) is shown
without its control sequences, so a hostile name cannot move the cursor or recolour the terminal.
"""

from __future__ import annotations

import math
import re
import sys
import textwrap
import unicodedata

# -- store text made safe for a terminal ---------------------------------------------------------
# ESC-introduced sequences (CSI "ESC [ ... final", OSC "ESC ] ... BEL|ST", two-byte ESC x) and
# their 8-bit forms; then any other control character (C0, DEL, C1).
_ESCAPES = re.compile(
    r"(?:\x1b\]|\x9d)[^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)?"  # OSC (window title, hyperlink) to BEL/ST
    r"|(?:\x1b[PX^_]|[\x90\x98\x9e\x9f])[^\x1b\x9c]*(?:\x1b\\|\x9c)?"  # DCS, SOS, PM, APC strings
    r"|(?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]?"  # CSI: colours, cursor moves, erase line
    r"|\x1b[ -/]*[0-~]?"  # any other ESC sequence
)
_CONTROLS = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def clean(text: object) -> str:
    """``text`` without terminal escape sequences or control characters (each of those left
    is shown as a space), so a name or error from a store cannot move the cursor, retitle the
    window, hide a line or break the table."""
    s = str(text)
    s = _ESCAPES.sub("", s)
    return _CONTROLS.sub(" ", s)


def _width(text: str) -> int:
    """Columns ``text`` takes in a terminal (East Asian wide characters take two)."""
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 0 if unicodedata.combining(c) else 1
               for c in text)


def _cut(text: str, width: int, ellipsis: str = "…") -> str:
    if _width(text) <= width:
        return text
    out = ""
    for c in text:
        if _width(out + c) > width - _width(ellipsis):
            break
        out += c
    return out + ellipsis


def can_encode(text: str) -> bool:
    try:
        text.encode(sys.stdout.encoding or "ascii")
        return True
    except (UnicodeEncodeError, LookupError):
        return False


def format_boards(boards, unicode: bool = True, width: int = 100) -> str:
    """The boards as text no wider than ``width`` (store text cleaned, failures listed)."""
    from suite.reports.board import PROTOCOL_LEGEND
    from suite.reports.format import f_num, f_pval, f_score, f_signed, format_value, scrub_paths

    up, down, pm, delta = ("▲", "▼", "±", "Δ") if unicode else ("+", "-", "+-", "d")
    out: list[str] = []
    intervals: set[str] = set()
    tests_used: set[str] = set()
    for b in boards:
        fam = str(b.family)
        shown = b.model_label
        title = f"{clean(fam)} · {clean(shown)}" if unicode else f"{clean(fam)} / {clean(shown)}"
        if b.synthetic:
            title += "  [synthetic data]"
        out += _wrap(title, width, "")
        if b.baseline is None:
            out.append("  (no baseline rows here: no tests)")
        if b.mixed:  # rows from different code, hardware or libraries: differences may come from that
            out += _wrap("warning: this table mixes " + "; ".join(f"{k} {', '.join(map(str, v))}" for k, v in
                                                             b.mixed.items()), width, "  ", "    ")
        dagger = (b.protocol.mark if unicode else "*") if b.protocol.mark else ""
        if b.protocol.warning:  # the baseline ran off its tuned optimum: said before any number
            out += _wrap(f"{'WARNING' if b.protocol.worst else 'warning'}: {b.protocol.warning} "
                         f"Gaps against it are marked {dagger}.", width, "  ", "    ")
        for a in b.aggregates:  # the family's benchmark-level scores, headline first
            partial = "" if a.complete else f" of the benchmark's {a.expected}, so not its full score"
            out += _wrap(f"{clean(a.label)}: over {len(a.members)} task(s){partial}: "
                         f"{', '.join(clean(m) for m in a.members)}", width, "  ", "    ")
        fails = b.failures
        subs = {c.key[0] for c in b.columns}
        rows = list(b.rows)  # a method whose every cell failed has a row too, with no entries
        head: list = ["method"]
        head += [clean(a.label) for a in b.aggregates]
        if len(b.columns) > 1:
            head.append("avg rank")
        head += [f"{clean(c.label)} ({clean(c.metric)})" for c in b.columns]
        head += [c.label for c in b.cost_columns]
        table: list[list] = [head]
        for r in rows:
            line: list = [clean(r.variant) + (" (baseline)" if r.variant == b.baseline else "")]
            line += [f_score(r.aggregates.get(a.name), scale=a.scale) for a in b.aggregates]
            if len(b.columns) > 1:
                line.append(f_num(r.avg_rank, 2))
            for c in b.columns:
                e = r.entries.get(c.key)
                fail = fails.get((r.variant, c.key[0]))
                n_ok = _n_ok(e)
                if e is None or n_ok == 0:
                    line.append(("", "", "", f"failed {fail[0]}/{fail[1]}") if fail else ("–", "", "", ""))
                    continue
                summ = e.summary
                intervals.add(getattr(summ, "interval", "bootstrap") if summ.n > 1 else "")
                hw = f"{pm}{f_score(summ.half_width, c.metric)}" if summ.n > 1 else ""
                mark = (up if e.better else down) if e.significant else ""
                if fail:
                    mark = (mark + " " if mark else "") + f"{fail[1] - fail[0]}/{fail[1]} ok"
                line.append((f_score(summ.mean, c.metric), hw, f"n={summ.n}", mark))
            line += [format_value(r.costs.get(c.name), c.name) + (EMULATED if c.timing and r.emulated else "")
                     for c in b.cost_columns]
            table.append(line)
        out += _fit(_ascii(table, unicode), width)
        placed = [r for r in rows if r.targets]
        if placed:  # where each adapter sat, as peft resolved it: equal placement is checkable here
            out += _wrap("adapted modules:", width, "  ")
            for r in placed:
                out += _wrap(f"{clean(r.variant)}: {clean(r.targets.replace(';', ', '))}", width, "    ", "      ")
        out.append("")
        if b.baseline is not None:
            out += _wrap(f"{delta} vs {clean(b.baseline)}{dagger} (Holm-adjusted p; {up}/{down}: p < {b.alpha}):",
                         width, "  ")
            dtable: list[list] = [["method"] + [clean(c.label) for c in b.columns]]
            base = next(r for r in b.rows if r.variant == b.baseline)
            for r in rows:
                if r is base:
                    continue
                line = [clean(r.variant)]
                for c in b.columns:
                    e, be = r.entries.get(c.key), base.entries.get(c.key)
                    if e is None or be is None or e.test is None or not _n_ok(e) or not _n_ok(be):
                        line.append(("-", "", "", ""))
                        continue
                    mark = (up if e.better else down) if e.significant else ""
                    tests_used.add(e.test.label)
                    if e.test.test == "none":  # too few seeds for a verdict: say why, claim nothing
                        line.append((f_signed(e.summary.mean - be.summary.mean, c.metric), "n.s.",
                                     f"({e.test.reason})" if e.test.reason else "", ""))
                        continue
                    p = f_pval(e.p_adjusted)
                    p = f"p{p}" if p.startswith("<") else f"p={p}"
                    line.append((f_signed(e.summary.mean - be.summary.mean, c.metric), p, e.test.label, mark))
                dtable.append(line)
            out += _fit(_ascii(dtable, unicode), width, indent="    ")
            out.append("")
            out += _gap_table(b, unicode, width, dagger)
            if dagger:
                out += _wrap(f"{dagger} {PROTOCOL_LEGEND}", width, "  ", "    ")
        out += _protocol_lines(b, unicode, width)
        listed = [(v, sub, f) for (v, sub), f in sorted(fails.items()) if sub in subs]
        if listed:
            out.append("  failures:")
            for v, sub, (n_bad, n_all, err) in listed:
                what = f"failed {n_bad}/{n_all}" if n_bad == n_all else f"{n_all - n_bad}/{n_all} ok"
                out += _wrap(f"{clean(v)} on {clean(scrub_paths(sub)) or clean(fam)}: {what}: {err}", width, "    ", "      ")
        out.append("")
    kinds = sorted(i for i in intervals if i)
    if kinds:
        from suite.reports.stats import INTERVAL_LABELS

        interval = " or ".join(f"95% {INTERVAL_LABELS.get(k, k)} interval" for k in kinds)
    else:
        interval = "95% interval"
    tests = "; ".join(sorted(t for t in tests_used if t != "no test")) or "none run"
    note = (f"scores: mean {pm} half-width of the {interval} over n seeds (points x100 for "
            f"accuracy/F1/MCC/correlations); tests (seeds are the unit of replication): {tests}; "
            "'n.s. (n<3 seeds)': too few seeds for any verdict. The per-example paired permutation "
            "test, which ignores seed variance, is on the site's task pages. 'failed k/n': k of the n "
            "cells failed (no score); 'k/n ok': the score is over the k cells that finished.")
    if any(r.emulated for b in boards for r in b.rows):
        note += (f" {EMULATED.strip()}: the low-precision GEMMs ran emulated (quantise-dequantise in higher "
                 "precision), so the time or throughput measures the emulation, not the recipe's speed.")
    out += _wrap(note, width, "")
    return "\n".join(_cut(clean(line), width) for line in out)


EMULATED = " (emul.)"  # after a time or throughput whose GEMMs ran emulated: it is not the recipe's speed


def _n_ok(e) -> int:
    """Seeds behind an entry's score; 0 for an entry with no successful cell (mean nan)."""
    if e is None:
        return 0
    n = getattr(e, "n_ok", None)
    if n is None:
        n = e.summary.n
    mean = e.summary.mean
    return 0 if mean is None or (isinstance(mean, float) and math.isnan(mean)) else int(n)


def _ascii(table: list[list], unicode: bool) -> list[list]:
    if unicode:
        return table

    def a(x: str) -> str:
        return x.replace("–", "-").replace("−", "-").replace("…", "...")

    return [[tuple(a(p) for p in c) if isinstance(c, tuple) else a(c) for c in row] for row in table]


def _wrap(text: str, width: int, indent: str, subsequent: str | None = None) -> list[str]:
    return textwrap.wrap(clean(text), width=width, initial_indent=indent,
                         subsequent_indent=indent if subsequent is None else subsequent,
                         break_on_hyphens=False) or [indent.rstrip()]


def _protocol_lines(b, unicode: bool, width: int) -> list[str]:
    """How each row's hyperparameters were chosen (the board model's status, with grid edges), then per
    searched method its trials: each tried setting with its held-out score (mean, n), the selected marked."""
    from suite.reports.format import f_score

    p = b.protocol
    if not p.searched:
        return _wrap("hyperparameters: no method here was tuned; every row, the baseline included, ran at "
                     "its defaults", width, "  ", "    ")
    out = ["  hyperparameters (tuned: chosen by a search on held-out training data):"]
    for variant, status in p.statuses.items():
        out += _wrap(f"{clean(variant)}{' (baseline)' if variant == b.baseline else ''}: {status.summary}",
                     width, "    ", "      ")
        for edge in status.edges:
            out += _wrap(f"grid edge: {edge.text}", width, "      ", "        ")
    chosen = "← selected" if unicode else "<- selected"
    by_label: dict[str, list] = {}
    for search in b.searches:
        by_label.setdefault(search.label, []).append(search)
    for label, searches in by_label.items():
        metric = searches[0].metric
        several = len({s.subtask for s in searches}) > 1
        out += _wrap(f"trials of {clean(label)} ({clean(metric) or 'score'} on held-out training data):",
                     width, "  ", "    ")
        table: list[list] = [(["task"] if several else []) + ["setting", "score", "n", ""]]
        for s in searches:
            for point in s.points:
                hw = f" ± {f_score((point.high - point.low) / 2, s.metric)}" if point.n > 1 else ""
                n = f"{point.n}" + (f" ({point.failed} failed)" if point.failed else "")
                table.append(([clean(s.subtask) or clean(b.family)] if several else [])
                             + [clean(point.label), f_score(point.mean, s.metric) + hw, n,
                                chosen if point.selected else ""])
        out += _fit(_ascii(table, unicode), width, indent="    ")
    out.append("")
    return out


def _gap_table(b, unicode: bool, width: int = 100, mark: str = "") -> list[str]:
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
    table: list[list] = [head]
    for r in [base] + [r for r in b.rows if r is not base]:
        line: list = [clean(r.variant) + (" (baseline)" if r is base else "")]
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
        emulated = EMULATED if first is not None and first.emulated else ""
        line += [f_num(step * 1000, 0) + emulated, f_num(costs.get("train_tokens_per_s"), 0) + emulated,
                 f_memory(costs.get("peak_memory_mb"))]
        table.append(line)
    delta = "Δ" if unicode else "d"
    out = _wrap(f"{delta} gap to {clean(b.baseline)}{mark}{_budget(b)} over seeds (pairs: same seed, data and recipe; 95% "
                "Student-t interval of the mean gap; 'beyond': it excludes 0, the gap exceeds the seed "
                "noise; one interval per row, not adjusted for the rows compared: the Holm-adjusted p "
                "above is the test across them):", width, "  ", "    ")
    return out + _fit(_ascii(table, unicode), width, indent="    ")


def _budget(b) -> str:
    """The training budget the gaps were measured at (a pretraining board's tokens per parameter or
    token count), which a gap depends on as much as on the recipe."""
    if b.recipe is None:
        return ""
    parts = []
    for key, unit in (("tokens_per_param", "tokens per parameter"), ("train_tokens", "training tokens")):
        if key in b.recipe.common:
            parts.append(f"{clean(b.recipe.common[key])} {unit}")
        elif key in b.recipe.differs:
            parts.append(f"{unit} differing: {clean('; '.join(b.recipe.differs[key]))}")
    return f" at {', '.join(parts)}" if parts else ""


def _render_cells(column: list) -> list[str]:
    """One column's cells as strings of one width: tuple cells aligned part by part (every part
    right-aligned but the last, a mark or note, which is left-aligned), strings right-aligned."""
    parts = [c for c in column[1:] if isinstance(c, tuple)]
    if parts:
        n = max(len(p) for p in parts)
        parts = [tuple(p) + ("",) * (n - len(p)) for p in parts]
        widths = [max(_width(p[i]) for p in parts) for i in range(n)]
        body = []
        for c in column[1:]:
            if not isinstance(c, tuple):
                c = (c,) + ("",) * (n - 1)
            c = tuple(c) + ("",) * (n - len(c))
            bits = [_pad(x, w, right=i < n - 1) for i, (x, w) in enumerate(zip(c, widths, strict=True)) if w]
            body.append(" ".join(bits))
    else:
        body = [str(c) for c in column[1:]]
    head = str(column[0])
    w = max([_width(head)] + [_width(x) for x in body])
    return [_pad(head, w, right=True)] + [_pad(x, w, right=True) for x in body]


def _pad(text: str, width: int, right: bool) -> str:
    fill = " " * max(0, width - _width(text))
    return fill + text if right else text + fill


def _fit(rows: list[list], width: int, indent: str = "  ") -> list[str]:
    """A table as lines no wider than ``width``: when its columns do not fit side by side they
    go in consecutive blocks, each repeating the first (method) column; a method name too long
    for the width is shortened with an ellipsis."""
    columns = [_render_cells([r[i] for r in rows]) for i in range(len(rows[0]))]
    first = [_pad(str(r[0]), max(_width(str(x[0])) for x in rows), right=False) for r in rows]
    room = width - _width(indent)
    widest_other = max((_width(c[0]) for c in columns[1:]), default=0)
    first_w = min(_width(first[0]), max(8, room - 2 - widest_other))
    first = [_pad(_cut(x.rstrip(), first_w), first_w, right=False) for x in first]
    blocks: list[list[list[str]]] = []
    current: list[list[str]] = []
    used = first_w
    for col in columns[1:]:
        w = _width(col[0])
        if current and used + 2 + w > room:
            blocks.append(current)
            current, used = [], first_w
        current.append(col)
        used += 2 + w
    blocks.append(current)
    lines: list[str] = []
    for n, block in enumerate(blocks):
        if n:
            lines.append("")
        widths = [first_w] + [_width(c[0]) for c in block]
        for i in range(len(rows)):
            lines.append(indent + "  ".join([first[i]] + [c[i] for c in block]).rstrip())
            if i == 0:
                lines.append(indent + "  ".join("-" * w for w in widths))
    return lines
