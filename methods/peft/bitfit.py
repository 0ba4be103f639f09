"""BitFit: fine-tune only the bias terms (and the task head).

Ben Zaken et al. 2022, BitFit: Simple Parameter-efficient Fine-tuning for Transformer-based
Masked Language-models (arXiv:2106.10199). Eq. (1) of the paper keeps every weight matrix W
frozen and trains every bias b in h = W x + b (attention, feed-forward and layer norm).
The model stays a plain transformers model, so merging is the identity.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from suite.errors import UserError
from suite.method import Method, MethodContext, MethodTarget
from suite.registry import register_method


@dataclass
class BitFitConfig:
    train_head: bool = True  # the task head trains fully (it is new for the task)


@register_method("bitfit", kind="peft", summary="train only the bias terms (plus the task head)",
                 source="suite", paper="Ben Zaken et al. 2022, BitFit (arXiv:2106.10199)")
class BitFit(Method):
    Config = BitFitConfig
    mergeable = True
    default_lr = 1e-3

    def unsupported(self, target: MethodTarget) -> str | None:
        skeleton = target.skeleton()
        if skeleton is not None and not any(n.endswith("bias") for n, _ in skeleton.named_parameters()):
            return "the model has no bias terms to train (e.g. Llama's linear layers have none)"
        return None

    def apply(self, model: Any, ctx: MethodContext) -> Any:
        from suite.methods.common.new_modules import train_new_modules

        biases = [p for n, p in model.named_parameters() if n.endswith(".bias") or n == "bias"]
        if not biases:
            raise UserError("method 'bitfit' cannot apply to this model: it has no bias terms "
                            "(e.g. Llama's linear layers have none); choose another method")
        for p in model.parameters():
            p.requires_grad_(False)
        for p in biases:
            p.requires_grad_(True)
        if self.config.train_head:
            train_new_modules(ctx)
        return model

    def merge(self, model: Any) -> Any:
        return model
