"""The kernels page's history figure: median time per run, one line per impl x shape x device.

Kept apart from ``suite.reports.figures`` (the leaderboard's Pareto fronts) because its data
is the kernels model's (``suite.reports.kernels``): points keyed by run labels, each series
named in full. The legend goes below the axis title, one entry per line, so a long series name
("triton 4096x4096x4096 bfloat16 @ NVIDIA H100 80GB HBM3") is never cut; the figure grows
with the number of series instead.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402

RC = {
    "svg.fonttype": "none",  # text stays text: smaller files, selectable, crisp
    "svg.hashsalt": "suite",  # stable element ids: the same store renders byte-identical SVG
    "text.parse_math": False,  # a '$' in a device name is drawn, not parsed
    "font.size": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
}
RUN_AXIS = "run (date UTC, suite commit, #run of that day and commit)"


def history_svg(series: dict[str, list[tuple[str, float, bool]]], title: str, path: Path) -> bool:
    """Median time per run for each series; regressions (the gate's verdict) as red crosses.

    ``series`` maps a full series name to (run label, median ms, regression?) in run order.
    The legend is placed below the axis title after the tick labels are measured, and the
    file is cut to what was drawn (``bbox_inches="tight"``), so no label is clipped or
    overlapped whatever the run labels' length. Returns False (and writes nothing) when there
    is nothing to draw.
    """
    if not series:
        return False
    runs: list[str] = []
    for points in series.values():
        for run, _, _ in points:
            if run not in runs:
                runs.append(run)
    pos = {r: i for i, r in enumerate(runs)}
    with plt.rc_context(RC):
        fig, ax = plt.subplots(figsize=(7.0, 3.2))
        for label, points in series.items():
            ax.plot([pos[r] for r, _, _ in points], [t for _, t, _ in points], "-o", ms=3, label=label)
            bad = [(pos[r], t) for r, t, reg in points if reg]
            if bad:
                ax.scatter([x for x, _ in bad], [t for _, t in bad], marker="x", s=60, color="#c92a2a",
                           zorder=4, label=None)
        ax.set_xticks(range(len(runs)), runs, rotation=30, ha="right", fontsize=7)
        ax.set_xlim(-0.5, len(runs) - 0.5)
        ax.set_xlabel(RUN_AXIS)
        ax.set_ylabel("median time (ms)")
        ax.set_ylim(bottom=0)
        ax.set_title(title)
        ax.grid(alpha=0.3)
        fig.subplots_adjust(left=0.1, right=0.97, top=0.9, bottom=0.32)
        # Measure what the axes drew (tick labels, axis title), then hang the legend below it.
        renderer = fig.canvas.get_renderer()
        drawn = ax.get_tightbbox(renderer).transformed(fig.transFigure.inverted())
        fig.legend(*ax.get_legend_handles_labels(), fontsize=7, frameon=False, loc="upper left", ncol=1,
                   bbox_to_anchor=(max(0.0, drawn.x0), drawn.y0 - 0.02), bbox_transform=fig.transFigure)
        fig.savefig(path, format="svg", metadata={"Date": None}, bbox_inches="tight", pad_inches=0.15)
        plt.close(fig)
    return True
