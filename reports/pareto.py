"""The interactive Pareto plot: one inline SVG per board (overview) and per task page, drawn here
so the page reads without JavaScript, and redrawn by ``static/pareto.js`` when a reader picks other
axes or filters the table.

Every point carries its method name and its value on every offered quantity (``data-v``), so the
script never needs the store. The quantities are the board's scores (display units) and the
declared Pareto axes (``MetricSpec.axis``) plus the board's cost columns that some row has; each
says its direction, scale (log where the spec says so and every value is positive) and its
reference lines (the baseline's value; the majority-class rate where the board knows it). Ranges
fit the shown points (costs do not start at zero); an axis whose points all sit at one value is
said, not drawn; an emulated run's timing is never plotted as a speed (left out, and said).

Everything user-controlled (method names, labels) is escaped here: the SVG is inline markup.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from markupsafe import Markup, escape

from suite import metrics
from suite.metrics import MetricSpec

# The plot's box inside its viewBox (pareto.js reads these from data-box, never its own copy).
WIDTH, HEIGHT = 640, 400
LEFT, RIGHT, TOP, BOTTOM = 70, 620, 18, 330
LABEL_CHARS = 22  # a point's label is its name cut to this length
CHAR_W = 6.0  # estimated width of a label character (11 px sans), for the overlap test


@dataclass
class Quantity:
    """One thing a point can be placed by: a score or a cost, with its direction and references."""

    key: str  # a cost's metric name; "agg:<aggregate>" or "col:<n>" for a score (never a stored subtask: no paths)
    label: str  # the axis label, with the unit
    higher_is_better: bool
    log: bool = False
    timing: bool = False  # a speed measure: emulated runs are left out
    refs: list[tuple[float, str]] = field(default_factory=list)  # (value, what it is): reference lines

    def as_json(self) -> dict:
        return {"key": self.key, "label": self.label, "hib": self.higher_is_better, "log": self.log,
                "timing": self.timing, "refs": [[v, t] for v, t in self.refs]}


@dataclass
class PlotPoint:
    name: str
    rank: int | None
    values: list[float]  # one per quantity (nan where the row lacks it)
    emulated: bool = False
    # The 95% interval over seeds per quantity (nan for costs and one-seed scores): drawn as a bar.
    lows: list[float] = field(default_factory=list)
    highs: list[float] = field(default_factory=list)

    def bounds(self, q: int) -> tuple[float, float] | None:
        lo = self.lows[q] if q < len(self.lows) else math.nan
        hi = self.highs[q] if q < len(self.highs) else math.nan
        return (lo, hi) if _finite(lo) and _finite(hi) else None


@dataclass
class Plot:
    quantities: list[Quantity]
    points: list[PlotPoint]
    x: int  # the default axes (indices into quantities)
    y: int
    title: str

    @property
    def keys(self) -> list[dict]:
        return [{"index": i, "label": q.label} for i, q in enumerate(self.quantities)]


def _finite(v: float | None) -> bool:
    return v is not None and isinstance(v, (int, float)) and math.isfinite(v)


def cost_quantities(cost_columns: Sequence[MetricSpec], memory_label: str,
                    values: dict[str, list[float]]) -> list[Quantity]:
    """The cost axes a board offers: declared Pareto axes, then its cost columns, that some row has."""
    specs = list({s.name: s for s in [*metrics.axes(), *cost_columns]}.values())
    out = []
    for spec in specs:
        if not any(_finite(v) for v in values.get(spec.name, [])):
            continue
        label = f"{memory_label} (MB)" if spec.name == "peak_memory_mb" else spec.axis_label
        out.append(Quantity(spec.name, label, spec.higher_is_better, spec.log_axis, spec.timing))
    return out


def row_cost(entries_costs: Sequence[dict[str, float]], row_costs: dict[str, float], spec: MetricSpec) -> float:
    """A row's value of a cost over its tasks: the board's column where it has one, else the entries'
    values combined as the spec's ``across_tasks`` says (tokens/s is no column, but an axis)."""
    if spec.name in row_costs:
        return float(row_costs[spec.name])
    vals = [c[spec.name] for c in entries_costs if _finite(c.get(spec.name))]
    if not vals:
        return math.nan
    how = {"mean": lambda v: sum(v) / len(v), "median": lambda v: sorted(v)[len(v) // 2] if len(v) % 2
           else (sorted(v)[len(v) // 2 - 1] + sorted(v)[len(v) // 2]) / 2, "max": max, "sum": sum}
    return float(how[spec.across_tasks](vals))


def plot_specs(cost_columns: Sequence[MetricSpec]) -> list[MetricSpec]:
    """Declared Pareto axes and the board's cost columns, once each, in declaration order."""
    return list({s.name: s for s in [*metrics.axes(), *cost_columns]}.values())


# -- geometry (mirrored by pareto.js) ------------------------------------------------------------


def axis_range(values: Sequence[float], refs: Sequence[float], log: bool) -> tuple[float, float, bool] | None:
    """The fitted range of an axis: the shown values and reference lines, 6% padding (in log space on a
    log axis, which needs every value positive); None for a degenerate axis (one value)."""
    vals = [v for v in values if _finite(v)]
    if not vals:
        return None
    if min(vals) == max(vals):
        return None
    allv = vals + [r for r in refs if _finite(r)]
    log = log and min(allv) > 0
    t = [math.log10(v) for v in allv] if log else allv
    lo, hi = min(t), max(t)
    pad = (hi - lo) * 0.06
    return lo - pad, hi + pad, log


def position(v: float, rng: tuple[float, float, bool], a: float, b: float) -> float:
    lo, hi, log = rng
    t = math.log10(v) if log else v
    return a + (t - lo) / (hi - lo) * (b - a)


def front(xs: Sequence[float], ys: Sequence[float], x_hib: bool, y_hib: bool) -> list[bool]:
    """Whether each point is on the Pareto front: no other point at least as good on both axes and
    better on one (each axis in its own direction)."""
    sx, sy = (1 if x_hib else -1), (1 if y_hib else -1)
    out = []
    for i in range(len(xs)):
        dominated = any(sx * xs[j] >= sx * xs[i] and sy * ys[j] >= sy * ys[i]
                        and (sx * xs[j] > sx * xs[i] or sy * ys[j] > sy * ys[i]) for j in range(len(xs)) if j != i)
        out.append(not dominated)
    return out


def ticks(rng: tuple[float, float, bool]) -> list[float]:
    """Tick values inside the range: 1-2-5 steps on a linear axis, powers of ten (or 1-2-5 within a
    decade) on a log axis."""
    lo, hi, log = rng
    if log:
        out = [10.0 ** k for k in range(math.ceil(lo), math.floor(hi) + 1)]
        if len(out) >= 2:
            return out
        out = [m * 10.0 ** k for k in range(math.floor(lo), math.ceil(hi) + 1) for m in (1, 2, 5)
               if lo <= math.log10(m * 10.0 ** k) <= hi]
        return out or [10 ** ((lo + hi) / 2)]
    raw = (hi - lo) / 5
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step) * step
    return [first + i * step for i in range(int((hi - first) / step) + 1)]


def human(v: float) -> str:
    """A tick label: 3 significant digits, k/M/B for large numbers."""
    for unit, size in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(v) >= size:
            return f"{v / size:.3g}{unit}"
    return f"{v:.3g}"


# -- the static rendering ------------------------------------------------------------------------


def _num(v: float) -> str:
    """A value as the script reads it: 7 significant digits (finer than any pixel), "nan" for none."""
    return f"{float(v):.7g}" if _finite(v) else "nan"


def render_svg(plot: Plot) -> Markup:
    """The plot at its default axes as inline SVG, every text escaped; pareto.js redraws the same layout."""
    qx, qy = plot.quantities[plot.x], plot.quantities[plot.y]
    shown: list[int] = []  # indices of the points drawn
    left_out = 0
    for i, p in enumerate(plot.points):
        vx, vy = p.values[plot.x], p.values[plot.y]
        if not (_finite(vx) and _finite(vy)):
            continue
        if p.emulated and (qx.timing or qy.timing):
            left_out += 1
            continue
        shown.append(i)
    xs = [plot.points[i].values[plot.x] for i in shown]
    ys = [plot.points[i].values[plot.y] for i in shown]
    # Ranges fit the points and reference lines; interval bars are cut at the frame (wide seed
    # intervals would otherwise squeeze the points together).
    rx = axis_range(xs, [r for r, _ in qx.refs], qx.log)
    ry = axis_range(ys, [r for r, _ in qy.refs], qy.log)
    on_front = front(xs, ys, qx.higher_is_better, qy.higher_is_better)
    e = escape
    parts = [f'<svg class="pareto-svg" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
             f'data-box="{LEFT} {TOP} {RIGHT} {BOTTOM}" data-x="{plot.x}" data-y="{plot.y}" '
             f'data-x-range="{_range_attr(rx)}" data-y-range="{_range_attr(ry)}" aria-label="{e(plot.title)}">',
             f'<title>{e(plot.title)}</title>',
             f'<rect class="frame" x="{LEFT}" y="{TOP}" width="{RIGHT - LEFT}" height="{BOTTOM - TOP}"></rect>',
             '<g class="axes">']
    parts += _axis_parts(rx, qx, True, xs)
    parts += _axis_parts(ry, qy, False, ys)
    parts.append('</g><g class="refs">')
    for rng, q, horizontal in ((rx, qx, False), (ry, qy, True)):
        if rng is None:
            continue
        for value, what in q.refs:
            parts.append(_ref_line(rng, value, what, horizontal))
    parts.append('</g>')
    fx = sorted((_px(rx, x, True), _px(ry, y, False)) for x, y, f in zip(xs, ys, on_front, strict=True) if f)
    parts.append('<polyline class="front-line" points="' + " ".join(f"{a:.1f},{b:.1f}" for a, b in fx)
                 + '"></polyline><g class="points">')
    at = {i: k for k, i in enumerate(shown)}  # point index -> its place in xs, ys
    placed: list[tuple[float, float, float, float]] = []
    labels: dict[int, tuple[float, float]] = {}
    rank_of = [p.rank if p.rank is not None else 10**9 for p in plot.points]
    for i in sorted(shown, key=lambda i: (not on_front[at[i]], rank_of[i], i)):
        name = plot.points[i].name[:LABEL_CHARS]
        x, y = _px(rx, xs[at[i]], True), _px(ry, ys[at[i]], False)
        box = (x + 7, y - 15, x + 7 + CHAR_W * len(name), y - 3)
        if box[2] <= WIDTH and box[1] >= 0 and not any(_overlap(box, b) for b in placed):
            placed.append(box)
            labels[i] = (box[0], y - 5)
    for i, p in enumerate(plot.points):
        vals = " ".join(_num(v) for v in p.values)
        attrs = (f'class="pt" data-method="{e(p.name)}" data-rank="{p.rank if p.rank is not None else ""}" '
                 f'data-v="{vals}"' + (' data-emulated="1"' if p.emulated else ""))
        n = max((j + 1 for j, v in enumerate(p.lows) if _finite(v)), default=0)  # the scores lead: cut the nans after
        if n:
            attrs += (f' data-lo="{" ".join(_num(v) for v in p.lows[:n])}"'
                      f' data-hi="{" ".join(_num(v) for v in p.highs[:n])}"')
        if i not in at:
            parts.append(f'<g {attrs} hidden></g>')
            continue
        k = at[i]
        x, y = _px(rx, xs[k], True), _px(ry, ys[k], False)
        cls = "dot front" if on_front[k] else "dot"
        title = f"{p.name}: {qx.label} {human(xs[k])}, {qy.label} {human(ys[k])}"
        bars = ""
        if (b := p.bounds(plot.y)) and ry is not None:
            bars += (f'<line class="err" x1="{x:.2f}" x2="{x:.2f}" y1="{_clip(_px(ry, b[0], False), TOP, BOTTOM):.2f}" '
                     f'y2="{_clip(_px(ry, b[1], False), TOP, BOTTOM):.2f}"></line>')
        if (b := p.bounds(plot.x)) and rx is not None:
            bars += (f'<line class="err" x1="{_clip(_px(rx, b[0], True), LEFT, RIGHT):.2f}" '
                     f'x2="{_clip(_px(rx, b[1], True), LEFT, RIGHT):.2f}" '
                     f'y1="{y:.2f}" y2="{y:.2f}"></line>')
        text = (f'<text class="pt-label" x="{labels[i][0]:.1f}" y="{labels[i][1]:.1f}">{e(p.name[:LABEL_CHARS])}</text>'
                if i in labels else "")
        parts.append(f'<g {attrs}><title>{e(title)}</title>{bars}<circle class="{cls}" cx="{x:.2f}" cy="{y:.2f}" r="5">'
                     f'</circle>{text}</g>')
    parts.append('</g>')
    note = ""
    if left_out:
        note = (f"{left_out} row{'s' if left_out != 1 else ''} with emulated GEMMs left out of this timing axis: "
                f"{'their times measure' if left_out != 1 else 'its time measures'} the emulation, not the recipe's speed")
    parts.append(f'<text class="note-text" x="{LEFT}" y="{HEIGHT - 6}">{e(note)}</text>')
    parts.append('</svg>')
    return Markup("".join(parts))


def _clip(v: float, a: float, b: float) -> float:
    return min(max(v, a), b)


def _overlap(a, b) -> bool:
    return not (a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1])


def _range_attr(rng) -> str:
    return "" if rng is None else f"{rng[0]!r} {rng[1]!r} {'log' if rng[2] else 'linear'}"


def _px(rng, v: float, horizontal: bool) -> float:
    if rng is None:
        return (LEFT + RIGHT) / 2 if horizontal else (TOP + BOTTOM) / 2
    return position(v, rng, LEFT, RIGHT) if horizontal else position(v, rng, BOTTOM, TOP)


def direction(q: Quantity, horizontal: bool) -> str:
    if horizontal:
        return "better →" if q.higher_is_better else "← better"
    return "better ↑" if q.higher_is_better else "better ↓"


def _axis_parts(rng, q: Quantity, horizontal: bool, values: list[float]) -> list[str]:
    e = escape
    scale = " (log scale)" if rng is not None and rng[2] else ""
    title = f"{q.label}{scale} · {direction(q, horizontal)}"
    out = []
    if horizontal:
        out.append(f'<text class="axis-title x-title" x="{(LEFT + RIGHT) / 2}" y="{BOTTOM + 38}">{e(title)}</text>')
    else:
        out.append(f'<text class="axis-title y-title" transform="translate(14 {(TOP + BOTTOM) / 2}) rotate(-90)">'
                   f'{e(title)}</text>')
    if rng is None:
        said = (("one point" if len(values) == 1 else f"all {len(values)} points") + f" at {human(values[0])}: axis not drawn"
                if values else "no points shown")
        x, y = ((LEFT + RIGHT) / 2, BOTTOM + 18) if horizontal else (LEFT + 6, TOP + 14)
        out.append(f'<text class="degenerate" x="{x}" y="{y}" data-axis="{"x" if horizontal else "y"}">{e(said)}</text>')
        return out
    for t in ticks(rng):
        if horizontal:
            x = position(t, rng, LEFT, RIGHT)
            out.append(f'<line class="grid" x1="{x:.1f}" x2="{x:.1f}" y1="{TOP}" y2="{BOTTOM}"></line>'
                       f'<text class="tick x-tick" x="{x:.1f}" y="{BOTTOM + 16}">{e(human(t))}</text>')
        else:
            y = position(t, rng, BOTTOM, TOP)
            out.append(f'<line class="grid" x1="{LEFT}" x2="{RIGHT}" y1="{y:.1f}" y2="{y:.1f}"></line>'
                       f'<text class="tick y-tick" x="{LEFT - 6}" y="{y + 4:.1f}">{e(human(t))}</text>')
    return out


def _ref_line(rng, value: float, what: str, horizontal: bool) -> str:
    e = escape
    label = f"{what}: {human(value)}"
    if horizontal:
        y = position(value, rng, BOTTOM, TOP)
        return (f'<g class="ref"><line x1="{LEFT}" x2="{RIGHT}" y1="{y:.1f}" y2="{y:.1f}"></line>'
                f'<text x="{RIGHT - 4}" y="{y - 4:.1f}" class="ref-label end">{e(label)}</text></g>')
    x = position(value, rng, LEFT, RIGHT)
    return (f'<g class="ref"><line x1="{x:.1f}" x2="{x:.1f}" y1="{TOP}" y2="{BOTTOM}"></line>'
            f'<text x="{x + 4:.1f}" y="{TOP + 12}" class="ref-label">{e(label)}</text></g>')


def quantities_json(plot: Plot) -> str:
    """The quantities as the script reads them (an attribute value: the template escapes it)."""
    return json.dumps([q.as_json() for q in plot.quantities], allow_nan=False, default=str)


# -- from a board --------------------------------------------------------------------------------


def _score_refs(board, key: tuple[str, str, str] | None, base_value: float, scale: float) -> list[tuple[float, str]]:
    refs = []
    if board.baseline and _finite(base_value):
        refs.append((base_value, f"baseline {board.baseline}"))
    if key is not None and key in board.chance_levels:
        level, kind = board.chance_levels[key]
        refs.append((level * scale, "majority-class rate" if kind == "majority" else "chance level"))
    return refs


def _finish(board, scores: list[Quantity], score_values: list[tuple[list[float], list[float], list[float]]],
            names: list[str],
            ranks: list[int | None], costs: list[dict[str, float]], emulated: list[bool], title: str) -> Plot | None:
    """Add the cost quantities and choose the default axes:
    the first score against the first cost whose shown points differ; None with under two quantities."""
    specs = plot_specs(board.cost_columns)
    values = {s.name: [c.get(s.name, math.nan) for c in costs] for s in specs}
    cq = cost_quantities(board.cost_columns, board.memory_label, values)
    quantities = scores + cq
    if len(quantities) < 2 or not any(_finite(v) for v in score_values[0][0]):
        return None
    nan = [math.nan] * len(cq)
    points = [PlotPoint(n, r, [*(sv[0][i] for sv in score_values), *(values[q.key][i] for q in cq)], em,
                        [*(sv[1][i] for sv in score_values), *nan], [*(sv[2][i] for sv in score_values), *nan])
              for i, (n, r, em) in enumerate(zip(names, ranks, emulated, strict=True))]
    x = len(scores) if cq else 1
    for j, q in enumerate(cq):
        vals = {p.values[len(scores) + j] for p in points if _finite(p.values[len(scores) + j])
                and _finite(p.values[0]) and not (q.timing and p.emulated)}
        if len(vals) > 1:
            x = len(scores) + j
            break
    return Plot(quantities, points, x, 0, title)


def _summaries(entries: list, scale: float) -> tuple[list[float], list[float], list[float]]:
    """Means and 95% interval ends over seeds (display units) of each entry; nan where none (or one seed)."""
    means, lows, highs = [], [], []
    for e in entries:
        if e is None:
            means.append(math.nan), lows.append(math.nan), highs.append(math.nan)
            continue
        several = e.summary.n > 1
        means.append(e.summary.mean * scale)
        lows.append(e.summary.ci_low * scale if several else math.nan)
        highs.append(e.summary.ci_high * scale if several else math.nan)
    return means, lows, highs


def board_plot(board) -> Plot | None:
    """The overview's plot of a board: its ranking score (the headline aggregate, else the first
    column), every column's score and the cost axes, one point per row with a score."""
    from suite.reports.format import display_scale

    head = board.headline
    scores: list[Quantity] = []
    score_values: list[list[float]] = []
    rows = board.rows
    base = next((r for r in rows if r.variant == board.baseline), None)
    if head:
        vals = [r.aggregates.get(head.name, math.nan) * head.scale for r in rows]
        ivs = [r.intervals.get(head.name, (math.nan, math.nan, 0)) for r in rows]
        bv = base.aggregates.get(head.name, math.nan) * head.scale if base else math.nan
        scores.append(Quantity(f"agg:{head.name}", head.label, head.higher_is_better,
                               refs=_score_refs(board, None, bv, head.scale)))
        score_values.append((vals, [iv[0] * head.scale for iv in ivs], [iv[1] * head.scale for iv in ivs]))
    for c in board.columns:
        scale = display_scale(c.metric)
        bv = base.entries[c.key].summary.mean * scale if base and c.key in base.entries else math.nan
        scores.append(Quantity(f"col:{len(scores)}", f"{c.label} ({c.metric})", c.higher_is_better,
                               refs=_score_refs(board, c.key, bv, scale)))
        score_values.append(_summaries([r.entries.get(c.key) for r in rows], scale))
    specs = plot_specs(board.cost_columns)
    costs = [{s.name: row_cost([e.costs for e in r.entries.values()], r.costs, s) for s in specs} for r in rows]
    return _finish(board, scores, score_values, [r.variant for r in rows], [r.rank for r in rows], costs,
                   [r.emulated for r in rows], f"{scores[0].label if scores else ''} against cost, "
                   f"{board.family} on {board.model_label}")


def task_plot(board, columns: list, rows: list[dict]) -> Plot | None:
    """A task page's plot: its columns' scores and the cost axes of each row's entry (its cells on this
    task), the first column first (the page's ranking)."""
    from suite.reports.format import display_scale

    scored = [r for r in rows if r["entry"] is not None]
    scores, score_values = [], []
    base = next((r for r in scored if r["row"].variant == board.baseline), None)
    for c in columns:
        scale = display_scale(c.metric)
        bv = (base["row"].entries[c.key].summary.mean * scale
              if base is not None and c.key in base["row"].entries else math.nan)
        scores.append(Quantity(f"col:{len(scores)}", f"{c.label} ({c.metric})", c.higher_is_better,
                               refs=_score_refs(board, c.key, bv, scale)))
        score_values.append(_summaries([r["row"].entries.get(c.key) for r in scored], scale))
    specs = plot_specs(board.cost_columns)
    costs = [{s.name: float(r["entry"].costs.get(s.name, math.nan)) for s in specs} for r in scored]
    return _finish(board, scores, score_values, [r["row"].variant for r in scored], [r["rank"] for r in scored],
                   costs, [bool(r["entry"].emulated) for r in scored],
                   f"{scores[0].label if scores else ''} against cost")


def context(plot: Plot | None) -> dict | None:
    """What the template needs: the static SVG, the axis choices and the quantities for the script."""
    if plot is None:
        return None
    return {"svg": render_svg(plot), "choices": plot.keys, "x": plot.x, "y": plot.y,
            "quantities": quantities_json(plot), "title": plot.title}
