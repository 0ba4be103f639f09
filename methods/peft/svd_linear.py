"""Linear layers adapted through an SVD of their weight: LoRA-XS, SVFit and SORSA share this.

Each wrapper keeps the original ``nn.Linear`` (``base``) and knows the full weight it
stands for (``merged_weight``), so merging is one code path: copy that weight into the
base layer and put the base layer back. Not a plugin module: plugins import it lazily.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from suite.methods.common.targets import matching_modules, set_module


def top_svd(weight: torch.Tensor, r: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """U_r (out x r), S_r (r), Vh_r (r x in) of the exact SVD, in float32."""
    u, s, vh = torch.linalg.svd(weight.detach().float(), full_matrices=False)
    return u[:, :r].contiguous(), s[:r].contiguous(), vh[:r].contiguous()


class SVDAdapted(nn.Module):
    """Base class: ``base`` frozen, ``merged_weight()`` is the adapted weight."""

    def __init__(self, base: nn.Linear):
        super().__init__()
        self.base = base
        for p in base.parameters():
            p.requires_grad_(False)

    def merged_weight(self) -> torch.Tensor:
        raise NotImplementedError

    @torch.no_grad()
    def merged(self) -> nn.Linear:
        self.base.weight.copy_(self.merged_weight().to(self.base.weight.dtype))
        return self.base


class LoraXSLinear(SVDAdapted):
    """h = W x + A R B x with A = U_r S_r, B = V_r^T frozen and R (r x r) trainable."""

    def __init__(self, base: nn.Linear, r: int, init_std: float):
        super().__init__(base)
        u, s, vh = top_svd(base.weight, r)
        dtype = base.weight.dtype
        self.register_buffer("lora_xs_A", (u * s).to(dtype))
        self.register_buffer("lora_xs_B", vh.to(dtype))
        self.lora_xs_R = nn.Parameter(init_std * torch.randn(r, r, device=base.weight.device, dtype=dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + F.linear(F.linear(F.linear(x, self.lora_xs_B), self.lora_xs_R), self.lora_xs_A)

    def merged_weight(self) -> torch.Tensor:
        return self.base.weight + self.lora_xs_A @ self.lora_xs_R @ self.lora_xs_B


class PrincipalLinear(SVDAdapted):
    """W = W_res + U_r diag(s) V_r^T; ``base`` holds W_res, the principal factors are attributes."""

    def __init__(self, base: nn.Linear, r: int, train_vectors: bool):
        super().__init__(base)
        u, s, vh = top_svd(base.weight, r)
        dtype = base.weight.dtype
        with torch.no_grad():
            base.weight.sub_(((u * s) @ vh).to(dtype))
        self.sv = nn.Parameter(s.to(dtype))
        if train_vectors:
            self.U = nn.Parameter(u.to(dtype))
            self.Vh = nn.Parameter(vh.to(dtype))
        else:
            self.register_buffer("U", u.to(dtype))
            self.register_buffer("Vh", vh.to(dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + F.linear(F.linear(x, self.Vh) * self.sv, self.U)

    def merged_weight(self) -> torch.Tensor:
        return self.base.weight + (self.U * self.sv) @ self.Vh


def wrap_linears(model: Any, keys: list[str], make: Callable[[nn.Linear], nn.Module],
                 exclude: tuple[str, ...] = ()) -> int:
    """Replace each matching ``nn.Linear`` by ``make(linear)``; returns how many were wrapped."""
    chosen = matching_modules(model, keys, nn.Linear, exclude)
    for name, module in chosen:
        set_module(model, name, make(module))
    return len(chosen)


def merge_wrapped(model: Any) -> Any:
    for name, module in list(model.named_modules()):
        if isinstance(module, SVDAdapted):
            set_module(model, name, module.merged())
    return model


def apply_svd_method(model: Any, ctx: Any, method: str, target_modules: Any, r: int,
                     make: Callable[[nn.Linear], nn.Module]) -> Any:
    """Freeze the model, wrap the targeted linears, train the task's new modules in full."""
    from suite.errors import UserError
    from suite.methods.common.new_modules import not_adapted, train_new_modules
    from suite.methods.common.targets import DEFAULT_ADAPTER_TARGETS, require_targets

    keys = require_targets(model, method, DEFAULT_ADAPTER_TARGETS, target_modules)
    for p in model.parameters():
        p.requires_grad_(False)
    too_small = [n for n, m in matching_modules(model, keys, nn.Linear)
                 if r > min(m.in_features, m.out_features)]
    if too_small:
        raise UserError(f"method '{method}': argument 'r'={r} exceeds the size of {too_small[0]}; "
                        f"choose r <= min(in, out)")
    if not wrap_linears(model, keys, make, exclude=not_adapted(model, ctx)):
        raise UserError(f"method '{method}' cannot apply to this model: no linear layer matches "
                        f"target_modules {keys}")
    train_new_modules(ctx)
    return model
