"""Matplotlib SVG figures: tuned-value curves (kernel timing histories are ``kernel_figures``).

The Pareto plots are not drawn here: they are inline, interactive SVG (``reports.pareto``).

Figures are written as SVG files and shown with ``<img>``, so text inside them (method
names are user-controlled) can never run as script in the page. Math-text parsing is off,
so a ``$`` in a name is drawn as a dollar sign instead of failing the render.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FuncFormatter, NullFormatter, NullLocator  # noqa: E402

RC = {
    "svg.fonttype": "none",  # text stays text: smaller files, selectable, crisp
    "svg.hashsalt": "suite",  # stable element ids: the same store renders byte-identical SVG
    "text.parse_math": False,
    "font.size": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
}

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
