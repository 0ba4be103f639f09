"""Matplotlib SVG figures: Pareto fronts of score against cost, tuned-value curves, kernel timing histories.

A Pareto figure is one SVG per cost axis (``pareto_panels``), so a page can lay the panels
side by side on a wide screen and stack them on a narrow one. Every point carries the
number of its row in the table's rank column and an error bar (its 95% interval over seeds).

Figures are written as SVG files and shown with ``<img>``, so text inside them (method
names are user-controlled) can never run as script in the page. Math-text parsing is off,
so a ``$`` in a name is drawn as a dollar sign instead of failing the render.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FuncFormatter, NullFormatter, NullLocator  # noqa: E402

from suite import metrics  # noqa: E402
from suite.metrics import MetricSpec  # noqa: E402
from suite.reports import stats  # noqa: E402

RC = {
    "svg.fonttype": "none",  # text stays text: smaller files, selectable, crisp
    "svg.hashsalt": "suite",  # stable element ids: the same store renders byte-identical SVG
    "text.parse_math": False,
    "font.size": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
}

@dataclass
class Point:
    label: str
    score: float
    costs: dict[str, float]
    number: int | None = None  # the row's rank (the marker's number); None: no rank, labelled by name
    low: float = math.nan  # 95% interval of the score (error bar), in the score's units
    high: float = math.nan
    emulated: bool = False  # its GEMMs ran emulated: its times measure the emulation, never drawn as speed


def _on_axis(p: Point, axis: MetricSpec) -> bool:
    """Whether ``p`` belongs on ``axis``: it has the cost and a score, and an emulated run's
    timing is not a speed."""
    return _finite(p.costs.get(axis.name)) and _finite(p.score) and not (axis.timing and p.emulated)


def _axes_used(points: Sequence[Point]) -> list[MetricSpec]:
    """The declared Pareto axes (suite.metrics) that some point can be drawn on."""
    return [a for a in metrics.axes() if any(_on_axis(p, a) for p in points)]






def panel_keys(points: Sequence[Point]) -> list[str]:
    """The cost axes ``pareto_panels`` will draw for these points (one file each)."""
    return [axis.name for axis in _axes_used(points)]


def pareto_panels(points: Sequence[Point], ylabel: str, paths: Sequence[Path], higher_is_better: bool = True,
                  memory_label: str = "peak memory (MB)") -> bool:
    """One SVG per cost axis (``paths`` in ``panel_keys`` order); False when there is nothing to draw."""
    axes_used = _axes_used(points)
    if not axes_used:
        return False
    with plt.rc_context(RC):
        for axis, path in zip(axes_used, paths, strict=True):
            fig, ax = plt.subplots(figsize=(4.2, 3.4))
            _draw_panel(ax, points, axis, ylabel, higher_is_better, memory_label)
            # Fixed margins: tight_layout measures every text extent and costs more than the plot.
            fig.subplots_adjust(left=0.17, right=0.97, bottom=0.15, top=0.95)
            fig.savefig(path, format="svg", metadata={"Date": None})  # reproducible files
            plt.close(fig)
    return True


def _draw_panel(ax, points: Sequence[Point], axis: MetricSpec, ylabel: str,
                higher_is_better: bool, memory_label: str) -> None:
    """Score against one cost: every point numbered by its rank (or named), error bars, the front."""
    key, xlabel, log = axis.name, axis.axis_label, axis.log_axis
    if key == "peak_memory_mb":
        xlabel = f"{memory_label} (MB)"
    pts = [p for p in points if _on_axis(p, axis)]
    xs = [p.costs[key] for p in pts]
    ys = [p.score for p in pts]
    front = stats.pareto_front(xs, ys, higher_is_better)
    lows = [p.score - p.low if _finite(p.low) else 0.0 for p in pts]
    highs = [p.high - p.score if _finite(p.high) else 0.0 for p in pts]
    ax.errorbar(xs, ys, yerr=[lows, highs], fmt="none", ecolor="#adb5bd", elinewidth=0.8, capsize=2, zorder=1)
    ax.scatter([x for x, f in zip(xs, front, strict=True) if not f],
               [y for y, f in zip(ys, front, strict=True) if not f],
               s=18, color="#9aa5b1", label="dominated", zorder=2)
    fx = sorted((x, y) for x, y, f in zip(xs, ys, front, strict=True) if f)
    ax.plot([x for x, _ in fx], [y for _, y in fx], "-o", color="#d9480f", ms=5, lw=1.5,
            label="Pareto front", zorder=3)
    # Numbers match the table's rank column; unranked points carry their (shortened) name.
    many = len(pts) > 40
    for p, x, y, f in zip(pts, xs, ys, front, strict=True):
        if many and not f and p.number is not None and p.number > 20:
            continue  # a crowded panel names the front and the top 20
        text = str(p.number) if p.number is not None else p.label[:24]
        ax.annotate(text, (x, y), textcoords="offset points", xytext=(3, 3), fontsize=7,
                    color="#d9480f" if f else "#495057")
    if log and xs and min(xs) > 0:
        ax.set_xscale("log")
        # Plain labels: with math text off, the default log labels print as TeX source.
        ax.xaxis.set_major_formatter(FuncFormatter(_human))
        ax.xaxis.set_minor_formatter(NullFormatter())
    elif xs:
        ax.set_xlim(left=0, right=max(xs) * 1.08 if max(xs) > 0 else 1)  # costs start at zero
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=7, frameon=False)


def _printable(text: str) -> str:
    """Store text without control characters, which XML (so SVG) cannot hold."""
    return re.sub(r"[\x00-\x1f\x7f-\x9f]", " ", str(text))


def _finite(v: float | None) -> bool:
    return v is not None and not (isinstance(v, float) and math.isnan(v))


def _human(v: float, _pos=None) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(v) >= size:
            return f"{v / size:g}{unit}"
    return f"{v:g}"


def tuning_curves(curves: Sequence, ylabel: str, scale: float, path: Path) -> bool:
    """One panel per searched hyperparameter: each method's held-out trial score against the value
    (``board.TrialCurve``), the selected setting starred, bars the 95% interval where a value
    ran with several seeds. A log axis where every curve's values are log-spaced; a choice on a
    categorical axis. False when no point has a score."""
    names = list(dict.fromkeys(c.name for c in curves))
    if not any(_finite(p.mean) for c in curves for p in c.points):
        return False
    colors = {label: f"C{i % 10}" for i, label in enumerate(dict.fromkeys(c.label for c in curves))}
    with plt.rc_context(RC):
        fig, axes = plt.subplots(1, len(names), figsize=(4.6 * len(names), 3.4), squeeze=False)
        for i, (ax, name) in enumerate(zip(axes[0], names, strict=True)):
            mine = [c for c in curves if c.name == name]
            numeric = all(c.numeric for c in mine)
            places = {label: n for n, label in enumerate(dict.fromkeys(p.label for c in mine for p in c.points))}
            log = numeric and any(c.log for c in mine) and all(p.x > 0 for c in mine for p in c.points)
            for k, c in enumerate(mine):
                pts = [p for p in c.points if _finite(p.mean)]
                if not pts:
                    continue
                xs = [p.x if numeric else places[p.label] for p in pts]
                ys = [p.mean * scale for p in pts]
                low = [(p.mean - p.low) * scale if p.n > 1 and _finite(p.low) else 0.0 for p in pts]
                high = [(p.high - p.mean) * scale if p.n > 1 and _finite(p.high) else 0.0 for p in pts]
                held = ", ".join(f"{k}={v}" for k, v in c.held.items())
                label = _printable(c.label[:40] + (f" ({held})" if held else " (others vary)" if c.projected else ""))
                ax.errorbar(xs, ys, yerr=[low, high], fmt="o" if c.projected else "-o", color=colors[c.label],
                            ms=4, lw=1.4, elinewidth=0.8, capsize=2, label=label, zorder=2)
                for p, x, y in zip(pts, xs, ys, strict=True):
                    if p.selected:
                        ax.scatter([x], [y], marker="*", s=160, color=colors[c.label], edgecolors="#212529",
                                   linewidths=0.6, zorder=4)
                        ax.annotate("selected", (x, y), textcoords="offset points", xytext=(4, 6 + 9 * k),
                                    fontsize=7, color=colors[c.label])
            # The star's legend entry in no method's colour: every method has its own selected point.
            ax.scatter([], [], marker="*", s=120, color="white", edgecolors="#212529", linewidths=0.6, label="selected")
            ax.margins(x=0.12)
            if log:
                ax.set_xscale("log")
                ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
                ax.xaxis.set_minor_formatter(NullFormatter())
            if numeric:
                # A grid's ticks are the values tried, as written ("3e-4"); random draws (long labels) keep the axis'.
                ticks = {p.x: p.label for c in mine for p in c.points if _finite(p.x)}
                if 1 < len(ticks) <= 8 and all(len(label) <= 8 for label in ticks.values()):
                    ax.set_xticks(sorted(ticks), [_printable(ticks[x][:12]) for x in sorted(ticks)])
                    ax.xaxis.set_minor_locator(NullLocator())
            else:
                ax.set_xticks(list(places.values()), [_printable(label[:16]) for label in places])
            ax.set_xlabel(_printable(name) + (" (log scale)" if log else ""))
            if i == 0:
                ax.set_ylabel(_printable(ylabel))
            ax.grid(alpha=0.3)
            ax.legend(loc="best", fontsize=7, frameon=False)
        fig.subplots_adjust(left=0.17 / len(names), right=0.98, bottom=0.15, top=0.95, wspace=0.25)
        fig.savefig(path, format="svg", metadata={"Date": None})
        plt.close(fig)
    return True
