"""Seed planning: how many seeds a comparison needs, and the smallest difference the seeds run can detect.

A difference between two methods' mean primary scores over k seeds each is judged with a
two-sided two-sample t-test. With a seed-to-seed standard deviation sigma (pooled over the
two methods), the power to detect a true difference delta at level alpha is

    power = P(|T| > t_{1-alpha/2, 2k-2})   with T ~ noncentral t(2k-2, delta / (sigma sqrt(2/k)))

``seeds_needed`` is the smallest k reaching the requested power (Cohen's tables: d = 0.5 needs
64 per group at alpha 0.05 and power 0.8, d = 0.8 needs 26, d = 1.0 needs 17), and
``detectable_effect`` solves the same equation for delta at a given k.

Where to get sigma from: the spread of a method's scores over seeds when a store has at
least two seeds of it. With one seed, the only variance measured is the evaluation set's
sampling variance (per-example correctness: var / n examples), which is a lower bound on the
seed-to-seed variance (training noise comes on top): estimates from it are labelled as such.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

MAX_SEEDS = 10_000


def power(effect: float, sigma: float, seeds: int, alpha: float = 0.05) -> float:
    """Power of the two-sided two-sample t-test with ``seeds`` per method (see the module docstring)."""
    from scipy import stats

    if seeds < 2:
        return 0.0
    if sigma <= 0:
        return 1.0 if effect else alpha
    df = 2 * seeds - 2
    shift = abs(effect) / (sigma * math.sqrt(2 / seeds))
    critical = stats.t.ppf(1 - alpha / 2, df)
    return float(stats.nct.sf(critical, df, shift) + stats.nct.cdf(-critical, df, shift))


def seeds_needed(effect: float, sigma: float, alpha: float = 0.05, target_power: float = 0.8) -> int | None:
    """The fewest seeds per method whose t-test detects ``effect`` with ``target_power``; None beyond MAX_SEEDS."""
    _check(alpha, target_power)
    if effect == 0:
        return None
    if sigma <= 0:
        return 2
    # Start from the normal approximation n = 2 (z_{1-a/2} + z_{power})^2 sigma^2 / delta^2, then step.
    from scipy import stats

    z = stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(target_power)
    seeds = max(2, math.floor(2 * (z * sigma / effect) ** 2))
    while seeds > 2 and power(effect, sigma, seeds - 1, alpha) >= target_power:
        seeds -= 1
    while power(effect, sigma, seeds, alpha) < target_power:
        seeds += 1
        if seeds > MAX_SEEDS:
            return None
    return seeds


def detectable_effect(sigma: float, seeds: int, alpha: float = 0.05, target_power: float = 0.8) -> float:
    """The smallest true difference ``seeds`` per method detect with ``target_power`` (bisection)."""
    _check(alpha, target_power)
    if seeds < 2:
        return math.inf
    if sigma <= 0:
        return 0.0
    low, high = 0.0, sigma
    while power(high, sigma, seeds, alpha) < target_power:
        high *= 2
    for _ in range(60):
        middle = (low + high) / 2
        if power(middle, sigma, seeds, alpha) >= target_power:
            high = middle
        else:
            low = middle
    return high


def _check(alpha: float, target_power: float) -> None:
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


def seed_spread(scores: Sequence[float]) -> Spread | None:
    """The sample standard deviation over seeds (two or more seeds), else None."""
    values = [v for v in scores if v is not None and math.isfinite(v)]
    if len(values) < 2:
        return None
    mean = sum(values) / len(values)
    return Spread(math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)), len(values), "seeds")


def example_spread(correct: Sequence[float], seeds: int = 1) -> Spread | None:
    """The evaluation set's sampling standard deviation of a mean score: sd(per-example) / sqrt(n)."""
    values = [v for v in correct if v is not None and math.isfinite(v)]
    if len(values) < 2:
        return None
    mean = sum(values) / len(values)
    var = sum((v - mean) ** 2 for v in values) / (len(values) - 1)
    return Spread(math.sqrt(var / len(values)), seeds, "examples")
