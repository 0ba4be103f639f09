"""MeZO: zeroth-order fine-tuning with two forward passes and seed-regenerated perturbations.

Malladi et al. 2023, Fine-Tuning Language Models with Just Forward Passes (arXiv:2305.17333).
SPSA (eq. 1): with z ~ N(0, I),

    g_hat = (L(theta + eps z) - L(theta - eps z)) / (2 eps) * z

and theta <- theta - lr * g_hat (Algorithm 1). z is never stored: it is regenerated from a
per-step seed for the +eps, -2eps, +eps (restore) and update passes, and the forward passes
run without autograd, so memory stays close to inference. Both passes see the same dropout
mask (the RNG is re-seeded for each). The shared loop builds no optimizer (this method
replaces the step); the learning rate is the loop's schedule (``state.lr``).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from suite.method import Method, MethodContext
from suite.registry import register_method

if TYPE_CHECKING:  # pragma: no cover
    from suite.train import TrainState


def perturb(params: list[Any], seed: int, scale: float) -> None:
    """theta <- theta + scale * z(seed), z regenerated parameter by parameter in a fixed order."""
    import torch

    generator = torch.Generator(device=params[0].device).manual_seed(seed)
    for p in params:
        z = torch.randn(p.shape, generator=generator, device=p.device, dtype=p.dtype)
        p.data.add_(z, alpha=scale)


def projected_gradient(loss_fn: Callable[[], Any], params: list[Any], seed: int,
                       eps: float) -> tuple[float, float, float]:
    """(g, L+, L-): the two-point estimate of the directional derivative of the loss along z(seed)."""
    import torch

    devices = sorted({p.device.index for p in params if p.device.type == "cuda"})

    def loss_at() -> float:
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)  # the same dropout mask for both passes
            return float(loss_fn())

    with torch.no_grad():
        perturb(params, seed, eps)
        plus = loss_at()
        perturb(params, seed, -2 * eps)
        minus = loss_at()
        perturb(params, seed, eps)
    return (plus - minus) / (2 * eps), plus, minus


@dataclass
class MeZOConfig:
    eps: float = 1e-3  # perturbation scale
    scope: Literal["full", "keep"] = "full"  # full: every parameter; keep: what earlier methods left trainable
    weight_decay: float = 0.0

    def __post_init__(self) -> None:
        if self.eps <= 0:
            raise ValueError("eps must be > 0")


@register_method("mezo", kind="peft", summary="zeroth-order SPSA fine-tuning: two forward passes, no backprop",
                 source="suite", paper="Malladi et al. 2023, MeZO (arXiv:2305.17333)")
class MeZO(Method):
    Config = MeZOConfig
    mergeable = True
    default_lr = 1e-6
    version = "1"

    def __init__(self, config: Any = None):
        super().__init__(config)
        self._rng = random.Random(0)
        self.params: list[Any] = []
        self.last_projected_grad = float("nan")

    def apply(self, model: Any, ctx: MethodContext) -> Any:
        if self.config.scope == "full":
            for p in model.parameters():
                p.requires_grad_(True)
        self._rng = random.Random(ctx.seed)
        return model

    def on_train_begin(self, model: Any, state: TrainState) -> None:
        self.params = [p for p in model.parameters() if p.requires_grad]

    def train_step(self, model: Any, batch: dict, state: TrainState) -> float:
        import torch

        if not self.params:
            self.on_train_begin(model, state)
        seed = self._rng.randrange(2**31)
        lr = state.lr
        g, plus, minus = projected_gradient(lambda: state.loss(batch), self.params, seed, self.config.eps)
        with torch.no_grad():
            if self.config.weight_decay:
                for p in self.params:
                    if p.ndim >= 2:
                        p.mul_(1 - lr * self.config.weight_decay)
            perturb(self.params, seed, -lr * g)
        self.last_projected_grad = g
        return (plus + minus) / 2

    def measurements(self, model: Any) -> dict[str, float]:
        return {"mezo_last_projected_grad": float(self.last_projected_grad)}

    def merge(self, model: Any) -> Any:
        return model
