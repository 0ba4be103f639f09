"""Statistics for honest leaderboards: seed spread, paired tests, aggregation across tasks.

Three questions, kept apart:

- How much does a score move with the seed? ``summarize`` gives mean, standard deviation
  and a 95% interval of the mean across seeds: a Student-t interval below
  ``BOOTSTRAP_MIN_SEEDS`` seeds (a percentile bootstrap never leaves [min, max], so with 3
  seeds it is the seed range and overstates certainty), a percentile bootstrap from there
  on. ``Summary.interval`` names which one, so every page can label it.
- Is a method different from the baseline on the same evaluation examples?
  ``paired_permutation_test`` is an exact sign-flip permutation test on per-example
  correctness (averaged over each method's seeds), computed by convolution rather than
  sampling, so it is deterministic and fast. It measures example-level evidence only;
  seed-to-seed variation is what the interval across seeds shows, so it is labelled
  "per-example, ignores seed variance" wherever it is shown. The significance marks come
  from ``seed_t_test``: seeds are the unit of replication (a paired t-test over seeds
  matched by seed, data and recipe, else Welch's), with no verdict below three seeds.
  ``seed_permutation_test`` compares the seed scores by permutation (with 3 vs 3 seeds its
  smallest possible p is 0.1).
- How does one summarise a family of tasks? The family defines its benchmark-level
  scores itself (``Task.aggregate``, found through the registry by ``family_aggregates``),
  so this module names no benchmark. ``average_rank`` is the mean rank across tasks.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from itertools import combinations
from typing import TYPE_CHECKING, Protocol

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from suite.task import Aggregate

BOOTSTRAP_SAMPLES = 2000
BOOTSTRAP_SEED = 0  # fixed, so the same store renders the same intervals
# Below this many seeds the interval of a mean is Student's t: a percentile bootstrap of a
# handful of values is bounded by their range and far too narrow.
BOOTSTRAP_MIN_SEEDS = 20
MIN_TEST_SEEDS = 3  # a seed-level test needs this many seeds (pairs) per side to say anything

INTERVAL_LABELS = {"t": "Student-t", "bootstrap": "percentile bootstrap", "": "none"}


@dataclass(frozen=True)
class Summary:
    """Mean, spread and a 95% interval of one score across seeds (``interval`` says which)."""

    mean: float
    std: float  # sample standard deviation (ddof=1); nan with one seed
    n: int
    ci_low: float  # nan with fewer than two seeds: one run says nothing about spread
    ci_high: float
    interval: str = "t"  # "t" (Student-t over seeds), "bootstrap" (percentile) or "" (none)

    @property
    def half_width(self) -> float:
        return (self.ci_high - self.ci_low) / 2

    @property
    def interval_label(self) -> str:
        """E.g. "95% Student-t interval over 3 seeds", for tooltips and legends."""
        if not self.interval or self.n < 2:
            return f"no interval ({self.n} seed{'s' if self.n != 1 else ''})"
        return f"95% {INTERVAL_LABELS[self.interval]} interval over {self.n} seeds"


@lru_cache(maxsize=256)
def t_quantile(df: int, confidence: float) -> float:
    """The two-sided Student-t critical value (cached: a table has few distinct seed counts)."""
    from scipy.special import stdtrit

    return float(stdtrit(df, 0.5 + confidence / 2))


def t_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float]:
    """Student-t interval of the mean; (nan, nan) with fewer than two values."""
    x = np.asarray(values, dtype=float)
    x = x[~np.isnan(x)]
    if x.size < 2:
        return math.nan, math.nan
    half = t_quantile(x.size - 1, confidence) * float(x.std(ddof=1)) / math.sqrt(x.size)
    mean = float(x.mean())
    return mean - half, mean + half


def bootstrap_ci(
    values: Sequence[float],
    confidence: float = 0.95,
    n_boot: int = BOOTSTRAP_SAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean; (nan, nan) with fewer than two values."""
    x = np.asarray(values, dtype=float)
    x = x[~np.isnan(x)]
    if x.size < 2:
        return math.nan, math.nan
    means = x[_resample_index(x.size, n_boot, seed)].mean(axis=1)
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)


@lru_cache(maxsize=64)
def _resample_index(n: int, n_boot: int, seed: int) -> np.ndarray:
    """Bootstrap indices, shared by all groups of one size (a leaderboard has thousands)."""
    return np.random.default_rng(seed).integers(0, n, size=(n_boot, n))


def summarize(values: Iterable[float], confidence: float = 0.95) -> Summary:
    """Mean, std and 95% interval of per-seed scores (NaNs, e.g. from a diverged run, dropped):
    Student-t below ``BOOTSTRAP_MIN_SEEDS`` seeds, percentile bootstrap from there on."""
    x = np.asarray(list(values), dtype=float)
    x = x[~np.isnan(x)]
    if x.size == 0:
        return Summary(math.nan, math.nan, 0, math.nan, math.nan, "")
    if x.size == 1:
        return Summary(float(x[0]), math.nan, 1, math.nan, math.nan, "")
    std = float(x.std(ddof=1))
    if x.size < BOOTSTRAP_MIN_SEEDS:
        low, high = t_interval(x, confidence)
        return Summary(float(x.mean()), std, int(x.size), low, high, "t")
    low, high = bootstrap_ci(x, confidence)
    return Summary(float(x.mean()), std, int(x.size), low, high, "bootstrap")


def summarize_many(groups: Sequence[Iterable[float]], confidence: float = 0.95) -> list[Summary]:
    """``[summarize(g) for g in groups]``, vectorised per size class: a 10,000-cell leaderboard
    has thousands of groups, nearly all of the same size."""
    clean = []
    for g in groups:
        x = np.asarray(list(g) if not isinstance(g, np.ndarray) else g, dtype=float)
        clean.append(x[~np.isnan(x)])
    out: list[Summary | None] = [None] * len(clean)
    by_size: dict[int, list[int]] = {}
    for i, x in enumerate(clean):
        if x.size < 2:
            out[i] = summarize(x, confidence)
        else:
            by_size.setdefault(x.size, []).append(i)
    tail = (1 - confidence) / 2 * 100
    for n, members in by_size.items():
        if n < BOOTSTRAP_MIN_SEEDS:
            mat = np.stack([clean[i] for i in members])
            means, stds = mat.mean(axis=1), mat.std(axis=1, ddof=1)
            half = t_quantile(n - 1, confidence) * stds / math.sqrt(n)
            for j, i in enumerate(members):
                out[i] = Summary(float(means[j]), float(stds[j]), n, float(means[j] - half[j]),
                                 float(means[j] + half[j]), "t")
            continue
        idx = _resample_index(n, BOOTSTRAP_SAMPLES, BOOTSTRAP_SEED)
        for a in range(0, len(members), 256):  # bounded memory: 256 x 2000 x n floats
            part = members[a:a + 256]
            mat = np.stack([clean[i] for i in part])
            bounds = np.percentile(mat[:, idx].mean(axis=2), [tail, 100 - tail], axis=1)
            means, stds = mat.mean(axis=1), mat.std(axis=1, ddof=1)
            for j, i in enumerate(part):
                out[i] = Summary(float(means[j]), float(stds[j]), n, float(bounds[0, j]), float(bounds[1, j]),
                                 "bootstrap")
    return out  # type: ignore[return-value]


@dataclass(frozen=True)
class TestResult:
    """Outcome of comparing a method with the baseline on one task."""

    delta: float  # method minus baseline (in the compared quantity's units)
    p_value: float  # two-sided
    test: str  # "paired-permutation" (per example) | "seed-paired-t" | "seed-welch-t" | "seed-permutation" | "none"
    n: int  # examples (per-example tests), pairs (paired t) or seeds of the method
    reason: str = ""  # why there is no p-value ("n<3 seeds"), where there is none

    @property
    def label(self) -> str:
        """What the test is, in words a reader needs to weigh it."""
        return TEST_LABELS.get(self.test, self.test)


TEST_LABELS = {
    "paired-permutation": "per-example paired permutation (ignores seed variance)",
    "paired-permutation-mc": "per-example paired permutation, sampled (ignores seed variance)",
    "seed-paired-t": "paired t-test over seeds",
    "seed-welch-t": "Welch t-test over seeds",
    "seed-permutation": "permutation test over seeds",
    "none": "no test",
}


def _sign_flip_distribution(weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact distribution of sum_i s_i * w_i with independent fair signs s_i, for integer w_i >= 0.

    Examples with equal |w| are grouped: a group of c examples of weight a contributes
    a * (2 * Binomial(c, 1/2) - c), so the distribution is a short chain of convolutions.
    Returns (support, probabilities).
    """
    weights = weights[weights > 0]
    total = int(weights.sum())
    probs = np.zeros(1)
    probs[0] = 1.0  # distribution of the sum shifted by +total, over 0..2*total (steps of 1)
    values, counts = np.unique(weights, return_counts=True)
    for a, c in zip(values.astype(int), counts, strict=True):
        k = np.arange(c + 1)
        group = np.zeros(2 * a * c + 1)
        group[2 * a * k] = _binomial_half_pmf(int(c))  # value 2ak - ac, shifted by +ac
        if probs.size * group.size > 4_000_000:  # large eval sets (QQP): FFT, error ~1e-15
            probs = np.clip(_fft_convolve(probs, group), 0.0, None)
        else:
            probs = np.convolve(probs, group)
    support = np.arange(probs.size) - total
    return support, probs


def _binomial_half_pmf(c: int) -> np.ndarray:
    """P(Binomial(c, 1/2) = k) for k = 0..c, in log space so large c does not overflow."""
    k = np.arange(1, c + 1)
    log_comb = np.concatenate([[0.0], np.cumsum(np.log(c - k + 1) - np.log(k))])
    return np.exp(log_comb - c * math.log(2))


def _fft_convolve(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    n = x.size + y.size - 1
    size = 1 << (n - 1).bit_length()
    return np.fft.irfft(np.fft.rfft(x, size) * np.fft.rfft(y, size), size)[:n]


def paired_permutation_test(
    method_correct: np.ndarray,
    baseline_correct: np.ndarray,
    n_perm: int = 10_000,
    seed: int = BOOTSTRAP_SEED,
) -> TestResult:
    """Two-sided sign-flip permutation test of mean per-example correctness on the same examples.

    ``method_correct`` and ``baseline_correct`` are (seeds x examples) arrays over the same
    examples in the same order (seed counts may differ). Under the null hypothesis the two
    methods are exchangeable on each example, so the per-example difference of
    seed-averaged correctness is symmetric about zero. For 0/1 correctness the null
    distribution is computed exactly (differences scaled to integers by the product of
    the seed counts); for graded correctness (e.g. minus the absolute error of a
    regression) it is sampled with ``n_perm`` fixed-seed sign flips.
    """
    a = np.atleast_2d(np.asarray(method_correct, dtype=float))
    b = np.atleast_2d(np.asarray(baseline_correct, dtype=float))
    if a.shape[1] != b.shape[1]:
        raise ValueError("paired test needs the same examples for both methods")
    n = a.shape[1]
    if n == 0 or np.isnan(a).any() or np.isnan(b).any():
        return TestResult(math.nan, math.nan, "none", n)
    ka, kb = a.shape[0], b.shape[0]
    d = a.mean(axis=0) - b.mean(axis=0)
    delta = float(d.mean())
    binary = np.isin(a, (0.0, 1.0)).all() and np.isin(b, (0.0, 1.0)).all()
    if binary:
        # d_i * ka * kb is an integer because each mean has denominator ka or kb.
        scaled = np.rint(a.sum(axis=0) * kb - b.sum(axis=0) * ka).astype(np.int64)
        observed = abs(int(scaled.sum()))
        if observed == 0:
            return TestResult(0.0, 1.0, "paired-permutation", n)
        support, probs = _sign_flip_distribution(np.abs(scaled))
        p = float(probs[np.abs(support) >= observed].sum())
        return TestResult(delta, min(1.0, p), "paired-permutation", n)
    observed = abs(d.sum())
    rng = np.random.default_rng(seed)
    hits = 0
    for start in range(0, n_perm, 256):
        signs = rng.choice((-1.0, 1.0), size=(min(256, n_perm - start), n))
        hits += int((np.abs(signs @ d) >= observed * (1 - 1e-12)).sum())
    # (hits + 1) / (n_perm + 1): a sampled p-value is never exactly zero.
    return TestResult(delta, (hits + 1) / (n_perm + 1), "paired-permutation-mc", n)




def seed_permutation_test(method: Sequence[float], baseline: Sequence[float]) -> TestResult:
    """Exact two-sided permutation test of the difference of means over seed scores.

    Used where per-example predictions are missing (or not 0/1, e.g. regression). With
    few seeds it has little power, on purpose: it cannot call a difference significant
    that the seeds cannot support.
    """
    a = np.asarray(method, dtype=float)
    b = np.asarray(baseline, dtype=float)
    a, b = a[~np.isnan(a)], b[~np.isnan(b)]
    if a.size == 0 or b.size == 0:
        return TestResult(math.nan, math.nan, "none", int(a.size))
    delta = float(a.mean() - b.mean())
    pooled = np.concatenate([a, b])
    n, k = pooled.size, a.size
    if math.comb(n, k) <= 200_000:  # all splits: exact
        idx = np.array(list(combinations(range(n), k)))
    else:  # many seeds: a fixed-seed sample of splits
        rng = np.random.default_rng(BOOTSTRAP_SEED)
        idx = np.argsort(rng.random((20_000, n)), axis=1)[:, :k]
    sums = pooled[idx].sum(axis=1)
    diffs = sums / k - (pooled.sum() - sums) / (n - k)
    hits, total = int((np.abs(diffs) >= abs(delta) - 1e-12).sum()), len(idx)
    return TestResult(delta, float(hits / total), "seed-permutation", int(a.size))


def seed_t_test(method: Sequence[float], baseline: Sequence[float],
                method_keys: Sequence | None = None, baseline_keys: Sequence | None = None,
                min_seeds: int = MIN_TEST_SEEDS) -> TestResult:
    """Two-sided t-test with seeds as the unit of replication.

    Where both sides have runs of the same key (seed, data, recipe) and at least ``min_seeds``
    such pairs, a paired t-test on the per-pair differences: the seed's own luck (initial
    weights, data order) cancels. Otherwise Welch's unequal-variance t-test on the two sets of
    seed scores. With fewer than ``min_seeds`` seeds (pairs) there is no verdict: the result has
    a nan p-value and says why, rather than claiming a difference two runs cannot support.
    """
    a = np.asarray(method, dtype=float)
    b = np.asarray(baseline, dtype=float)
    delta = float(np.nanmean(a) - np.nanmean(b)) if np.isfinite(a).any() and np.isfinite(b).any() else math.nan
    if method_keys is not None and baseline_keys is not None:
        diffs = paired_differences(a, method_keys, b, baseline_keys)
        if diffs.size >= min_seeds:
            return _t_from_diffs(diffs)
    a, b = a[~np.isnan(a)], b[~np.isnan(b)]
    n = int(min(a.size, b.size))
    if n < min_seeds:
        return TestResult(delta, math.nan, "none", n, reason=f"n<{min_seeds} seeds")
    va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
    if va + vb == 0:
        return TestResult(delta, 1.0 if delta == 0 else 0.0, "seed-welch-t", int(a.size))
    # Welch's t with the Welch-Satterthwaite degrees of freedom (as scipy's ttest_ind, equal_var=False).
    df = (va + vb) ** 2 / (va**2 / (a.size - 1) + vb**2 / (b.size - 1))
    return TestResult(delta, _two_sided_t(delta / math.sqrt(va + vb), df), "seed-welch-t", int(a.size))


def paired_differences(values: Sequence[float], keys: Sequence, base_values: Sequence[float],
                       base_keys: Sequence) -> np.ndarray:
    """Method minus baseline for every run whose key (seed, data, recipe) the baseline also ran."""
    by_key = {k: float(v) for k, v in zip(base_keys, base_values, strict=True) if not math.isnan(v)}
    return np.array([float(v) - by_key[k] for k, v in zip(keys, values, strict=True)
                     if k in by_key and not math.isnan(v)], dtype=float)


def _t_from_diffs(diffs: np.ndarray) -> TestResult:
    mean = float(diffs.mean())
    sd = float(diffs.std(ddof=1))
    if sd == 0:  # every pair differs by the same amount: no noise to weigh it against
        return TestResult(mean, 1.0 if mean == 0 else 0.0, "seed-paired-t", int(diffs.size))
    t = mean / (sd / math.sqrt(diffs.size))
    return TestResult(mean, _two_sided_t(t, diffs.size - 1), "seed-paired-t", int(diffs.size))


def _two_sided_t(t: float, df: float) -> float:
    """P(|T| >= |t|) for Student's t with ``df`` degrees of freedom (scipy.special: no
    per-call distribution object, so thousands of table cells stay cheap)."""
    from scipy.special import stdtr

    return float(min(1.0, 2 * stdtr(df, -abs(t))))


def holm_adjust(p_values: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (NaNs stay NaN and do not count as tests).

    A leaderboard makes many comparisons at once; the marks use adjusted p-values so that
    the chance of any false mark in a table stays at the chosen level.
    """
    p = np.asarray(p_values, dtype=float)
    out = np.full(p.shape, math.nan)
    valid = np.flatnonzero(~np.isnan(p))
    m = valid.size
    order = valid[np.argsort(p[valid], kind="stable")]
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out.tolist()


# -- aggregation across tasks --------------------------------------------------------------
# Benchmark-level scores belong to the task family: the core finds the family's class
# through the registry and calls its ``aggregate`` and ``subtask_order``, so no benchmark is
# named here and a new family brings its own scores without touching this module.


def task_family(family: object) -> type | None:
    """The registered class of a task family; None where its plugin is not installed here
    (a store may hold results of families this installation does not have)."""
    from suite.registry import TASKS

    if not isinstance(family, str) or not family or family not in TASKS:
        return None
    target = TASKS.get(family).target
    return target if isinstance(target, type) else None


def family_aggregates(family: object, scores: Mapping[str, float | None]) -> list[Aggregate]:
    """The family's benchmark-level scores from per-subtask primary scores (headline first).

    Missing and NaN scores are dropped before the family sees them, so a partial set comes
    back as a partial aggregate (``members`` < ``expected``), never as a wrong full one.
    Empty when the family is unknown here or defines no aggregate.
    """
    aggregate = getattr(task_family(family), "aggregate", None)
    clean = {}
    for subtask, value in scores.items():
        if value is not None and not math.isnan(float(value)):
            clean[str(subtask)] = float(value)
    if aggregate is None or not clean:
        return []
    return list(aggregate(clean))


def family_subtask_order(family: object, subtasks: Iterable[str]) -> list[str]:
    """Subtasks in the family's display order; by name where the family is unknown here."""
    subtasks = list(subtasks)
    order = getattr(task_family(family), "subtask_order", None)
    return list(order(subtasks)) if order is not None else sorted(subtasks)


class Covers(Protocol):
    """What a label needs of an aggregate: ``Aggregate`` and the reports' columns both have it."""

    name: str
    members: tuple[str, ...]
    expected: int


def aggregate_label(aggregate: Covers) -> str:
    """The aggregate's name, saying how many subtasks entered when not all of them did."""
    if len(aggregate.members) >= aggregate.expected:
        return aggregate.name
    return f"{aggregate.name} ({len(aggregate.members)}/{aggregate.expected} tasks)"


def average_rank(
    scores: Mapping[str, Mapping[str, float]], higher_is_better: Mapping[str, bool]
) -> dict[str, float]:
    """Mean rank (1 = best, ties share the mean rank) of each method over the given tasks.

    ``scores[method][task]``; only tasks that every method has enter, so that ranks compare
    like with like. Methods with no such task get nan.
    """
    methods = list(scores)
    if not methods:
        return {}
    tasks = set.intersection(*(set(k for k, v in scores[m].items() if not _isnan(v)) for m in methods))
    ranks: dict[str, list[float]] = {m: [] for m in methods}
    for task in sorted(tasks):
        values = np.array([scores[m][task] for m in methods], dtype=float)
        key = -values if higher_is_better.get(task, True) else values
        for m, r in zip(methods, _average_ranks(key), strict=True):
            ranks[m].append(r)
    return {m: float(np.mean(r)) if r else math.nan for m, r in ranks.items()}


def competition_ranks(scores: Sequence[float], higher_is_better: bool = True) -> list[int | None]:
    """The rank column of a table: 1 = best, tied scores share the better rank and the next rank
    skips ("1, 2, 2, 4"); None for a missing score."""
    order = sorted((i for i, v in enumerate(scores) if not _isnan(v)),
                   key=lambda i: -scores[i] if higher_is_better else scores[i])
    ranks: list[int | None] = [None] * len(scores)
    previous, rank = None, 0
    for position, i in enumerate(order, 1):
        if scores[i] != previous:
            rank, previous = position, scores[i]
        ranks[i] = rank
    return ranks


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n, ties sharing their mean rank (scipy's rankdata "average"), in numpy:
    importing scipy.stats for this alone costs more than a whole leaderboard."""
    x = np.asarray(x, dtype=float)
    if np.isnan(x).any():
        return np.full(x.shape, math.nan)
    order = np.argsort(x, kind="stable")
    xs = x[order]
    starts = np.flatnonzero(np.r_[True, xs[1:] != xs[:-1]])
    ends = np.r_[starts[1:], x.size]
    ranks = np.empty(x.size)
    ranks[order] = np.repeat((starts + ends + 1) / 2.0, ends - starts)
    return ranks


def _isnan(v: float | None) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def pareto_front(costs: Sequence[float], scores: Sequence[float], higher_is_better: bool = True) -> list[bool]:
    """Which points no other point beats on both axes (lower cost and a better score)."""
    c = np.asarray(costs, dtype=float)
    s = np.asarray(scores, dtype=float)
    if not higher_is_better:
        s = -s
    front = []
    for i in range(c.size):
        if math.isnan(c[i]) or math.isnan(s[i]):
            front.append(False)
            continue
        dominated = (c <= c[i]) & (s >= s[i]) & ((c < c[i]) | (s > s[i]))
        front.append(not bool(dominated.any()))
    return front
