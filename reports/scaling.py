"""Low-precision scaling laws: how much each training recipe is worth, in parameters and in data.

The form is Quartet's (Castro et al. 2025, arXiv:2505.14669), after Chinchilla's
(Hoffmann et al. 2022):

    L(N, D, P) = E + A / (N * eff_N(P))^alpha + B / (D * eff_D(P))^beta

with N the non-embedding parameters, D the training tokens and P the recipe. The baseline's
cells (BF16) fix E, A, alpha, B and beta; each recipe is then summarised by its parameter
efficiency eff_N and data efficiency eff_D with those held (BF16 = 1), so a recipe with
eff_N = 0.8 trains like a BF16 model with 80% of its parameters.

Fits are nonlinear least squares (``scipy.optimize.least_squares``) on every cell's loss,
started from a small grid of exponents so a local minimum does not decide the answer.
Intervals come from a bootstrap over seeds: one draw resamples the seed ids with replacement,
every point of the grid takes its cells of those seeds, and both fits run again, so the
interval carries the seed-to-seed noise the table's losses carry. A grid that cannot identify
a parameter (too few sizes or budgets, a rank-deficient Jacobian) is refused with the reason.

With a speed-up per recipe (time per token relative to BF16), the fit answers the compute
question: at a budget of C BF16 FLOPs (6 N D), a recipe s times faster trains s C, and its
best loss over model sizes has a closed form (``compute_optimal``); ``break_even_speedup`` is
the speed-up at which a recipe's best loss equals BF16's.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from suite.errors import UserError

LAW_PARAMETERS = ("E", "A", "alpha", "B", "beta")
MIN_LEVELS = 3  # distinct sizes and budgets the baseline needs: E separates from A/N^alpha only then
START_EXPONENTS = (0.15, 0.3, 0.5, 0.8)
# The range each of (E, log A, alpha, log B, beta) may take; E's top is the smallest loss (set per fit).
_LAW_BOUNDS = ((0.0, -50.0, 1e-3, -50.0, 1e-3), (math.inf, 80.0, 3.0, 80.0, 3.0))
FEW_SEEDS = 5  # below this a bootstrap over seeds is known to give intervals narrower than their level
RANK_TOLERANCE = 1e-9  # a singular value below this fraction of the largest: the parameter is not identified


@dataclass(frozen=True)
class Point:
    """One cell's measurement: its recipe, model size N, tokens D, seed and loss."""

    recipe: str
    n: float
    d: float
    seed: int
    loss: float


@dataclass(frozen=True)
class Law:
    """The baseline's law: L = E + A / N^alpha + B / D^beta."""

    E: float
    A: float
    alpha: float
    B: float
    beta: float

    def loss(self, n, d, eff_n: float = 1.0, eff_d: float = 1.0):
        """The predicted loss at size ``n`` and tokens ``d`` for a recipe of these efficiencies."""
        n, d = np.asarray(n, dtype=float), np.asarray(d, dtype=float)
        return self.E + self.A / (n * eff_n) ** self.alpha + self.B / (d * eff_d) ** self.beta

    def as_dict(self) -> dict[str, float]:
        return {k: float(getattr(self, k)) for k in LAW_PARAMETERS}


@dataclass
class RecipeFit:
    """One recipe's efficiencies with the baseline's law held, and how well they fit its cells."""

    recipe: str
    eff_n: float = math.nan
    eff_d: float = math.nan
    eff_n_interval: tuple[float, float] = (math.nan, math.nan)
    eff_d_interval: tuple[float, float] = (math.nan, math.nan)
    points: int = 0  # distinct (N, D) points
    cells: int = 0
    rmse: float = math.nan
    refused: str = ""  # why no efficiency was fitted ("" when it was)


@dataclass
class Residual:
    """The fit at one grid point: the mean observed loss over its seeds against the prediction."""

    recipe: str
    n: float
    d: float
    seeds: int
    observed: float
    fitted: float

    @property
    def residual(self) -> float:
        return self.observed - self.fitted


@dataclass
class ScalingFit:
    baseline: str
    law: Law
    law_intervals: dict[str, tuple[float, float]]
    baseline_rmse: float
    recipes: list[RecipeFit]
    residuals: list[Residual]
    seeds: int  # distinct seed ids the bootstrap resamples
    bootstrap: int  # draws that fitted (0: no intervals)
    notes: list[str] = field(default_factory=list)

    def efficiency(self, recipe: str) -> tuple[float, float]:
        if recipe == self.baseline:
            return 1.0, 1.0
        fit = next((r for r in self.recipes if r.recipe == recipe), None)
        if fit is None or fit.refused:
            raise UserError(f"no efficiencies were fitted for '{recipe}'"
                            + (f": {fit.refused}" if fit is not None else ""))
        return fit.eff_n, fit.eff_d


# -- fitting -----------------------------------------------------------------------------------------
def fit_law(points: Sequence[Point]) -> Law:
    """The baseline's five parameters by least squares over its cells; refused where the grid
    cannot identify them."""
    n, d, y = _arrays(points)
    _check_grid(n, d)
    best = None
    for alpha in START_EXPONENTS:
        for beta in START_EXPONENTS:
            result = _least_squares_law(n, d, y, alpha, beta)
            if result is not None and (best is None or result.cost < best.cost):
                best = result
    if best is None:
        raise UserError("the baseline's scaling law did not converge from any starting point")
    _check_rank(best.jac, "the baseline's law (E, A, alpha, B, beta)",
                "the losses do not separate the size and data terms: add sizes or budgets")
    _check_bounds(best.x, n, d, float(y.min()))
    E, log_a, alpha, log_b, beta = best.x
    return Law(float(E), float(math.exp(log_a)), float(alpha), float(math.exp(log_b)), float(beta))


def _least_squares_law(n, d, y, alpha0: float, beta0: float):
    from scipy.optimize import least_squares

    log_n, log_d = np.log(n), np.log(d)

    def residuals(theta):
        E, log_a, alpha, log_b, beta = theta
        return E + np.exp(log_a - alpha * log_n) + np.exp(log_b - beta * log_d) - y

    # Start E below the smallest loss and split the rest evenly between the two terms.
    floor = float(y.min()) * 0.5
    excess = max(float(np.mean(y)) - floor, 1e-3)
    theta0 = [floor, math.log(excess / 2) + alpha0 * float(np.mean(log_n)), alpha0,
              math.log(excess / 2) + beta0 * float(np.mean(log_d)), beta0]
    bounds = (list(_LAW_BOUNDS[0]), [float(y.min()), *_LAW_BOUNDS[1][1:]])  # the floor E lies below every loss
    try:
        return least_squares(residuals, theta0, bounds=bounds, x_scale="jac", max_nfev=4000)
    except (ValueError, FloatingPointError):
        return None


def _check_bounds(x: np.ndarray, n: np.ndarray, d: np.ndarray, floor_cap: float) -> None:
    """A least-squares optimum on the edge of the parameters' range is not one the data chose: the
    grid does not determine that parameter (an exponent run to its cap, a coefficient to zero)."""
    names = ("E", "log A", "alpha", "log B", "beta")
    lows, highs = _LAW_BOUNDS[0], (floor_cap, *_LAW_BOUNDS[1][1:])
    edges = []
    for name, value, lo, hi in zip(names, x, lows, highs, strict=True):
        span = max(abs(hi - lo), 1.0)
        if value - lo <= 1e-6 * span or hi - value <= 1e-6 * span:
            edges.append(f"{name} = {value:.4g} (its range is {lo:g} to {hi:.4g})")
    if edges:
        raise UserError(
            f"the baseline's law is not identified by this grid: the best fit puts {'; '.join(edges)} at the edge of "
            f"what it may take. The sizes span {n.max() / n.min():.3g}x and the budgets {d.max() / d.min():.3g}x; "
            "widen either (more sizes or budgets further apart) before reading efficiencies from it")


def fit_efficiency(law: Law, points: Sequence[Point]) -> tuple[float, float, object]:
    """eff_N and eff_D of one recipe with ``law`` held (log-parametrised, so both stay positive)."""
    from scipy.optimize import least_squares

    n, d, y = _arrays(points)

    def residuals(theta):
        return law.loss(n, d, math.exp(theta[0]), math.exp(theta[1])) - y

    best = None
    for start in ((0.0, 0.0), (-1.0, 1.0), (1.0, -1.0)):
        result = least_squares(residuals, start, bounds=([-12.0, -12.0], [12.0, 12.0]), x_scale="jac")
        if best is None or result.cost < best.cost:
            best = result
    return math.exp(best.x[0]), math.exp(best.x[1]), best


def fit_scaling(points: Sequence[Point], baseline: str, bootstrap: int = 200, seed: int = 0,
                confidence: float = 0.95) -> ScalingFit:
    """The baseline's law, each other recipe's efficiencies, their bootstrap intervals over seeds
    and the residuals at every grid point."""
    by_recipe: dict[str, list[Point]] = {}
    for p in points:
        by_recipe.setdefault(p.recipe, []).append(p)
    if baseline not in by_recipe:
        known = ", ".join(sorted(by_recipe)) or "none"
        raise UserError(f"no cells of the baseline '{baseline}' to fit its law on; recipes here: {known}")
    base_points = by_recipe.pop(baseline)
    law = fit_law(base_points)
    notes: list[str] = []
    recipes = []
    for name in sorted(by_recipe):
        recipes.append(_recipe_fit(law, name, by_recipe[name]))
    seeds = sorted({p.seed for p in points})
    law_draws: list[Law] = []
    eff_draws: dict[str, list[tuple[float, float]]] = {r.recipe: [] for r in recipes if not r.refused}
    if bootstrap and len(seeds) >= 2:
        rng = np.random.default_rng(seed)
        for _ in range(bootstrap):
            drawn = rng.choice(seeds, size=len(seeds), replace=True)
            counts = {s: int((drawn == s).sum()) for s in seeds}
            sample = [q for q in base_points for _ in range(counts[q.seed])]
            try:
                law_b = fit_law(sample)
            except UserError:
                continue  # this draw's grid lost a level: the draw says nothing about the fit
            law_draws.append(law_b)
            for r in recipes:
                if r.refused:
                    continue
                own = [q for q in by_recipe[r.recipe] for _ in range(counts[q.seed])]
                if own:
                    eff_n, eff_d, _ = fit_efficiency(law_b, own)
                    eff_draws[r.recipe].append((eff_n, eff_d))
    elif bootstrap:
        notes.append("one seed: no bootstrap over seeds, so no intervals")
    if bootstrap and 2 <= len(seeds) < FEW_SEEDS:
        notes.append(f"{len(seeds)} seeds: a bootstrap over so few seeds has few distinct draws and understates "
                     f"the spread, so the intervals are too narrow; run {FEW_SEEDS} or more seeds per point")
    tail = (1 - confidence) / 2 * 100
    law_intervals = {k: _percentiles([getattr(w, k) for w in law_draws], tail) for k in LAW_PARAMETERS}
    for r in recipes:
        draws = eff_draws.get(r.recipe, [])
        r.eff_n_interval = _percentiles([a for a, _ in draws], tail)
        r.eff_d_interval = _percentiles([b for _, b in draws], tail)
    if law_draws and len(law_draws) < bootstrap:
        notes.append(f"{bootstrap - len(law_draws)} of {bootstrap} bootstrap draws could not identify the law "
                     "and were left out")
    residuals = _residuals(law, baseline, base_points, {r.recipe: r for r in recipes}, by_recipe)
    base_res = [x.residual for x in residuals if x.recipe == baseline]
    return ScalingFit(baseline, law, law_intervals, _rms(base_res), recipes, residuals, len(seeds),
                      len(law_draws), notes)


def _recipe_fit(law: Law, name: str, own: list[Point]) -> RecipeFit:
    grid = {(p.n, p.d) for p in own}
    fit = RecipeFit(name, points=len(grid), cells=len(own))
    if len(grid) < 2:
        fit.refused = (f"{len(grid)} grid point: eff_N and eff_D need at least two (sizes or budgets that "
                       "differ)")
        return fit
    eff_n, eff_d, result = fit_efficiency(law, own)
    try:
        _check_rank(result.jac, f"'{name}'s efficiencies",
                    "its points do not separate the size and data terms: vary both sizes and budgets")
    except UserError as e:
        fit.refused = str(e)
        return fit
    fit.eff_n, fit.eff_d = eff_n, eff_d
    n, d, y = _arrays(own)
    fit.rmse = _rms(law.loss(n, d, eff_n, eff_d) - y)
    return fit


def _residuals(law: Law, baseline: str, base_points: list[Point], fits: dict[str, RecipeFit],
               others: dict[str, list[Point]]) -> list[Residual]:
    out = []
    for name, pts, eff in [(baseline, base_points, (1.0, 1.0))] + [
            (k, v, (fits[k].eff_n, fits[k].eff_d)) for k, v in others.items() if not fits[k].refused]:
        grid: dict[tuple[float, float], list[float]] = {}
        for p in pts:
            grid.setdefault((p.n, p.d), []).append(p.loss)
        for (n, d), losses in sorted(grid.items()):
            out.append(Residual(name, n, d, len(losses), float(np.mean(losses)), float(law.loss(n, d, *eff))))
    return out


def _arrays(points: Iterable[Point]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    pts = list(points)
    return (np.array([p.n for p in pts], dtype=float), np.array([p.d for p in pts], dtype=float),
            np.array([p.loss for p in pts], dtype=float))


def _check_grid(n: np.ndarray, d: np.ndarray) -> None:
    sizes, budgets = len(np.unique(n)), len(np.unique(d))
    if sizes < MIN_LEVELS or budgets < MIN_LEVELS:
        raise UserError(
            f"the baseline's grid has {sizes} model size(s) and {budgets} token budget(s); the law "
            f"E + A/N^alpha + B/D^beta needs at least {MIN_LEVELS} of each to tell its floor E from the "
            "size and data terms (with two, any E fits as well as another)")


def _check_rank(jacobian, what: str, advice: str) -> None:
    s = np.linalg.svd(np.asarray(jacobian, dtype=float), compute_uv=False)
    if s.size == 0 or s[-1] <= RANK_TOLERANCE * s[0]:
        raise UserError(f"{what} cannot be identified from these cells: {advice}")


def _percentiles(values: Sequence[float], tail: float) -> tuple[float, float]:
    v = np.asarray([x for x in values if np.isfinite(x)], dtype=float)
    if v.size < 2:
        return (math.nan, math.nan)
    low, high = np.percentile(v, [tail, 100 - tail])
    return float(low), float(high)


def _rms(values) -> float:
    v = np.asarray(values, dtype=float)
    return float(np.sqrt(np.mean(v ** 2))) if v.size else math.nan


# -- the compute question ----------------------------------------------------------------------------
@dataclass(frozen=True)
class ComputeOptimum:
    """A recipe's best model at a compute budget: its size, tokens and predicted loss."""

    recipe: str
    speedup: float
    n: float
    d: float
    loss: float


def compute_optimal(law: Law, flops: float, eff_n: float = 1.0, eff_d: float = 1.0, speedup: float = 1.0,
                    recipe: str = "") -> ComputeOptimum:
    """The size N that minimises the loss when a recipe ``speedup`` times faster than BF16 spends
    ``flops`` BF16 FLOPs (so trains on D = speedup * flops / (6 N) tokens).

    With K = speedup * flops / 6, L(N) = E + a N^-alpha + b (N / K)^beta with a = A eff_N^-alpha and
    b = B eff_D^-beta; dL/dN = 0 gives N* = (alpha a K^beta / (beta b))^(1 / (alpha + beta))."""
    if flops <= 0 or speedup <= 0:
        raise UserError("the compute budget and the speed-up must be positive")
    k = speedup * flops / 6.0
    a = law.A * eff_n ** -law.alpha
    b = law.B * eff_d ** -law.beta
    n = (law.alpha * a * k ** law.beta / (law.beta * b)) ** (1.0 / (law.alpha + law.beta))
    d = k / n
    return ComputeOptimum(recipe, speedup, n, d, float(law.loss(n, d, eff_n, eff_d)))


def break_even_speedup(law: Law, flops: float, eff_n: float, eff_d: float) -> float:
    """The speed-up at which a recipe's best loss at ``flops`` equals BF16's best loss there: below
    it BF16 wins the budget, above it the recipe does. Below 1 where the recipe is better per token."""
    from scipy.optimize import brentq

    target = compute_optimal(law, flops).loss

    def gap(log_s: float) -> float:
        return compute_optimal(law, flops, eff_n, eff_d, math.exp(log_s)).loss - target

    low, high = -20.0, 20.0
    if gap(low) < 0 or gap(high) > 0:  # better (or worse) at any speed-up: no break-even
        return math.nan
    return math.exp(brentq(gap, low, high, xtol=1e-12))


# -- from a store ------------------------------------------------------------------------------------
# What reports append to a recipe's row name: its budget on a grid, then how it was tuned.
ROW_SUFFIXES = r"(?: \((?:tuned|at .+'s tuned .+)\))?(?: \[[^\]]*\])?$"


def points_from_cells(cells, metric: str = "val_loss",
                      tasks: Iterable[str] | None = None) -> tuple[list[Point], list[str]]:
    """One point per finished cell with ``metric``: N the non-embedding parameters of its catalog
    size, D the tokens it trained (steps x batch x accumulation x length, from its stored recipe).
    Trial cells (tuning) are left out; a recipe's tuned and inherited rows are the recipe. Also
    returns the models left out (not a named pretraining size, or no step count stored)."""
    from suite.models.catalog import LLAMA_SIZES, split_model_name
    from suite.reports.loading import parsed_recipes
    from suite.reports.variants import canonical_variants

    if cells.empty:
        raise UserError("the store has no cells")
    frame = cells[cells["status"] == "ok"]
    if "stage" in frame:
        frame = frame[frame["stage"].fillna("").astype(str) != "trial"]
    if tasks:
        frame = frame[frame["task"].isin(list(tasks))]
    scores = frame[frame["metric"] == metric]
    if scores.empty:
        raise UserError(f"no finished cell stored '{metric}'" + (f" on {', '.join(tasks)}" if tasks else ""))
    steps = frame[frame["metric"] == "train_steps"].set_index("cell_id")["value"]
    scores = canonical_variants(scores)
    recipes = parsed_recipes(scores["recipe"].dropna().unique())
    points, outside = [], set()
    for row in scores.itertuples(index=False):
        size = LLAMA_SIZES.get(split_model_name(str(row.model))[0])
        recipe = recipes.get(row.recipe, {})
        if size is None or row.cell_id not in steps.index:
            outside.add(str(row.model))
            continue
        tokens = float(steps[row.cell_id]) * recipe.get("batch_size", 1) * recipe.get("grad_accum", 1) \
            * recipe.get("max_length", 1)
        label = re.sub(ROW_SUFFIXES, "", str(row.variant))
        points.append(Point(label, float(size.non_embedding_params()), tokens, int(row.seed), float(row.value)))
    if not points:
        raise UserError(f"no cell here is a named pretraining size ({', '.join(LLAMA_SIZES)}); "
                        f"models found: {', '.join(sorted(outside))}")
    return points, sorted(outside)


# -- text --------------------------------------------------------------------------------------------
def _interval(low: float, high: float) -> str:
    return f"[{low:.4g}, {high:.4g}]" if math.isfinite(low) and math.isfinite(high) else "-"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
              for r in rows]
    return ["  " + line for line in lines]


def format_fit(fit: ScalingFit, metric: str = "val_loss") -> str:
    """The law with its intervals, each recipe's efficiencies, and the residuals, as text."""
    what = (f"95% percentile intervals from {fit.bootstrap} bootstrap draws over {fit.seeds} seeds"
            if fit.bootstrap else "no intervals")
    out = [f"{metric} = E + A/(N eff_N)^alpha + B/(D eff_D)^beta; N non-embedding parameters, D training "
           f"tokens; {fit.baseline}'s law ({what}; rms residual {fit.baseline_rmse:.4f}):"]
    out += _table(["parameter", "value", "interval"],
                  [[k, f"{getattr(fit.law, k):.4g}", _interval(*fit.law_intervals.get(k, (math.nan, math.nan)))]
                   for k in LAW_PARAMETERS])
    out.append("")
    out.append(f"efficiencies with {fit.baseline}'s law held ({fit.baseline} = 1; eff_N 0.8: trains like a "
               f"{fit.baseline} model of 80% of the parameters):")
    rows = [[fit.baseline, "1", "", "1", "", "", ""]]
    for r in fit.recipes:
        if r.refused:
            rows.append([r.recipe, "-", "", "-", "", str(r.points), f"not fitted: {r.refused}"])
        else:
            rows.append([r.recipe, f"{r.eff_n:.3f}", _interval(*r.eff_n_interval), f"{r.eff_d:.3f}",
                         _interval(*r.eff_d_interval), str(r.points), f"{r.rmse:.4f}"])
    out += _table(["recipe", "eff_N", "interval", "eff_D", "interval", "points", "rms residual"], rows)
    out.append("")
    out.append("residuals (mean over seeds - fitted) at every grid point:")
    out += _table(["recipe", "N", "D", "seeds", "observed", "fitted", "residual"],
                  [[x.recipe, f"{x.n:.3g}", f"{x.d:.3g}", str(x.seeds), f"{x.observed:.4f}", f"{x.fitted:.4f}",
                    f"{x.residual:+.4f}"] for x in fit.residuals])
    out += [f"note: {n}" for n in fit.notes]
    return "\n".join(out)


def format_compute(fit: ScalingFit, speedups: dict[str, float], budgets: Sequence[float]) -> str:
    """Per budget: each recipe's compute-optimal size, tokens and loss at its stated speed-up, and
    the break-even speed-up it needs to match the baseline there."""
    out = []
    for flops in budgets:
        base = compute_optimal(fit.law, flops, recipe=fit.baseline)
        rows = [[fit.baseline, "1", f"{base.n:.3g}", f"{base.d:.3g}", f"{base.loss:.4f}", "", "1"]]
        for name, s in speedups.items():
            if name == fit.baseline:
                continue
            try:
                eff_n, eff_d = fit.efficiency(name)
            except UserError as e:
                rows.append([name, f"{s:g}", "-", "-", "-", "", str(e)])
                continue
            best = compute_optimal(fit.law, flops, eff_n, eff_d, s, name)
            even = break_even_speedup(fit.law, flops, eff_n, eff_d)
            rows.append([name, f"{s:g}", f"{best.n:.3g}", f"{best.d:.3g}", f"{best.loss:.4f}",
                         f"{best.loss - base.loss:+.4f}", f"{even:.3g}" if math.isfinite(even) else "none"])
        out.append(f"at {flops:.3g} {fit.baseline} FLOPs (6 N D): the best size per recipe at its speed-up, "
                   "and the speed-up it needs to match the baseline's best loss:")
        out += _table(["recipe", "speed-up", "N*", "D*", "loss", "vs baseline", "break-even speed-up"], rows)
        out.append("")
    out.append("The law is extrapolated beyond the fitted grid; the efficiencies' intervals are not carried "
               "into these predictions.")
    return "\n".join(out)
