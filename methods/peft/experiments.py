"""peft's experiment folders as method specs: run peft's own configurations, as its files say.

peft's ``method_comparison/MetaMathQA`` benchmark describes each experiment as a folder
``experiments/<method>/<name>/`` holding peft's ``adapter_config.json`` (absent for full
fine-tuning) and optionally ``training_params.json``, whose keys replace, one top-level key at a
time, those of the benchmark's ``default_training_params.json`` (peft's ``utils.get_train_config``
merges the two dicts shallowly, so an experiment that gives ``optimizer_kwargs: {lr: 1e-5}`` trains
at torch AdamW's default weight decay, not the defaults' 0.1).

``peft-experiment:<dir>`` reads such a folder; ``peft:<method>/<name>`` names one of the
experiments peft publishes (``peft_published.PUBLISHED``). Each becomes a ``MethodSpec``: the registered method
whose peft arguments reproduce the adapter config (every field either mapped onto the method's
arguments or at peft's default), the training values as the experiment's recipe, and its name as
the label. A field that cannot be reproduced is refused with its name, before any cell runs.
``target_modules: null`` stays peft's own default for the architecture (``PEFT_DEFAULT_TARGETS``).
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

from suite.errors import UserError
from suite.methods.common.targets import PEFT_DEFAULT_TARGETS
from suite.methods.peft.peft_published import PUBLISHED

# Where the published experiments and the default training parameters below come from.
PEFT_SOURCE = "huggingface/peft method_comparison/MetaMathQA at commit 5d602fdb (2026-08-21)"
DEFAULTS_FILE = "default_training_params.json"
ADAPTER_FILE = "adapter_config.json"
TRAINING_FILE = "training_params.json"
FULL_FINETUNING = "full-finetuning"  # peft's folder name for experiments without an adapter

# The values of peft's default_training_params.json (PEFT_SOURCE), used when a folder is not inside a
# checkout of the benchmark (where the checkout's own file is read instead).
DEFAULT_TRAINING_PARAMS: dict[str, Any] = {
    "model_id": "meta-llama/Llama-3.2-3B", "dtype": "bfloat16", "max_seq_length": 768, "batch_size": 4,
    "batch_size_eval": 50, "max_steps": 5000, "eval_steps": 250, "compile": False, "use_gc": False, "seed": 0,
    "grad_norm_clip": 1.0, "optimizer_type": "AdamW", "optimizer_kwargs": {"lr": 1e-4, "weight_decay": 0.1},
    "lr_scheduler": "cosine", "use_amp": False, "autocast_adapter_dtype": True, "attn_implementation": None,
    "generation_kwargs": {"max_length": 800, "max_new_tokens": 300},
    "query_template": "Question: {query} Think step by step.\nAnswer:", "init_kv_cache_prefix": None,
}
WARMUP_STEP_RATIO = 0.1  # peft's utils.py: warm-up steps = int(0.1 * max_steps) before its cosine decay
ADAMW_WEIGHT_DECAY = 0.01  # torch.optim.AdamW's default, what an experiment's optimizer_kwargs without it gets

# What the peft-metamath preset runs unless --methods says otherwise: every experiment peft publishes that
# the suite reproduces (suite.methods.peft.peft_published), each at its own training values.
PRESET_EXPERIMENTS = tuple(PUBLISHED)

# Adapter-config fields that describe the file rather than the adapter, and those peft fills in from the
# base model when it builds a prompt-learning adapter (they restate the model the file was saved with).
BOOKKEEPING = {"peft_type", "task_type", "base_model_name_or_path", "revision", "inference_mode", "auto_mapping",
               "peft_version", "num_layers", "token_dim", "num_attention_heads", "num_transformer_submodules"}
# peft arguments that change what is printed, not what is trained.
NO_EFFECT = {"progressbar"}


@dataclasses.dataclass(frozen=True)
class Experiment:
    """One experiment, read: the method it runs (name and arguments), its recipe values, and notes."""

    name: str  # "<method>/<experiment>", peft's experiment name
    method: str
    args: dict[str, Any]
    recipe: dict[str, Any]
    model_id: str
    source: str  # the folder read, or PEFT_SOURCE for a published one

    @property
    def label(self) -> str:
        """How its cells are labelled: by the experiment, since two of one method differ in their recipes."""
        return f"peft:{self.name}"


def experiment_from_text(text: str) -> Experiment:
    """``peft-experiment:<dir>`` or ``peft:<method>/<name>``, read and mapped."""
    kind, _, ref = text.partition(":")
    if not ref.strip():
        raise UserError(f"'{text}' names no experiment: write peft-experiment:<folder> or peft:<method>/<name> "
                        f"(one of {', '.join(sorted(PUBLISHED))})")
    return read_folder(ref.strip()) if kind == "peft-experiment" else published(ref.strip())


def published(name: str) -> Experiment:
    if name not in PUBLISHED:
        from suite.errors import UnknownNameError

        raise UnknownNameError("published peft experiment", name, sorted(PUBLISHED))
    entry = PUBLISHED[name]
    return map_experiment(name, entry.adapter, {**DEFAULT_TRAINING_PARAMS, **entry.training}, PEFT_SOURCE)


def read_folder(path: str) -> Experiment:
    """An experiment folder as peft's run.py reads it: its adapter config, its training parameters over the
    benchmark's defaults (the checkout's file two levels up, else ``DEFAULT_TRAINING_PARAMS``)."""
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise UserError(f"peft experiment folder '{path}' does not exist")
    adapter_file, training_file = folder / ADAPTER_FILE, folder / TRAINING_FILE
    if not adapter_file.is_file() and folder.parent.name != FULL_FINETUNING:
        raise UserError(f"peft experiment folder '{path}' has no {ADAPTER_FILE}; only peft's "
                        f"{FULL_FINETUNING}/<name> experiments have none")
    defaults_file = folder.resolve().parent.parent.parent / DEFAULTS_FILE
    defaults = _read_json(defaults_file) if defaults_file.is_file() else DEFAULT_TRAINING_PARAMS
    training = _read_json(training_file) if training_file.is_file() else {}
    adapter = _read_json(adapter_file) if adapter_file.is_file() else None
    name = f"{folder.resolve().parent.name}/{folder.resolve().name}"
    return map_experiment(name, adapter, {**defaults, **training}, str(folder.resolve()))


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"cannot read {path}: {exc}") from None
    if not isinstance(value, dict):
        raise UserError(f"{path} holds {type(value).__name__}, not a JSON object")
    return value


def map_experiment(name: str, adapter: dict[str, Any] | None, training: dict[str, Any], source: str) -> Experiment:
    where = f"peft experiment '{name}'"
    method, args = ("full", {}) if adapter is None else map_adapter(adapter, where)
    return Experiment(name, method, args, map_training(training, where), str(training.get("model_id") or ""),
                      source)


# -- the adapter config ------------------------------------------------------------------------------
def map_adapter(adapter: dict[str, Any], where: str) -> tuple[str, dict[str, Any]]:
    """The registered method and arguments whose peft config equals ``adapter``: among the methods built
    on its config class whose fixed arguments it has, the one with the most of them, then the one whose
    own defaults it keeps most often (``use_rslora: true`` reads as rslora, not lora:rslora=true)."""
    import peft

    peft_type = str(adapter.get("peft_type") or "")
    config_class = _config_class(peft, peft_type, where)
    peft_defaults = _defaults(config_class)
    values = {**peft_defaults, **adapter}
    refusals: list[str] = []
    best: tuple[tuple[int, int, bool], str, dict[str, Any]] | None = None
    for name, cls, (fields, fixed) in _methods_on(config_class.__name__):
        target_args = {"target_modules", *getattr(cls, "target_args", {})}
        differs = [f"{arg}={value!r}" for arg, value in fixed.items()
                   if arg not in NO_EFFECT and not _same(values.get(arg), value)]
        if differs:
            refusals.append(f"{name} always sets {', '.join(differs)}")
            continue
        unmatched = [key for key in adapter if key not in BOOKKEEPING | NO_EFFECT and key not in fixed
                     and key not in fields.values() and key not in target_args
                     and not _same(adapter[key], peft_defaults.get(key))]
        if unmatched:
            refusals.append(f"{name}: {', '.join(f'{k}={adapter[k]!r}' for k in unmatched)} has no argument here")
            continue
        args = {field: _targets(values.get(arg), where) if arg in target_args else values.get(arg)
                for field, arg in fields.items()}
        own = {f.name: f.default for f in dataclasses.fields(cls.Config)}
        score = (len(fixed), sum(_same(v, own.get(k)) for k, v in args.items()), name == peft_type.lower())
        if best is None or score > best[0]:
            best = (score, name, args)
    if best is None:
        detail = "; ".join(refusals) or f"no method of this suite builds peft's {config_class.__name__}"
        raise UserError(f"{where}: cannot be run as peft's files say ({detail})")
    _, name, args = best
    from suite.config import build_config
    from suite.registry import METHODS

    args = {k: tuple(v) if isinstance(v, list) else v for k, v in args.items()}
    build_config(METHODS.get(name).target.Config, dict(args), f"{where} as method '{name}'")  # refused if invalid
    return name, args


def _config_class(peft: Any, peft_type: str, where: str) -> type:
    from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING

    known = {str(getattr(k, "value", k)): v for k, v in PEFT_TYPE_TO_CONFIG_MAPPING.items()}
    if peft_type not in known:
        raise UserError(f"{where}: peft_type '{peft_type}' is not one the installed peft knows "
                        f"({', '.join(sorted(known)[:30])}, ...)")
    return known[peft_type]


def _defaults(config_class: type) -> dict[str, Any]:
    out = {}
    for f in dataclasses.fields(config_class):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            out[f.name] = f.default_factory()  # type: ignore[misc]
    return out


def _methods_on(config_class_name: str) -> list[tuple[str, type, tuple[dict[str, str], dict[str, Any]]]]:
    """The registered methods that build ``config_class_name`` and declare how (with that declaration)."""
    from suite.methods.peft.library import PeftMethod
    from suite.registry import METHODS

    out = []
    for name in METHODS.names():
        cls = METHODS.get(name).target
        if isinstance(cls, type) and issubclass(cls, PeftMethod) and cls.peft_config_class == config_class_name:
            declared = cls.peft_argument_map()
            if declared is not None:
                out.append((name, cls, declared))
    return out


def _targets(value: Any, where: str) -> tuple[str, ...]:
    if value is None:
        return (PEFT_DEFAULT_TARGETS,)
    if isinstance(value, str):
        raise UserError(f"{where}: target_modules is the pattern {value!r}; the suite takes module names "
                        f"(a list), so name them")
    return tuple(sorted(str(v) for v in value))


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (list, tuple, set)) and isinstance(b, (list, tuple, set)):
        return sorted(map(str, a)) == sorted(map(str, b))
    if isinstance(a, float) or isinstance(b, float):
        try:
            return math.isclose(float(a), float(b), rel_tol=1e-12)
        except (TypeError, ValueError):
            return False
    if a in ({}, [], None) and b in ({}, [], None):
        return True
    return a == b


# -- the training parameters ---------------------------------------------------------------------------
def map_training(params: dict[str, Any], where: str) -> dict[str, Any]:
    """peft's training parameters as the suite's recipe; a value with no counterpart is refused.
    ``model_id`` and ``seed`` are not the recipe's: the sweep's --models (the preset defaults to peft's
    model) and --seeds set them."""
    recipe: dict[str, Any] = {}
    refused: list[str] = []
    unknown = sorted(set(params) - set(DEFAULT_TRAINING_PARAMS))
    if unknown:
        refused.append(f"{', '.join(unknown)} (not a training parameter of peft's benchmark)")

    def need(key: str, ok: bool, why: str) -> None:
        if key in params and not ok:
            refused.append(f"{key}={params[key]!r} ({why})")

    dtypes = {"bfloat16": "bf16", "float32": "fp32"}
    need("dtype", params.get("dtype") in dtypes, "the suite trains float32 weights, with bf16 autocast or without")
    if params.get("dtype") in dtypes:
        recipe["precision"] = dtypes[params["dtype"]]
    for key, field in (("max_seq_length", "max_length"), ("batch_size", "batch_size"), ("max_steps", "max_steps"),
                       ("batch_size_eval", "eval_batch_size"), ("eval_steps", "eval_every"),
                       ("grad_norm_clip", "max_grad_norm"), ("use_gc", "grad_checkpointing")):
        if key in params:
            recipe[field] = params[key]
    need("compile", not params.get("compile"), "the suite trains eagerly")
    need("use_amp", not params.get("use_amp"), "fp16/bf16 autocast over a bfloat16 model has no counterpart here")
    need("autocast_adapter_dtype", params.get("autocast_adapter_dtype", True) is True,
         "the suite keeps adapter weights in float32")
    need("attn_implementation", params.get("attn_implementation") is None, "the suite uses the model's default")
    need("init_kv_cache_prefix", params.get("init_kv_cache_prefix") is None, "no counterpart here")
    need("query_template", params.get("query_template") == DEFAULT_TRAINING_PARAMS["query_template"],
         "the gsm8k task's prompt is peft's default template")
    need("generation_kwargs", params.get("generation_kwargs") == DEFAULT_TRAINING_PARAMS["generation_kwargs"],
         "decoding is the gsm8k task's, set by its options (max_new_tokens 300)")
    need("optimizer_type", str(params.get("optimizer_type", "AdamW")).lower() == "adamw",
         "only AdamW is mapped; peft's lora-fa, lora+ and riemannian optimizers are not")
    optimizer = dict(params.get("optimizer_kwargs") or {})
    extra = sorted(set(optimizer) - {"lr", "weight_decay"})
    if extra:
        refused.append(f"optimizer_kwargs {', '.join(extra)} (only lr and weight_decay are mapped)")
    if "lr" not in optimizer:
        refused.append("optimizer_kwargs without lr (peft's AdamW needs it)")
    else:
        recipe["lr"] = float(optimizer["lr"])
    recipe["optimizer"] = "adamw"
    recipe["decay"] = "all"  # peft's AdamW takes model.parameters(): one group, every parameter decayed
    recipe["weight_decay"] = float(optimizer.get("weight_decay", ADAMW_WEIGHT_DECAY))
    schedule = params.get("lr_scheduler")
    need("lr_scheduler", schedule in (None, "cosine"), "peft's benchmark has cosine or none")
    if schedule == "cosine":
        recipe.update(schedule="cosine", warmup_ratio=WARMUP_STEP_RATIO)
    elif schedule is None and "lr_scheduler" in params:
        recipe.update(schedule="constant", warmup_ratio=0.0)
    if refused:
        raise UserError(f"{where}: cannot be run as peft's files say: " + "; ".join(refused))
    from suite.config import build_config
    from suite.recipe import Recipe

    build_config(Recipe, dict(recipe), f"{where}'s training parameters")  # refused if out of range
    return recipe

