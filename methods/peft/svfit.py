"""SVFit: fine-tune only the top-r singular values of each adapted weight matrix.

Sun et al. 2024, SVFit: Parameter-Efficient Fine-Tuning of Large Pre-Trained Models Using
Singular Values (arXiv:2409.05926). With W = U S V^T, split W = U_r diag(s) V_r^T + W_res
(eq. 4-5): the singular vectors U_r, V_r and the residual stay frozen, the r singular
values s (initialised to the top-r of S, so the model is unchanged at init) train.
Mergeable: W' = W_res + U_r diag(s) V_r^T.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from suite.method import Method, MethodContext
from suite.methods.common.targets import TargetedMethod
from suite.registry import register_method


@dataclass
class SVFitConfig:
    r: int = 16
    target_modules: tuple[str, ...] | None = None  # None: every linear layer of the blocks (targets.DEFAULT_ADAPTER_TARGETS)

    def __post_init__(self) -> None:
        if self.r <= 0:
            raise ValueError("r must be a positive integer")


@register_method("svfit", kind="peft", summary="train only the top-r singular values of each weight",
                 source="suite", paper="Sun et al. 2024, SVFit (arXiv:2409.05926)")
class SVFit(TargetedMethod, Method):
    rank_bounded = True  # built from the top-r singular vectors of each adapted weight
    Config = SVFitConfig
    mergeable = True
    default_lr = 5e-3

    def apply(self, model: Any, ctx: MethodContext) -> Any:
        from suite.methods.peft.svd_linear import PrincipalLinear, apply_svd_method

        c = self.config
        return apply_svd_method(model, ctx, self.name, c.target_modules, c.r,
                                lambda lin: PrincipalLinear(lin, c.r, train_vectors=False))

    def merge(self, model: Any) -> Any:
        from suite.methods.peft.svd_linear import merge_wrapped

        return merge_wrapped(model)
