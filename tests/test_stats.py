"""suite.reports.stats: seed statistics, the paired test, Holm; benchmark-level scores from the task family.

Aggregates (the GLUE score, VTAB-like group means) come only from the family's own
``aggregate``, found through the registry: a fake family registered here shows that the run
summary, `suite compare` and the site display whatever a family defines, headline first,
and label a partial aggregate as partial.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy.stats import binomtest

from suite.reports import stats
from suite.task import Aggregate, Task, mean_aggregate


def test_summarize_few_seeds_is_a_student_t_interval():
    """With 3 seeds a percentile bootstrap never leaves [min, max]; Student's t does, as it must."""
    from scipy.stats import t

    x = [0.90, 0.91, 0.95]
    s = stats.summarize(x)
    assert s.mean == pytest.approx(0.92)
    assert s.std == pytest.approx(np.std(x, ddof=1))
    assert s.n == 3 and s.interval == "t" and "Student-t" in s.interval_label
    half = t.ppf(0.975, 2) * np.std(x, ddof=1) / math.sqrt(3)
    assert (s.ci_low, s.ci_high) == pytest.approx((0.92 - half, 0.92 + half))
    assert s.ci_low < 0.90 and s.ci_high > 0.95
    boot = stats.bootstrap_ci(x)
    assert 0.90 <= boot[0] and boot[1] <= 0.95  # what the bootstrap would have claimed


def test_summarize_many_seeds_is_a_bootstrap_interval():
    x = np.random.default_rng(0).normal(0.8, 0.02, stats.BOOTSTRAP_MIN_SEEDS)
    s = stats.summarize(x)
    assert s.interval == "bootstrap" and s.ci_low < s.mean < s.ci_high
    assert stats.summarize(x) == s  # fixed bootstrap seed: reproducible


def test_seed_t_test_pairs_by_key_and_needs_three_seeds():
    from scipy.stats import ttest_ind, ttest_rel

    luck = [0.0, 0.3, -0.2, 0.1]
    base = [0.80 + s for s in luck]
    method = [0.82 + s + d for s, d in zip(luck, (0.001, -0.002, 0.0, 0.001), strict=True)]
    keys = ["0", "1", "2", "3"]
    paired = stats.seed_t_test(method, base, keys, keys)
    assert paired.test == "seed-paired-t" and paired.n == 4
    assert paired.p_value == pytest.approx(ttest_rel(method, base).pvalue)
    assert paired.p_value < 0.01  # the shared seed luck cancels
    welch = stats.seed_t_test(method, base)  # no keys: the seeds do not pair
    assert welch.test == "seed-welch-t"
    assert welch.p_value == pytest.approx(ttest_ind(method, base, equal_var=False).pvalue)
    assert welch.p_value > 0.5
    few = stats.seed_t_test(method[:2], base[:2], keys[:2], keys[:2])
    assert math.isnan(few.p_value) and few.reason == "n<3 seeds" and few.test == "none"


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


# -- benchmark-level scores: only through the family's own aggregate ----------------------------


def _glue():
    from suite.registry import TASKS

    return TASKS.get("glue").target  # as the core finds it: through the registry, by name


def test_glue_score_is_the_mean_of_the_eight_primary_scores():
    scores = {"cola": 0.60, "sst2": 0.94, "mrpc": 0.87, "stsb": 0.88, "qqp": 0.80, "mnli": 0.86,
              "qnli": 0.92, "rte": 0.70}
    (score,) = _glue().aggregate(scores)
    assert score.name == "GLUE score" and score.complete and score.expected == 8
    assert score.value == pytest.approx(sum(scores.values()) / 8)
    assert stats.aggregate_label(score) == "GLUE score"
    # The same through the core's entry point; WNLI and the diagnostic set are not members.
    (same,) = stats.family_aggregates("glue", {**scores, "wnli": 0.1, "ax": 0.2})
    assert same.value == pytest.approx(score.value) and "wnli" not in same.members


def test_a_partial_glue_score_says_so():
    (score,) = stats.family_aggregates("glue", {"rte": 0.70, "sst2": 0.90, "mrpc": math.nan,
                                                "cola": 0.50, "qqp": None})
    assert score.value == pytest.approx(0.70)
    assert score.members == ("cola", "sst2", "rte") and score.expected == 8 and not score.complete
    assert stats.aggregate_label(score) == "GLUE score (3/8 tasks)"
    assert stats.family_aggregates("glue", {"mrpc": math.nan}) == []


def test_family_order_and_unknown_families():
    assert stats.family_subtask_order("glue", ["rte", "cola", "zzz", "sst2"]) == ["cola", "sst2", "rte", "zzz"]
    # A store may hold a family whose plugin is not installed here: no aggregate, no error.
    assert stats.family_aggregates("not-installed-here", {"a": 0.5}) == []
    assert stats.family_aggregates(float("nan"), {"a": 0.5}) == []
    assert stats.family_subtask_order("not-installed-here", ["b", "a"]) == ["a", "b"]


class TinyBench(Task):
    """A fake task family: four subtasks in two groups, like VTAB's natural / structured
    groups; its headline is the mean of the group means. It names its subtasks out of
    alphabetical order, so the family's order is seen to win."""

    family = "tinybench"
    subtasks = ("d1", "c1", "b2", "a2")
    GROUPS = {"left": ("d1", "c1"), "right": ("b2", "a2")}

    @classmethod
    def aggregate(cls, scores):
        groups = [a for name, members in cls.GROUPS.items() for a in mean_aggregate(name, members, scores)]
        if not groups:
            return []
        overall = sum(g.value for g in groups) / len(groups)
        members = tuple(m for g in groups for m in g.members)
        return [Aggregate("Tiny score", overall, members, len(cls.subtasks)), *groups]



@pytest.fixture
def tiny_family():
    from suite.registry import TASKS

    TASKS.names()  # load the built-in plugins first, so the fake one is added to a full registry
    TASKS.register("tinybench", kind="classification", summary="fake family for tests")(TinyBench)
    yield TinyBench
    TASKS._entries.pop("tinybench", None)


def _fake_store(root, family: str, subtasks, seeds=(0, 1)):
    """lora and full on each subtask, in the runner's row shapes, under another family's name."""
    from benchmarks.synthetic_store import cell_id_for, make_cell
    from suite.results.store import ResultStore

    store = ResultStore(root)
    for variant, skill in (("lora", 0.70), ("full", 0.80)):
        for i, sub in enumerate(subtasks):
            for seed in seeds:
                rows, preds = make_cell(variant, "sst2", seed, skill=skill + 0.03 * i, n_examples=60)
                cid = cell_id_for(family, variant, sub, seed)
                rows = [dict(r, task=family, subtask=sub, cell_id=cid) for r in rows]
                store.write_cell(rows)
                store.write_predictions(cid, preds)
    return store


def _expected(board, variant: str) -> dict[str, float]:
    row = next(r for r in board.rows if r.variant == variant)
    mean = {c.key[0]: row.entries[c.key].summary.mean for c in board.columns}
    out = {name: np.mean([mean[s] for s in members if s in mean])
           for name, members in TinyBench.GROUPS.items() if any(s in mean for s in members)}
    out["Tiny score"] = np.mean(list(out.values()))
    return out


def test_a_registered_family_s_aggregates_reach_compare_site_and_run_summary(tiny_family, tmp_path, capsys):
    from suite.app.cli import main as cli_main
    from suite.reports import leaderboard
    from suite.reports.run_summary import _print_aggregates
    from suite.reports.site import render_site

    store = _fake_store(tmp_path / "store", "tinybench", ("a2", "b2", "c1", "d1"))
    (board,) = leaderboard.build_boards(store.load(), "lora", store.load_predictions)
    assert [c.key[0] for c in board.columns] == ["d1", "c1", "b2", "a2"]  # the family's order
    assert [a.label for a in board.aggregates] == ["Tiny score", "left", "right"]  # headline first
    assert all(a.complete and a.scale == 100 for a in board.aggregates)  # means of accuracies
    for variant in ("lora", "full"):
        row = next(r for r in board.rows if r.variant == variant)
        for name, value in _expected(board, variant).items():
            assert row.aggregates[name] == pytest.approx(value)

    assert cli_main(["compare", str(store.root), "--baseline", "lora"]) == 0
    out = capsys.readouterr().out
    header = next(line for line in out.splitlines() if line.strip().startswith("method"))
    assert header.index("Tiny score") < header.index("left") < header.index("right") < header.index("d1")
    full_line = next(line for line in out.splitlines() if line.strip().startswith("full"))
    expected = _expected(board, "full")
    shown = [f"{expected[n] * 100:.2f}" for n in ("Tiny score", "left", "right")]
    assert full_line.split()[1:4] == shown

    site = render_site(store.root, tmp_path / "site", baseline="lora", workers=1)
    index = (site.out / "index.html").read_text()
    assert index.index("Tiny score") < index.index(">left<") < index.index(">right<")
    assert all(v in index for v in shown)

    _print_aggregates(store.load().query("status == 'ok'"))
    printed = capsys.readouterr().out
    assert f"Tiny score full: {shown[0]} over 4 task(s): d1, c1, b2, a2" in printed
    assert f"left full: {shown[1]} over 2 task(s): d1, c1" in printed


def test_a_partial_aggregate_is_labelled_wherever_it_is_shown(tiny_family, tmp_path, capsys):
    from suite.app.cli import main as cli_main
    from suite.reports import leaderboard
    from suite.reports.run_summary import _print_aggregates
    from suite.reports.site import render_site

    store = _fake_store(tmp_path / "store", "tinybench", ("d1", "c1", "b2"), seeds=(0,))
    (board,) = leaderboard.build_boards(store.load(), "lora")
    assert [a.label for a in board.aggregates] == ["Tiny score (3/4 tasks)", "left", "right (1/2 tasks)"]
    assert cli_main(["compare", str(store.root)]) == 0
    out = capsys.readouterr().out
    assert "Tiny score (3/4 tasks)" in out and "right (1/2 tasks)" in out
    render_site(store.root, tmp_path / "site", workers=1)
    index = (tmp_path / "site" / "index.html").read_text()
    assert "Tiny score (3/4 tasks)" in index and "right (1/2 tasks)" in index
    _print_aggregates(store.load().query("status == 'ok'"))
    assert "Tiny score (3/4 tasks) lora:" in capsys.readouterr().out


def test_a_family_not_installed_here_gets_no_aggregate_and_no_error(tmp_path, capsys):
    from suite.app.cli import main as cli_main
    from suite.reports import leaderboard

    store = _fake_store(tmp_path / "store", "ghostbench", ("x", "y"), seeds=(0,))
    (board,) = leaderboard.build_boards(store.load(), "lora")
    assert board.aggregates == [] and [c.key[0] for c in board.columns] == ["x", "y"]
    assert cli_main(["compare", str(store.root)]) == 0
    assert "ghostbench" in capsys.readouterr().out


def test_a_row_whose_scores_cover_fewer_tasks_gets_no_aggregate(tiny_family, tmp_path):
    """A diverged run (NaN on every seed of one task) would give a mean over an easier subset:
    that row shows no aggregate where the others cover more, instead of a number that looks
    comparable and is not."""
    from suite.reports import leaderboard

    store = _fake_store(tmp_path / "store", "tinybench", ("d1", "c1", "b2", "a2"))
    frame = store.load()
    diverged = (frame.variant == "lora") & (frame.subtask == "a2") & frame.is_primary.astype(bool)
    frame.loc[diverged, "value"] = math.nan
    (board,) = leaderboard.build_boards(frame, "lora")
    assert [a.label for a in board.aggregates] == ["Tiny score", "left", "right"]
    lora = next(r for r in board.rows if r.variant == "lora")
    full = next(r for r in board.rows if r.variant == "full")
    assert set(lora.aggregates) == {"left"} and set(full.aggregates) == {"Tiny score", "left", "right"}


def test_competition_ranks_match_scipy_min_ranks():
    """The rank column: scipy's rankdata(method="min") of the negated scores is the independent reference."""
    from scipy.stats import rankdata

    rng = np.random.default_rng(3)
    for _ in range(50):
        scores = rng.integers(0, 5, size=rng.integers(1, 9)).astype(float).tolist()
        for higher in (True, False):
            expected = rankdata([-s if higher else s for s in scores], method="min").tolist()
            assert stats.competition_ranks(scores, higher) == expected
    assert stats.competition_ranks([0.5, math.nan, 0.7]) == [2, None, 1]
