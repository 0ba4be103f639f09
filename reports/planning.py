"""Seed planning: how many seeds a comparison needs, and the smallest difference the seeds run can detect.

A difference between two methods' mean primary scores over k seeds each is judged with a
two-sided two-sample t-test. With a seed-to-seed standard deviation sigma (pooled over the
two methods), the power to detect a true difference delta at level alpha is

    power = P(|T| > t_{1-alpha/2, 2k-2})   with T ~ noncentral t(2k-2, delta / (sigma sqrt(2/k)))

``seeds_needed`` is the smallest k reaching the requested power (Cohen's tables: d = 0.5 needs
64 per group at alpha 0.05 and power 0.8, d = 0.8 needs 26, d = 1.0 needs 17), and
``detectable_effect`` solves the same equation for delta at a given k. Both search within
[2, MAX_SEEDS] seeds, so every effect costs a bounded number of power evaluations, and both
refuse a zero spread: with no seed-to-seed variation there is no standard error to plan with,
and ``is_flat`` tells callers when a measured spread is that, so they can say why.

Where to get sigma from: the spread of a method's scores over seeds when a store has at
least two seeds of it. With one seed, the only variance measured is the evaluation set's
sampling variance (per-example correctness: var / n examples), which is a lower bound on the
seed-to-seed variance (training noise comes on top): estimates from it are labelled as such.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

# The planner never goes past this many seeds per method: seeds_needed answers None (more than
# this) and detectable_effect answers for this many (a bound: more seeds detect no less).
MAX_SEEDS = 10_000
# A spread below this fraction of the score's magnitude, max(1, |mean|), is a constant score or
# float rounding, not seed noise: well above float64 rounding in a mean, well below the smallest
# difference between two distinct float32-stored scores.
FLAT_TOLERANCE = 1e-9


def power(effect: float, sigma: float, seeds: int, alpha: float = 0.05) -> float:
    """Power of the two-sided two-sample t-test with ``seeds`` per method (see the module docstring)."""
    from scipy import stats

    if seeds < 2:
        return 0.0
    if sigma <= 0:
        return 1.0 if effect else alpha
    df = 2 * seeds - 2
    scale = sigma * math.sqrt(2 / seeds)
    shift = abs(effect) / scale if scale > 0 else math.inf  # a subnormal sigma times sqrt(2/k) can reach 0
    critical = float(stats.t.isf(alpha / 2, df))  # 1 - alpha / 2 rounds to 1 for tiny alphas; isf does not
    if math.isinf(critical):
        return 0.0  # alpha / 2 underflowed: nothing is ever rejected
    with warnings.catch_warnings():
        # At extreme alphas scipy warns that its series stopped short; its closest value is kept.
        warnings.simplefilter("ignore", RuntimeWarning)
        upper = float(stats.nct.sf(critical, df, shift))
        lower = float(stats.nct.cdf(-critical, df, shift))
    if math.isnan(upper):
        # scipy gives up for very large shifts; there Z is negligible beside the shift, so
        # T > critical iff chi2_df / df < (shift / critical)^2.
        ratio = shift / critical
        return float(stats.chi2.cdf(df * ratio * ratio, df))
    # scipy answers nan for the lower tail at large shifts, where that tail is negligible.
    return upper + (0.0 if math.isnan(lower) else lower)


def seeds_needed(effect: float, sigma: float, alpha: float = 0.05, target_power: float = 0.8) -> int | None:
    """The fewest seeds per method whose t-test detects ``effect`` with ``target_power``; None beyond MAX_SEEDS.

    Power grows with the seeds, so a bisection over [2, MAX_SEEDS] finds the smallest passing
    count in a few dozen power evaluations whatever the effect; the normal approximation
    narrows the bracket first, since the answer is usually within a seed of it.
    """
    check_levels(alpha, target_power)
    _check_sigma(sigma)
    if math.isnan(effect):
        raise ValueError("the effect must be a number, not nan")
    if effect == 0 or power(effect, sigma, MAX_SEEDS, alpha) < target_power:
        return None
    failing, passing = 1, MAX_SEEDS  # power(failing) < target <= power(passing)
    guess = _normal_seeds(abs(effect) / sigma, alpha, target_power)
    if failing < guess < passing:
        step = 1
        if power(effect, sigma, guess, alpha) >= target_power:
            passing = guess
            # Widen downwards until a count fails: the answer is usually guess or guess - 1.
            while passing - step > failing and power(effect, sigma, passing - step, alpha) >= target_power:
                passing, step = passing - step, step * 2
            failing = max(failing, passing - step)
        else:
            failing = guess
            while failing + step < passing and power(effect, sigma, failing + step, alpha) < target_power:
                failing, step = failing + step, step * 2
            passing = min(passing, failing + step)
    while passing - failing > 1:
        middle = (failing + passing) // 2
        if power(effect, sigma, middle, alpha) >= target_power:
            passing = middle
        else:
            failing = middle
    return passing


def _normal_seeds(d: float, alpha: float, target_power: float) -> int:
    """n = 2 (z_{1-a/2} + z_{power})^2 / d^2 rounded up and kept within [2, MAX_SEEDS], without overflowing."""
    from scipy import stats

    z = float(stats.norm.isf(alpha / 2) + stats.norm.ppf(target_power))
    ratio = z / d if d > 0 else math.inf
    n = 2 * ratio * ratio  # a product, not ** 2: overflows to inf rather than raising
    if not n < MAX_SEEDS:  # also nan
        return MAX_SEEDS
    return max(2, math.ceil(n))


def detectable_effect(sigma: float, seeds: int, alpha: float = 0.05, target_power: float = 0.8) -> float:
    """The smallest true difference ``seeds`` per method detect with ``target_power`` (bisection).

    Seed counts past MAX_SEEDS are planned as MAX_SEEDS, as everywhere in the planner, so the
    answer there is an upper bound; inf where no difference is detectable (one seed).
    """
    check_levels(alpha, target_power)
    _check_sigma(sigma)
    if seeds < 2:
        return math.inf
    seeds = min(seeds, MAX_SEEDS)
    low, high = 0.0, sigma
    # Doubling is bounded by the float range: past it no finite difference reaches the power.
    while power(high, sigma, seeds, alpha) < target_power:
        if math.isinf(high):
            return math.inf
        high *= 2
    for _ in range(60):
        middle = (low + high) / 2
        if power(middle, sigma, seeds, alpha) >= target_power:
            high = middle
        else:
            low = middle
    return high


def _check_sigma(sigma: float) -> None:
    # A t-test over seeds that all scored alike has no standard error: callers report why instead.
    if not (sigma > 0 and math.isfinite(sigma)):
        raise ValueError(f"the spread {sigma} must be a positive finite standard deviation")


def check_levels(alpha: float, target_power: float) -> None:
    """--alpha and --power must be probabilities strictly between 0 and 1: a UserError otherwise."""
    from suite.errors import UserError

    if not (0 < alpha < 1 and math.isfinite(alpha)):
        raise UserError(f"--alpha {alpha} must be a probability in (0, 1)")
    if not (0 < target_power < 1 and math.isfinite(target_power)):
        raise UserError(f"--power {target_power} must be a probability in (0, 1)")


@dataclass(frozen=True)
class Spread:
    """How much a method's primary score moves, and where that figure comes from."""

    sigma: float
    seeds: int
    source: str  # "seeds" (measured over seeds) or "examples" (evaluation-set sampling only: a lower bound)
    # What the spread was measured on, so a caller can say why a flat one cannot be planned from.
    count: int = 0  # seeds or examples
    mean: float = math.nan
    low: float = math.nan
    high: float = math.nan
    flat: bool = False  # see is_flat: no t-test can be planned from it


def is_flat(sd: float, mean: float) -> bool:
    """Whether a standard deviation is zero or float noise beside the score (see FLAT_TOLERANCE)."""
    return not sd > FLAT_TOLERANCE * max(1.0, abs(mean))


def seed_spread(scores: Sequence[float]) -> Spread | None:
    """The sample standard deviation over seeds (two or more seeds), else None."""
    values = [v for v in scores if v is not None and math.isfinite(v)]
    if len(values) < 2:
        return None
    mean, sd = _mean_sd(values)
    return Spread(sd, len(values), "seeds", len(values), mean, min(values), max(values), is_flat(sd, mean))


def example_spread(correct: Sequence[float], seeds: int = 1) -> Spread | None:
    """The evaluation set's sampling standard deviation of a mean score: sd(per-example) / sqrt(n)."""
    values = [v for v in correct if v is not None and math.isfinite(v)]
    if len(values) < 2:
        return None
    mean, sd = _mean_sd(values)
    return Spread(sd / math.sqrt(len(values)), seeds, "examples", len(values), mean, min(values), max(values),
                  is_flat(sd, mean))


def _mean_sd(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation; exactly 0 for equal values, whose float mean can miss them."""
    if min(values) == max(values):
        return values[0], 0.0
    mean = sum(values) / len(values)
    # Products, not ** 2: a huge score (a diverged perplexity) overflows to inf rather than raising.
    return mean, math.sqrt(sum((v - mean) * (v - mean) for v in values) / (len(values) - 1))
