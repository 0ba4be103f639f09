"""Matplotlib SVG figures: Pareto fronts of score against cost, and kernel timing histories.

A Pareto figure is one SVG per cost axis (``pareto_panels``), so a page can lay the panels
side by side on a wide screen and stack them on a narrow one. Every point carries the
number of its row in the table's rank column and an error bar (its 95% interval over seeds).

Figures are written as SVG files and shown with ``<img>``, so text inside them (method
names are user-controlled) can never run as script in the page. Math-text parsing is off,
so a ``$`` in a name is drawn as a dollar sign instead of failing the render.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FuncFormatter, NullFormatter  # noqa: E402

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


def _finite(v: float | None) -> bool:
    return v is not None and not (isinstance(v, float) and math.isnan(v))


def _human(v: float, _pos=None) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(v) >= size:
            return f"{v / size:g}{unit}"
    return f"{v:g}"
