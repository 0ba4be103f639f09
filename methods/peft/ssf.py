"""SSF: learned scale and shift of the features after every linear and norm layer.

Lian et al. 2022, Scaling & Shifting Your Features: A New Baseline for Efficient Model
Tuning (arXiv:2210.08823). Eq. (2): y = gamma * x + beta, with gamma, beta in R^d applied to
the output x of each linear / norm operation; gamma ~ N(1, 0.02), beta ~ N(0, 0.02) at
init (their code). Eq. (3)-(4), re-parameterisation: after a linear layer W, b the pair
folds into W' = diag(gamma) W, b' = gamma * b + beta; after a norm with affine weight w, b
into w' = gamma * w, b' = gamma * b + beta. A layer without a bias (Llama's projections and
RMSNorm) gets the scale only, so the merged model keeps the original architecture exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

from suite.errors import UserError
from suite.method import Method, MethodContext
from suite.registry import register_method


@cache
def ssf_module_class() -> type:
    import torch

    class SSFWrapped(torch.nn.Module):
        """``base`` followed by a per-feature scale (and shift where the base has a bias)."""

        def __init__(self, base: torch.nn.Module, dim: int, shift: bool, init_std: float):
            super().__init__()
            self.base = base
            w = base.weight
            self.ssf_scale = torch.nn.Parameter(1 + init_std * torch.randn(dim, device=w.device, dtype=w.dtype))
            self.ssf_shift = torch.nn.Parameter(init_std * torch.randn(dim, device=w.device, dtype=w.dtype)) \
                if shift else None

        def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
            y = self.base(x, *args, **kwargs) * self.ssf_scale
            return y + self.ssf_shift if self.ssf_shift is not None else y

        @torch.no_grad()
        def folded(self) -> torch.nn.Module:
            """The base module with scale and shift folded into its weights (eq. 3-4)."""
            base = self.base
            gamma = self.ssf_scale
            if isinstance(base, torch.nn.Linear):
                base.weight.mul_(gamma[:, None])
            else:
                base.weight.mul_(gamma)
            if base.bias is not None:
                base.bias.mul_(gamma)
                if self.ssf_shift is not None:
                    base.bias.add_(self.ssf_shift)
            return base

    return SSFWrapped


def is_norm(module: Any) -> bool:
    import torch

    return isinstance(module, torch.nn.LayerNorm) or (
        type(module).__name__.endswith("RMSNorm") and getattr(module, "weight", None) is not None)


@dataclass
class SSFConfig:
    linear: bool = True  # after every linear layer
    norm: bool = True  # after every norm layer
    init_std: float = 0.02

    def __post_init__(self) -> None:
        if not (self.linear or self.norm):
            raise ValueError("enable at least one of linear, norm")


@register_method("ssf", kind="peft", summary="learned per-feature scale and shift after each linear and norm",
                 source="suite", paper="Lian et al. 2022, Scaling & Shifting Your Features (arXiv:2210.08823)")
class SSF(Method):
    Config = SSFConfig
    mergeable = True
    default_lr = 5e-3

    def apply(self, model: Any, ctx: MethodContext) -> Any:
        import torch

        from suite.methods.common.new_modules import inside, not_adapted, train_new_modules
        from suite.methods.common.targets import set_module

        wrapped = ssf_module_class()
        left_alone = not_adapted(model, ctx)
        chosen = []
        for name, module in model.named_modules():
            if not name or inside(name, left_alone):
                continue
            if self.config.linear and isinstance(module, torch.nn.Linear):
                chosen.append((name, module, module.out_features))
            elif self.config.norm and is_norm(module):
                chosen.append((name, module, module.weight.shape[0]))
        if not chosen:
            raise UserError("method 'ssf' cannot apply to this model: it has no linear or norm layers "
                            "outside the task head")
        for p in model.parameters():
            p.requires_grad_(False)
        generator_state = torch.random.get_rng_state()
        torch.manual_seed(ctx.seed)
        for name, module, dim in chosen:
            has_bias = getattr(module, "bias", None) is not None
            set_module(model, name, wrapped(module, dim, has_bias, self.config.init_std))
        torch.random.set_rng_state(generator_state)
        train_new_modules(ctx)
        return model

    def merge(self, model: Any) -> Any:
        from suite.methods.common.targets import set_module

        wrapped = ssf_module_class()
        for name, module in list(model.named_modules()):
            if isinstance(module, wrapped):
                set_module(model, name, module.folded())
        return model
