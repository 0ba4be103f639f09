"""suite.stats: seed statistics, the paired test, Holm, and the GLUE score as the benchmark defines it."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy.stats import binomtest

from suite import stats


def test_summarize_mean_std_and_interval_inside_the_range():
    s = stats.summarize([0.90, 0.91, 0.95])
    assert s.mean == pytest.approx(0.92)
    assert s.std == pytest.approx(np.std([0.90, 0.91, 0.95], ddof=1))
    assert s.n == 3
    assert 0.90 <= s.ci_low < s.mean < s.ci_high <= 0.95
    assert stats.summarize([0.90, 0.91, 0.95]) == s  # fixed bootstrap seed: reproducible


def test_summarize_one_seed_has_no_interval_and_nan_is_dropped():
    s = stats.summarize([0.8, float("nan")])
    assert s.n == 1 and s.mean == 0.8
    assert math.isnan(s.std) and math.isnan(s.ci_low) and math.isnan(s.ci_high)
    assert stats.summarize([]).n == 0


def test_bootstrap_interval_covers_the_mean_of_a_wide_sample():
    rng = np.random.default_rng(3)
    x = rng.normal(10, 1, 200)
    low, high = stats.bootstrap_ci(x)
    se = x.std(ddof=1) / math.sqrt(x.size)
    assert low < 10 < high
    assert (high - low) == pytest.approx(2 * 1.96 * se, rel=0.15)


def _brute_force_p(a: np.ndarray, b: np.ndarray) -> float:
    d = a.mean(axis=0) - b.mean(axis=0)
    obs = abs(d.sum())
    hits = total = 0
    for signs in itertools.product((-1, 1), repeat=d.size):
        hits += abs(np.dot(signs, d)) >= obs - 1e-12
        total += 1
    return hits / total


@pytest.mark.parametrize("ka,kb", [(1, 1), (3, 3), (3, 2)])
def test_paired_permutation_is_exact(ka, kb):
    rng = np.random.default_rng(ka * 10 + kb)
    a = (rng.random((ka, 12)) < 0.8).astype(float)
    b = (rng.random((kb, 12)) < 0.5).astype(float)
    result = stats.paired_permutation_test(a, b)
    assert result.test == "paired-permutation"
    assert result.p_value == pytest.approx(_brute_force_p(a, b), abs=1e-12)
    assert result.delta == pytest.approx(a.mean() - b.mean())


def test_paired_permutation_with_one_seed_is_mcnemars_exact_test():
    rng = np.random.default_rng(0)
    a = (rng.random(900) < 0.9).astype(float)
    b = (rng.random(900) < 0.86).astype(float)
    n10 = int(((a == 1) & (b == 0)).sum())
    n01 = int(((a == 0) & (b == 1)).sum())
    expected = binomtest(n10, n10 + n01, 0.5).pvalue
    assert stats.paired_permutation_test(a[None], b[None]).p_value == pytest.approx(expected, rel=1e-9)


def test_paired_permutation_large_eval_set_uses_fft_and_stays_accurate():
    rng = np.random.default_rng(1)
    a = (rng.random((3, 40_000)) < 0.900).astype(float)
    b = (rng.random((3, 40_000)) < 0.897).astype(float)
    exact = stats.paired_permutation_test(a, b)
    d = a.mean(0) - b.mean(0)
    signs = rng.choice((-1.0, 1.0), size=(4000, d.size))
    sampled = (np.abs(signs @ d) >= abs(d.sum()) - 1e-9).mean()
    assert 0 < exact.p_value < 1
    assert exact.p_value == pytest.approx(sampled, abs=0.03)


def test_paired_permutation_identical_and_clearly_different():
    a = np.tile((np.arange(300) % 3 == 0).astype(float), (3, 1))
    assert stats.paired_permutation_test(a, a).p_value == 1.0
    better = np.ones((3, 300))
    assert stats.paired_permutation_test(better, a).p_value < 1e-10


def test_paired_permutation_graded_correctness_is_sampled_and_deterministic():
    rng = np.random.default_rng(2)
    a = -np.abs(rng.normal(0, 1, (3, 300)))
    b = a - 0.2  # uniformly worse errors
    r1 = stats.paired_permutation_test(a, b)
    assert r1.test == "paired-permutation-mc"
    assert r1.p_value == pytest.approx(1 / 10_001)
    assert stats.paired_permutation_test(a, b) == r1
    noise = stats.paired_permutation_test(a, a + rng.normal(0, 0.01, a.shape))
    assert noise.p_value > 0.01


def test_paired_test_rejects_misaligned_examples():
    with pytest.raises(ValueError):
        stats.paired_permutation_test(np.ones((1, 3)), np.ones((1, 4)))


def test_seed_permutation_test_cannot_claim_significance_with_three_seeds():
    r = stats.seed_permutation_test([0.90, 0.91, 0.92], [0.70, 0.71, 0.72])
    assert r.p_value == pytest.approx(0.1)  # 2 of the 20 splits are as extreme
    assert r.delta == pytest.approx(0.2)
    assert r.test == "seed-permutation"


def test_holm_adjustment():
    adj = stats.holm_adjust([0.01, 0.04, float("nan"), 0.03])
    assert adj[0] == pytest.approx(0.03)
    assert adj[3] == pytest.approx(0.06)
    assert adj[1] == pytest.approx(0.06)  # monotone: never below a smaller p's adjustment
    assert math.isnan(adj[2])


def test_glue_task_scores_follow_the_benchmark():
    assert stats.glue_task_score("mrpc", {("f1", "dev"): 0.9, ("accuracy", "dev"): 0.8}) == pytest.approx(0.85)
    assert stats.glue_task_score("stsb", {("pearsonr", "dev"): 0.88, ("spearman", "dev"): 0.86}) == pytest.approx(0.87)
    mnli = {("accuracy", "dev_matched"): 0.84, ("accuracy", "dev_mismatched"): 0.83,
            ("accuracy_m_mm_mean", "dev"): 0.835}
    assert stats.glue_task_score("mnli", mnli) == pytest.approx(0.835)
    assert stats.glue_task_score("cola", {("matthews_correlation", "dev"): 0.6}) == 0.6
    assert stats.glue_task_score("mrpc", {("f1", "dev"): 0.9}) is None  # incomplete
    assert stats.glue_task_score("ax", {("mcc", "dev"): 0.3}) is None  # not part of the score


def test_glue_score_reproduces_a_published_leaderboard_score():
    # BERT-large on the GLUE test leaderboard: score 80.5 over the nine tasks.
    task_scores = {
        "cola": stats.glue_task_score("cola", {("mcc", "test"): 60.5}),
        "sst2": 94.9,
        "mrpc": stats.glue_task_score("mrpc", {("f1", "test"): 89.3, ("accuracy", "test"): 85.4}),
        "stsb": stats.glue_task_score("stsb", {("pearson", "test"): 87.6, ("spearman", "test"): 86.5}),
        "qqp": stats.glue_task_score("qqp", {("f1", "test"): 72.1, ("accuracy", "test"): 89.3}),
        "mnli": stats.glue_task_score("mnli", {("accuracy", "test_matched"): 86.7,
                                               ("accuracy", "test_mismatched"): 85.9}),
        "qnli": 92.7, "rte": 70.1, "wnli": 65.1,
    }
    score, used = stats.glue_score(task_scores)
    assert round(score, 1) == 80.5
    assert len(used) == 9


def test_average_rank_shares_ties_and_ignores_tasks_not_everyone_has():
    scores = {"a": {"t1": 0.9, "t2": 0.5, "t3": 0.1}, "b": {"t1": 0.8, "t2": 0.5}, "c": {"t1": 0.7, "t2": 0.6}}
    ranks = stats.average_rank(scores, {"t1": True, "t2": True, "t3": True})
    assert ranks == {"a": pytest.approx(1.75), "b": pytest.approx(2.25), "c": pytest.approx(2.0)}
    loss = stats.average_rank({"a": {"l": 1.0}, "b": {"l": 2.0}}, {"l": False})
    assert loss == {"a": 1.0, "b": 2.0}


def test_pareto_front():
    front = stats.pareto_front([1, 2, 3, 2, float("nan")], [0.5, 0.7, 0.6, 0.9, 1.0])
    assert front == [True, False, False, True, False]


def test_summarize_many_equals_summarize_one_by_one():
    rng = np.random.default_rng(5)
    groups = [rng.normal(size=int(rng.integers(0, 6))) for _ in range(400)]
    groups[3] = np.array([1.0, np.nan, 2.0, 4.0])
    for got, want in zip(stats.summarize_many(groups), (stats.summarize(g) for g in groups), strict=True):
        assert got.n == want.n
        np.testing.assert_array_equal([got.mean, got.std, got.ci_low, got.ci_high],
                                      [want.mean, want.std, want.ci_low, want.ci_high])
