"""``suite run``: expand a sweep into cells, run those without an ok record, summarise.

Exit codes: 0 all cells ok, 1 some cell failed (each stored with its error), 2 bad input.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import os
import sys
from typing import Any

from suite.app import anchor_presets
from suite.app.commands import DEFAULT_STORE
from suite.app.executor import executor_flags
from suite.config import OptionFlag, option_flags, option_grid
from suite.errors import UserError
from suite.methods.peft import experiments as peft_experiments
from suite.recipe import Recipe

PRESETS: dict[str, dict[str, Any]] = {
    "smoke": {
        "methods": "full,lora,pissa",
        "tasks": "smoke",
        "models": "tiny-bert",
        "seeds": "1",
        # A random-weight tiny model needs a larger step than pretrained ones: one lr for all.
        "recipe": {"lr": 3e-3, "max_steps": 150},
        "about": "tiny BERT (random weights, built from a config) on a synthetic task in GLUE format; "
                 "offline, < 1 min on a CPU; one lr (3e-3) for every method",
    },
    # peft's method_comparison (MetaMathQA -> GSM8K) as peft's own experiment files say: each published
    # experiment the suite reproduces, at its own training values (suite.methods.peft.experiments).
    "peft-metamath": {
        "methods": ",".join(f"peft:{name}" for name in peft_experiments.PRESET_EXPERIMENTS),
        "tasks": "gsm8k",
        "models": peft_experiments.DEFAULT_TRAINING_PARAMS["model_id"],
        "seeds": "1",
        # peft's default training parameters: what a method given with --methods (pissa, lora:r=16) trains with.
        "recipe": peft_experiments.map_training(peft_experiments.DEFAULT_TRAINING_PARAMS, "peft's defaults"),
        "task_options": {"gsm8k": {"train_data": "metamath", "max_chars": 1300, "validation_rows": 50,
                                   "few_shot": 0, "max_new_tokens": 300}},
        "about": f"peft's method_comparison, as its files say ({peft_experiments.PEFT_SOURCE}): every experiment "
                 f"it publishes for Llama-3.2-3B that the suite reproduces "
                 f"({len(peft_experiments.PRESET_EXPERIMENTS)}, peft:<method>/<name>), each with its own adapter "
                 "config and training values over peft's defaults (MetaMathQA rows <= 1,300 characters, 5,000 "
                 "steps of 4, AdamW 1e-4 with weight decay 0.1, cosine after 10% warm-up, max length 768, bf16, "
                 "greedy decoding of 300 tokens, zero-shot GSM8K test); pick some with --methods "
                 "peft:lora/llama-3.2-3B-rank32,..., run a folder with --methods peft-experiment:<dir>, see "
                 "each cell's configuration with --dry-run",
    },
    # Two anchors' protocols as their sources state them (suite.app.anchor_presets; held to the sources by
    # tests/test_paper_presets.py): the LoRA paper's GLUE runs and V-PETL Bench's VTAB-1k runs.
    "lora-glue": anchor_presets.LORA_GLUE_PRESET,
    "vpetl-vtab": anchor_presets.VPETL_PRESET,
    # The low-precision papers' protocol: BF16's learning rate is tuned and every recipe inherits it. A
    # recipe run at an lr past BF16's stability edge would be judged against a baseline that diverges there.
    "lowp": {
        "methods": ",".join(["bf16-train", "fp8-train", "mxfp8-train", "mxfp4-train", "nvfp4-train",
                             "quartet-train", "halo-train", "coat-train",
                             # torchao's training conversions as peers, where torchao is installed
                             *(["torchao-float8", "torchao-mxfp8"] if importlib.util.find_spec("torchao") else [])]),
        "tasks": "lm",
        "models": "llama-tiny",
        "seeds": "3",
        "task_options": {"lm": {"tokens_per_param": 20.0}},
        # Log-spaced about sqrt(2) apart: the optimum must lie inside the grid, not at an end, and
        # BF16's stability edge lies near its top, where a coarser grid would step over it.
        "tune": "lr=3e-4,5e-4,7e-4,1e-3,1.4e-3,2e-3,3e-3",
        "tune_baseline": "bf16-train",
        "about": "pretraining with every training recipe at BF16's tuned learning rate (the recipes' papers' "
                 "protocol): bf16-train alone searches lr over 3e-4..3e-3 (7 log-spaced values) on data held "
                 "out from training, then every recipe (torchao's peers where installed) and bf16-train run "
                 "at its choice with seeds 0, 1, 2, for 20 tokens per non-embedding parameter (--tokens-per-param "
                 "changes it); give the model "
                 "with --models (default llama-tiny) and the data with --data-dir (default: FineWeb-Edu from "
                 "the hub)",
    },
    # Quartet's grid (model sizes x token budgets x recipes), at the lowp protocol: bf16-train's lr
    # searched at every size and budget, every recipe at that size and budget's choice. Read with
    # `suite scaling`. The CPU grid stops well short of 20 tokens per parameter; its law is of that regime.
    "scaling-cpu": {
        "methods": "bf16-train,fp8-train,mxfp4-train,nvfp4-train,quartet-train",
        "tasks": "lm",
        "models": "llama-250k,llama-500k,llama-tiny,llama-2m",
        "seeds": "5",
        "task_options": {"lm": {"tokens_per_param": [0.05, 0.1, 0.2]}},
        "tune": "lr=5e-4,1e-3,2e-3,4e-3",
        "tune_baseline": "bf16-train",
        "about": "a scaling-law grid a CPU can train (on Ray or SLURM, or overnight): 4 sizes (0.27M-1.9M "
                 "non-embedding parameters) x 0.05/0.1/0.2 tokens per parameter x 5 recipes x 5 seeds, "
                 "bf16-train's lr searched per size and budget and every recipe at its choice; then "
                 "`suite scaling STORE`; give the data with --data-dir",
    },
    "scaling": {
        "methods": ",".join(["bf16-train", "fp8-train", "mxfp8-train", "mxfp4-train", "nvfp4-train",
                             "quartet-train", "halo-train", "coat-train"]),
        "tasks": "lm",
        "models": "llama-4m,llama-10m,llama-30m,llama-125m",
        "seeds": "3",
        "task_options": {"lm": {"tokens_per_param": [5.0, 10.0, 20.0, 40.0]}},
        "tune": "lr=3e-4,6e-4,1.2e-3,2.4e-3",
        "tune_baseline": "bf16-train",
        "about": "Quartet's scaling-law grid on GPUs (sized for Ray or SLURM): 4 sizes (4M-127M non-embedding "
                 "parameters) x 5/10/20/40 tokens per parameter x every training recipe x 3 seeds, "
                 "bf16-train's lr searched per size and budget and every recipe at its choice; then "
                 "`suite scaling STORE --speedup ...`; data from the hub or --data-dir",
    },
}
PRESET_SEARCH_KEYS = ("tune", "tune_baseline", "tune_each_too")  # a preset's search: read by main, not plan
MAX_SWEEP_FILE_BYTES = 1_000_000
MAX_CELLS_WITHOUT_YES = 1_000  # a larger sweep asks for --yes: small input, unbounded work
MAX_CELLS = 1_000_000  # beyond this even --yes is refused: the cells alone would not fit in memory
SWEEP_KEYS = {"methods", "tasks", "models", "seeds", "recipe", "data_dir", "store", "device", "executor",
              "task_options"}


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run", help="run a sweep of methods x tasks x models x seeds",
        description="Run every cell of the sweep that has no ok result in the store yet.",
        epilog="examples:\n  suite run --preset smoke\n"
               "  suite run --methods lora:r=16,alpha=32,pissa --tasks glue:sst2,rte --seeds 3\n"
               "  suite run --methods lora,pissa,full --tasks glue:sst2 --tune \"lr=1e-4,3e-4,1e-3\" "
               "--tune-baseline lora\n"
               "  suite run --preset lowp --data-dir path/to/corpus\n"
               "  suite run -c sweep.yaml",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("-c", "--config", help="YAML sweep file (keys: methods, tasks, models, seeds, recipe, "
                   "data_dir, store, device); flags override it")
    p.add_argument("--preset", choices=sorted(PRESETS), help="a ready sweep; 'smoke' runs offline in < 1 min, "
                   "'lowp' compares the training recipes at BF16's tuned lr")
    p.add_argument("--methods", help="comma-separated; arguments as name:key=value,key=value; compose with +")
    p.add_argument("--tasks", help="comma-separated; glue runs all 8, glue:sst2,rte a subset")
    p.add_argument("--models", help="comma-separated model names or local model folders")
    p.add_argument("--seeds", help="a count (3 -> seeds 0,1,2) or a list (0,1,2)")
    p.add_argument("--data-dir", help="local dataset folder (e.g. the original GLUE layout)")
    p.add_argument("--store", help=f"result store folder (default ./{DEFAULT_STORE})")
    p.add_argument("--force", action="store_true", help="re-run cells that already have an ok result")
    p.add_argument("--dry-run", action="store_true",
                   help="print every cell's resolved configuration (method arguments with their defaults, "
                        "task options, recipe) as one JSON object per line, and exit without running anything")
    p.add_argument("--yes", action="store_true",
                   help=f"run a sweep of more than {MAX_CELLS_WITHOUT_YES:,} cells without asking")
    tune = p.add_argument_group("hyperparameter search (the same budget for every method; selection on data "
                                "held out from training, never the reported split)")
    tune.add_argument("--tune", metavar="GRID", help='a grid searched for every method, e.g. "lr=1e-4,3e-4;r=8,16"')
    tune.add_argument("--tune-trials", type=int, metavar="N",
                      help="N trials per method drawn from its declared search space (learning rate, rank)")
    tune.add_argument("--tune-sampler", default="random", help="random (default, seeded) or tpe (Optuna)")
    tune.add_argument("--tune-seed", type=int, default=0, help="seed of the trial sampler (default 0)")
    tune.add_argument("--tune-baseline", metavar="METHOD",
                      help="search only METHOD (with --tune or --tune-trials); then every method runs at its "
                           "selected values, as the low-precision papers run each recipe at BF16's lr")
    tune.add_argument("--tune-each-too", action="store_true",
                      help="with --tune-baseline: also tune every other method on its own (a second view)")
    p.add_argument("--device", default=None, help="auto (default), cpu, cuda, cuda:1")
    p.add_argument("--kernels", default="auto", help="which implementation runs the number-format operations "
                   "of the recipes: auto (Triton kernels on a GPU where they take the shape, else PyTorch), "
                   "triton (wherever they take it; on a CPU under TRITON_INTERPRET=1), torch; the numbers are "
                   "the same, each cell stores the choice")
    p.add_argument("--fast-emulation", default="auto", choices=["auto", "on", "off"],
                   help="the emulated recipes' quantisers fused by torch.compile: auto (where it can build code: "
                        "a C++ compiler on a CPU, Triton on a GPU), on, off; the numbers are the same bit for bit, "
                        "each cell stores the choice and the share of calls that ran compiled")
    p.add_argument("--export-dir", help="save each trained model, merged, as a transformers folder here")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--skip-unsupported", action="store_true",
                   help="run the rest of the sweep when a method cannot run on a model with the "
                        "installed libraries (default: refuse the sweep before any cell runs)")
    p.add_argument("--executor", help="where cells run: local (default), or a registered executor "
                   "('suite list executors')")
    g = p.add_argument_group("recipe overrides (also the keys of a sweep file's recipe:)")
    for flag in option_flags([("", Recipe)]):
        switch = {"nargs": "?", "const": "true"} if flag.type is bool else {}  # --grad-checkpointing [false]
        g.add_argument(flag.flag, dest=f"recipe_{flag.key}", metavar=flag.key.upper(),
                       choices=flag.choices, help=flag.help, **switch)
    e = p.add_argument_group("executor options (each names the executors that take it)")
    for eflag in executor_flags():
        owners = f" [{', '.join(eflag.owners)}]"
        if eflag.is_bool:
            e.add_argument(eflag.flag, dest=f"executor_{eflag.key}", action="store_true", default=None,
                           help=eflag.help + owners)
        else:
            e.add_argument(eflag.flag, dest=f"executor_{eflag.key}", metavar=eflag.key.upper(),
                           help=eflag.help + owners)
    t = p.add_argument_group("task options (also a sweep file's task_options: {family: {key: value}})")
    taken = {option for action in p._actions for option in action.option_strings}
    for option in task_option_flags():
        if option.flag not in taken:
            owners = f"[task {', '.join(option.owners)}]"
            t.add_argument(option.flag, dest=f"task_{option.key}", metavar=option.key.upper(),
                           help=f"{option.help} {owners}" if option.help else owners)
    p.set_defaults(handler=main)


def executor_options_given(args: argparse.Namespace) -> dict[str, Any]:
    """The executor flags the user gave (name -> raw value); the chosen executor checks them."""
    return {flag.key: value for flag in executor_flags()
            if (value := getattr(args, f"executor_{flag.key}", None)) is not None}


def load_sweep_file(path: str) -> dict[str, Any]:
    import yaml

    from suite.app.sweep import check_recipe_keys

    check_sweep_file_kind(path)
    if os.path.getsize(path) > MAX_SWEEP_FILE_BYTES:
        raise UserError(f"sweep file '{path}' is {os.path.getsize(path):,} bytes; a sweep file is a few lines "
                        f"(the limit is {MAX_SWEEP_FILE_BYTES:,})")
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except UnicodeDecodeError as exc:
        raise UserError(f"sweep file '{path}' is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise UserError(f"sweep file '{path}' cannot be read ({exc.strerror or exc}); check its permissions") from None
    try:
        # Anchors and aliases (&a / *a) are refused: nested aliases expand without bound ("billion laughs").
        if any(isinstance(event, yaml.AliasEvent) for event in yaml.parse(text, Loader=yaml.SafeLoader)):
            raise UserError(f"sweep file '{path}' uses YAML aliases (*name); write the values out instead")
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise UserError(f"sweep file '{path}' is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise UserError(f"sweep file '{path}' must be a mapping (methods:, tasks:, ...)")
    unknown = sorted(set(data) - SWEEP_KEYS)
    if unknown:
        from suite.errors import UnknownNameError

        raise UnknownNameError(f"key in sweep file '{path}'", unknown[0], SWEEP_KEYS)
    recipe = data.get("recipe") or {}
    if not isinstance(recipe, dict):
        raise UserError(f"sweep file '{path}': recipe must be a mapping")
    check_recipe_keys(recipe, f"sweep file '{path}'")
    return data


def check_sweep_file_kind(path: str) -> None:
    """A sweep file is a regular file: name what the path is instead (a folder, a device such as
    /dev/null, a pipe) rather than calling it missing."""
    import stat

    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise UserError(f"sweep file '{path}' does not exist") from None
    except OSError as exc:
        raise UserError(f"sweep file '{path}' cannot be read ({exc.strerror or exc}); check the path") from None
    if stat.S_ISDIR(mode):
        raise UserError(f"sweep file '{path}' is a folder, not a file; give the path of a YAML file with "
                        f"methods: and tasks:")
    if not stat.S_ISREG(mode):
        kind = ("a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else
                "a pipe" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else "not a file")
        raise UserError(f"sweep file '{path}' is not a regular file ({kind}); give the path of a YAML file "
                        f"with methods: and tasks:")


def _as_text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return str(value)


def task_option_flags() -> list[OptionFlag]:
    """One flag per option field of the registered task families, naming the families that take it.
    Values stay text here: each family's ``Options`` coerces its own."""
    import dataclasses

    from suite.registry import TASKS

    owned = [(entry.name, entry.target.Options) for entry in TASKS.entries()
             if dataclasses.is_dataclass(getattr(entry.target, "Options", None))]
    return option_flags(owned)


def task_options_for(args: argparse.Namespace, sweep: dict[str, Any],
                     tasks: list[tuple[str, str | None]]) -> dict[str, dict[str, Any]]:
    """Raw options per task family of the sweep: the sweep file's, then the flags (for every family
    of the sweep that has the option); a flag no task of the sweep takes is an error."""
    families = sorted({family for family, _ in tasks})
    raw = sweep.get("task_options") or {}
    if not isinstance(raw, dict) or not all(isinstance(v, dict) for v in raw.values()):
        raise UserError("task_options in a sweep file maps a task family to its options, e.g. "
                        "task_options: {gsm8k: {train_data: metamath}}")
    out = {family: dict(raw.get(family) or {}) for family in families}
    strays = sorted(set(raw) - set(families))
    if strays:
        raise UserError(f"task_options name task(s) {', '.join(strays)}, which the sweep does not run")
    for option in task_option_flags():
        value = getattr(args, f"task_{option.key}", None)
        if value is None:
            continue
        takers = [family for family in families if family in option.owners]
        if not takers:
            raise UserError(f"{option.flag} is an option of task {', '.join(option.owners)}, which this "
                            f"sweep does not run")
        for family in takers:
            out[family][option.key] = value
    return {family: options for family, options in out.items() if options}


def move_task_keys_out_of_recipe(sweep: dict[str, Any], tasks: list[tuple[str, str | None]]) -> dict[str, Any]:
    """The sweep file's recipe without the keys that became task options (``lm``'s token budget);
    those go to the options of the sweep's families that take them, with a note."""
    from suite.recipe import MOVED_TO_TASK_OPTIONS

    recipe = dict(sweep.get("recipe") or {})
    moved = [key for key in recipe if key in MOVED_TO_TASK_OPTIONS]
    if not moved:
        return recipe
    owners = {flag.key: flag.owners for flag in task_option_flags()}
    families = sorted({family for family, _ in tasks})
    options = sweep.setdefault("task_options", {})
    for key in moved:
        takers = [family for family in families if family in owners.get(key, ())]
        if not takers:
            raise UserError(f"recipe key '{key}' is an option of task {MOVED_TO_TASK_OPTIONS[key]} now, which "
                            f"this sweep does not run")
        value = recipe.pop(key)
        for family in takers:
            options.setdefault(family, {}).setdefault(key, value)
        print(f"note: recipe key '{key}' is an option of task {', '.join(takers)} now; taken as "
              f"task_options: {{{takers[0]}: {{{key}: {value}}}}}", file=sys.stderr)
    return recipe


def plan(args: argparse.Namespace, search: Any = None) -> tuple[list, dict[str, Any]]:
    """Turn flags, sweep file and preset into cells (everything validated before any training);
    ``search``: the ``--tune`` search, whose trials and tuned cells the cell-count guard counts."""
    from suite.app.sweep import (
        RecipeRule,
        build_cells,
        method_spec_from_yaml,
        parse_method_spec,
        parse_seeds,
        parse_task_list,
        seed_count,
        split_method_list,
    )

    sweep: dict[str, Any] = {}
    if args.preset:
        sweep.update({k: v for k, v in PRESETS[args.preset].items()
                      if k not in ("about", "recipe_rules", *PRESET_SEARCH_KEYS)})
    empty_file = False
    if args.config:
        from_file = load_sweep_file(args.config)
        empty_file = not from_file
        sweep.update(from_file)
    if args.methods:
        sweep["methods"] = args.methods
    if args.tasks:
        sweep["tasks"] = args.tasks
    if args.models:
        sweep["models"] = args.models
    if args.seeds:
        sweep["seeds"] = args.seeds
    for key in ("data_dir", "store", "device", "executor"):
        if getattr(args, key, None):
            sweep[key] = getattr(args, key)
    if getattr(args, "store", None) == "":
        raise UserError(f"--store '' names no folder; give a path (default ./{DEFAULT_STORE})")
    check_sweep_types(sweep)
    if empty_file and (not sweep.get("methods") or not sweep.get("tasks")):
        raise UserError(f"sweep file '{args.config}' is empty, so it names nothing to run; write methods: and "
                        f"tasks: in it (or give --methods and --tasks)")
    if not sweep.get("methods") or not sweep.get("tasks"):
        raise UserError("nothing to run: give --methods and --tasks, a sweep file (-c), "
                        "or --preset smoke")

    methods = sweep["methods"]
    if isinstance(methods, list):
        specs = [method_spec_from_yaml(m) for m in methods]
    else:
        specs = [parse_method_spec(m) for m in split_method_list(str(methods))]
    if not specs:
        raise UserError(f"no method to run in {sweep['methods']!r}: name at least one, e.g. --methods lora")
    tasks = parse_task_list(_as_text(sweep["tasks"]) or "")
    if not tasks:
        raise UserError(f"no task to run in {sweep['tasks']!r}: name at least one, e.g. --tasks smoke")
    models = [m for m in (_as_text(sweep.get("models")) or "").split(",") if m.strip()] or None
    preset_options = PRESETS[args.preset].get("task_options") if args.preset else None
    if preset_options is not None and sweep.get("task_options") is preset_options:  # no sweep file's instead
        sweep["task_options"] = follow_tasks(preset_options, tasks)
    # The preset's recipe lies below an experiment's own values; a sweep file's recipe (replacing it) above.
    from_preset = bool(args.preset) and sweep.get("recipe") is PRESETS[args.preset].get("recipe")
    recipe = move_task_keys_out_of_recipe(sweep, tasks)
    raw_options = task_options_for(args, sweep, tasks)
    # Counted before any cell (or seed list) is built: a mistyped count must not exhaust memory first.
    # A task option given as a list of values (a grid) multiplies its task's cells.
    from suite.registry import TASKS

    grids = {family: len(option_grid(TASKS.get(family).target.Options, raw, f"options of task '{family}'"))
             for family, raw in raw_options.items()}
    places = sum(grids.get(family, 1) for family, _ in set(tasks)) * len(set(models or [""]))
    check_cell_count(distinct_methods(specs), places, seed_count(sweep.get("seeds", 1)), search,
                     getattr(args, "yes", False))
    seeds = parse_seeds(sweep.get("seeds", 1))
    data_dir = sweep.get("data_dir")
    if data_dir and not os.path.isdir(data_dir):
        raise UserError(f"--data-dir '{data_dir}' does not exist")
    cli_recipe = {flag.key: getattr(args, f"recipe_{flag.key}") for flag in option_flags([("", Recipe)])
                  if getattr(args, f"recipe_{flag.key}", None) is not None}
    rules = tuple(RecipeRule.parse(item) for item in (PRESETS[args.preset].get("recipe_rules", ()) if args.preset
                                                      else ()))
    cells = build_cells(specs, tasks, models, seeds, [cli_recipe] if from_preset else [recipe, cli_recipe], data_dir,
                        raw_options, preset_layers=(recipe,) if from_preset else (), rules=rules)
    return cells, sweep


def follow_tasks(options: dict[str, dict[str, Any]], tasks: list[tuple[str, str | None]]) -> dict[str, Any]:
    """A preset's task options for the tasks the sweep runs: those of a task given in its place with
    --tasks go to each task of the sweep that takes them (``lowp --tasks lm-c4`` keeps its budget)."""
    families = sorted({family for family, _ in tasks})
    owners = {flag.key: flag.owners for flag in task_option_flags()}
    out: dict[str, dict[str, Any]] = {}
    for family, values in options.items():
        for key, value in values.items():
            for taker in [family] if family in families else [f for f in families if f in owners.get(key, ())]:
                out.setdefault(taker, {}).setdefault(key, value)
    return out


def distinct_methods(specs: list) -> int:
    """Method specs that make different cells (``lora`` and ``lora:r=8`` resolve to one)."""
    import json

    from suite.app.sweep import resolve_method_spec

    return len({json.dumps([m.to_dict() for m in resolve_method_spec(spec)], sort_keys=True, default=str)
                for spec in specs})


def print_resolved(cells: list, search: Any = None) -> int:
    """``--dry-run``: each cell as it would run, resolved (the configuration its id is made of)."""
    import json

    from suite.config import config_to_dict

    print(f"suite run --dry-run: {len(cells)} cell(s); nothing runs"
          + (f" (a search would also run trials of {dict(search.grid) or search.trials}, then the cells at "
             "its choice)" if search is not None else ""), file=sys.stderr)
    from suite.app.library_noise import quiet_library_noise
    from suite.app.sweep import method_targets
    from suite.methods.common.targets import describe_targets

    quiet_library_noise("cpu")
    placed: dict[tuple, Any] = {}  # (method, model, task): its targets and refusal, resolved once
    for cell, target in method_targets(cells):
        methods = []
        for resolved in cell.methods:
            key = (json.dumps(resolved.to_dict(), sort_keys=True, default=str), target)
            if key not in placed:
                method = resolved.instantiate()
                placed[key] = (describe_targets(method, target), method.unsupported(target))
            targets, refused = placed[key]
            methods.append(resolved.to_dict() | ({"targets": targets} if targets else {})
                           | ({"refused": refused} if refused else {}))
        print(json.dumps({"cell_id": cell.cell_id, "method": cell.label, "task": cell.task_name, "model": cell.model,
                          "seed": cell.seed, "methods": methods, "task_options": config_to_dict(cell.task_options),
                          "recipe": cell.stored_recipe()}, default=str))
    return 0


def check_kernels(mode: str, device: str) -> None:
    """``--kernels``: a known mode, and for ``triton`` a Triton to run (on a CPU its interpreter),
    checked before any cell; the kernel plugins are loaded so their implementations are registered."""
    import importlib.util

    from suite.numerics import dispatch
    from suite.registry import KERNELS

    dispatch.check_mode(mode)
    if mode == "torch" or (mode == "auto" and not str(device).startswith("cuda")):
        return  # no kernel serves here (auto uses them on a GPU only): none is loaded
    if mode == "triton":
        if importlib.util.find_spec("triton") is None:
            raise UserError("--kernels triton: Triton is not installed (pip install triton)")
        if not str(device).startswith("cuda") and not dispatch.interpreted():
            raise UserError(f"--kernels triton on device '{device}' runs the kernels in Triton's CPU interpreter "
                            "(correct, far slower): set TRITON_INTERPRET=1 to ask for that, or use --kernels auto")
    KERNELS.names()


def check_fast_emulation(mode: str, device: str) -> None:
    """``--fast-emulation on``: refused before any cell where torch.compile cannot build code."""
    from suite.numerics import compiled

    compiled.check_mode(mode)
    if mode == "on":
        compiled.active(str(device).split(":")[0], mode)


def check_cell_count(methods: int, places: int, seeds: int, search: Any, yes: bool) -> None:
    """Refuse a sweep of more than ``MAX_CELLS_WITHOUT_YES`` cells without ``--yes`` (more than
    ``MAX_CELLS`` at all), counting a search's trials and tuned cells with the default ones.

    ``methods`` x ``places`` (tasks x models) groups, each run with every seed; a search adds its
    trials per searched group and one tuned cell per default cell. With a baseline only its groups
    are searched (every group with ``--tune-each-too``) and no default cell runs."""
    groups = methods * places
    default = groups * seeds
    total = default
    parts = ""
    flags = "--methods, --tasks, --models and --seeds"
    if search is not None:
        per_group = search.trials or math.prod(len(values) for _, values in search.grid)
        flags = f"--methods, --tasks, --models, --seeds and {'--tune-trials' if search.trials else '--tune'}"
        if search.baseline:
            trials = places * (methods if search.each_too else 1) * per_group
            tuned = default + (places * max(methods - 1, 0) * seeds if search.each_too else 0)
            total = trials + tuned
            parts = f" ({trials:,} trials, {tuned:,} tuned)"
        else:
            total = default + groups * per_group + default
            parts = f" ({default:,} default, {groups * per_group:,} trials, {default:,} tuned)"
    if total > MAX_CELLS:
        raise UserError(f"this sweep has {total:,} cells{parts}, more than one sweep can hold (at most "
                        f"{MAX_CELLS:,}, even with --yes); check {flags}")
    if total > MAX_CELLS_WITHOUT_YES and not yes:
        raise UserError(f"this sweep has {total:,} cells{parts}; check {flags}, or add --yes to run them all")


# What each sweep-file key may hold (YAML gives numbers, lists and mappings where text was meant).
SWEEP_TYPES: dict[str, tuple[type, ...]] = {
    "methods": (str, list), "tasks": (str, list), "models": (str, list), "seeds": (int, str, list),
    "recipe": (dict,), "data_dir": (str,), "store": (str,), "device": (str,), "executor": (str,),
    "task_options": (dict,),
}


def check_sweep_types(sweep: dict[str, Any]) -> None:
    for key, allowed in SWEEP_TYPES.items():
        value = sweep.get(key)
        if value is not None and (not isinstance(value, allowed) or isinstance(value, bool)):
            names = " or ".join({str: "text", list: "a list", int: "a number", dict: "a mapping"}[t] for t in allowed)
            raise UserError(f"sweep key '{key}' must be {names}, got {type(value).__name__}: {value!r}")


def check_output_folder(path: str, flag: str) -> None:
    """A folder a run will write into exists (or can be made) and is writable, before any training."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise UserError(f"{flag} '{path}' is a file, not a folder")
    try:
        os.makedirs(path, exist_ok=True)
        probe = os.path.join(path, f".write-probe-{os.getpid()}")
        with open(probe, "w") as fh:
            fh.write("suite")
        os.remove(probe)
    except OSError as exc:
        raise UserError(f"{flag} '{path}' is not writable: {exc.strerror or exc}") from None


def preflight(cells: list) -> None:
    """Check every distinct task's data source and every recipe's optimizer before any cell trains."""
    from suite.optim import check_optimizer
    from suite.registry import TASKS

    seen = set()
    for cell in cells:  # the task as the cell builds it: its options decide which files it reads
        key = (cell.task, cell.subtask, cell.data_dir, repr(cell.task_options))
        if key not in seen:
            seen.add(key)
            TASKS.get(cell.task).target(subtask=cell.subtask, data_dir=cell.data_dir,
                                        options=cell.task_options).check_data()
    for name in sorted({cell.recipe.optimizer for cell in cells}):
        check_optimizer(name)


def drop_unsupported(cells: list, skip: bool) -> list:
    """Ask every method whether it can run on each model before any cell trains.

    Refused pairs end the sweep with one message naming method, model family, reason and
    remedy (exit 2), or with ``--skip-unsupported`` are listed and left out.
    """
    from suite.app.sweep import unsupported_cells

    runnable, refusals = unsupported_cells(cells)
    if not refusals:
        return cells
    lines = "\n".join(f"  {r.describe()}" for r in refusals)
    if not skip:
        raise UserError(f"{len(refusals)} method/model pair(s) cannot run with the installed libraries; "
                        f"nothing was run:\n{lines}\nDrop them from --methods, or add --skip-unsupported "
                        f"to run the rest of the sweep without them.")
    print(f"suite run: leaving out {len(cells) - len(runnable)} cell(s) that cannot run here:\n{lines}",
          file=sys.stderr)
    return runnable


def search_supported(found: list, cells: list, search: Any) -> list:
    """The search's groups whose default cells still run, once every trial configuration was asked
    whether its methods can run on its model; one that cannot ends the sweep before any cell runs
    (an equal budget per method: a trial is never silently dropped)."""
    from suite.app.sweep import unsupported_cells
    from suite.app.tuning import search_cells

    kept = {c.cell_id for c in cells}
    found = [group for group in found if group.base.cell_id in kept]
    present = {id(g) for g in found}
    orphans = [g for g in found if g.source is not None and id(g.source) not in present]
    if orphans:  # --skip-unsupported left out the baseline there: nothing to inherit
        g = orphans[0]
        raise UserError(f"--tune-baseline {g.source.base.spec.label} cannot run on {g.base.model}, so "
                        f"'{g.base.spec.label}' there has no values to inherit; nothing was run. Drop that "
                        f"model, or name a baseline that runs on it")
    _, refusals = unsupported_cells(search_cells(found))
    if refusals:
        lines = "\n".join(f"  {r.describe()}" for r in refusals)
        fix = ("Drop those values from --tune." if search.grid else
               "Change the method arguments --tune-trials draws around.")
        raise UserError(f"{len(refusals)} configuration(s) the search would try cannot run; nothing was run:\n"
                        f"{lines}\n{fix}")
    return found


def search_from(args: argparse.Namespace) -> Any:
    """The search the flags ask for; a preset's where the flags name none (its baseline stays unless
    --tune-baseline names another)."""
    from suite.app.tuning import parse_tune

    preset = PRESETS.get(getattr(args, "preset", None) or "", {})
    text, trials = getattr(args, "tune", None), getattr(args, "tune_trials", None)
    if text is None and trials is None:
        text = preset.get("tune")
    baseline = getattr(args, "tune_baseline", None)
    return parse_tune(text, trials, getattr(args, "tune_sampler", "random"), getattr(args, "tune_seed", 0),
                      preset.get("tune_baseline") if baseline is None else baseline,
                      bool(getattr(args, "tune_each_too", False) or preset.get("tune_each_too")))


def main(args: argparse.Namespace) -> int:
    search = search_from(args)
    cells, sweep = plan(args, search)
    if getattr(args, "dry_run", False):
        return print_resolved(cells, search)
    from suite.app.driver import run_sweep
    from suite.app.executor import make_executor
    from suite.app.library_noise import quiet_library_noise
    from suite.app.provenance import versions_line
    from suite.app.runner import RunSettings, pick_device, timestamp_run_id
    from suite.reports.run_summary import print_summary
    from suite.results.store import ResultStore

    store = ResultStore(sweep.get("store") or DEFAULT_STORE)
    # The executor and its options are checked first: a wrong flag costs no data check.
    executor = make_executor(str(sweep.get("executor") or "local"), executor_options_given(args), store.uri)
    found = None
    if search is not None:
        from suite.app.tuning import prepare, search_cells

        if not executor.waits:
            raise UserError("--tune needs each trial's result before it selects: drop --no-wait")
        found = prepare(cells, search)  # every trial's values resolved now, not after the default cells ran
    device = pick_device(sweep.get("device") or "auto")
    check_kernels(args.kernels, device)
    check_fast_emulation(args.fast_emulation, device)
    quiet_library_noise(device)  # before the checks below import peft
    preflight(cells + (search_cells(found) if found is not None else []))
    print(f"suite run with {versions_line()}", file=sys.stderr)
    cells = drop_unsupported(cells, args.skip_unsupported)
    if found is not None:
        found = search_supported(found, cells, search)
    # The store is made only once every other check has passed: a refused run leaves no folder.
    if not store.remote:
        store.check_writable()
        for stale in store.clean_stale_temporaries():
            print(f"suite run: removed {stale}, a temporary file a killed run left behind", file=sys.stderr)
    if args.export_dir:
        check_output_folder(args.export_dir, "--export-dir")

    done = set() if args.force else store.ok_cell_ids()
    inherit = search is not None and bool(search.baseline)
    if inherit:  # the baseline's protocol: no default configuration runs, every cell is the search's
        from suite.app.tuning import trial_count

        todo = []
        searched = "every method's" if search.each_too else f"{search.baseline}'s"
        own = ", and each other method at its own" if search.each_too else ""
        print(f"suite run: {trial_count(found, search)} trial(s) of {searched} search, then "
              f"{sum(len(g.seeds) for g in found)} tuned cell(s): every method at {search.baseline}'s selected "
              f"values{own} -> {store.root}", file=sys.stderr)
    else:
        todo = [c for c in cells if c.cell_id not in done]
        print(f"suite run: {len(cells)} cells, {len(cells) - len(todo)} already done, {len(todo)} to run "
              f"-> {store.root}", file=sys.stderr)
    if args.preset:
        print(f"preset {args.preset}: {PRESETS[args.preset]['about']}", file=sys.stderr)
    settings = RunSettings(device=device, run_id=timestamp_run_id(), export_dir=args.export_dir,
                           progress=not args.no_progress, kernels=args.kernels,
                           fast_emulation=args.fast_emulation)
    outcomes = run_sweep(todo, store, executor, settings)
    ran = [] if inherit else list(cells)
    if search is not None:
        from suite.app.tuning import run_search

        def run_more(more: list) -> None:
            finished = set() if args.force else store.ok_cell_ids()
            waiting = [c for c in more if c.cell_id not in finished]
            if inherit:
                print(f"suite run: {len(more)} cells, {len(more) - len(waiting)} already done, {len(waiting)} "
                      f"to run", file=sys.stderr)
            outcomes.extend(run_sweep(waiting, store, executor, settings))
            ran.extend(more)

        run_search(list(cells), search, store, run_more, lambda line: print(line, file=sys.stderr), found)
    if not executor.waits:  # --no-wait: the cells' jobs write their records; status looks later
        submitted = executor.submitted if executor.submitted is not None else len(todo)
        if submitted:
            print(f"suite run: {submitted} cell(s) submitted; each writes its record to {store.root} "
                  f"when it finishes. See how far they got: suite status {store.root}", file=sys.stderr)
        return 0
    store.compact()
    return print_summary(store, [c for c in ran if c.stage != "trial"], outcomes)
