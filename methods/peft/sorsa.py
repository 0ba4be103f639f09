"""SORSA: SVD-split trainable principal part with an orthonormality regulariser.

Cao 2024, SORSA: Singular Values and Orthonormal Regularized Singular Vectors Adaptation of
Large Language Models (arXiv:2409.00055). W = W_res + U_p diag(S_p) V_p^T from the top-r SVD
(eq. 3-4); U_p, S_p, V_p^T train, W_res is frozen. Eq. (6), the regulariser:

    L_reg = ||U_p^T U_p - I||_F + ||V_p^T V_p - I||_F     (V_p^T V_p read as V_p V_p^T for r x n)

Here it is added to the task loss with weight ``gamma`` through the shared loop's
``regularizer`` hook; the paper applies its gradient with a separate step size, whereas
here both terms go through the same AdamW step. Mergeable: W' = W_res + U_p diag(S_p) V_p^T.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from suite.method import Method, MethodContext
from suite.methods.common.targets import TargetedMethod
from suite.registry import register_method


@dataclass
class SORSAConfig:
    r: int = 8
    gamma: float = 0.01  # weight of the orthonormality regulariser in the loss
    target_modules: tuple[str, ...] | None = None  # None: every linear layer of the blocks (targets.DEFAULT_ADAPTER_TARGETS)

    def __post_init__(self) -> None:
        if self.r <= 0:
            raise ValueError("r must be a positive integer")
        if self.gamma < 0:
            raise ValueError("gamma must be >= 0")


def orthonormality(model: Any) -> Any:
    """Sum over adapted layers of ||U^T U - I||_F + ||Vh Vh^T - I||_F (eq. 6)."""
    import torch

    from suite.methods.peft.svd_linear import PrincipalLinear

    total = None
    for module in model.modules():
        if isinstance(module, PrincipalLinear):
            eye = torch.eye(module.sv.shape[0], device=module.sv.device, dtype=module.U.dtype)
            term = torch.linalg.matrix_norm(module.U.t() @ module.U - eye) + \
                torch.linalg.matrix_norm(module.Vh @ module.Vh.t() - eye)
            total = term if total is None else total + term
    return total


@register_method("sorsa", kind="peft", summary="trainable SVD principal part with an orthonormality regulariser",
                 source="suite", paper="Cao 2024, SORSA (arXiv:2409.00055)")
class SORSA(TargetedMethod, Method):
    rank_bounded = True  # built from the top-r singular vectors of each adapted weight
    Config = SORSAConfig
    mergeable = True
    default_lr = 5e-4

    def apply(self, model: Any, ctx: MethodContext) -> Any:
        from suite.methods.peft.svd_linear import PrincipalLinear, apply_svd_method

        c = self.config
        return apply_svd_method(model, ctx, self.name, c.target_modules, c.r,
                                lambda lin: PrincipalLinear(lin, c.r, train_vectors=True))

    def regularizer(self, model: Any) -> Any:
        if not self.config.gamma:
            return None
        reg = orthonormality(model)
        return None if reg is None else self.config.gamma * reg

    def measurements(self, model: Any) -> dict[str, float]:
        reg = orthonormality(model)
        return {"sorsa_orthonormality": float(reg.detach())} if reg is not None else {}

    def merge(self, model: Any) -> Any:
        from suite.methods.peft.svd_linear import merge_wrapped

        return merge_wrapped(model)
