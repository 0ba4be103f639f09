"""The anchor presets held to their sources: every cell ``lora-glue`` and ``vpetl-vtab`` resolve to carries
the values the LoRA paper / its released scripts and V-PETL Bench's scripts and configs state.

The sources' values are data here, transcribed from the file or table named beside each, independently of
``suite.app.anchor_presets``: a value mistyped there, a rule that does not reach its cell, or a layer that
overrides a preset's value fails a test. Where the sources disagree the test says which one the preset
follows (``LORA_CHOICES``) and checks that it does. Cells are resolved without any model weights: the
presets' own models (``FacebookAI/roberta-base``, ``google/vit-base-patch16-224-in21k``) through ``plan``,
which needs no model files, and the tiny models through ``--dry-run``, which also resolves the modules an
adapter sits on.
"""

from __future__ import annotations

import json

import pytest

from suite.app.cli import build_parser, main
from suite.app.commands import run as run_command

# -- the LoRA paper's GLUE runs -----------------------------------------------------------------------------

# Hu et al. 2021, LoRA (arXiv:2106.09685), Appendix D, Table 9, the RoBERTa-base LoRA column.
LORA_TABLE_9 = {
    "optimizer": "AdamW", "warmup_ratio": 0.06, "schedule": "linear", "batch_size": 16,
    "epochs": {"mnli": 30, "sst2": 60, "mrpc": 30, "cola": 80, "qnli": 25, "qqp": 25, "rte": 80, "stsb": 40},
    "lr": {"mnli": 5e-4, "sst2": 5e-4, "mrpc": 4e-4, "cola": 4e-4, "qnli": 4e-4, "qqp": 5e-4, "rte": 5e-4,
           "stsb": 4e-4},
    "r": 8, "targets": ("query", "value"),  # r_q = r_v = 8
    "alpha": 8, "max_length": 512,
}
# microsoft/LoRA at c4593f06, examples/NLU/roberta_base_<task>.sh: num_gpus, --per_device_train_batch_size,
# --learning_rate, --num_train_epochs, and whether --lora_path starts the task from the MNLI LoRA weights.
LORA_SCRIPTS = {
    "mnli": (8, 16, 5e-4, 30, False), "sst2": (8, 16, 5e-4, 60, False), "mrpc": (8, 16, 4e-4, 30, True),
    "cola": (2, 32, 4e-4, 80, False), "qnli": (8, 32, 4e-4, 25, False), "qqp": (8, 16, 5e-4, 25, False),
    "rte": (8, 32, 5e-4, 80, True), "stsb": (8, 16, 4e-4, 40, True),
}
# ... and what every one of them passes alike.
LORA_SCRIPTS_ALL = {"max_seq_length": 512, "warmup_ratio": 0.06, "lora_r": 8, "lora_alpha": 16, "seed": 0,
                    "weight_decay": 0.1, "fp16": False, "model_name_or_path": "roberta-base"}
# Where the two disagree, the preset follows the paper (and states the scripts' value in its about).
LORA_CHOICES = {"alpha": "paper", "batch_size": "paper"}
GLUE_TASKS = ("cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte")

# -- V-PETL Bench on VTAB-1k ------------------------------------------------------------------------------

# synbol/Parameter-Efficient-Transfer-Learning-Benchmark at c188fad2, ImageClassification/scripts/
# run_vit_<method>.sh: (--lr, --wd) for each --task vtab line; each script names each dataset once.
VPETL_SCRIPTS = {
    # scripts/run_vit_fclayer.sh: topN=8
    "fclayer": {
        "cifar100": (1e-3, 1e-4), "caltech101": (0.006, 0.35), "dtd": (0.0032, 0.04),
        "oxford_flowers102": (0.05, 0.11), "oxford_iiit_pet": (0.0007, 0.8), "svhn": (0.001, 0.005),
        "sun397": (0.0017, 0.01), "patch_camelyon": (0.0072, 0.002), "eurosat": (0.06, 0.001),
        "resisc45": (0.01, 0.01), "diabetic_retinopathy": (0.004, 0.0003), "clevr_count": (0.0033, 0.01),
        "clevr_dist": (0.0018, 0.005), "dmlab": (0.009, 0.1), "kitti": (0.0072, 0.0001),
        "dsprites_loc": (0.003, 0.001), "dsprites_ori": (0.01, 0.05), "smallnorb_azi": (0.0062, 0.005),
        "smallnorb_ele": (0.0011, 0.0005),
    },
    # scripts/run_vit_bitfit.sh: topN=8
    "bitfit": {
        "cifar100": (3e-3, 1e-4), "caltech101": (0.006, 0.25), "dtd": (0.0032, 0.04),
        "oxford_flowers102": (0.05, 0.11), "oxford_iiit_pet": (0.0007, 0.8), "svhn": (0.001, 0.005),
        "sun397": (0.0017, 0.01), "patch_camelyon": (0.0072, 0.002), "eurosat": (0.06, 0.001),
        "resisc45": (0.01, 0.01), "diabetic_retinopathy": (0.004, 0.0003), "clevr_count": (0.0033, 0.01),
        "clevr_dist": (0.0018, 0.005), "dmlab": (0.009, 0.1), "kitti": (0.0072, 0.0001),
        "dsprites_loc": (0.003, 0.001), "dsprites_ori": (0.01, 0.05), "smallnorb_azi": (0.0062, 0.005),
        "smallnorb_ele": (0.0011, 0.0005),
    },
    # scripts/run_vit_lntune.sh: topN=8
    "lntune": {
        "cifar100": (0.008, 0.01), "caltech101": (0.005, 0.01), "dtd": (0.0032, 0.04),
        "oxford_flowers102": (0.05, 0.11), "oxford_iiit_pet": (0.0007, 0.8), "svhn": (0.001, 0.005),
        "sun397": (0.0017, 0.01), "patch_camelyon": (0.0072, 0.002), "eurosat": (0.06, 0.001),
        "resisc45": (0.01, 0.01), "diabetic_retinopathy": (0.004, 0.0003), "clevr_count": (0.0033, 0.01),
        "clevr_dist": (0.0018, 0.005), "dmlab": (0.009, 0.1), "kitti": (0.0072, 0.0001),
        "dsprites_loc": (0.003, 0.001), "dsprites_ori": (0.01, 0.05), "smallnorb_azi": (0.0062, 0.005),
        "smallnorb_ele": (0.0011, 0.0005),
    },
    # scripts/run_vit_lora.sh: topN=8
    "lora": {
        "cifar100": (0.005, 0.005), "caltech101": (0.006, 0.35), "dtd": (0.0032, 0.04),
        "oxford_flowers102": (0.05, 0.11), "oxford_iiit_pet": (0.0007, 0.8), "svhn": (0.001, 0.005),
        "sun397": (0.0017, 0.01), "patch_camelyon": (0.0072, 0.002), "eurosat": (0.06, 0.001),
        "resisc45": (0.01, 0.01), "diabetic_retinopathy": (0.004, 0.0003), "clevr_count": (0.0033, 0.01),
        "clevr_dist": (0.0018, 0.005), "dmlab": (0.009, 0.1), "kitti": (0.0072, 0.0001),
        "dsprites_loc": (0.003, 0.001), "dsprites_ori": (0.01, 0.05), "smallnorb_azi": (0.0062, 0.005),
        "smallnorb_ele": (0.0011, 0.0005),
    },
    # scripts/run_vit_adaptformer.sh: topN=8
    "adaptformer": {
        "cifar100": (0.01, 1.0), "caltech101": (0.006, 0.35), "dtd": (0.0032, 0.04),
        "oxford_flowers102": (0.05, 0.11), "oxford_iiit_pet": (0.0007, 0.8), "svhn": (0.001, 0.005),
        "sun397": (0.0017, 0.01), "patch_camelyon": (0.0072, 0.002), "eurosat": (0.06, 0.001),
        "resisc45": (0.01, 0.01), "diabetic_retinopathy": (0.004, 0.0003), "clevr_count": (0.0033, 0.01),
        "clevr_dist": (0.0018, 0.005), "dmlab": (0.009, 0.1), "kitti": (0.0072, 0.0001),
        "dsprites_loc": (0.003, 0.001), "dsprites_ori": (0.01, 0.05), "smallnorb_azi": (0.0062, 0.005),
        "smallnorb_ele": (0.0011, 0.0005),
    },
    # scripts/run_vit_vptshallow.sh: topN=100
    "vptshallow": {
        "cifar100": (1e-3, 1e-4), "caltech101": (0.006, 0.35), "dtd": (0.0032, 0.04),
        "oxford_flowers102": (0.05, 0.11), "oxford_iiit_pet": (0.0007, 0.8), "svhn": (0.001, 0.005),
        "sun397": (0.0017, 0.01), "patch_camelyon": (0.0072, 0.002), "eurosat": (0.06, 0.001),
        "resisc45": (0.01, 0.01), "diabetic_retinopathy": (0.004, 0.0003), "clevr_count": (0.0033, 0.01),
        "clevr_dist": (0.0018, 0.005), "dmlab": (0.009, 0.1), "kitti": (0.0072, 0.0001),
        "dsprites_loc": (0.003, 0.001), "dsprites_ori": (0.01, 0.05), "smallnorb_azi": (0.0062, 0.005),
        "smallnorb_ele": (0.0011, 0.0005),
    },
}
# V-PETL's method -> the suite's method name and the arguments its model file and script give it:
# models/vision_transformer_lora.py (rank topN on q and v, no scaling: alpha = r), vision_transformer_adaptformer.py
# (down_dim topN, adapter_scalar "1.0"), vision_transformer_vptshallow.py (prompt_len topN, input layer only),
# train_model_lntune.py (every parameter named 'norm': both LayerNorms per block and the final one).
VPETL_METHOD_ARGS = {
    "fclayer": ("linear-probe", {}),
    "bitfit": ("bitfit", {"train_head": True}),
    "lntune": ("ln-tuning", {"target_modules": ["layernorm_before", "layernorm_after", "layernorm"]}),
    "lora": ("lora", {"r": 8, "alpha": 8.0, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]}),
    "adaptformer": ("adaptformer", {"bottleneck": 8, "scale": 1.0}),
    "vptshallow": ("vpt", {"num_tokens": 100, "deep": False, "dropout": 0.0}),
}
# configs/model_lora/vtab/<dataset>.yaml (the file every trainer above reads: get_config('model_lora', ...)):
# batch_size 64, epochs 100, warmup_epochs 10, alike for all 19; train/train_model_<method>.py: AdamW over
# every trainable parameter with weight_decay=--wd, timm's CosineLRScheduler, no gradient clipping, no autocast.
VPETL_CONFIG = {"batch_size": 64, "epochs": 100, "warmup_epochs": 10}
# ... and labelsmoothing, per dataset (timm's LabelSmoothingCrossEntropy when above 0).
VPETL_LABEL_SMOOTHING = {
    "cifar100": 0.1, "caltech101": 0.1, "dtd": 0.1, "oxford_flowers102": 0.1, "oxford_iiit_pet": 0.1, "svhn": 0.1,
    "sun397": 0.1, "patch_camelyon": 0.1, "eurosat": 0.1, "resisc45": 0.1, "diabetic_retinopathy": 0.1,
    "clevr_count": 0.0, "clevr_dist": 0.0, "dmlab": 0.0, "kitti": 0.1, "dsprites_loc": 0.0, "dsprites_ori": 0.0,
    "smallnorb_azi": 0.0, "smallnorb_ele": 0.0,
}
VPETL_TRAINER = {"optimizer": "adamw", "decay": "all", "schedule": "cosine", "max_grad_norm": 0.0,
                 "precision": "fp32"}
VTAB_NAMES = {"cifar100": "cifar"}  # V-PETL's --dataset -> the suite's subtask, where they differ


def resolve(*argv: str) -> list:
    """The cells ``suite run ARGV`` would run (no model files needed)."""
    args = build_parser().parse_args(["run", *argv])
    cells, _ = run_command.plan(args)
    return cells


def args_of(method) -> dict:
    return method.to_dict()["args"]


def dry_run(capsys, *argv: str) -> list[dict]:
    capsys.readouterr()
    assert main(["run", *argv, "--dry-run"]) == 0
    return [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]


# -- lora-glue ----------------------------------------------------------------------------------------------

def lora_expected(task: str) -> dict:
    gpus, per_device, lr, epochs, _ = LORA_SCRIPTS[task]
    assert lr == LORA_TABLE_9["lr"][task] and epochs == LORA_TABLE_9["epochs"][task]  # the sources agree here
    paper = LORA_CHOICES["batch_size"] == "paper"
    return {"lr": lr, "epochs": float(epochs),
            "batch_size": LORA_TABLE_9["batch_size"] if paper else gpus * per_device,
            "max_length": LORA_TABLE_9["max_length"], "warmup_ratio": LORA_TABLE_9["warmup_ratio"],
            "schedule": LORA_TABLE_9["schedule"], "weight_decay": LORA_SCRIPTS_ALL["weight_decay"],
            "optimizer": LORA_TABLE_9["optimizer"].lower(), "decay": "matrices", "max_grad_norm": 1.0,
            "precision": "bf16" if LORA_SCRIPTS_ALL["fp16"] else "fp32"}


def lora_args() -> dict:
    alpha = LORA_TABLE_9["alpha"] if LORA_CHOICES["alpha"] == "paper" else LORA_SCRIPTS_ALL["lora_alpha"]
    return {"r": LORA_TABLE_9["r"], "alpha": float(alpha), "dropout": 0.0,
            "target_modules": list(LORA_TABLE_9["targets"])}


def test_lora_glue_resolves_every_cell_to_table_9_and_the_released_scripts():
    preset = run_command.PRESETS["lora-glue"]
    assert preset["models"] == "FacebookAI/roberta-base"  # the hub id of the scripts' roberta-base
    cells = resolve("--preset", "lora-glue")
    assert sorted({c.subtask for c in cells}) == sorted(GLUE_TASKS)
    assert {c.model for c in cells} == {"FacebookAI/roberta-base"}
    assert sorted({c.seed for c in cells}) == [0, 1, 2, 3, 4]  # the paper: the median over 5 seeds
    assert len(cells) == len(GLUE_TASKS) * 5
    for cell in cells:
        [method] = cell.methods
        assert method.name == "lora" and {k: args_of(method)[k] for k in lora_args()} == lora_args()
        recipe = cell.recipe.to_dict()
        expected = lora_expected(cell.subtask)
        assert {k: recipe[k] for k in expected} == expected, cell.subtask


def test_lora_glue_follows_the_paper_where_the_scripts_differ_and_says_so():
    cells = resolve("--preset", "lora-glue")
    about = run_command.PRESETS["lora-glue"]["about"]
    for cell in cells:
        gpus, per_device, *_ = LORA_SCRIPTS[cell.subtask]
        assert cell.recipe.batch_size != gpus * per_device  # the scripts' effective batch is not what runs
        assert args_of(cell.methods[0])["alpha"] != LORA_SCRIPTS_ALL["lora_alpha"]
    for stated in ("arXiv:2106.09685", "Table 9", "c4593f06", "roberta_base_<task>.sh", "the scripts pass 16",
                   "MNLI", "median"):
        assert stated in about, stated
    assert [t for t, (*_, from_mnli) in LORA_SCRIPTS.items() if from_mnli] == ["mrpc", "rte", "stsb"]


def test_lora_glue_keeps_every_value_on_another_model_and_places_lora_on_query_and_value(capsys):
    default = {(c.subtask, c.seed): (c.recipe, [m.to_dict() for m in c.methods]) for c in resolve("--preset", "lora-glue")}
    small = dry_run(capsys, "--preset", "lora-glue", "--models", "tiny-bert", "--seeds", "1")
    assert len(small) == len(GLUE_TASKS) and {c["model"] for c in small} == {"tiny-bert"}
    for cell in small:
        recipe, methods = default[(cell["task"].split(":")[1], 0)]
        assert cell["recipe"] == recipe.to_dict()
        [method] = cell["methods"]
        assert {k: method[k] for k in ("name", "args")} == {k: methods[0][k] for k in ("name", "args")}
        assert method["targets"]["keys"] == ["query", "value"] and method["targets"]["modules"] == 4  # 2 layers
        assert "refused" not in method


def test_a_flag_still_overrides_a_preset_rule():
    cells = resolve("--preset", "lora-glue", "--tasks", "glue:rte", "--lr", "1e-4", "--seeds", "1")
    assert [(c.recipe.lr, c.recipe.epochs) for c in cells] == [(1e-4, 80.0)]


# -- vpetl-vtab ---------------------------------------------------------------------------------------------

def vtab_subtask(dataset: str) -> str:
    return VTAB_NAMES.get(dataset, dataset)


def test_vpetl_vtab_resolves_every_cell_to_its_scripts_and_configs():
    from suite.tasks.vtab import SPECS

    preset = run_command.PRESETS["vpetl-vtab"]
    assert preset["models"] == "google/vit-base-patch16-224-in21k"
    cells = resolve("--preset", "vpetl-vtab", "--seeds", "1")
    by_name = {name: vpetl for vpetl, (name, _) in VPETL_METHOD_ARGS.items()}
    assert sorted({c.methods[0].name for c in cells}) == sorted(by_name)
    assert {c.subtask for c in cells} == set(SPECS)  # all 19 tasks, final protocol
    assert len(cells) == len(VPETL_METHOD_ARGS) * 19
    for vpetl, table in VPETL_SCRIPTS.items():
        assert {vtab_subtask(d) for d in table} == set(SPECS), vpetl  # every script names all 19
    expected_common = {"batch_size": VPETL_CONFIG["batch_size"], "epochs": float(VPETL_CONFIG["epochs"]),
                       "warmup_ratio": VPETL_CONFIG["warmup_epochs"] / VPETL_CONFIG["epochs"], **VPETL_TRAINER}
    seen = set()
    for cell in cells:
        [method] = cell.methods
        vpetl = by_name[method.name]
        name, args = VPETL_METHOD_ARGS[vpetl]
        assert {k: args_of(method)[k] for k in args} == args, vpetl
        dataset = next(d for d in VPETL_SCRIPTS[vpetl] if vtab_subtask(d) == cell.subtask)
        lr, wd = VPETL_SCRIPTS[vpetl][dataset]
        recipe = cell.recipe.to_dict()
        assert {k: recipe[k] for k in expected_common} == expected_common
        assert (recipe["lr"], recipe["weight_decay"]) == (lr, wd), (vpetl, dataset)
        assert recipe["label_smoothing"] == VPETL_LABEL_SMOOTHING[dataset], dataset
        seen.add((vpetl, dataset))
    assert len(seen) == len(VPETL_METHOD_ARGS) * 19


def test_vpetl_vtab_rules_reach_the_selection_stage_and_only_the_presets_methods():
    cells = resolve("--preset", "vpetl-vtab", "--tasks", "vtab:cifar100@val200,kitti", "--seeds", "1",
                    "--methods", "lora:r=8,alpha=8,target_modules=q_proj;v_proj,full")
    got = {(c.methods[0].name, c.subtask): (c.recipe.lr, c.recipe.weight_decay) for c in cells}
    assert got[("lora", "cifar@val200")] == VPETL_SCRIPTS["lora"]["cifar100"]
    assert got[("lora", "kitti")] == VPETL_SCRIPTS["lora"]["kitti"]
    # full fine-tuning is not in the preset: no V-PETL value reaches it (the task's shared default does)
    assert got[("full", "kitti")] == (1e-3, 1e-4) != VPETL_SCRIPTS["lora"]["kitti"]


def test_vpetl_vtab_places_each_method_on_a_vit_and_names_its_sources(capsys):
    cells = dry_run(capsys, "--preset", "vpetl-vtab", "--models", "tiny-vit", "--tasks", "vtab:dtd",
                    "--seeds", "1")
    methods = {c["methods"][0]["name"]: c["methods"][0] for c in cells}
    assert set(methods) == {name for name, _ in VPETL_METHOD_ARGS.values()}
    assert all("refused" not in m for m in methods.values())
    assert methods["lora"]["targets"]["keys"] == ["q_proj", "v_proj"] and methods["lora"]["targets"]["modules"] == 4
    assert methods["ln-tuning"]["targets"]["modules"] == 5  # 2 blocks x 2 LayerNorms + the final one
    assert {c["recipe"]["lr"] for c in cells} == {VPETL_SCRIPTS["lora"]["dtd"][0]}
    about = run_command.PRESETS["vpetl-vtab"]["about"]
    for stated in ("c188fad2", "scripts/run_vit_<method>.sh", "configs/model_<method>/vtab/<dataset>.yaml",
                   "label smoothing 0.1", "drop-path", "RandAugment", "full fine-tuning", "ssf", "adapter"):
        assert stated in about, stated


@pytest.mark.parametrize("name", ["lora-glue", "vpetl-vtab"])
def test_the_readme_describes_the_preset_and_its_sources(name):
    from tests.conftest import REPO

    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert f"--preset {name}" in readme
    assert ("c4593f06" if name == "lora-glue" else "c188fad2") in readme


# -- label smoothing, the recipe option V-PETL's configs needed ----------------------------------------------

def test_label_smoothing_is_torchs_smoothed_cross_entropy_and_leaves_stored_ids_alone():
    import types

    import torch

    from suite.recipe import Recipe
    from suite.train import Trainer

    class Classifier(torch.nn.Module):  # returns what a transformers classifier returns
        def __init__(self):
            super().__init__()
            self.linear = torch.nn.Linear(4, 3)

        def forward(self, x, labels=None):
            logits = self.linear(x)
            loss = None if labels is None else torch.nn.functional.cross_entropy(logits, labels)
            return types.SimpleNamespace(logits=logits, loss=loss)

    torch.manual_seed(0)
    model = Classifier()
    batch = {"x": torch.randn(6, 4), "labels": torch.tensor([0, 1, 2, 0, 1, 2])}
    logits = model.linear(batch["x"])
    for smoothing in (0.0, 0.1):
        trainer = Trainer(model, [0], lambda items: batch, Recipe(label_smoothing=smoothing, max_steps=1), [], "cpu", 0,
                          progress=False)
        expected = torch.nn.functional.cross_entropy(logits, batch["labels"], label_smoothing=smoothing)
        assert torch.allclose(trainer.loss(batch), expected)
    smoothed = torch.nn.functional.cross_entropy(logits, batch["labels"], label_smoothing=0.1)
    assert not torch.allclose(smoothed, torch.nn.functional.cross_entropy(logits, batch["labels"]))
    assert "label_smoothing" not in Recipe().identity()  # cells stored before the option keep their ids
    assert Recipe(label_smoothing=0.1).identity()["label_smoothing"] == 0.1
    with pytest.raises(ValueError, match="label_smoothing"):
        Recipe(label_smoothing=1.0)


def test_label_smoothing_is_refused_where_a_label_is_no_class():
    from suite.errors import UserError

    assert [c.recipe.label_smoothing for c in resolve("--methods", "lora", "--tasks", "glue:rte", "--models",
                                                       "tiny-bert", "--label-smoothing", "0.1")] == [0.1]
    with pytest.raises(UserError, match="label_smoothing applies to classification tasks"):
        resolve("--methods", "lora", "--tasks", "glue:stsb", "--models", "tiny-bert", "--label-smoothing", "0.1")


def test_vpetl_vtab_runs_its_six_methods_to_ok_cells_with_label_smoothing(tmp_path, capsys, one_torch_thread):
    """The preset end to end on a tiny ViT and a V-PETL-layout folder (patch_camelyon: label smoothing 0.1)."""
    from suite.results.store import ResultStore
    from tests.test_vtab import write_vtab_task

    write_vtab_task(tmp_path / "vtab-1k", "patch_camelyon")
    store = tmp_path / "store"
    assert main(["run", "--preset", "vpetl-vtab", "--models", "tiny-vit", "--tasks", "vtab:patch_camelyon",
                 "--seeds", "1", "--max-steps", "2", "--batch-size", "4", "--data-dir", str(tmp_path / "vtab-1k"),
                 "--store", str(store)]) == 0, capsys.readouterr().err
    frame = ResultStore(store).load()
    assert set(frame["status"]) == {"ok"} and frame["cell_id"].nunique() == len(VPETL_METHOD_ARGS)
    recipes = {json.loads(text)["label_smoothing"] for text in frame["recipe"]}
    assert recipes == {VPETL_LABEL_SMOOTHING["patch_camelyon"]}
