"""LoLDU: an LDU split of each weight whose diagonal (and one scale) alone trains.

Shi et al. 2024, LoLDU: Low-Rank Adaptation via Lower-Diag-Upper Decomposition for
Parameter-Efficient Fine-Tuning (arXiv:2410.13618). LU with partial pivoting gives
W = P L D U (L unit lower, D diagonal, U unit upper triangular). With the top-r parts
L_r (out x r), D_r (r) and U_r (r x in) and a scale sigma:

    W' = W_res + sigma P L_r diag(z) U_r,    W_res = W - sigma_0 P L_r diag(D_r) U_r

z starts at D_r and sigma at sigma_0 = alpha / r, so W' = W at init. P, L_r, U_r and W_res
are frozen; z (r values) and sigma (one value) train, so an adapted matrix costs r + 1
parameters (r without ``train_scaling``). The paper's text could not be consulted here; the
definition and the defaults follow the authors' reference code (SKDDJ/LoLDU, ``minloldu``):
``ldu`` initialisation with z = D_r ("lu" init), a learnable ``scaling_factor`` starting at
lora_alpha / r with lora_alpha = 1, and a rank of the matrix's full size in its default
config (here ``r`` unset: min(out, in) per matrix). P is kept as a row index, not a matrix.
Mergeable: W' computed once and copied into the base layer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache
from typing import Any

from suite.method import Method, MethodContext
from suite.methods.common.targets import TargetedMethod
from suite.registry import register_method


@dataclass
class LoLDUConfig:
    r: int | None = None  # components per matrix; None: full rank, min(out, in) of each matrix
    alpha: float = 1.0  # sigma starts at alpha / r (the reference code's lora_alpha = 1)
    train_scaling: bool = True  # sigma trains beside the diagonal z
    target_modules: tuple[str, ...] | None = None  # None: every linear layer of the blocks (targets.DEFAULT_ADAPTER_TARGETS)

    def __post_init__(self) -> None:
        if self.r is not None and self.r <= 0:
            raise ValueError("r must be a positive integer (or unset for full rank)")
        if not math.isfinite(self.alpha) or self.alpha == 0:
            raise ValueError("alpha must be a finite non-zero number (sigma starts at alpha / r)")


def ldu(weight: Any) -> tuple[Any, Any, Any, Any]:
    """(perm, L, d, U) with W = P L diag(d) U in float32, P v = v[perm], L unit lower, U unit upper.

    A zero pivot (a rank-deficient W) keeps its row of U unscaled; its d is 0, so the product is
    still exact.
    """
    import torch

    p, lower, upper = torch.linalg.lu(weight.detach().float())
    d = torch.diagonal(upper).clone()
    safe = torch.where(d == 0, torch.ones_like(d), d)
    perm = p.argmax(dim=1)  # row i of P v is v[perm[i]]
    return perm, lower, d, upper / safe[:, None]


@cache
def loldu_linear_class() -> type:
    import torch
    import torch.nn.functional as F
    from torch import nn

    from suite.methods.peft.svd_linear import SVDAdapted

    class LoLDULinear(SVDAdapted):
        """h = W_res x + sigma P L_r diag(z) U_r x; ``base`` holds W_res, only z and sigma train."""

        def __init__(self, base: nn.Linear, r: int | None, alpha: float, train_scaling: bool):
            super().__init__(base)
            perm, lower, d, upper = ldu(base.weight)
            r = min(base.weight.shape) if r is None else r
            dtype, device = base.weight.dtype, base.weight.device
            sigma = alpha / r
            l_r, d_r, u_r = lower[:, :r].contiguous(), d[:r].contiguous(), upper[:r].contiguous()
            with torch.no_grad():
                base.weight.sub_((sigma * (l_r * d_r) @ u_r)[perm].to(dtype))
            self.register_buffer("perm", perm.to(device))
            self.register_buffer("loldu_L", l_r.to(device=device, dtype=dtype))
            self.register_buffer("loldu_U", u_r.to(device=device, dtype=dtype))
            self.loldu_z = nn.Parameter(d_r.to(device=device, dtype=dtype))
            scale = torch.tensor(sigma, device=device, dtype=dtype)
            if train_scaling:
                self.loldu_sigma = nn.Parameter(scale)
            else:
                self.register_buffer("loldu_sigma", scale)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            low = F.linear(F.linear(x, self.loldu_U) * self.loldu_z, self.loldu_L)
            return self.base(x) + self.loldu_sigma * low[..., self.perm]

        def merged_weight(self) -> torch.Tensor:
            delta = (self.loldu_L * self.loldu_z) @ self.loldu_U
            return self.base.weight + self.loldu_sigma * delta[self.perm]

    return LoLDULinear


@register_method("loldu", kind="peft", summary="LDU split of each weight; only the diagonal and a scale train",
                 source="suite", paper="Shi et al. 2024, LoLDU (arXiv:2410.13618)")
class LoLDU(TargetedMethod, Method):
    Config = LoLDUConfig
    mergeable = True
    default_lr = 5e-3

    def apply(self, model: Any, ctx: MethodContext) -> Any:
        from suite.methods.peft.svd_linear import apply_svd_method

        c = self.config
        layer = loldu_linear_class()
        # r = 0 tells the shared helper there is no rank to check (None: each matrix's full rank).
        return apply_svd_method(model, ctx, self.name, c.target_modules, c.r or 0,
                                lambda lin: layer(lin, c.r, c.alpha, c.train_scaling))

    def merge(self, model: Any) -> Any:
        from suite.methods.peft.svd_linear import merge_wrapped

        return merge_wrapped(model)
