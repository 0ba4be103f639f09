"""The site's scaling-law page: the fit ``suite scaling`` prints, with its points and curves drawn.

Built when a store's pretraining cells span more than one model size or token budget. A grid the
law cannot be identified on still gets the page, saying why, so a user sees what the grid lacks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from suite.errors import UserError
from suite.reports import scaling
from suite.reports.export import Table

SITE_BOOTSTRAP = 100  # draws for the page's intervals (suite scaling defaults to more)


@dataclass
class ScalingPage:
    """What the page shows: the fit (None where refused, with the reason) and the points."""

    points: list[scaling.Point]
    fit: scaling.ScalingFit | None = None
    refused: str = ""
    figure: str = ""
    csv: str = ""
    tables: dict[str, str] = field(default_factory=dict)  # format -> file (LaTeX, Markdown)
    recipes: list[str] = field(default_factory=list)


def build(cells: pd.DataFrame, baseline: str = "bf16-train", bootstrap: int = SITE_BOOTSTRAP) -> ScalingPage | None:
    """The page's content, or None where the store has no grid (one size and one budget, or no
    pretraining cells)."""
    if cells.empty or "metric" not in cells or not (cells["metric"] == "val_loss").any():
        return None
    try:
        points, _ = scaling.points_from_cells(cells)
    except UserError:
        return None
    if len({p.n for p in points}) < 2 and len({p.d for p in points}) < 2:
        return None
    page = ScalingPage(points, recipes=sorted({p.recipe for p in points}))
    try:
        page.fit = scaling.fit_scaling(points, baseline, bootstrap=bootstrap)
    except UserError as e:
        page.refused = str(e)
    return page


def frame(page: ScalingPage) -> pd.DataFrame:
    """The page as one long table (the CSV beside it): the law's parameters, each recipe's
    efficiencies, and the observed and fitted loss at every grid point."""
    rows: list[dict] = []
    fit = page.fit
    if fit is not None:
        for name in scaling.LAW_PARAMETERS:
            low, high = fit.law_intervals.get(name, (math.nan, math.nan))
            rows.append(dict(kind="law", recipe=fit.baseline, name=name, value=getattr(fit.law, name),
                             low=low, high=high))
        for r in fit.recipes:
            for name, value, (low, high) in (("eff_N", r.eff_n, r.eff_n_interval), ("eff_D", r.eff_d, r.eff_d_interval)):
                rows.append(dict(kind="efficiency", recipe=r.recipe, name=name, value=value, low=low, high=high,
                                 note=r.refused))
        for x in fit.residuals:
            rows.append(dict(kind="point", recipe=x.recipe, name="loss", n=x.n, d=x.d, seeds=x.seeds,
                             value=x.observed, fitted=x.fitted, residual=x.residual))
    else:
        grid: dict[tuple, list[float]] = {}
        for p in page.points:
            grid.setdefault((p.recipe, p.n, p.d), []).append(p.loss)
        for (recipe, n, d), losses in sorted(grid.items()):
            rows.append(dict(kind="point", recipe=recipe, name="loss", n=n, d=d, seeds=len(losses),
                             value=sum(losses) / len(losses)))
    return pd.DataFrame.from_records(rows)


def efficiency_table(fit: scaling.ScalingFit) -> Table:
    """The efficiencies as a paper table (LaTeX and Markdown through ``reports.export``), with a
    caption that states the law, the fit and the intervals."""
    def interval(low: float, high: float) -> str:
        return f"[{low:.3f}, {high:.3f}]" if math.isfinite(low) and math.isfinite(high) else "-"

    rows = [[fit.baseline, "1", "", "1", "", ""]]
    for r in fit.recipes:
        if r.refused:
            rows.append([r.recipe, "-", "", "-", "", f"not fitted: {r.refused}"])
        else:
            rows.append([r.recipe, f"{r.eff_n:.3f}", interval(*r.eff_n_interval), f"{r.eff_d:.3f}",
                         interval(*r.eff_d_interval), f"{r.rmse:.4f}"])
    law = ", ".join(f"{k} = {v:.4g}" for k, v in fit.law.as_dict().items())
    what = (f"95% percentile intervals of {fit.bootstrap} bootstrap draws over {fit.seeds} seeds"
            if fit.bootstrap else "no intervals (one seed)")
    caption = (f"Parameter and data efficiency of each training recipe relative to {fit.baseline}, with "
               f"L(N, D) = E + A/(N eff_N)^alpha + B/(D eff_D)^beta fitted by least squares on {fit.baseline}'s "
               f"cells ({law}) and held for the recipes; {what}; rms residual of each recipe's fit.")
    return Table("Scaling-law efficiencies", ["recipe", "eff_N", "95% interval", "eff_D", "95% interval",
                                              "rms residual"], rows, caption, "tab:scaling-efficiencies",
                 ["l", "r", "r", "r", "r", "r"])


def draw(page: ScalingPage, path: Path) -> None:
    """One panel per recipe: the mean loss over seeds at each (size, tokens) point against tokens
    (log axis), a colour per size, and the fitted law's curve for each size through them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.ticker import FuncFormatter, NullFormatter

    from suite.reports.figures import RC

    fit = page.fit
    recipes = page.recipes if fit is None else [fit.baseline] + [r.recipe for r in fit.recipes]
    sizes = sorted({p.n for p in page.points})
    colours = plt.get_cmap("viridis")(np.linspace(0.05, 0.9, len(sizes)))
    with plt.rc_context(RC):
        cols = min(3, len(recipes))
        rows = math.ceil(len(recipes) / cols)
        figure, axes = plt.subplots(rows, cols, figsize=(3.4 * cols, 2.8 * rows), sharey=True, squeeze=False)
        for ax in axes.flat[len(recipes):]:
            ax.set_visible(False)
        for ax, recipe in zip(axes.flat, recipes, strict=False):
            own = [p for p in page.points if p.recipe == recipe]
            eff = _efficiency(fit, recipe)
            for colour, n in zip(colours, sizes, strict=True):
                at = sorted({p.d for p in own if p.n == n})
                if not at:
                    continue
                means = [float(np.mean([p.loss for p in own if p.n == n and p.d == d])) for d in at]
                ax.scatter(at, means, s=14, color=colour, zorder=3, label=f"N={n:.3g}")
                if eff is not None:
                    grid = np.geomspace(min(at) / 1.5, max(at) * 1.5, 50)
                    ax.plot(grid, fit.law.loss(n, grid, *eff), color=colour, lw=1)
            ax.set_xscale("log")
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.0e}".replace("e+0", "e")))
            ax.xaxis.set_minor_formatter(NullFormatter())
            title = str(recipe)
            if eff is not None and recipe != fit.baseline:
                title += f"  eff_N {eff[0]:.2f}, eff_D {eff[1]:.2f}"
            ax.set_title(title, fontsize=8)
            ax.set_xlabel("training tokens D")
        axes.flat[0].set_ylabel("val_loss (mean over seeds)")
        axes.flat[0].legend(fontsize=7, frameon=False)
        figure.tight_layout()
        figure.savefig(path, format="svg")
        plt.close(figure)


def _efficiency(fit: scaling.ScalingFit | None, recipe: str) -> tuple[float, float] | None:
    if fit is None:
        return None
    try:
        return fit.efficiency(recipe)
    except UserError:
        return None
