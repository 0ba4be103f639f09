"""peft's experiment folders as methods, held to peft itself.

The folders under ``tests/data/peft_method_comparison`` are unmodified copies of peft's
``method_comparison/MetaMathQA`` files (see the README there). Each mapped experiment is checked
against peft's own reading of the same folder (``PeftConfig.from_pretrained`` + ``get_peft_model``):
the same adapted modules and the same trainable parameters. The published table is checked
against what peft recorded: on Llama-3.2-3B's architecture (built from its published config on
the meta device, no weights) each experiment trains exactly the parameter count peft's result
file states.
"""

from __future__ import annotations

import json

import pytest

from suite.app.sweep import parse_method_spec
from suite.errors import UserError
from tests.conftest import REPO, run_suite

peft = pytest.importorskip("peft")

COMPARISON = REPO / "tests" / "data" / "peft_method_comparison" / "MetaMathQA"
EXPERIMENTS = COMPARISON / "experiments"
LORA_RANK32 = EXPERIMENTS / "lora" / "llama-3.2-3B-rank32"
FULL = EXPERIMENTS / "full-finetuning" / "llama-3.2-3B-lr_0.00001"


def _tiny_llama():
    import torch

    from suite.models.loading import load_model

    torch.manual_seed(0)
    return load_model("tiny-llama", "causal-lm", task="test").model


def _llama_3b_on_meta():
    """Llama-3.2-3B's architecture (its config.json's sizes), on the meta device: structure, no weights."""
    import torch
    import transformers

    config = transformers.LlamaConfig(hidden_size=3072, intermediate_size=8192, num_hidden_layers=28,
                                      num_attention_heads=24, num_key_value_heads=8, head_dim=128,
                                      vocab_size=128256, tie_word_embeddings=True)
    with torch.device("meta"):
        return transformers.AutoModelForCausalLM.from_config(config)


def _apply(spec, model):
    from suite.app.sweep import resolve_method_spec
    from suite.method import MethodContext

    (method,) = [m.instantiate() for m in resolve_method_spec(spec)]
    return method.apply(model, MethodContext(task_kind="causal-lm"))


def _trainable(model) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _adapted(model) -> list[str]:
    from peft.tuners.tuners_utils import BaseTunerLayer

    return sorted(name for name, module in model.named_modules() if isinstance(module, BaseTunerLayer))


@pytest.mark.parametrize("folder", ["lora/llama-3.2-3B-rank32", "lora/llama-3.2-3B-rank32-dora",
                                    "ia3/llama-3.2-3B-lr_0.001"])
def test_a_peft_folder_builds_the_adapter_peft_builds_from_it(folder):
    from peft import PeftConfig, get_peft_model


    path = EXPERIMENTS / folder
    ours = _apply(parse_method_spec(f"peft-experiment:{path}"), _tiny_llama())
    theirs = get_peft_model(_tiny_llama(), PeftConfig.from_pretrained(str(path)))
    assert _adapted(ours) == _adapted(theirs) and _adapted(ours)
    assert _trainable(ours) == _trainable(theirs)
    mine, peft_own = ours.peft_config["default"].to_dict(), theirs.peft_config["default"].to_dict()
    for key, value in peft_own.items():
        if key not in ("task_type", "base_model_name_or_path", "revision", "inference_mode"):
            assert mine.get(key) == value or (isinstance(value, set) and set(mine.get(key)) == value), key


def test_the_lora_folder_is_alpha_64_on_q_and_v_and_trains_at_peft_s_values():
    from suite.methods.peft.experiments import read_folder

    experiment = read_folder(str(LORA_RANK32))
    assert experiment.method == "lora" and experiment.args["alpha"] == 64 and experiment.args["r"] == 32
    assert experiment.args["dropout"] == 0.0 and experiment.args["target_modules"] == ("peft-default",)
    # default_training_params.json of the copied checkout, as peft's get_train_config reads it
    assert experiment.recipe == {"precision": "bf16", "max_length": 768, "batch_size": 4, "max_steps": 5000,
                                 "eval_batch_size": 50, "eval_every": 250, "max_grad_norm": 1.0,
                                 "grad_checkpointing": False, "lr": 1e-4, "optimizer": "adamw",
                                 "decay": "all", "weight_decay": 0.1, "schedule": "cosine", "warmup_ratio": 0.1}
    on_llama = _apply(parse_method_spec(f"peft-experiment:{LORA_RANK32}"), _tiny_llama())
    assert sorted(on_llama.peft_config["default"].target_modules) == ["q_proj", "v_proj"]


def test_full_fine_tuning_has_its_own_lr_and_the_shallow_merge_s_weight_decay():
    """peft's get_train_config merges {**defaults, **experiment}: optimizer_kwargs {lr: 1e-5} replaces the
    defaults' {lr: 1e-4, weight_decay: 0.1} whole, so AdamW runs at its own default weight decay (0.01)."""
    import torch

    from suite.methods.peft.experiments import read_folder

    experiment = read_folder(str(FULL))
    assert experiment.method == "full" and experiment.args == {}
    assert experiment.recipe["lr"] == 1e-5
    assert experiment.recipe["weight_decay"] == torch.optim.AdamW([torch.zeros(1)]).defaults["weight_decay"]


def test_what_cannot_be_mapped_is_refused_with_the_field_named(tmp_path):
    from suite.methods.peft.experiments import read_folder

    with pytest.raises(UserError, match="optimizer_type='lora-fa'"):
        read_folder(str(EXPERIMENTS / "lora" / "llama-3.2-3B-rank32-lorafa"))
    config = json.loads((LORA_RANK32 / "adapter_config.json").read_text())
    for change, field in [({"layers_to_transform": [0]}, "layers_to_transform"),
                          ({"target_modules": ".*proj"}, "target_modules"), ({"peft_type": "NOPE"}, "peft_type")]:
        folder = tmp_path / "experiments" / "lora" / field
        folder.mkdir(parents=True)
        (folder / "adapter_config.json").write_text(json.dumps(config | change))
        with pytest.raises(UserError, match=field.replace("target_modules", "pattern")):
            read_folder(str(folder))
    training = tmp_path / "experiments" / "lora" / "compiled"
    training.mkdir(parents=True)
    (training / "adapter_config.json").write_text(json.dumps(config))
    (training / "training_params.json").write_text(json.dumps({"compile": True, "optimizer_kwargs": {"lr": 1e-4,
                                                                                                     "betas": [0.9, 0.95]}}))
    with pytest.raises(UserError, match=r"compile=True.*betas"):
        read_folder(str(training))
    with pytest.raises(UserError, match="does not exist"):
        read_folder(str(tmp_path / "nowhere"))
    (tmp_path / "experiments" / "lora" / "empty").mkdir()
    with pytest.raises(UserError, match="has no adapter_config.json"):
        read_folder(str(tmp_path / "experiments" / "lora" / "empty"))


# Every published experiment with a recorded parameter count, on Llama-3.2-3B's structure, but those whose
# initialisation needs weights (AdaMSS's and MiCA's SVDs cannot run on the meta device) and the
# spectral ones that take seconds each on a CPU (FourierFT, WaveFT).
NEEDS_WEIGHTS_OR_SLOW = ("adamss/", "lora/llama-3.2-3B-rank32-mica", "fourierft/", "waveft/")


def _anchored() -> list[str]:
    from suite.methods.peft.peft_published import PUBLISHED

    return [name for name, entry in PUBLISHED.items()
            if entry.trainable_params is not None and not name.startswith(NEEDS_WEIGHTS_OR_SLOW)]


ANCHORED = _anchored()


@pytest.mark.parametrize("name", ANCHORED)
def test_a_published_experiment_trains_the_parameters_peft_recorded_on_llama_3_2_3b(name):
    from suite.methods.peft.experiments import published
    from suite.methods.peft.peft_published import PUBLISHED

    experiment = published(name)
    model = _llama_3b_on_meta()
    if experiment.method != "full":
        model = _apply(parse_method_spec(f"peft:{name}"), model)
    assert _trainable(model) == PUBLISHED[name].trainable_params


def test_every_published_experiment_maps_and_the_preset_runs_them_all():
    from suite.app.commands.run import PRESETS
    from suite.methods.peft.experiments import published
    from suite.methods.peft.peft_published import PUBLISHED

    for name in PUBLISHED:
        assert published(name).name == name
    assert PRESETS["peft-metamath"]["methods"].split(",") == [f"peft:{name}" for name in PUBLISHED]
    assert PRESETS["peft-metamath"]["models"] == "meta-llama/Llama-3.2-3B"


def test_dry_run_shows_peft_s_lora_and_full_fine_tuning_as_peft_s_files_say():
    methods = "peft:lora/llama-3.2-3B-rank32,peft:full-finetuning/llama-3.2-3B-lr_0.00001"
    result = run_suite("run", "--preset", "peft-metamath", "--models", "tiny-llama", "--methods", methods,
                       "--dry-run")
    assert result.returncode == 0, result.stderr
    lora, full = (json.loads(line) for line in result.stdout.splitlines())
    (method,) = lora["methods"]
    assert method["name"] == "lora" and method["args"]["alpha"] == 64 and method["args"]["r"] == 32
    assert method["targets"] == {"keys": ["q_proj", "v_proj"], "rule": "peft's default for llama", "modules": 4}
    assert lora["method"] == "peft:lora/llama-3.2-3B-rank32" and lora["recipe"]["lr"] == 1e-4
    assert full["methods"][0]["name"] == "full" and full["recipe"]["lr"] == 1e-5
    assert full["recipe"]["weight_decay"] == 0.01 and lora["recipe"]["weight_decay"] == 0.1
    # the user's flags still win over an experiment's values
    again = run_suite("run", "--preset", "peft-metamath", "--models", "tiny-llama", "--methods", methods,
                      "--lr", "3e-4", "--dry-run")
    assert {json.loads(line)["recipe"]["lr"] for line in again.stdout.splitlines()} == {3e-4}


def test_a_folder_runs_as_a_method_and_its_placement_is_stored_and_shown(tmp_path):
    """A whole cell from a folder (the copied checkout's path holds '+'-free text, but the spec may not)."""
    import suite.results
    from tests.test_gsm8k import PROBLEMS, write_gsm8k

    pytest.importorskip("lm_eval")
    data = write_gsm8k(tmp_path / "g")
    rows = [{"query": q, "response": a} for q, a in PROBLEMS]
    (data / "MetaMathQA-395K.json").write_text(json.dumps(rows), encoding="utf-8")
    store = tmp_path / "store"
    result = run_suite("run", "--preset", "peft-metamath", "--models", "tiny-llama", "--data-dir", str(data),
                       "--methods", f"peft-experiment:{LORA_RANK32}", "--max-steps", "2", "--limit", "3",
                       "--max-length", "64", "--max-new-tokens", "4", "--validation-rows", "2", "--store",
                       str(store), "--no-progress")
    assert result.returncode == 0, result.stderr
    frame = suite.results.load(store)
    assert set(frame["variant"]) == {"peft:lora/llama-3.2-3B-rank32"}
    assert set(frame["targets"]) == {"q_proj;v_proj"}
    recipe = json.loads(frame["recipe"].iloc[0])
    assert recipe["max_steps"] == 2 and recipe["lr"] == 1e-4 and recipe["decay"] == "all"
    shown = run_suite("compare", str(store), "--width", "200")
    assert shown.returncode == 0, shown.stderr
    assert "peft:lora/llama-3.2-3B-rank32: q_proj, v_proj" in shown.stdout
    site = tmp_path / "site"
    assert run_suite("report", str(store), "--out", str(site)).returncode == 0
    assert "modules: q_proj, v_proj" in (site / "index.html").read_text(encoding="utf-8")
    assert any("adapted modules</dt><dd>q_proj, v_proj" in page.read_text(encoding="utf-8")
               for page in site.rglob("*.html"))


def test_weight_decay_on_every_parameter_is_torch_adamw_over_model_parameters():
    """decay=all must step exactly as peft's ``AdamW(model.parameters(), weight_decay=...)`` does."""
    import torch

    from suite.optim import build_optimizer, parameter_groups

    torch.manual_seed(0)
    ours, theirs = (torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4)) for _ in range(2))
    theirs.load_state_dict(ours.state_dict())
    opt_ours = build_optimizer("adamw", parameter_groups(ours.named_parameters(), 0.1, decay_all=True), 1e-2)
    opt_theirs = torch.optim.AdamW(theirs.parameters(), lr=1e-2, weight_decay=0.1)
    x = torch.randn(8, 4)
    for model, opt in ((ours, opt_ours), (theirs, opt_theirs)):
        for _ in range(3):
            opt.zero_grad()
            model(x).square().mean().backward()
            opt.step()
    for a, b in zip(ours.parameters(), theirs.parameters(), strict=True):
        assert torch.equal(a, b)
    plain = parameter_groups(ours.named_parameters(), 0.1)
    assert [len(g["params"]) for g in plain] == [1, 3]  # the usual split: only the weight matrix decays


def test_a_recipe_rule_sets_values_for_the_methods_and_tasks_it_names():
    from suite.app.sweep import RecipeRule, build_cells, parse_method_spec

    rules = (RecipeRule({"lr": 5e-4, "epochs": 2.0}, methods=("lora",), tasks=("glue:rte",)),
             RecipeRule({"batch_size": 8}, tasks=("glue",)))
    cells = build_cells([parse_method_spec("lora"), parse_method_spec("full")], [("glue", "rte"), ("glue", "sst2")],
                        ["tiny-bert"], [0], [{}], None, preset_layers=({"lr": 1e-3, "batch_size": 4},), rules=rules)
    got = {(c.spec.label, c.subtask): (c.recipe.lr, c.recipe.epochs, c.recipe.batch_size) for c in cells}
    assert got == {("lora", "rte"): (5e-4, 2.0, 8), ("full", "rte"): (1e-3, 3.0, 8),
                   ("lora", "sst2"): (1e-3, 3.0, 8), ("full", "sst2"): (1e-3, 3.0, 8)}
    with pytest.raises(UserError, match="recipe key"):
        RecipeRule.parse({"recipe": {"learning_rate": 1}})


def test_an_adapter_written_here_reports_where_it_placed_itself():
    """LoRA-XS (written here, not peft's) on tiny BERT: its placement is the family's all-linear keys that
    the model has, the modules its apply replaced; a named target_modules is reported as named."""
    import torch

    from suite.method import MethodContext
    from suite.methods.common.targets import FAMILY_TARGETS, module_matches
    from suite.models.loading import load_model
    from suite.registry import METHODS

    cls = METHODS.get("lora-xs").target
    for explicit, expected in ((None, FAMILY_TARGETS["bert"]["all-linear"]), (("query",), ("query",))):
        torch.manual_seed(0)
        model = load_model("tiny-bert", "sequence-classification", task="test", config={"num_labels": 2}).model
        before = {n: type(m) for n, m in model.named_modules()}
        method = cls(cls.Config(target_modules=explicit))
        adapted = method.apply(model, MethodContext(task_kind="classification"))
        keys = method.placement(adapted).split(";")
        assert sorted(keys) == sorted(expected)
        replaced = [n for n, m in adapted.named_modules() if n in before and type(m) is not before[n]]
        assert replaced and all(any(module_matches(n, k) for k in keys) for n in replaced)
