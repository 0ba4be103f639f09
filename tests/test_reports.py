"""The leaderboard model, the static site and `suite compare`, on generated stores."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from benchmarks import synthetic_store as synthetic
from suite.app.cli import main as cli_main
from suite.errors import UserError
from suite.reports import kernels, leaderboard, loading
from suite.reports.site import render_site
from suite.results.store import ResultStore

EVIL = "<script>window.__pwned=1</script>"
EVIL_ERROR = "RuntimeError: <img src=x onerror=alert(1)> CUDA out of memory"


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("store")
    store = synthetic.write_store(root, subtasks=("sst2", "mrpc", "stsb"), skill={"full": 0.95},
                                  n_examples=300)
    rows, preds = synthetic.make_cell(EVIL, "sst2", 0, skill=0.8)
    store.write_cell(rows)
    store.write_predictions(rows[0]["cell_id"], preds)
    rows, _ = synthetic.make_cell("lora", "sst2", 9, failed=EVIL_ERROR)
    store.write_cell(rows)
    store.write_table("kernels", synthetic.kernel_rows())
    return root


@pytest.fixture(scope="module")
def site(store_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("site")
    return render_site(store_dir, out, baseline="lora")


def _board(result):
    (board,) = result.boards
    return board


def test_board_means_are_the_seed_means_of_the_store(store_dir, site):
    frame = ResultStore(store_dir).load()
    board = _board(site)
    assert [c.label for c in board.columns] == ["sst2", "mrpc", "stsb"]
    for row in board.rows:
        for col in board.columns:
            entry = row.entries.get(col.key)
            sel = frame[(frame.variant == row.variant) & (frame.subtask == col.key[0])
                        & (frame.metric == col.metric) & (frame.status == "ok")]
            if entry is None:
                assert sel.empty
                continue
            assert entry.summary.mean == pytest.approx(sel.value.mean())
            assert entry.summary.n == len(sel)
    full = next(r for r in board.rows if r.variant == "full")
    assert all(full.entries[c.key].best for c in board.columns)


def test_significance_marks_a_real_gap_and_not_noise(store_dir):
    """The marks come from a test over seeds (the unit of replication): two methods of the same
    skill get none; a large gap over six paired seeds gets one. The per-example test stays
    beside it, over the 300 shared examples."""
    root = store_dir.parent / "same-skill"
    synthetic.write_store(root, methods=("lora", "twin"), subtasks=("sst2",), skill={"twin": 0.86},
                          n_examples=300)
    store = ResultStore(root)
    (board,) = leaderboard.build_boards(store.load(), "lora", store.load_predictions)
    twin = next(r for r in board.rows if r.variant == "twin")
    entry = next(iter(twin.entries.values()))
    assert entry.test.test == "seed-paired-t" and entry.test.n == 3
    assert entry.example_test.test == "paired-permutation" and entry.example_test.n == 300
    assert "ignores seed variance" in entry.example_test.label
    assert not entry.significant

    root = store_dir.parent / "six-seeds"
    synthetic.write_store(root, methods=("lora", "full"), subtasks=("sst2",), seeds=range(6),
                          skill={"full": 0.97}, n_examples=300)
    store = ResultStore(root)
    (board,) = leaderboard.build_boards(store.load(), "lora", store.load_predictions)
    full = next(r for r in board.rows if r.variant == "full").entries[("sst2", "dev", "accuracy")]
    assert full.test.test == "seed-paired-t" and full.test.n == 6
    assert full.significant and full.better and full.p_adjusted < 0.05
    assert 0 < full.mde < full.summary.mean - board.rows[-1].entries[("sst2", "dev", "accuracy")].summary.mean


def test_too_few_seeds_give_no_verdict_with_the_reason(tmp_path):
    store = synthetic.write_store(tmp_path / "two", methods=("lora", "full"), subtasks=("sst2",), seeds=(0, 1),
                                  skill={"full": 0.99}, n_examples=300)
    (board,) = leaderboard.build_boards(store.load(), "lora", store.load_predictions)
    full = next(r for r in board.rows if r.variant == "full").entries[("sst2", "dev", "accuracy")]
    assert full.test.reason == "n<3 seeds" and np.isnan(full.test.p_value) and not full.significant
    # The per-example test would call this gap significant: it is shown, labelled, never marked.
    assert full.example_test.p_value < 1e-6
    render_site(store.root, tmp_path / "site", workers=1)
    page = next((tmp_path / "site").glob("task-*.html")).read_text()
    assert "n.s. <small>(n&lt;3 seeds)</small>" in page and "per example, ignores seed variance" in page


def test_intervals_are_student_t_over_seeds(site):
    """With three seeds the interval is Student's t (wider than the seeds' range), not a bootstrap."""
    from scipy import stats as scipy_stats

    board = _board(site)
    full = next(r for r in board.rows if r.variant == "full")
    e = full.entries[("sst2", "dev", "accuracy")]
    x = np.asarray(e.values)
    half = scipy_stats.t.ppf(0.975, 2) * x.std(ddof=1) / np.sqrt(3)
    assert e.summary.interval == "t" and e.summary.half_width == pytest.approx(half)
    assert e.summary.ci_low < x.min() and e.summary.ci_high > x.max()
    # The aggregate's interval: a t-interval of the per-seed GLUE score.
    per_seed = [np.mean([full.entries[c.key].values[i] for c in board.columns]) for i in range(3)]
    low, high, n = full.intervals["GLUE score"]
    assert n == 3 and (low + high) / 2 == pytest.approx(np.mean(per_seed))
    assert (high - low) / 2 == pytest.approx(scipy_stats.t.ppf(0.975, 2) * np.std(per_seed, ddof=1) / np.sqrt(3))


def test_the_per_example_test_runs_only_where_the_score_is_a_mean_over_examples(site):
    """The per-example permutation test compares stored per-example correctness: it tests SST-2's
    accuracy (the mean of that column) and nothing on MRPC (F1 and accuracy averaged) or STS-B
    (correlations), whose scores are computed over the whole set."""
    from suite.metrics import spec_of

    full = next(r for r in _board(site).rows if r.variant == "full")
    tested = {key[0] for key, e in full.entries.items() if e.example_test is not None}
    assert tested == {"sst2"}
    assert spec_of("accuracy").per_example == "correct"
    assert spec_of("f1_accuracy_mean").per_example == spec_of("pearson_spearman_mean").per_example == ""
    assert spec_of("mcc").per_example == "" and spec_of("exact_match_strict").per_example == "correct_strict"


def test_missing_predictions_fall_back_to_the_seed_test(store_dir):
    (board,) = leaderboard.build_boards(ResultStore(store_dir).load(), "lora", predictions=None)
    full = next(r for r in board.rows if r.variant == "full")
    assert all(e.test.test == "seed-paired-t" and e.example_test is None for e in full.entries.values())


def test_family_score_and_rank_only_for_rows_with_every_task(site):
    """The GLUE board's score is the glue family's own aggregate: three of its eight tasks here,
    and labelled so."""
    board = _board(site)
    (score,) = board.aggregates
    assert score.label == "GLUE score (3/8 tasks)" and score.members == ("sst2", "mrpc", "stsb")
    assert score.scale == 100
    evil = next(r for r in board.rows if r.variant == EVIL)
    assert evil.aggregates == {} and np.isnan(evil.avg_rank)
    full = next(r for r in board.rows if r.variant == "full")
    means = [full.entries[c.key].summary.mean for c in board.columns]
    assert full.aggregates["GLUE score"] == pytest.approx(np.mean(means))  # primaries are the task scores
    assert full.avg_rank == 1.0
    index = (site.out / "index.html").read_text()
    assert "GLUE score (3/8 tasks)" in index and f"{full.aggregates['GLUE score'] * 100:.2f}" in index


def test_site_files_and_contents(site):
    out = site.out
    index = (out / "index.html").read_text()
    for name in ("index.html", "tasks.html", "kernels.html", "static/style.css", "static/sort.js"):
        assert (out / name).is_file(), name
    assert len(list((out / "cells").glob("*.html"))) == site.n_cells + site.n_failed
    assert re.search(r'<svg class="pareto-svg"[^>]*>', index)  # the Pareto plot is inline, one per board
    for svg in (out / "figures").glob("*.svg"):
        assert svg.read_text().lstrip().startswith("<?xml")
    # Nothing from a CDN: the only external addresses are links to the methods' papers.
    loaded = re.sub(r'<a [^>]*href="https://(arxiv\.org|doi\.org|github\.com)/[^"]*"', "", index)
    assert "https://" not in loaded and "http://" not in loaded
    board = _board(site)
    for row in board.rows:
        for col in board.columns:
            e = row.entries.get(col.key)
            if e:
                assert f"{e.summary.mean * 100:.2f}" in index
    assert "▲" in index and "★" in index


def test_user_text_is_escaped_everywhere(site):
    for page in site.out.rglob("*.html"):
        text = page.read_text()
        assert "<script>window" not in text, page
        assert "<img src=x" not in text, page
    index = (site.out / "index.html").read_text()
    assert "&lt;script&gt;window.__pwned=1&lt;/script&gt;" in index
    task_pages = [p.read_text() for p in site.out.glob("task-*sst2*.html")]
    assert any("&lt;img src=x onerror=alert(1)&gt;" in t for t in task_pages)


def test_cell_page_has_config_provenance_and_metrics(store_dir, site):
    frame = ResultStore(store_dir).load()
    cid = frame[(frame.variant == "pissa") & (frame.subtask == "mrpc")].cell_id.iloc[0]
    page = (site.out / "cells" / f"{cid}.html").read_text()
    for text in ("Resolved configuration", "git_commit", "0123abc", "f1_accuracy_mean",
                 "trainable_params", "&#34;lr&#34;", "synthetic data"):
        assert text in page, text


def test_kernels_page_marks_the_regression(site):
    page = (site.out / "kernels.html").read_text()
    assert "quantize_mxfp4" in page and "torchao" in page and "TFLOP/s" in page
    assert page.count('class="regression"') == 2  # triton got slower at c3, on both kernels


def _samples(rng, median: float, n: int = 30) -> list[float]:
    return (median * rng.normal(1.0, 0.02, n)).tolist()


@pytest.mark.parametrize("slowdown, expect", [(1.3, "slower"), (1.0, "ok")])
def test_site_and_gate_agree_on_a_regression(slowdown, expect):
    """The kernels page asks the gate itself: a planted slowdown is a regression in both, an
    unchanged re-run (fresh samples of the same distribution) in neither."""
    from suite.bench.gate import compare_rows

    rng = np.random.default_rng(7)
    key = {"kernel": "quantize_mxfp4", "impl": "triton", "shape": "4096x4096", "dtype": "bfloat16"}
    base = dict(key, samples_ms=_samples(rng, 0.5), normalized_samples=_samples(rng, 5.0))
    new = dict(key, samples_ms=_samples(rng, 0.5 * slowdown), normalized_samples=_samples(rng, 5.0 * slowdown))
    (gate,) = compare_rows([base], [new])  # what `suite bench kernels --compare` runs, default settings
    assert gate.verdict == expect
    assert kernels.verdict(base, new) == gate.verdict
    assert kernels.is_regression(base, new) == (gate.verdict == "slower")

    # The same two runs as store rows over two commits: the page marks exactly the gate's verdict.
    frame = synthetic.kernel_rows(commits=("c1", "c2"), slow_at=None)
    pick = (frame.kernel == key["kernel"]) & (frame.impl == key["impl"])
    for commit, run in (("c1", base), ("c2", new)):
        i = frame.index[pick & (frame.git_commit == commit)][0]
        frame.at[i, "samples_ms"] = run["samples_ms"]
        frame.at[i, "normalized_samples"] = run["normalized_samples"]
        frame.at[i, "time_ms"] = float(np.median(run["samples_ms"]))
    (group,) = [g for g in kernels.build_kernel_groups(frame) if g.kernel == key["kernel"]]
    marked = [(r["impl"], r["to_commit"]) for r in group.regressions]
    assert marked == ([("triton", "c2")] if expect == "slower" else [])


def test_machine_drift_is_not_a_regression_on_the_page_either():
    """Slower in time but equally slower relative to the calibration op: the gate says drift."""
    rng = np.random.default_rng(3)
    base = {"samples_ms": _samples(rng, 1.0), "normalized_samples": _samples(rng, 10.0)}
    new = {"samples_ms": _samples(rng, 1.4), "normalized_samples": _samples(rng, 10.0)}
    assert kernels.verdict(base, new) == "drift"
    assert not kernels.is_regression(base, new)


def test_rows_without_samples_are_not_judged(tmp_path):
    frame = synthetic.kernel_rows().drop(columns=["samples_ms", "normalized_samples"])
    assert kernels.verdict({"time_ms": 1.0}, {"time_ms": 9.0}) is None
    assert all(not g.regressions for g in kernels.build_kernel_groups(frame))
    synthetic.write_store(tmp_path / "store", methods=("lora",), subtasks=("sst2",), seeds=(0,), n_examples=20)
    ResultStore(tmp_path / "store").write_table("kernels", frame)
    render_site(tmp_path / "store", tmp_path / "site", workers=1)
    assert "no per-sample timings" in (tmp_path / "site" / "kernels.html").read_text()


def test_parallel_and_serial_renders_write_the_same_site(store_dir, tmp_path):
    """Worker processes write cell pages and figures; the site must not depend on that."""
    a = render_site(store_dir, tmp_path / "serial", baseline="lora", workers=1)
    b = render_site(store_dir, tmp_path / "parallel", baseline="lora", workers=2)
    assert (a.n_pages, a.n_figures) == (b.n_pages, b.n_figures)
    stamp = re.compile(r"at \d{4}-\d\d-\d\d \d\d:\d\d UTC")
    files_a = sorted(p.relative_to(a.out) for p in a.out.rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(b.out) for p in b.out.rglob("*") if p.is_file())
    assert files_a == files_b
    html_svg = [p for p in files_a if p.suffix in (".html", ".svg")]
    assert len(html_svg) == a.n_pages + a.n_figures
    for rel in files_a:
        ta, tb = (a.out / rel).read_bytes(), (b.out / rel).read_bytes()
        if rel.suffix == ".html":
            ta, tb = stamp.sub("", ta.decode()), stamp.sub("", tb.decode())
        assert ta == tb, rel


def _numbers(text: str) -> list[str]:
    return re.findall(r"\d+\.\d\d", text)


def test_compare_agrees_with_the_overview(store_dir, site, capsys):
    assert cli_main(["compare", str(store_dir), "--baseline", "lora"]) == 0
    out = capsys.readouterr().out
    board = _board(site)
    lines: dict[str, str] = {}
    for line in out.splitlines():  # a method's score rows (a wide table may be split into several)
        if line.strip() and "p=" not in line:  # not the rows of tests against the baseline
            lines[line.split()[0]] = lines.get(line.split()[0], "") + " " + line
    for row in board.rows:
        if row.variant == EVIL:
            continue
        cells = [row.entries[c.key] for c in board.columns]
        expected = [f"{e.summary.mean * 100:.2f}" for e in cells]
        got = _numbers(lines[row.variant])
        for value in expected:
            assert value in got, (row.variant, value, lines[row.variant])
        marks = lines[row.variant].count("▲") + lines[row.variant].count("▼")
        assert marks == sum(e.significant for e in cells)
    assert "Δ vs lora" in out


def test_compare_filters_tasks_and_metric(store_dir, capsys):
    assert cli_main(["compare", str(store_dir), "--tasks", "glue:mrpc", "--metric", "f1"]) == 0
    out = capsys.readouterr().out
    assert "mrpc (f1)" in out and "sst2" not in out.split("Δ")[0]


def test_report_cli(store_dir, tmp_path, capsys):
    assert cli_main(["report", str(store_dir), "-o", str(tmp_path / "s")]) == 0
    assert "wrote" in capsys.readouterr().out
    assert (tmp_path / "s" / "index.html").is_file()


@pytest.mark.parametrize("command", ["report", "compare"])
def test_empty_missing_and_failed_stores_end_in_one_message(tmp_path, capsys, command):
    extra = ["-o", str(tmp_path / "site")] if command == "report" else []
    assert cli_main([command, str(tmp_path / "nowhere"), *extra]) == 2
    assert "no result store" in capsys.readouterr().err

    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli_main([command, str(empty), *extra]) == 2
    assert "holds no results" in capsys.readouterr().err

    failed = ResultStore(tmp_path / "failed")
    for seed in range(2):
        rows, _ = synthetic.make_cell("lora", "sst2", seed, failed="ValueError: diverged")
        failed.write_cell(rows)
    assert cli_main([command, str(failed.root), *extra]) == 2
    err = capsys.readouterr().err
    assert "all 2 cells" in err and "diverged" in err and "Traceback" not in err


@pytest.mark.parametrize("command", ["report", "compare"])
def test_corrupted_file_is_named_and_skipped(tmp_path, capsys, command):
    store = synthetic.write_store(tmp_path / "store", methods=("lora", "full"), subtasks=("sst2",),
                                  seeds=(0, 1), n_examples=50)
    bad = store.root / "cells" / "broken.parquet"
    bad.write_bytes(b"PAR1 this is not parquet")
    bad_pred = next((store.root / "predictions").glob("*.parquet"))
    bad_pred.write_bytes(b"garbage")
    extra = ["-o", str(tmp_path / "site")] if command == "report" else []
    assert cli_main([command, str(store.root), *extra]) == 0
    captured = capsys.readouterr()
    assert str(bad) in captured.err and str(bad_pred) in captured.err
    assert "Traceback" not in captured.err
    if command == "report":  # the site names them too, relative to the store
        index = (tmp_path / "site" / "index.html").read_text()
        assert "2 unreadable store files skipped" in index
        assert "cells/broken.parquet" in index and f"predictions/{bad_pred.name}" in index


def test_a_clean_store_has_no_skipped_note(site):
    assert "unreadable store file" not in (site.out / "index.html").read_text()


def test_unknown_metric_and_task_are_user_errors(store_dir):
    frame = ResultStore(store_dir).load()
    with pytest.raises(UserError, match="no metric 'bleu'"):
        leaderboard.build_boards(frame, "lora", metric="bleu")
    with pytest.raises(UserError, match="no results for tasks"):
        loading.select_tasks(frame, ["gsm8k"])


def test_a_declared_split_is_where_the_runner_stores_a_score():
    """A score declared on a split is stored there whatever the task reported; one declared without
    a split goes where the task evaluated it (MNLI's dev_matched, SST-2's dev)."""
    from suite.metrics import split_of

    assert split_of("valid_exact_match_strict", "test") == "valid"
    assert split_of("forgetting_ce_increase", "dev") == "general"
    assert split_of("peak_memory_mb", "dev") == "cost"
    assert split_of("accuracy", "dev_matched") == "dev_matched" and split_of("no-such-metric", "x") == "x"
