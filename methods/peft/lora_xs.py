"""LoRA-XS: a trainable r x r matrix between frozen truncated-SVD factors of W.

Balazy et al. 2024, LoRA-XS: Low-Rank Adaptation with Extremely Small Number of Parameters
(arXiv:2405.17604), eq. (3): h = W x + A R B x, where W ~ U_r S_r V_r^T is the rank-r
truncated SVD, A = U_r S_r and B = V_r^T are frozen, and only R (r x r) trains, so each
adapted matrix costs r^2 parameters whatever its size. R starts near zero (N(0, 1e-5^2)).
Mergeable: W' = W + A R B.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from suite.method import Method, MethodContext
from suite.methods.common.targets import TargetedMethod
from suite.registry import register_method


@dataclass
class LoraXSConfig:
    r: int = 16
    target_modules: tuple[str, ...] | None = None  # None: every linear layer of the blocks (targets.DEFAULT_ADAPTER_TARGETS)
    init_std: float = 1e-5

    def __post_init__(self) -> None:
        if self.r <= 0:
            raise ValueError("r must be a positive integer")


@register_method("lora-xs", kind="peft", summary="trainable r x r matrix between frozen truncated-SVD factors",
                 source="suite", paper="Balazy et al. 2024, LoRA-XS (arXiv:2405.17604)")
class LoraXS(TargetedMethod, Method):
    rank_bounded = True  # built from the top-r singular vectors of each adapted weight
    Config = LoraXSConfig
    mergeable = True
    default_lr = 2e-3

    def apply(self, model: Any, ctx: MethodContext) -> Any:
        import torch

        from suite.methods.peft.svd_linear import LoraXSLinear, apply_svd_method

        c = self.config
        torch.manual_seed(ctx.seed)
        return apply_svd_method(model, ctx, self.name, c.target_modules, c.r,
                                lambda lin: LoraXSLinear(lin, c.r, c.init_std))

    def merge(self, model: Any) -> Any:
        from suite.methods.peft.svd_linear import merge_wrapped

        return merge_wrapped(model)
