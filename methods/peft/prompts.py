"""peft's prompt learning: soft prompts, prefixes, KV-cache cartridges and LLaMA-Adapter.

They change the input sequence (or the attention's keys and values), so none of them merges
into the weights and they apply to text tasks only (``PromptLearningMethod``). Prefix tuning
and cartridges write their prefix into every layer's KV cache (``KvPrefixMethod``), which
``suite.methods.peft.compat`` adapts to the installed transformers.

Not exposed, with the reason: ``multitask-prompt-tuning`` (needs a task id per example) and
``cpt`` (needs per-token context masks of a causal LM).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from suite.method import MethodContext, MethodTarget
from suite.methods.peft.library import PeftMethod
from suite.methods.peft.tuners import TunerRow, define_tuners, tuner_lookup
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
class PromptLearningMethod(PeftMethod):
    """Tuners that change the input sequence (soft prompts, prefixes): text tasks only."""

    def unsupported(self, target: MethodTarget) -> str | None:
        from suite.methods.peft.library import PEFT_TASK_TYPES

        if target.task_kind not in PEFT_TASK_TYPES:
            return (f"peft's prompt learning needs a text task (sequence classification or causal LM), "
                    f"not {target.task_kind}")
        return super().unsupported(target)


class KvPrefixMethod(PromptLearningMethod):
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


# -- the one special case: LLaMA-Adapter's layer count depends on the model ---------------------------
def _adaption_layers(method: PeftMethod, model: Any, ctx: MethodContext) -> dict[str, Any]:
    layers = model.config.num_hidden_layers
    return {"adapter_layers": min(method.config.adapter_layers or layers, layers)}


# -- the rows ----------------------------------------------------------------------------------------
ROWS: tuple[TunerRow, ...] = (
    TunerRow("prefix", "PrefixTuningConfig", PrefixArgs, target_kind=None, mergeable=False, default_lr=1e-2,
             base=KvPrefixMethod,
             summary="trainable key/value prefixes in every layer",
             paper="Li & Liang 2021, Prefix-Tuning (arXiv:2101.00190)"),
    TunerRow("prompt", "PromptTuningConfig", VirtualTokenArgs, target_kind=None, mergeable=False, default_lr=3e-2,
             base=PromptLearningMethod,
             summary="trainable soft-prompt embeddings prepended to the input",
             paper="Lester et al. 2021, The Power of Scale for Parameter-Efficient Prompt Tuning (arXiv:2104.08691)"),
    TunerRow("p-tuning", "PromptEncoderConfig", PtuningArgs, renames={"encoder_type": "encoder_reparameterization_type"},
             target_kind=None, mergeable=False, default_lr=1e-2, base=PromptLearningMethod,
             summary="soft prompts produced by a small trainable prompt encoder",
             paper="Liu et al. 2021, GPT Understands, Too (arXiv:2103.10385)"),
    TunerRow("cartridge", "CartridgeConfig", VirtualTokenArgs, target_kind=None, mergeable=False, default_lr=1e-2,
             base=KvPrefixMethod,
             summary="a trainable KV-cache prefix stored directly as parameters",
             paper="Eyuboglu et al. 2025, Cartridges (arXiv:2506.06266)"),
    TunerRow("adaption-prompt", "AdaptionPromptConfig", AdaptionPromptArgs, skip=("adapter_layers",),
             extra=_adaption_layers, target_kind=None, mergeable=False, default_lr=1e-2,
             families=("llama", "mistral"), base=PromptLearningMethod,
             summary="LLaMA-Adapter: zero-gated adaption prompts in the top attention layers",
             paper="Zhang et al. 2023, LLaMA-Adapter (arXiv:2303.16199)"),
)

TUNERS = define_tuners(ROWS, __name__, register_method)  # class name -> class
__getattr__ = tuner_lookup(TUNERS, __name__)  # suite.methods.peft.prompts.PeftPrefix, also for pickle
