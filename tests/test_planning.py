"""Seed planning: textbook sample sizes, the detectable effect, and ``suite plan`` on a store."""

from __future__ import annotations

import math

import pytest

from suite.reports.planning import (
    detectable_effect,
    example_spread,
    power,
    seed_spread,
    seeds_needed,
)
from suite.results.store import ResultStore
from tests.conftest import run_suite


@pytest.mark.parametrize("d, n", [(0.5, 64), (0.8, 26), (1.0, 17), (0.2, 394)])
def test_seeds_needed_matches_cohens_table(d, n):
    """Cohen (1988), two-sided two-sample t-test, alpha 0.05, power 0.8: n per group for effect size d."""
    assert seeds_needed(d, 1.0) == n
    assert seeds_needed(d * 3, 3.0) == n  # only effect / sigma matters


def test_the_normal_approximation_is_the_large_sample_limit():
    from scipy import stats

    z = stats.norm.ppf(0.975) + stats.norm.ppf(0.8)
    closed_form = 2 * (z / 0.1) ** 2  # n = 2 (z_a/2 + z_b)^2 sigma^2 / delta^2
    assert abs(seeds_needed(0.1, 1.0) - closed_form) <= 2


def test_detectable_effect_inverts_power():
    effect = detectable_effect(2.0, 5)
    assert power(effect, 2.0, 5) == pytest.approx(0.8, abs=1e-6)
    assert seeds_needed(effect * 1.001, 2.0) == 5
    assert detectable_effect(1.0, 1) == math.inf and detectable_effect(0.0, 3) == 0.0


def test_spreads():
    spread = seed_spread([0.80, 0.82, 0.78])
    assert spread.source == "seeds" and spread.sigma == pytest.approx(0.02)
    assert seed_spread([0.8]) is None
    examples = example_spread([1, 0, 1, 1] * 25)
    assert examples.source == "examples" and examples.sigma == pytest.approx(math.sqrt(0.75 * 0.25 * 100 / 99 / 100))


def _cell(store, variant: str, seed: int, value: float) -> None:
    store.write_cell([{"cell_id": f"{variant}-{seed}", "method": variant, "variant": variant, "task": "smoke",
                       "subtask": "", "model": "m", "seed": seed, "status": "ok", "metric": "accuracy",
                       "value": value, "split": "dev", "is_primary": True, "higher_is_better": True,
                       "finished_at": f"2026-01-01T00:00:0{seed}.000000Z"}])


def test_suite_plan_reads_the_spread_over_seeds(tmp_path):
    store = ResultStore(tmp_path)
    for seed, value in enumerate([0.80, 0.82, 0.78, 0.81, 0.79]):
        _cell(store, "lora", seed, value)
    _cell(store, "full", 0, 0.85)
    result = run_suite("plan", str(tmp_path), "--effect", "1.0")
    assert result.returncode == 0, result.stderr
    sigma = 100 * math.sqrt(sum((v - 0.8) ** 2 for v in [0.80, 0.82, 0.78, 0.81, 0.79]) / 4)
    line = next(line for line in result.stdout.splitlines() if line.startswith("smoke") and " lora " in line)
    assert f"{sigma:.3g}" in line and f" {seeds_needed(1.0, sigma)} " in f" {line} "
    assert f"{detectable_effect(sigma, 5):.3g}" in line
    full = next(line for line in result.stdout.splitlines() if " full " in line)
    assert full.split()[-1] == "-"  # one seed, no per-example records here: nothing to plan from
    bad = run_suite("plan", str(tmp_path), "--effect", "0")
    assert bad.returncode == 2 and "--effect" in bad.stderr
