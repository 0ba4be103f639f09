"""The core's seams, each exercised by a plugin defined here: executors, optimizers, precision
policies, streamed language-model data, recipe flags declared once, plugin discovery, and
cells that return their record without writing it."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from typing import ClassVar

import pytest
import torch

import suite.results
from suite.app.cli import main
from suite.app.executor import Executor
from suite.app.runner import RunSettings, run_cell
from suite.app.sweep import build_cells, parse_method_spec, parse_task_list
from suite.method import Method
from suite.precision import BF16_AUTOCAST
from suite.recipe import RECIPE_KEYS, Recipe
from suite.registry import (
    EXECUTORS,
    METHODS,
    TASKS,
    discover_plugin_modules,
    register_executor,
    register_method,
    register_task,
)
from suite.results.store import ResultStore
from suite.tasks.families.lm_loss import LanguageModelingTask

FAST = ["--max-steps", "3", "--limit", "32", "--batch-size", "8", "--no-progress"]


# -- plugins of this test module ----------------------------------------------------------------------
if "reversed-local" not in EXECUTORS:
    @register_executor("reversed-local", kind="executor", summary="local, last cell first (tests)", source="tests")
    class ReversedLocal(Executor):
        seen: ClassVar[list[str]] = []

        def run(self, cells, settings):
            for cell in reversed(list(cells)):
                ReversedLocal.seen.append(cell.cell_id)
                yield run_cell(cell, settings)


SEEN: dict[str, object] = {}

if "test-sgd-head" not in METHODS:
    @register_method("test-sgd-head", kind="peft", summary="head only, with its own SGD and bf16 (tests)",
                     source="tests")
    class SgdHead(Method):
        default_lr = 1e-2

        def apply(self, model, ctx):
            for p in model.parameters():
                p.requires_grad_(False)
            for p in ctx.new_parameters():
                p.requires_grad_(True)
            return model

        def precision_policy(self, policy):
            return BF16_AUTOCAST

        def make_optimizer(self, model, groups, recipe):
            return torch.optim.SGD(groups, lr=recipe.lr)

        def on_train_begin(self, model, state):
            SEEN["optimizer"] = type(state.optimizer).__name__
            SEEN["precision"] = state.precision.name

        def regularizer(self, model):  # called inside the loss's autocast region
            SEEN["autocast"] = torch.is_autocast_enabled("cpu")
            return None


WORDS = ("the", "cat", "sat", "on", "a", "mat", "dog", "ran")


class TinyCorpus(LanguageModelingTask):
    """Generated sentences, streamed and packed into blocks."""

    family = "test-lm"
    synthetic = True
    default_model = "tiny-llama"
    texts_read: ClassVar[int] = 0

    def data_source(self) -> str:
        return "synthetic"

    def texts(self, split: str) -> Iterator[str]:
        import random

        rng = random.Random(split)
        for _ in range(200 if split == "train" else 40):
            TinyCorpus.texts_read += 1
            yield " ".join(rng.choices(WORDS, k=rng.randint(4, 9)))

    def default_recipe(self, model_family: str) -> dict:
        return {"lr": 3e-3, "max_steps": 20, "batch_size": 8, "max_length": 16}


if "test-lm" not in TASKS:
    register_task("test-lm", kind="language-modeling", summary=TinyCorpus.__doc__, source="tests")(TinyCorpus)


# -- executors and the driver ----------------------------------------------------------------------------
def test_a_registered_executor_runs_the_sweep_and_the_driver_writes_the_same_records(tmp_path):
    args = ["--methods", "lora,full", "--tasks", "smoke", "--seeds", "2", *FAST]
    assert main(["run", *args, "--store", str(tmp_path / "local")]) == 0
    ReversedLocal.seen.clear()
    assert main(["run", *args, "--executor", "reversed-local", "--store", str(tmp_path / "other")]) == 0
    assert len(ReversedLocal.seen) == 4
    local, other = suite.results.load(tmp_path / "local"), suite.results.load(tmp_path / "other")
    keep = ~local["metric"].str.contains("time|per_s|memory", na=False)
    a = local[keep].set_index(["cell_id", "metric"])["value"].sort_index()
    b = other[~other["metric"].str.contains("time|per_s|memory", na=False)].set_index(
        ["cell_id", "metric"])["value"].sort_index()
    assert a.index.equals(b.index) and (a == b).all()  # same cells, same metrics, either executor


def test_an_unknown_executor_is_refused_before_any_cell(tmp_path, capsys):
    assert main(["run", "--methods", "lora", "--tasks", "smoke", "--executor", "reversed-locl",
                 "--store", str(tmp_path / "s"), *FAST]) == 2
    assert "reversed-local" in capsys.readouterr().err  # suggested
    assert not (tmp_path / "s").exists()


def test_a_cell_returns_its_record_and_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (cell,) = build_cells([parse_method_spec("lora")], parse_task_list("smoke"), None, [0],
                          [{"max_steps": 2, "limit": 16, "batch_size": 8}], None)
    result = run_cell(cell, RunSettings(device="cpu", progress=False))
    assert result.status == "ok" and result.cell_id == cell.cell_id
    assert {r["metric"] for r in result.rows} >= {"accuracy", "train_loss", "trainable_params"}
    assert result.records is not None and len(result.records) > 0
    assert list(tmp_path.iterdir()) == []  # no store, no file


# -- optimizer and precision seams ---------------------------------------------------------------------
def test_a_method_supplies_its_optimizer_and_precision_and_hooks_see_them(tmp_path):
    SEEN.clear()
    assert main(["run", "--methods", "test-sgd-head", "--tasks", "smoke", "--store", str(tmp_path), *FAST]) == 0
    assert SEEN == {"optimizer": "SGD", "precision": "bf16-autocast", "autocast": True}


@pytest.mark.parametrize("name", ["sgd", "adamw-fp8"])
def test_the_recipe_chooses_an_optimizer_by_name(tmp_path, name):
    assert main(["run", "--methods", "lora", "--tasks", "smoke", "--optimizer", name,
                 "--store", str(tmp_path), *FAST]) == 0
    frame = suite.results.load(tmp_path)
    assert frame["recipe"].str.contains(f'"optimizer": "{name}"').all()


def test_an_unknown_optimizer_is_refused_with_suggestions(tmp_path, capsys):
    assert main(["run", "--methods", "lora", "--tasks", "smoke", "--optimizer", "adamw8bit",
                 "--store", str(tmp_path / "s"), *FAST]) == 2
    err = capsys.readouterr().err
    assert "unknown optimizer 'adamw8bit'" in err and "adamw-8bit" in err
    assert not (tmp_path / "s").exists()


def test_an_option_added_to_the_recipe_leaves_old_cell_ids_alone():
    def cell_id(**recipe):
        (cell,) = build_cells([parse_method_spec("lora")], parse_task_list("smoke"), None, [0], [recipe], None)
        return cell.cell_id

    default = cell_id()
    assert cell_id(optimizer="adamw") == default  # at its default: the id of a cell stored before it existed
    assert "optimizer" not in Recipe().identity() and "optimizer" in Recipe().to_dict()
    assert cell_id(optimizer="sgd") != default


# -- streamed language-model data --------------------------------------------------------------------------
def test_a_language_model_trains_from_a_stream_and_reports_validation_loss(tmp_path):
    TinyCorpus.texts_read = 0
    assert main(["run", "--methods", "full", "--tasks", "test-lm", "--models", "tiny-llama",
                 "--store", str(tmp_path), "--no-progress"]) == 0
    frame = suite.results.load(tmp_path)
    metrics = frame.set_index("metric")
    assert metrics.loc["val_loss", "is_primary"] and not metrics.loc["val_loss", "higher_is_better"]
    assert 0 < metrics.loc["val_loss", "value"] < metrics.loc["train_loss", "value"] + 3
    assert metrics.loc["perplexity", "value"] > 1
    assert metrics.loc["train_tokens_per_s", "value"] > 0
    assert TinyCorpus.texts_read > 0


def test_a_stream_needs_a_step_budget():
    from suite.app.runner import prepare
    from suite.errors import CellFailure
    from suite.train import Trainer

    task = TASKS.get("test-lm").target()
    recipe = Recipe(max_length=16, batch_size=4)
    prepared = prepare(task, "tiny-llama", recipe, "cpu", 0)
    with pytest.raises(CellFailure, match="set max_steps"):
        Trainer(prepared.bundle.model, prepared.train_data, lambda it: task.collate(it, prepared.bundle),
                recipe, [], "cpu", 0)


# -- the recipe, declared once ---------------------------------------------------------------------------
def test_every_recipe_field_is_a_flag_and_a_sweep_file_key(tmp_path):
    from suite.app.cli import build_parser

    parser = build_parser()
    actions = {a.dest: a for a in parser._subparsers._group_actions[0].choices["run"]._actions}
    assert {f"recipe_{key}" for key in RECIPE_KEYS} <= set(actions)
    assert actions["recipe_max_steps"].option_strings == ["--max-steps"]
    run = actions["recipe_schedule"]
    assert run.choices == ("linear", "cosine", "constant")
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text("methods: [lora]\ntasks: [smoke]\nrecipe: {max_steps: 2, eval_batch_size: 16, limit: 16}\n")
    assert main(["run", "-c", str(sweep), "--store", str(tmp_path / "s"), "--no-progress",
                 "--max-grad-norm", "0.5"]) == 0
    recipe = suite.results.load(tmp_path / "s")["recipe"].iloc[0]
    assert '"eval_batch_size": 16' in recipe and '"max_grad_norm": 0.5' in recipe


def test_a_bad_recipe_flag_value_names_the_key(tmp_path, capsys):
    assert main(["run", "--methods", "lora", "--tasks", "smoke", "--max-grad-norm", "-1",
                 "--store", str(tmp_path)]) == 2
    assert "max_grad_norm" in capsys.readouterr().err


# -- plugin discovery ---------------------------------------------------------------------------------------
def test_discovery_imports_only_modules_that_register(tmp_path, monkeypatch):
    package = tmp_path / "demo_plugins"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("")
    (package / "one.py").write_text("from suite.registry import register_method\n")
    (package / "sub" / "two.py").write_text("from suite.registry import register_task\n")
    (package / "helper.py").write_text("import a_module_that_does_not_exist\n")
    (package / "_private.py").write_text("register_method = None\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert discover_plugin_modules("demo_plugins") == ["demo_plugins.one", "demo_plugins.sub.two"]


def test_list_and_help_import_no_torch():
    code = ("import sys; from suite.app.cli import main; main(['list']); main(['list', 'executors']); "
            "print('torch' in sys.modules, 'transformers' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "False False"
    assert "local" in out.stdout


# -- divergence ---------------------------------------------------------------------------------------------
def test_an_exploding_run_is_recorded_as_diverged_with_its_step(tmp_path, capsys):
    assert main(["run", "--methods", "full", "--tasks", "smoke", "--lr", "30", "--max-steps", "60",
                 "--batch-size", "32",
                 "--warmup-ratio", "0", "--schedule", "constant", "--store", str(tmp_path), "--no-progress"]) == 1
    frame = suite.results.load(tmp_path)
    assert (frame["status"] == "failed").all()
    error = frame["error"].iloc[0]
    assert "training diverged" in error and "at step" in error


def test_the_divergence_guard_on_hand_made_losses():
    from suite.errors import CellFailure
    from suite.train import DivergenceGuard

    steady = DivergenceGuard(10.0, 100)
    for step, loss in enumerate([0.7] * 10 + [0.5] * 30 + [5.0] * 5, 1):  # a spike, not a trend
        steady.check_loss(loss, step)
    exploding = DivergenceGuard(10.0, 100)
    with pytest.raises(CellFailure, match="at step 11"):  # mean of steps 2-11 = 10.63 > 10 x 0.7
        for step, loss in enumerate([0.7] * 10 + [100.0] * 20, 1):
            exploding.check_loss(loss, step)
    with pytest.raises(CellFailure, match="loss is nan at step 3"):
        DivergenceGuard(0.0, 10).check_loss(float("nan"), 3)
    off = DivergenceGuard(0.0, 100)
    for step, loss in enumerate([0.7] * 10 + [1e6] * 10, 1):
        off.check_loss(loss, step)


@pytest.mark.parametrize("value", ["inf", "nan"])
def test_non_finite_recipe_values_are_refused(tmp_path, capsys, value):
    assert main(["run", "--methods", "lora", "--tasks", "smoke", "--lr", value, "--store", str(tmp_path)]) == 2
    assert "argument 'lr': expected a finite number" in capsys.readouterr().err


def test_a_recipe_key_that_moved_to_a_task_is_taken_as_its_option_with_a_note(tmp_path, capsys):
    """``lm``'s token budget was part of the recipe; an old sweep file still runs, and the cell is the
    one the flag gives (same id), while a sweep without ``lm`` is told the key is not its own."""
    import json

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "train.jsonl").write_text("\n".join(json.dumps({"text": "the cat sees a dog. " * 8})
                                                   for _ in range(40)) + "\n")
    (corpus / "valid.jsonl").write_text(json.dumps({"text": "a dog sees the cat. " * 8}) + "\n")
    common = ["--tasks", "lm", "--models", "llama-tiny", "--data-dir", str(corpus), "--batch-size", "2",
              "--max-length", "16", "--no-progress"]
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text("methods: [full]\nrecipe: {train_tokens: 64, eval_tokens: 32}\n")
    assert main(["run", "-c", str(sweep), *common, "--store", str(tmp_path / "a")]) == 0
    assert "recipe key 'train_tokens' is an option of task lm now" in capsys.readouterr().err
    assert main(["run", "--methods", "full", *common, "--train-tokens", "64", "--eval-tokens", "32",
                 "--store", str(tmp_path / "b")]) == 0
    a, b = (ResultStore(tmp_path / name).load() for name in ("a", "b"))
    assert set(a["cell_id"]) == set(b["cell_id"])
    assert json.loads(a["recipe"].iloc[0])["train_tokens"] == 64  # stored with the recipe, as before the move
    assert a.set_index("metric").loc["train_steps", "value"] == 64 // (2 * 16)
    other = tmp_path / "other.yaml"
    other.write_text("methods: [full]\ntasks: [smoke]\nrecipe: {train_tokens: 64}\n")
    assert main(["run", "-c", str(other), "--store", str(tmp_path / "c")]) == 2
    assert "recipe key 'train_tokens' is an option of task lm now, which this sweep does not run" in \
        capsys.readouterr().err
    assert not (tmp_path / "c").exists()


def test_cells_stored_before_the_token_budget_moved_pair_with_cells_stored_after():
    """Every cell stored the three budget fields with its recipe (None outside ``lm``); reports group
    cells by recipe, so the old text and the new one must read as one recipe."""
    import json

    from suite.recipe import canonical_recipe_json

    new = Recipe(lr=3e-3, max_steps=150).to_dict()
    old = {**new, "tokens_per_param": None, "train_tokens": None, "eval_tokens": None}
    assert canonical_recipe_json(json.dumps(old)) == canonical_recipe_json(json.dumps(new))
    lm_old = {**new, "tokens_per_param": 20.0, "train_tokens": None, "eval_tokens": 262144}
    assert canonical_recipe_json(json.dumps(lm_old)) != canonical_recipe_json(json.dumps(new))
