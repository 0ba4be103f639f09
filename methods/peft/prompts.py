"""peft's prompt learning: soft prompts, prefixes, KV-cache cartridges and LLaMA-Adapter.

They change the input sequence (or the attention's keys and values), so none of them merges
into the weights and they apply to text tasks only (``PromptLearningTuner``). Prefix tuning
and cartridges write their prefix into every layer's KV cache (``KvPrefixTuner``), which
``suite.methods.peft.compat`` adapts to the installed transformers.

Not exposed, with the reason: ``multitask-prompt-tuning`` (needs a task id per example) and
``cpt`` (needs per-token context masks of a causal LM).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from suite.method import MethodContext, MethodTarget
from suite.methods.peft.tuners import PeftTuner
from suite.registry import register_method


# -- typed configs -------------------------------------------------------------------------------
@dataclass
class VirtualTokenArgs:
    num_virtual_tokens: int = 20


@dataclass
class PrefixArgs(VirtualTokenArgs):
    prefix_projection: bool = False  # reparameterise the prefix through an MLP


@dataclass
class PtuningArgs(VirtualTokenArgs):
    encoder_hidden_size: int = 128
    encoder_type: Literal["MLP", "LSTM"] = "MLP"


@dataclass
class AdaptionPromptArgs:
    adapter_len: int = 10
    adapter_layers: int = 0  # 0: every layer


# -- bases: what the input-changing tuners share ------------------------------------------------------
class PromptLearningTuner(PeftTuner):
    """Tuners that change the input sequence (soft prompts, prefixes): text tasks only, never merged."""

    target_kind = None  # they adapt the input, not named modules
    mergeable = False

    def unsupported(self, target: MethodTarget) -> str | None:
        from suite.methods.peft.library import PEFT_TASK_TYPES

        if target.task_kind not in PEFT_TASK_TYPES:
            return (f"peft's prompt learning needs a text task (sequence classification or causal LM), "
                    f"not {target.task_kind}")
        return super().unsupported(target)


class KvPrefixTuner(PromptLearningTuner):
    """Tuners that write a trainable prefix into every layer's KV cache (prefix tuning, cartridges)."""

    def unsupported(self, target: MethodTarget) -> str | None:
        reason = super().unsupported(target)
        if reason or not target.model_type:
            return reason
        from suite.methods.peft.compat import backbone_class, library_version, takes_kv_prefix

        backbone = backbone_class(target.model_type)
        if backbone is not None and not takes_kv_prefix(backbone.forward):
            return (f"transformers {library_version('transformers')}'s {backbone.__name__} takes no KV cache "
                    f"(neither past_key_values nor cache), which this method writes its prefix into; "
                    f"use a model family with a KV cache, or soft prompts ('prompt')")
        return None

    def prepare(self, model: Any, peft_config: Any, ctx: MethodContext) -> None:
        from suite.methods.peft.compat import accept_past_key_values

        accept_past_key_values(model)


# -- the tuners --------------------------------------------------------------------------------------
@register_method("prefix", kind="peft", summary="trainable key/value prefixes in every layer",
                 source="peft", paper="Li & Liang 2021, Prefix-Tuning (arXiv:2101.00190)")
class PeftPrefix(KvPrefixTuner):
    peft_config_class = "PrefixTuningConfig"
    Config = PrefixArgs
    default_lr = 1e-2


@register_method("prompt", kind="peft", summary="trainable soft-prompt embeddings prepended to the input",
                 source="peft", paper="Lester et al. 2021, The Power of Scale for Parameter-Efficient Prompt "
                                      "Tuning (arXiv:2104.08691)")
class PeftPrompt(PromptLearningTuner):
    peft_config_class = "PromptTuningConfig"
    Config = VirtualTokenArgs
    default_lr = 3e-2


@register_method("p-tuning", kind="peft", summary="soft prompts produced by a small trainable prompt encoder",
                 source="peft", paper="Liu et al. 2021, GPT Understands, Too (arXiv:2103.10385)")
class PeftPTuning(PromptLearningTuner):
    peft_config_class = "PromptEncoderConfig"
    Config = PtuningArgs
    renames = {"encoder_type": "encoder_reparameterization_type"}
    default_lr = 1e-2


@register_method("cartridge", kind="peft", summary="a trainable KV-cache prefix stored directly as parameters",
                 source="peft", paper="Eyuboglu et al. 2025, Cartridges (arXiv:2506.06266)")
class PeftCartridge(KvPrefixTuner):
    peft_config_class = "CartridgeConfig"
    Config = VirtualTokenArgs
    default_lr = 1e-2


@register_method("adaption-prompt", kind="peft",
                 summary="LLaMA-Adapter: zero-gated adaption prompts in the top attention layers",
                 source="peft", paper="Zhang et al. 2023, LLaMA-Adapter (arXiv:2303.16199)")
class PeftAdaptionPrompt(PromptLearningTuner):
    peft_config_class = "AdaptionPromptConfig"
    Config = AdaptionPromptArgs
    skip = ("adapter_layers",)
    families = ("llama", "mistral")
    default_lr = 1e-2

    @classmethod
    def peft_argument_map(cls) -> tuple[dict[str, str], dict[str, Any]]:
        fields, fixed = super().peft_argument_map()
        return {**fields, "adapter_layers": "adapter_layers"}, fixed

    def peft_kwargs(self, model: Any, ctx: MethodContext) -> dict[str, Any]:
        """The layer count depends on the model: 0 (every layer) or more than it has means all of them."""
        layers = model.config.num_hidden_layers
        return {**super().peft_kwargs(model, ctx), "adapter_layers": min(self.config.adapter_layers or layers, layers)}
