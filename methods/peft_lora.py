"""LoRA and PiSSA through peft (PiSSA is peft's ``init_lora_weights="pissa"``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from suite.methods.peft_wrapper import PeftMethod

from suite.method import MethodContext
from suite.registry import register_method


@dataclass
class LoraConfig:
    r: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    target_modules: tuple[str, ...] | None = None  # None: peft's default for the model family
    rslora: bool = False

    def __post_init__(self) -> None:
        if self.r <= 0:
            raise ValueError("r must be a positive integer")
        if not 0 <= self.dropout < 1:
            raise ValueError("dropout must be in [0, 1)")


@register_method("lora", kind="peft", summary="low-rank adapters on attention projections",
                 source="peft", paper="Hu et al. 2021, LoRA (arXiv:2106.09685)")
class Lora(PeftMethod):
    Config = LoraConfig
    peft_config_class = "LoraConfig"
    default_lr = 5e-4

    def peft_kwargs(self, model: Any, ctx: MethodContext) -> dict[str, Any]:
        c = self.config
        kwargs = dict(r=c.r, lora_alpha=c.alpha, lora_dropout=c.dropout, use_rslora=c.rslora)
        if c.target_modules:
            kwargs["target_modules"] = list(c.target_modules)
        return kwargs


@dataclass
class PissaConfig(LoraConfig):
    alpha: float = 8.0  # PiSSA keeps alpha = r so the principal part is reproduced at init
    fast_svd_niter: int = 0  # 0: exact SVD; n > 0: randomised SVD with n subspace iterations

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.fast_svd_niter < 0:
            raise ValueError("fast_svd_niter must be >= 0")


@register_method("pissa", kind="peft",
                 summary="LoRA initialised from the principal singular vectors, residual frozen",
                 source="peft", paper="Meng et al. 2024, PiSSA (arXiv:2404.02948)")
class Pissa(Lora):
    Config = PissaConfig
    default_lr = 2e-4

    def peft_kwargs(self, model: Any, ctx: MethodContext) -> dict[str, Any]:
        kwargs = super().peft_kwargs(model, ctx)
        n = self.config.fast_svd_niter
        kwargs["init_lora_weights"] = f"pissa_niter_{n}" if n else "pissa"
        return kwargs
