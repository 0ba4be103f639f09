"""The baseline's protocol (``--tune-baseline``): only the baseline is searched, every method runs at
its choice, marked as inherited; ``--tune-each-too`` adds each method's own search as a second view.

Every family alike: a tiny-BERT classification sweep (lora the baseline) and llama-tiny pretraining
on a generated corpus (bf16-train the baseline, the ``lowp`` preset). The ``lm`` family holds no
selection split of its own yet, so a test task here gives it one: every 10th training document
held out, the rest trained on, never the validation files the board reports.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import suite.results
from suite.app.cli import main
from suite.tasks.pretraining import LmTask
from tests.conftest import write_word_corpus

SMOKE = ["--tasks", "smoke", "--models", "tiny-bert", "--max-steps", "2", "--limit", "32", "--no-progress"]
LM = ["--models", "llama-tiny", "--max-steps", "2", "--batch-size", "2", "--max-length", "32",
      "--eval-tokens", "256", "--eval-batch-size", "8", "--no-progress"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return write_word_corpus(tmp_path_factory.mktemp("corpus"))


def cells_of(store: Path):
    return suite.results.load(store).drop_duplicates("cell_id")


def lr_of(row) -> float:
    return json.loads(row.recipe)["lr"]


def test_only_the_baseline_is_searched_and_every_method_inherits_its_choice(tmp_path, capsys):
    store = tmp_path / "s"
    args = ["run", "--methods", "full,lora,bitfit", "--tune", "lr=1e-4,3e-3", "--tune-baseline", "lora",
            "--seeds", "2", "--store", str(store), *SMOKE]
    assert main(args) == 0
    shown = capsys.readouterr()
    # progress lines and the end-of-run table name whose values a method inherited, as the reports do
    assert "full (at lora's tuned values) on" in shown.err and "full (tuned)" not in shown.err
    assert "full (at lora's tuned lr)" in shown.out and "full (tuned)" not in shown.out
    frame = cells_of(store)
    trials = frame[frame["stage"] == "trial"]
    assert set(trials["method"]) == {"lora"} and len(trials) == 2  # the baseline's grid alone
    assert set(frame["stage"]) == {"trial", "tuned"}  # no default-configuration cell
    tuned = frame[frame["stage"] == "tuned"]
    assert tuned.groupby("method")["seed"].apply(set).to_dict() == {m: {0, 1} for m in ("full", "lora", "bitfit")}
    chosen = json.loads(tuned[tuned["method"] == "lora"]["tuned"].iloc[0])
    assert set(chosen) == {"lr"} and chosen["lr"] in ("1e-4", "3e-3")
    for row in tuned.itertuples():
        assert lr_of(row) == float(chosen["lr"]) and row.search_id == trials["search_id"].iloc[0]
        expected = chosen if row.method == "lora" else {**chosen, "inherited_from": "lora"}
        assert json.loads(row.tuned) == expected
    capsys.readouterr()
    assert main(args) == 0  # resume: nothing new runs
    err = capsys.readouterr().err
    assert "[1/" not in err and "6 cells, 6 already done, 0 to run" in err
    assert len(cells_of(store)) == len(frame)


def test_each_method_also_gets_its_own_search_as_a_second_view(tmp_path):
    store = tmp_path / "s"
    grid = ["--tune", "lr=1e-4,3e-3"]
    assert main(["run", "--methods", "full,lora", *grid, "--tune-baseline", "lora", "--tune-each-too",
                 "--store", str(store), *SMOKE]) == 0
    frame = cells_of(store)
    trials = frame[frame["stage"] == "trial"]
    assert trials.groupby("method")["cell_id"].count().to_dict() == {"full": 2, "lora": 2}
    lora_search = trials[trials["method"] == "lora"]["search_id"].iloc[0]
    full_search = trials[trials["method"] == "full"]["search_id"].iloc[0]
    full = frame[(frame["stage"] == "tuned") & (frame["method"] == "full")]
    views = {row.search_id: json.loads(row.tuned) for row in full.itertuples()}
    assert set(views) == {lora_search, full_search}  # one cell at lora's choice, one at its own
    assert views[lora_search]["inherited_from"] == "lora" and "inherited_from" not in views[full_search]
    assert len(frame[(frame["stage"] == "tuned") & (frame["method"] == "lora")]) == 1  # the baseline's once
    # The own view is what --tune alone runs: a plain search afterwards adds only the default cells.
    assert main(["run", "--methods", "full,lora", *grid, "--store", str(store), *SMOKE]) == 0
    added = cells_of(store).loc[lambda f: ~f["cell_id"].isin(frame["cell_id"])]
    assert set(added["stage"]) == {""} and len(added) == 2


def test_llama_tiny_recipes_inherit_bf16s_learning_rate(tmp_path, corpus):
    store = tmp_path / "s"
    assert main(["run", "--methods", "bf16-train,fp8-train,quartet-train", "--tasks", "lm",
                 "--data-dir", str(corpus), "--tune", "lr=1e-3,3e-3", "--tune-baseline", "bf16-train",
                 "--store", str(store), *LM]) == 0
    frame = cells_of(store)
    trials = frame[frame["stage"] == "trial"]
    assert set(trials["method"]) == {"bf16-train"} and len(trials) == 2
    assert set(suite.results.load(store).query("stage == 'trial' and is_primary")["split"]) == {"val"}
    tuned = frame[frame["stage"] == "tuned"]
    assert set(tuned["method"]) == {"bf16-train", "fp8-train", "quartet-train"}
    lrs = {lr_of(row) for row in tuned.itertuples()}
    assert len(lrs) == 1 and lrs <= {1e-3, 3e-3}
    marks = {row.method: json.loads(row.tuned).get("inherited_from") for row in tuned.itertuples()}
    assert marks == {"bf16-train": None, "fp8-train": "bf16-train", "quartet-train": "bf16-train"}


def test_the_lowp_preset_tunes_bf16_and_runs_the_recipes_at_its_lr(tmp_path, corpus, capsys):
    from suite.app.commands.run import PRESETS
    from suite.app.tuning import parse_tune

    preset = PRESETS["lowp"]
    search = parse_tune(preset["tune"], None, "random", 0, preset["tune_baseline"])
    lrs = [float(v) for v in dict(search.grid)["lr"]]
    assert min(lrs) < 1e-3 < max(lrs) and 1e-3 in lrs  # llama-tiny's optimum inside the grid
    assert search.baseline == "bf16-train" and preset["methods"].startswith("bf16-train,")
    assert preset["seeds"] == "3" and preset["task_options"]["lm"]["tokens_per_param"] > 0
    # Smoke-sized: two recipes, one seed, two grid values, two steps; its lm budget follows --tasks.
    store = tmp_path / "s"
    assert main(["run", "--preset", "lowp", "--methods", "bf16-train,mxfp4-train", "--tasks", "lm",
                 "--seeds", "1", "--tune", "lr=1e-3,3e-3", "--data-dir", str(corpus), "--store", str(store),
                 *LM]) == 0
    assert "preset lowp:" in capsys.readouterr().err
    frame = cells_of(store)
    assert set(frame[frame["stage"] == "trial"]["method"]) == {"bf16-train"}
    mxfp4 = frame[frame["method"] == "mxfp4-train"]
    assert list(mxfp4["stage"]) == ["tuned"] and json.loads(mxfp4["tuned"].iloc[0])["inherited_from"] == "bf16-train"
    assert json.loads(mxfp4["recipe"].iloc[0])["tokens_per_param"] == preset["task_options"]["lm"]["tokens_per_param"]


@pytest.mark.parametrize("argv, message", [
    (["--tune", "lr=1e-3,fast", "--tune-baseline", "lora"], "--tune sets lr=fast for 'lora', which is refused"),
    (["--tune", "lr=1e-3", "--tune-baseline", "lorra"], "unknown method 'lorra'. Did you mean: lora"),
    (["--tune", "lr=1e-3", "--tune-baseline", "pissa"], "--tune-baseline pissa is not one of this sweep's methods"),
    (["--tune", "lr=1e-3", "--tune-baseline", ""], "names no method"),
    (["--tune-baseline", "lora"], "no search was asked for"),
    (["--tune", "lr=1e-3", "--tune-each-too"], "give --tune-baseline too"),
    (["--tune", "r=2,4", "--tune-baseline", "lora"], "'full' cannot inherit 'r' from 'lora'"),
    (["--tune-trials", "2", "--tune-baseline", "lora"], "drawn from lora's declared space"),
    (["--tune", "lr=1e-3,3e-3", "--tune-baseline", "lora", "--seeds", "600"], "this sweep has 1,202 cells (2 trials, "
                                                                              "1,200 tuned)"),
])
def test_bad_protocols_are_refused_before_any_cell_runs(tmp_path, capsys, argv, message):
    store = tmp_path / "s"
    assert main(["run", "--methods", "full,lora", *argv, "--store", str(store), *SMOKE]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (store / "cells").exists()


def test_lm_tunes_on_every_tenth_training_document_never_on_the_validation_text(corpus):
    """The selection view of ``lm``: trials train on nine of every ten training documents and are
    scored on the tenth; the two parts cover the training documents exactly and the validation
    files are never read."""
    task = LmTask(data_dir=str(corpus))
    training = list(task.texts("train"))
    view = task.for_selection()
    kept, held = list(view.texts("train")), list(view.texts("val"))
    assert held == training[9::10] and len(kept) + len(held) == len(training)
    assert sorted(kept + held) == sorted(training)  # the validation files' documents appear in neither part
    assert view.eval_splits == ("val",) and task.eval_splits == ("valid",)


def test_the_scaling_presets_run_a_grid_at_the_protocols_lr_that_suite_scaling_reads(tmp_path, corpus, capsys):
    """The grid presets: sizes x budgets x recipes, the baseline searched per size and budget. Run
    smoke-sized (two sizes, two tiny budgets, one seed); suite scaling then refuses the grid, naming
    what it lacks, rather than fitting a law it cannot identify."""
    from suite.app.commands.run import PRESETS
    from suite.models.catalog import LLAMA_SIZES

    for name in ("scaling-cpu", "scaling"):
        preset = PRESETS[name]
        assert preset["tune_baseline"] == "bf16-train" and preset["methods"].startswith("bf16-train,")
        assert len(preset["models"].split(",")) >= 3 and len(preset["task_options"]["lm"]["tokens_per_param"]) >= 3
        assert all(m in LLAMA_SIZES for m in preset["models"].split(","))
    store = tmp_path / "s"
    argv = ["run", "--preset", "scaling-cpu", "--methods", "bf16-train,mxfp4-train", "--models",
            "llama-250k,llama-500k", "--seeds", "1", "--tune", "lr=1e-3,3e-3", "--tokens-per-param", "0.002,0.004",
            "--data-dir", str(corpus), "--store", str(store), "--batch-size", "2", "--max-length", "32",
            "--eval-tokens", "256", "--eval-batch-size", "8", "--no-progress"]
    assert main(argv) == 0
    frame = cells_of(store)
    trials = frame[frame["stage"] == "trial"]
    assert len(set(trials["search_id"])) == 4 and set(trials["method"]) == {"bf16-train"}  # per size x budget
    tuned = frame[(frame["stage"] == "tuned") & (frame["method"] == "mxfp4-train")]
    budgets = {json.loads(r)["tokens_per_param"] for r in tuned["recipe"]}
    assert budgets == {0.002, 0.004} and len(tuned) == 4
    capsys.readouterr()
    assert main(["scaling", str(store), "--bootstrap", "0"]) == 2
    assert "2 model size(s)" in capsys.readouterr().err
