"""Matplotlib SVG figures: Pareto fronts of score against cost, and kernel timing histories.

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

from suite import stats  # noqa: E402

RC = {
    "svg.fonttype": "none",  # text stays text: smaller files, selectable, crisp
    "svg.hashsalt": "suite",  # stable element ids: the same store renders byte-identical SVG
    "text.parse_math": False,
    "font.size": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
}

COST_AXES = (
    ("trainable_params", "trainable parameters", True),
    ("peak_memory_mb", "peak memory (MB)", False),
    ("train_time_s", "train time (s)", False),
)


@dataclass
class Point:
    label: str
    score: float
    costs: dict[str, float]


def _axes_used(points: Sequence[Point]) -> list[tuple[str, str, bool]]:
    return [a for a in COST_AXES if any(_finite(p.costs.get(a[0])) and _finite(p.score) for p in points)]


def has_data(points: Sequence[Point]) -> bool:
    """Whether ``pareto_svg`` would draw these points: pages can link a figure before it is drawn."""
    return bool(_axes_used(points))


def pareto_svg(points: Sequence[Point], ylabel: str, path: Path, higher_is_better: bool = True) -> bool:
    """Score against each cost, front highlighted and labelled. False when there is nothing to draw."""
    axes_used = _axes_used(points)
    if not axes_used:
        return False
    with plt.rc_context(RC):
        fig, axes = plt.subplots(1, len(axes_used), figsize=(3.6 * len(axes_used), 3.0), squeeze=False)
        for ax, (key, xlabel, log) in zip(axes[0], axes_used, strict=True):
            pts = [p for p in points if _finite(p.costs.get(key)) and _finite(p.score)]
            xs = [p.costs[key] for p in pts]
            ys = [p.score for p in pts]
            front = stats.pareto_front(xs, ys, higher_is_better)
            ax.scatter([x for x, f in zip(xs, front, strict=True) if not f],
                       [y for y, f in zip(ys, front, strict=True) if not f],
                       s=18, color="#9aa5b1", label="dominated", zorder=2)
            fx = [(x, y, p.label) for x, y, p, f in zip(xs, ys, pts, front, strict=True) if f]
            fx.sort()
            ax.plot([x for x, _, _ in fx], [y for _, y, _ in fx], "-o", color="#d9480f", ms=5,
                    lw=1.5, label="Pareto front", zorder=3)
            for x, y, label in fx[:12]:
                ax.annotate(label[:28], (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
            if log and min(xs) > 0:
                ax.set_xscale("log")
                # Plain labels: with math text off, the default log labels print as TeX source.
                ax.xaxis.set_major_formatter(FuncFormatter(_human))
                ax.xaxis.set_minor_formatter(NullFormatter())
            ax.set_xlabel(xlabel)
            ax.set_ylabel(ylabel)
            ax.grid(alpha=0.3)
        axes[0][0].legend(loc="best", fontsize=7, frameon=False)
        # Fixed margins: tight_layout measures every text extent and costs more than the plot.
        fig.subplots_adjust(left=0.08, right=0.98, bottom=0.17, top=0.95, wspace=0.32)
        fig.savefig(path, format="svg", metadata={"Date": None})  # reproducible files
        plt.close(fig)
    return True


def history_svg(series: dict[str, list[tuple[str, float, bool]]], title: str, path: Path) -> bool:
    """Time per commit for each implementation/shape; regressions drawn as red crosses."""
    if not series:
        return False
    with plt.rc_context(RC):
        fig, ax = plt.subplots(figsize=(7.0, 2.8))
        commits: list[str] = []
        for points in series.values():
            for c, _, _ in points:
                if c not in commits:
                    commits.append(c)
        pos = {c: i for i, c in enumerate(commits)}
        for label, points in series.items():
            ax.plot([pos[c] for c, _, _ in points], [t for _, t, _ in points], "-o", ms=3, label=label[:40])
            bad = [(pos[c], t) for c, t, r in points if r]
            if bad:
                ax.scatter([x for x, _ in bad], [t for _, t in bad], marker="x", s=60, color="#c92a2a",
                           zorder=4, label=None)
        ax.set_xticks(range(len(commits)), [c[:10] for c in commits], rotation=30, ha="right", fontsize=7)
        ax.set_ylabel("time (ms)")
        ax.set_title(title[:60])
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6, frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0))
        fig.subplots_adjust(left=0.08, right=0.62, bottom=0.25, top=0.88)
        fig.savefig(path, format="svg", metadata={"Date": None})  # reproducible files
        plt.close(fig)
    return True


def _finite(v: float | None) -> bool:
    return v is not None and not (isinstance(v, float) and math.isnan(v))


def _human(v: float, _pos=None) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(v) >= size:
            return f"{v / size:g}{unit}"
    return f"{v:g}"
