"""Training curves over seeds: per-step training loss and every evaluation made during training.

Where the points come from: a cell's curve file (``curves/<cell_id>.parquet``: ``train_loss`` at
every optimizer step, each evaluation during training under its metric's name), and, for a
cell without a curve file for that metric, its ``<metric>@step<N>`` rows in the cells table
(older stores, hand-written cells). The two hold the same evaluations; the curve file wins.

How seeds are combined: the cells of one method on one task (its seeds) are aligned by
step; at each step the mean is over the seeds that have a value there, and the band is the
95% Student-t interval of that mean (``mean ± t(0.975, n-1) · sd / sqrt(n)``) where n ≥ 2,
none where one seed has the step. ``n`` is kept per step, so a figure can say where seeds
differ. Nothing is averaged across steps: a long curve is thinned for drawing (every k-th
step, the last one always kept) and the figure says so.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

STEP_METRIC = re.compile(r"^(?P<base>.+)@step(?P<step>\d+)$")
TRAIN_LOSS = "train_loss"
MAX_DRAWN_POINTS = 400  # a longer curve is drawn at every k-th step (never averaged)
MAX_LINES = 10  # a task figure draws the baseline and the best-ranked methods up to this many lines
CONFIDENCE = 0.95


@dataclass
class Band:
    """One metric of one method during training: per step, the mean over seeds and its interval."""

    metric: str
    steps: np.ndarray
    mean: np.ndarray
    low: np.ndarray  # nan where fewer than two seeds have the step
    high: np.ndarray
    n: np.ndarray  # seeds with a value at each step

    @property
    def seeds_differ(self) -> bool:
        """Whether some step has fewer seeds than another (the figure then says how many)."""
        return bool(len(self.n)) and int(self.n.min()) != int(self.n.max())


@dataclass
class MethodCurves:
    """A method's curves on one task: one band per metric (training loss first)."""

    variant: str
    bands: dict[str, Band] = field(default_factory=dict)
    n_cells: int = 0


def curve_rows(store, cells: pd.DataFrame, cell_ids: Sequence[str]) -> pd.DataFrame:
    """Every stored curve point of ``cell_ids`` (cell_id, metric, step, value): the curve files, and
    the cells' ``<metric>@step<N>`` rows where a cell has no curve file point for that metric."""
    ids = sorted({str(c) for c in cell_ids})
    frames = []
    try:
        files = store.load_curves(ids) if ids else pd.DataFrame()
    except Exception:  # noqa: BLE001 - an unreadable curve file is quarantined and named by the store
        files = pd.DataFrame()
    if files is not None and not files.empty and {"cell_id", "metric", "step", "value"} <= set(files.columns):
        frames.append(files[["cell_id", "metric", "step", "value"]].assign(source=0))
    if not cells.empty and "metric" in cells:
        names = [m for m in cells["metric"].dropna().unique() if isinstance(m, str) and "@step" in m]
        parsed = {m: STEP_METRIC.match(m) for m in names}
        parsed = {m: (p.group("base"), int(p.group("step"))) for m, p in parsed.items() if p}
        if parsed:
            sel = cells[cells["metric"].isin(set(parsed)) & cells["cell_id"].isin(set(ids))]
            if "status" in sel:
                sel = sel[sel["status"] == "ok"]
            if not sel.empty:
                frames.append(pd.DataFrame({
                    "cell_id": sel["cell_id"].astype(str).to_numpy(),
                    "metric": [parsed[m][0] for m in sel["metric"]],
                    "step": [parsed[m][1] for m in sel["metric"]],
                    "value": sel["value"].astype(float).to_numpy(), "source": 1}))
    if not frames:
        return pd.DataFrame(columns=["cell_id", "metric", "step", "value"])
    rows = pd.concat(frames, ignore_index=True)
    rows["cell_id"] = rows["cell_id"].astype(str)
    rows["step"] = pd.to_numeric(rows["step"], errors="coerce")
    rows["value"] = pd.to_numeric(rows["value"], errors="coerce")
    rows = rows.dropna(subset=["step", "value"])
    if (rows["source"] == 1).any():  # a cell's curve file is the source where it has the metric
        has_file = set(zip(rows.loc[rows["source"] == 0, "cell_id"], rows.loc[rows["source"] == 0, "metric"],
                           strict=True))
        from_cells = rows["source"] == 1
        keep = ~from_cells | ~pd.Series([k in has_file for k in zip(rows["cell_id"], rows["metric"], strict=True)],
                                        index=rows.index)
        rows = rows[keep]
    return rows.drop(columns="source").reset_index(drop=True)


def band(rows: pd.DataFrame, metric: str) -> Band:
    """Mean over cells (seeds) per step, aligned by step, with the 95% Student-t interval where n ≥ 2.
    A cell with two points at one step counts once, at their mean."""
    from scipy import stats as st

    per_cell = rows.groupby(["step", "cell_id"])["value"].mean()
    g = per_cell.groupby(level="step")
    mean, sd, n = g.mean(), g.std(ddof=1), g.count()
    steps = mean.index.to_numpy(dtype=float)
    n_arr = n.to_numpy(dtype=int)
    half = np.full(len(steps), np.nan)
    many = n_arr >= 2
    if many.any():
        half[many] = st.t.ppf(0.5 + CONFIDENCE / 2, n_arr[many] - 1) * sd.to_numpy()[many] / np.sqrt(n_arr[many])
    m = mean.to_numpy(dtype=float)
    return Band(metric, steps, m, m - half, m + half, n_arr)


def method_curves(rows: pd.DataFrame, variant: str, cell_ids: Sequence[str]) -> MethodCurves | None:
    """Every metric's band for one method's cells; None when they stored no curve."""
    mine = rows[rows["cell_id"].isin({str(c) for c in cell_ids})]
    if mine.empty:
        return None
    names = sorted(mine["metric"].unique(), key=lambda m: (m != TRAIN_LOSS, m))
    out = MethodCurves(str(variant), n_cells=int(mine["cell_id"].nunique()))
    for name in names:
        out.bands[name] = band(mine[mine["metric"] == name], name)
    return out


def thin(n: int, limit: int = MAX_DRAWN_POINTS) -> tuple[np.ndarray, int]:
    """Indices of the points drawn of a curve of ``n`` steps: every k-th, the last one kept; and k."""
    if n <= limit:
        return np.arange(n), 1
    k = math.ceil(n / limit)
    idx = np.arange(0, n, k)
    if idx[-1] != n - 1:
        idx = np.append(idx, n - 1)
    return idx, k


def caption(curves: Sequence[MethodCurves], baseline: str | None, left_out: int = 0) -> str:
    """What the figure shows, in words: the mean, the band, the seeds per point, thinning, lines left out."""
    parts = ["Mean over seeds at each optimizer step, seeds aligned by step; band: the 95% Student-t "
             "interval of the mean where two or more seeds have the step (none with one seed)."]
    if baseline and any(c.variant == baseline for c in curves):
        parts.append(f"The baseline ({baseline}) is the thick black line.")
    differ = [(c.variant, [b for b in c.bands.values() if b.seeds_differ]) for c in curves]
    differ = [(v, bs) for v, bs in differ if bs]
    if differ:
        said = [f"{v} ({', '.join(_seed_range(b) for b in bs[:3])})" for v, bs in differ[:5]]
        parts.append("Seeds per point differ for " + "; ".join(said) + ("…" if len(differ) > 5 else "")
                     + ": the dotted part of a line has fewer seeds than its most.")
    counts = sorted({int(b.n.max()) for c in curves for b in c.bands.values() if len(b.n)})
    if counts:
        parts.append("Seeds per method: " + ", ".join(str(x) for x in counts) + ".")
    longest = max((len(b.steps) for c in curves for b in c.bands.values()), default=0)
    if longest > MAX_DRAWN_POINTS:
        parts.append(f"Curves longer than {MAX_DRAWN_POINTS} steps are drawn at every k-th step "
                     f"(the last kept), not averaged; the CSV of the curves has every step.")
    if left_out:
        parts.append(f"{left_out} more method(s) not drawn (the baseline and the {MAX_LINES} best-ranked are).")
    return " ".join(parts)


def _seed_range(b: Band) -> str:
    """Where a band's seeds per step differ, in words: "train_loss: 4 seeds to step 20, then 3"."""
    n = b.n.astype(int)
    changes = [i for i in range(1, len(n)) if n[i] != n[i - 1]]
    if len(changes) == 1:
        i = changes[0]
        return f"{b.metric}: {n[0]} seeds to step {b.steps[i - 1]:g}, then {n[i]}"
    return f"{b.metric}: {n.min()} to {n.max()} seeds per step"


def figure_metrics(curves: Sequence[MethodCurves]) -> list[str]:
    """The panels of a curve figure: training loss first, then each evaluation metric."""
    names = {m for c in curves for m in c.bands}
    return sorted(names, key=lambda m: (m != TRAIN_LOSS, m))


def draw(curves: Sequence[MethodCurves], baseline: str | None, path: Path, title: str = "") -> bool:
    """One panel per metric, one line per method (mean) with its band; the baseline thick and black.
    Runs in a figure worker; False when there is nothing to draw."""
    from suite.reports import figures

    names = figure_metrics(curves)
    if not names:
        return False
    import matplotlib.pyplot as plt

    with plt.rc_context(figures.RC):
        fig, axes = plt.subplots(1, len(names), figsize=(4.4 * len(names), 3.3), squeeze=False)
        colors = iter(f"C{i % 10}" for i in range(1000))
        palette = {c.variant: ("#212529" if c.variant == baseline else next(colors)) for c in curves}
        for ax, name in zip(axes[0], names, strict=True):
            for c in sorted(curves, key=lambda c: c.variant == baseline):  # the baseline on top
                b = c.bands.get(name)
                if b is None or not len(b.steps):
                    continue
                idx, _ = thin(len(b.steps))
                x, y, lo, hi, n = b.steps[idx], b.mean[idx], b.low[idx], b.high[idx], b.n[idx]
                base = c.variant == baseline
                color = palette[c.variant]
                label = figures._printable(c.variant[:40]) + (" (baseline)" if base else "")
                full = n == n.max()
                ax.plot(x, np.where(full, y, np.nan), color=color, lw=2.4 if base else 1.2, label=label,
                        marker="o" if len(x) <= 12 else None, ms=3, zorder=3 if base else 2)
                if not full.all():
                    ax.plot(x, y, color=color, lw=1.0, ls=":", zorder=1)
                ok = np.isfinite(lo) & np.isfinite(hi)
                if ok.any():
                    ax.fill_between(x, np.where(ok, lo, np.nan), np.where(ok, hi, np.nan), color=color,
                                    alpha=0.18 if base else 0.12, lw=0, zorder=1)
            ax.set_xlabel("optimizer step")
            ax.set_ylabel(figures._printable(name))
            ax.grid(alpha=0.3)
            ax.legend(loc="best", fontsize=7, frameon=False)
        if title:
            fig.suptitle(figures._printable(title[:100]), fontsize=9)
        fig.subplots_adjust(left=0.12 / len(names) + 0.04, right=0.98, bottom=0.15, top=0.88 if title else 0.95,
                            wspace=0.3)
        fig.savefig(path, format="svg", metadata={"Date": None})
        plt.close(fig)
    return True


def chosen(curves: Sequence[MethodCurves], order: Sequence[str], baseline: str | None) -> tuple[list, int]:
    """The lines a task figure draws: the baseline and the best-ranked methods (``order``), at most
    ``MAX_LINES``; and how many were left out."""
    rank = {v: i for i, v in enumerate(order)}
    ranked = sorted(curves, key=lambda c: (c.variant != baseline, rank.get(c.variant, len(rank)), c.variant))
    return ranked[:MAX_LINES + (1 if any(c.variant == baseline for c in curves) else 0)], \
        max(0, len(ranked) - MAX_LINES - (1 if any(c.variant == baseline for c in curves) else 0))


def curves_frame(rows: pd.DataFrame, cells: pd.DataFrame) -> pd.DataFrame:
    """The curve points as published (variant, task, subtask, seed beside each point)."""
    if rows.empty:
        return rows
    keys = ["cell_id", "variant", "task", "subtask", "model", "seed"]
    ident = cells[[k for k in keys if k in cells]].drop_duplicates("cell_id")
    ident = ident.assign(cell_id=ident["cell_id"].astype(str))
    return rows.merge(ident, on="cell_id", how="left")[[*keys, "metric", "step", "value"]]
