"""Seed planning: textbook sample sizes, the detectable effect, and ``suite plan`` on a store."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from suite.app.cli import main
from suite.reports import planning
from suite.reports.planning import (
    MAX_SEEDS,
    detectable_effect,
    example_spread,
    is_flat,
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
    assert detectable_effect(1.0, 1) == math.inf
    with pytest.raises(ValueError):  # no spread, no standard error: the caller says why instead
        detectable_effect(0.0, 3)


def test_spreads():
    spread = seed_spread([0.80, 0.82, 0.78])
    assert spread.source == "seeds" and spread.sigma == pytest.approx(0.02)
    assert seed_spread([0.8]) is None
    examples = example_spread([1, 0, 1, 1] * 25)
    assert examples.source == "examples" and examples.sigma == pytest.approx(math.sqrt(0.75 * 0.25 * 100 / 99 / 100))


def _cell(store, variant: str, seed: int, value: float, task: str = "smoke", metric: str = "accuracy") -> None:
    store.write_cell([{"cell_id": f"{task}-{variant}-{seed}", "method": variant, "variant": variant, "task": task,
                       "subtask": "", "model": "m", "seed": seed, "status": "ok", "metric": metric,
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


def _smallest_passing(effect: float, sigma: float, alpha: float = 0.05, target: float = 0.8) -> int:
    """The definition of seeds_needed, by walking up from 2 seeds (only for small answers)."""
    k = 2
    while power(effect, sigma, k, alpha) < target:
        k += 1
    return k


@pytest.mark.parametrize("alpha, target", [(0.05, 0.8), (0.01, 0.9), (0.1, 0.5)])
def test_seeds_needed_is_the_smallest_count_reaching_the_power(alpha, target):
    for d in [0.35, 0.5, 0.62, 0.8, 1.0, 1.3, 2.0, 3.1, 5.0, 9.0, 14.0, 40.0]:
        assert seeds_needed(d, 1.0, alpha, target) == _smallest_passing(d, 1.0, alpha, target), d


def test_the_search_is_bounded_whatever_the_effect(monkeypatch):
    """A few dozen power evaluations at most: bisection over [2, MAX_SEEDS], never a seed-by-seed walk."""
    calls = []
    real = planning.power
    monkeypatch.setattr(planning, "power", lambda *a, **k: calls.append(a) or real(*a, **k))
    bound = 2 * math.ceil(math.log2(MAX_SEEDS)) + 3
    for effect in [1e-300, 5e-324, 1e-12, 1e-9, 1e-6, 0.01, 0.3, 1.0, 1e6, 1e300, math.inf]:
        calls.clear()
        needed = seeds_needed(effect, 1.0)
        assert len(calls) <= bound, (effect, len(calls))
        assert all(2 <= a[2] <= MAX_SEEDS for a in calls)  # the cap bounds every count tried
        assert needed is None if effect < 0.05 else needed is not None
    assert seeds_needed(1e300, 1.0) == 2 and seeds_needed(math.inf, 1.0) == 2
    for sigma in [1e-300, 1.0, 1e300]:  # the bisection over the effect stays bounded too
        calls.clear()
        assert math.isfinite(detectable_effect(sigma, 5)) and len(calls) < 200


def test_the_cap_holds_on_both_sides_of_the_normal_approximation():
    """Past MAX_SEEDS the answer is None whichever way the search starts (the old search answered
    None from a start below the answer but stepped down from one above it: 13,508 for d = 0.02 at
    alpha 0.1, power 0.5)."""
    edge = detectable_effect(1.0, MAX_SEEDS)  # the smallest effect MAX_SEEDS seeds detect
    assert seeds_needed(edge, 1.0) == MAX_SEEDS
    assert seeds_needed(edge * (1 - 1e-6), 1.0) is None
    assert seeds_needed(0.02, 1.0, 0.1, 0.5) is None and seeds_needed(0.02, 1.0) is None
    # detectable_effect plans past the cap as the cap: a bound, since more seeds detect no less
    assert detectable_effect(1.0, 3 * MAX_SEEDS) == detectable_effect(1.0, MAX_SEEDS)


def test_power_where_scipy_answers_nan():
    """scipy's noncentral t gives nan for the far lower tail at large shifts and for huge shifts;
    the old search took that nan for a failure in one loop and a pass in another (d = 8.53 at alpha
    0.01 needs 3 seeds, not 2; 3 seeds at alpha 0.01 detect d = 4.80, not 6.32)."""
    assert 0.5 < power(8.527, 1.0, 2, 0.01) < 0.8 and seeds_needed(8.527, 1.0, 0.01) == 3
    effect = detectable_effect(1.0, 3, 0.01)
    assert power(effect, 1.0, 3, 0.01) == pytest.approx(0.8, abs=1e-6) and effect == pytest.approx(4.80, abs=0.01)
    for seeds in (1000, MAX_SEEDS):
        assert power(detectable_effect(1.0, seeds), 1.0, seeds) == pytest.approx(0.8, abs=1e-6)
    assert power(1e300, 1.0, 5) == 1.0 and power(1e13, 1.0, 5) == 1.0
    assert power(1.0, 1.0, 5, alpha=5e-324) == 0.0  # alpha / 2 underflows: nothing is rejected


def test_bad_numbers_are_refused_not_looped_on():
    for bad in [math.nan]:
        with pytest.raises(ValueError):
            seeds_needed(bad, 1.0)
    for sigma in [0.0, -1.0, math.nan, math.inf]:
        with pytest.raises(ValueError):
            seeds_needed(0.5, sigma)
    assert seeds_needed(0.0, 1.0) is None and seeds_needed(-0.5, 1.0) == 64  # a difference either way


def test_a_constant_score_is_flat():
    constant = seed_spread([0.508, 0.508, 0.508])
    assert constant.sigma == 0.0 and constant.flat and constant.low == constant.high == 0.508
    rounding = seed_spread([50.8, 50.8 + 1e-12, 50.8])  # float noise, not seed noise
    assert rounding.flat and rounding.sigma > 0
    assert not seed_spread([50.8, 50.9, 50.8]).flat
    assert is_flat(0.0, 0.0) and is_flat(1e-10, 0.5) and not is_flat(1e-8, 0.5)
    assert is_flat(1e-7, 1e3) and not is_flat(1e-5, 1e3)  # relative to the score's magnitude
    assert example_spread([1.0] * 50).flat and not example_spread([1.0, 0.0] * 25).flat


def _plan(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["plan", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_suite_plan_says_why_a_constant_score_cannot_be_planned_from(tmp_path, capsys):
    store = ResultStore(tmp_path)
    for seed in range(3):
        _cell(store, "majority", seed, 0.508)
        _cell(store, "rounding", seed, 0.7 + seed * 1e-14)
    for seed, value in enumerate([0.80, 0.82, 0.78]):
        _cell(store, "lora", seed, value)
    # one seed each, with per-example records: every example right, and half of them right
    for variant, correct in [("perfect", [1.0] * 40), ("coin", [1.0, 0.0] * 20)]:
        _cell(store, variant, 0, sum(correct) / len(correct))
        store.write_predictions(f"smoke-{variant}-0", pd.DataFrame({"split": "dev", "example_id": range(40),
                                                                     "correct": correct}))
    code, out, err = _plan(capsys, str(tmp_path), "--effect", "0.5")
    assert code == 0, err
    lines = out.splitlines()
    for method in ("majority", "rounding", "perfect"):
        row = next(line for line in lines if f" {method} " in line)
        assert row.split()[-4:] == ["no", "spread", "no", "spread"]  # neither a seed count nor an effect
    assert "all 3 seeds scored 50.8 (points): no spread to plan from" in out and "majority class" in out
    assert "rounding: the 3 seeds differ only by float rounding" in out
    assert "perfect: one seed, and all 40 evaluation examples scored 100 (points)" in out
    lora = next(line for line in lines if " lora " in line)
    assert f" {seeds_needed(0.5, 2.0):,} " in lora
    coin = next(line for line in lines if " coin " in line)  # a lower bound from the examples alone
    assert f" {seeds_needed(0.5, example_spread([100.0, 0.0] * 20).sigma):,}+ " in coin


def test_suite_plan_takes_the_effect_per_metric_in_its_display_unit(tmp_path, capsys):
    store = ResultStore(tmp_path)
    for seed, (acc, loss) in enumerate([(0.80, 2.31), (0.82, 2.35), (0.78, 2.29)]):
        _cell(store, "lora", seed, acc, task="glue")
        _cell(store, "lora", seed, loss, task="lm", metric="val_loss")
    code, out, err = _plan(capsys, str(tmp_path), "--effect", "0.5")
    assert code == 2 and "accuracy" in err and "val_loss" in err and "accuracy=" in err and not out
    code, out, err = _plan(capsys, str(tmp_path), "--effect", "accuracy=0.5")
    assert code == 2 and "val_loss=" in err
    code, out, err = _plan(capsys, str(tmp_path), "--effect", "accuracy=1,val_loss=0.02")
    assert code == 0, err
    glue = next(line for line in out.splitlines() if line.startswith("glue"))
    lm = next(line for line in out.splitlines() if line.startswith("lm"))
    assert f" {seeds_needed(1.0, 2.0)} " in glue  # accuracy sd 0.02 is 2 points
    loss_sd = seed_spread([2.31, 2.35, 2.29]).sigma
    assert f" {seeds_needed(0.02, loss_sd)} " in lm
    assert "accuracy 1 points" in out and "val_loss 0.02 as stored" in out
    code, out, err = _plan(capsys, str(tmp_path), "--effect", "0.5", "--tasks", "glue")  # one unit: a bare number
    assert code == 0, err
    header = out.splitlines()[0]
    assert "seeds for 0.5 (points)" in header and "detectable now (points)" in header


def test_effect_pairs_allow_commas_in_metric_names():
    from suite.app.commands.plan import parse_effect

    assert parse_effect(" 0.5 ") == 0.5
    assert parse_effect("exact_match,strict-match=0.5, val_loss=0.02") == {"exact_match,strict-match": 0.5,
                                                                          "val_loss": 0.02}


def test_suite_plan_answers_every_float_without_a_traceback(tmp_path, capsys):
    store = ResultStore(tmp_path)
    for seed, value in enumerate([0.80, 0.82, 0.78]):
        _cell(store, "lora", seed, value)
    code, out, _ = _plan(capsys, str(tmp_path), "--effect", "1e-300")
    assert code == 0 and f">{MAX_SEEDS:,}" in out.splitlines()[2] and f"up to {MAX_SEEDS:,}" in out
    code, out, _ = _plan(capsys, str(tmp_path), "--effect", "1e300")
    assert code == 0 and " 2 " in out.splitlines()[2]
    for bad in ["inf", "-inf", "nan", "-1", "0", "abc", "accuracy=nan", "accuracy", "=1", "accuracy=1,accuracy=2",
                "accuracy=1=2", "accuracy=1,x"]:
        code, out, err = _plan(capsys, str(tmp_path), f"--effect={bad}")
        assert code == 2 and "--effect" in err and not out, bad
    assert "positive finite" in _plan(capsys, str(tmp_path), "--effect=nan")[2]
    code, out, err = _plan(capsys, str(tmp_path), "--effect", "1", "--alpha", "nan")
    assert code == 2 and "--alpha" in err
