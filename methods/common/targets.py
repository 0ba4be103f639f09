"""Which modules a method adapts, per model family, and a clear error when they are absent.

Every method that adapts "the attention projections" or "all linear layers" asks here,
so peft-based and written-here methods pick the same modules for the same model, and a
user-named module that the model lacks ends in one message naming the method, the
argument and the names the model does have. No torch import at module level: plugin
modules import this at registration time.
"""

from __future__ import annotations

from typing import Any

from suite.errors import UserError

_BERT = {
    "attention": ("query", "value"),
    "all-linear": ("query", "key", "value", "output.dense", "intermediate.dense"),
    "attn-out": ("attention.output.dense",),
    "ffn-up": ("intermediate.dense",),
    "ffn-down": ("output.dense",),
    "norm": ("LayerNorm",),
    "ia3": ("key", "value", "output.dense"),
    "ia3-ff": ("output.dense",),
}
_LLAMA = {
    "attention": ("q_proj", "v_proj"),
    "all-linear": ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
    "attn-out": ("o_proj",),
    "ffn-up": ("gate_proj", "up_proj"),
    "ffn-down": ("down_proj",),
    "norm": ("input_layernorm", "post_attention_layernorm"),
    "ia3": ("k_proj", "v_proj", "down_proj"),
    "ia3-ff": ("down_proj",),
}
_VIT = {  # transformers 5's ViT: Llama-style attention projections, fc1/fc2 MLP, pre-norms
    "attention": ("q_proj", "v_proj"),
    "all-linear": ("q_proj", "k_proj", "v_proj", "o_proj", "mlp.fc1", "mlp.fc2"),
    "attn-out": ("o_proj",),
    "ffn-up": ("mlp.fc1",),
    "ffn-down": ("mlp.fc2",),
    "norm": ("layernorm_before", "layernorm_after"),
    "ia3": ("k_proj", "v_proj", "mlp.fc2"),
    "ia3-ff": ("mlp.fc2",),
}
# Where adapters go unless told: every linear layer of the transformer blocks, for every
# adapter method alike, so a comparison between them is at equal placement. All linear
# layers rather than LoRA's original (query, value): QLoRA (Dettmers et al. 2023) and
# Biderman et al. 2024 find it needed to match full fine-tuning, and on MiniLM + SST-2
# (300 steps) LoRA reached 0.842 all-linear vs 0.818 on query/value at the same step size.
DEFAULT_ADAPTER_TARGETS = "all-linear"
# A target name that leaves the choice to peft (its ``target_modules: null``: peft's own default for the
# architecture, e.g. q_proj and v_proj for Llama's LoRA), as a peft experiment's files ask.
PEFT_DEFAULT_TARGETS = "peft-default"
BERT_LIKE = ("bert", "roberta", "xlm-roberta", "electra", "camembert", "mpnet")
LLAMA_LIKE = ("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "olmo", "olmo2", "granite")
VIT_LIKE = ("vit",)
FAMILY_TARGETS: dict[str, dict[str, tuple[str, ...]]] = {
    **{f: _BERT for f in BERT_LIKE}, **{f: _LLAMA for f in LLAMA_LIKE}, **{f: _VIT for f in VIT_LIKE},
}


def leaves_targets_to_peft(explicit: Any) -> bool:
    return bool(explicit) and tuple(explicit) == (PEFT_DEFAULT_TARGETS,)


def no_default_targets(method: str, model_type: str, explicit: Any, peft_knows: bool = False) -> str | None:
    """Why ``method`` cannot pick its modules on ``model_type`` by itself (None: it can, or the user named them)."""
    if leaves_targets_to_peft(explicit):
        return None if peft_knows or not model_type else (
            f"target_modules={PEFT_DEFAULT_TARGETS} asks for peft's default modules, and peft has none for model "
            f"family '{model_type}'; name them with {method}:target_modules=name1;name2")
    if explicit or not model_type or model_type in FAMILY_TARGETS or peft_knows:
        return None
    return (f"there are no default target modules for model family '{model_type}'; name them with "
            f"{method}:target_modules=name1;name2 (module names of the model)")


def family_of(model: Any) -> str:
    config = getattr(model, "config", None)
    return getattr(config, "model_type", "") or ""


def module_matches(name: str, key: str) -> bool:
    """peft's rule for a target key: the full name, or a dotted suffix of it."""
    return name == key or name.endswith("." + key)


def adaptable_names(model: Any) -> list[str]:
    """Suffix names of the modules a user may target (linear, conv, embedding and norm layers)."""
    import torch

    kinds = (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Embedding, torch.nn.LayerNorm)
    out = set()
    for name, module in model.named_modules():
        if name and (isinstance(module, kinds) or "norm" in type(module).__name__.lower()):
            parts = name.split(".")
            out.add(parts[-1])
            if len(parts) > 1 and not parts[-2].isdigit():
                out.add(".".join(parts[-2:]))
    return sorted(out)


def resolve_targets(model: Any, method: str, kind: str, explicit: tuple[str, ...] | list[str] | None,
                    argument: str = "target_modules") -> list[str] | None:
    """The module keys to adapt: the user's (checked) or the family default for ``kind``.

    Returns None when the family is unknown and the user named nothing: the caller then
    falls back to its library's own default (peft knows many families) or fails clearly.
    """
    if leaves_targets_to_peft(explicit):
        return None  # peft picks them (its default for the architecture)
    names = [n for n, _ in model.named_modules() if n]
    if explicit:
        missing = [k for k in explicit if not any(module_matches(n, k) for n in names)]
        if missing:
            raise UserError(
                f"method '{method}' cannot apply to this model: argument '{argument}' names "
                f"{', '.join(repr(m) for m in missing)}, which the model ({family_of(model) or 'unknown'}) "
                f"does not have. Valid choices: {', '.join(adaptable_names(model)[:60])}"
            )
        return list(explicit)
    family = family_of(model)
    table = FAMILY_TARGETS.get(family)
    if table is None or kind not in table:
        return None
    keys = [k for k in table[kind] if any(module_matches(n, k) for n in names)]
    if not keys:
        raise UserError(
            f"method '{method}' cannot apply to this model: none of its default modules "
            f"({', '.join(table[kind])}) exist. Set '{argument}' to names it has: "
            f"{', '.join(adaptable_names(model)[:60])}"
        )
    return keys


def require_targets(model: Any, method: str, kind: str, explicit: tuple[str, ...] | None,
                    argument: str = "target_modules") -> list[str]:
    """Like ``resolve_targets`` but an unknown family is an error (written-here methods have no fallback)."""
    if leaves_targets_to_peft(explicit):
        raise UserError(f"method '{method}' is not one of peft's tuners, so {argument}={PEFT_DEFAULT_TARGETS} "
                        f"(peft's own default) does not apply; name its modules")
    keys = resolve_targets(model, method, kind, explicit, argument)
    if keys is None:
        raise UserError(
            f"method '{method}' has no default modules for model family '{family_of(model) or 'unknown'}'. "
            f"Set '{argument}' (separate names with ';'), e.g. from: {', '.join(adaptable_names(model)[:60])}"
        )
    return keys


def matching_modules(model: Any, keys: list[str], module_type: Any = None,
                     exclude: tuple[str, ...] = ()) -> list[tuple[str, Any]]:
    """(name, module) pairs whose name matches a key, optionally of one type, outside ``exclude`` prefixes."""
    out = []
    for name, module in model.named_modules():
        if not name or any(name == e or name.startswith(e + ".") for e in exclude):
            continue
        if module_type is not None and not isinstance(module, module_type):
            continue
        if any(module_matches(name, k) for k in keys):
            out.append((name, module))
    return out


def set_module(model: Any, name: str, new: Any) -> None:
    """Replace the submodule at dotted ``name``."""
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def transformer_blocks(model: Any) -> Any:
    """The longest ModuleList of the model: its transformer blocks."""
    import torch

    lists = [m for m in model.modules() if isinstance(m, torch.nn.ModuleList)]
    if not lists:
        raise UserError("this model has no list of transformer blocks (nn.ModuleList)")
    return max(lists, key=len)


HEAD_NAMES = ("classifier", "score", "lm_head")  # a task's head, absent from a bare backbone skeleton


def placement_refusal(method: str, target: Any, kind: str, explicit: Any, rank: int | None = None) -> str | None:
    """Checked on the model's structure before any cell runs: every ``target_modules`` name exists,
    and (for SVD-initialised adapters, ``rank``) the rank fits every adapted layer. None when it
    fits or the structure is unknown offline."""
    skeleton = target.skeleton()
    if skeleton is None:
        return None
    names = [n for n, _ in skeleton.named_modules() if n]
    if leaves_targets_to_peft(explicit):
        explicit = peft_default_targets(target.model_type)
    if explicit:
        missing = [k for k in explicit if k not in HEAD_NAMES and not any(module_matches(n, k) for n in names)]
        if missing:
            return (f"target_modules names {', '.join(repr(m) for m in missing)}, which the model "
                    f"({target.model_type or 'unknown'}) does not have; valid: {', '.join(adaptable_names(skeleton)[:40])}")
    if rank:
        import torch

        table = FAMILY_TARGETS.get(target.model_type, {})
        keys = list(explicit) if explicit else list(table.get(kind, ()))
        layers = [(n, m) for n, m in matching_modules(skeleton, keys, torch.nn.Linear)]
        if layers:
            name, layer = min(layers, key=lambda item: min(item[1].in_features, item[1].out_features))
            limit = min(layer.in_features, layer.out_features)
            if rank > limit:
                return (f"r={rank} exceeds the rank of {name} ({layer.out_features}x{layer.in_features}), so its "
                        f"SVD initialisation would silently stop at {limit}; choose r <= {limit}")
    return None


class TargetedMethod:
    """Mixin of written-here adapters that place themselves on ``target_modules`` (or the family
    default): an unknown family without named modules, a module name the model lacks, or (for
    SVD-initialised ones, ``rank_bounded``) a rank above a layer's are refused before any cell runs."""

    name: str
    config: Any
    rank_bounded: bool = False

    def unsupported(self, target: Any) -> str | None:
        explicit = getattr(self.config, "target_modules", None)
        if leaves_targets_to_peft(explicit):
            return f"it is not one of peft's tuners, so target_modules={PEFT_DEFAULT_TARGETS} does not apply"
        reason = no_default_targets(self.name, target.model_type, explicit)
        if reason:
            return reason
        rank = getattr(self.config, "r", None) if self.rank_bounded else None
        return placement_refusal(self.name, target, DEFAULT_ADAPTER_TARGETS, explicit, rank)

    def placement(self, model: Any) -> str:
        """The keys its ``apply`` resolved (named, or the family's default), on the adapted model."""
        return ";".join(require_targets(model, self.name, DEFAULT_ADAPTER_TARGETS,
                                        getattr(self.config, "target_modules", None)))


def peft_default_targets(model_type: str, peft_type: str = "LORA") -> tuple[str, ...] | None:
    """The modules peft adapts for ``target_modules: null`` on ``model_type`` (its per-tuner tables)."""
    try:
        from peft.utils import constants
    except ImportError:  # pragma: no cover - peft is a dependency
        return None
    table = getattr(constants, f"TRANSFORMERS_MODELS_TO_{peft_type}_TARGET_MODULES_MAPPING", None) or {}
    keys = table.get(model_type)
    return tuple(keys) if keys else None


def adapted_targets(model: Any) -> str:
    """The module keys the model's peft adapters sit on, as peft resolved them (its own default included),
    ';'-joined; "" when no peft adapter was applied."""
    configs = getattr(model, "peft_config", None)
    if not isinstance(configs, dict):
        return ""
    keys: set[str] = set()
    for config in configs.values():
        found = getattr(config, "target_modules", None)
        if isinstance(found, str):
            keys.add(found)
        elif found:
            keys.update(str(k) for k in found)
    return ";".join(sorted(keys))


def describe_targets(method: Any, target: Any) -> dict[str, Any] | None:
    """Where ``method`` would place itself on ``target``'s model, resolved before anything runs: the module
    keys, which rule chose them, and how many modules of the model's structure they match (None: the
    structure is unknown offline). None for a method that has no target modules."""
    explicit = getattr(method.config, "target_modules", "absent")
    if explicit == "absent":
        return None
    family = target.model_type
    kind = getattr(method, "target_kind", None) or DEFAULT_ADAPTER_TARGETS
    if leaves_targets_to_peft(explicit):
        keys, rule = peft_default_targets(family, _peft_type(method)), f"peft's default for {family}"
    elif explicit:
        keys, rule = tuple(explicit), "named"
    elif kind in FAMILY_TARGETS.get(family, {}):
        keys, rule = FAMILY_TARGETS[family][kind], f"the suite's default ({kind}) for {family}"
    else:
        keys, rule = peft_default_targets(family, _peft_type(method)), f"peft's default for {family}"
    skeleton = target.skeleton()
    matched = None if skeleton is None or not keys else \
        sum(1 for name, _ in skeleton.named_modules() if name and any(module_matches(name, k) for k in keys))
    return {"keys": list(keys or ()), "rule": rule, "modules": matched}


def _peft_type(method: Any) -> str:
    """The peft_type of the config class a peft method builds ("LORA", "IA3", ...); LORA otherwise."""
    name = getattr(method, "peft_config_class", "")
    try:
        from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING
    except ImportError:  # pragma: no cover
        return "LORA"
    for peft_type, config_class in PEFT_TYPE_TO_CONFIG_MAPPING.items():
        if config_class.__name__ == name:
            return str(getattr(peft_type, "value", peft_type))
    return "LORA"
