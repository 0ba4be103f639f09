"""MeZO and Sparse MeZO: zeroth-order fine-tuning with two forward passes and seed-regenerated perturbations.

Malladi et al. 2023, Fine-Tuning Language Models with Just Forward Passes (arXiv:2305.17333).
SPSA (eq. 1): with z ~ N(0, I),

    g_hat = (L(theta + eps z) - L(theta - eps z)) / (2 eps) * z

and theta <- theta - lr * g_hat (Algorithm 1). z is never stored: it is regenerated from a
per-step seed for the +eps, -2eps, +eps (restore) and update passes, and the forward passes
run without autograd, so memory stays close to inference. Both passes see the same dropout
mask (the RNG is re-seeded for each). The shared loop builds no optimizer (this method
replaces the step); the learning rate is the loop's schedule (``state.lr``).

Sparse MeZO (``sparse-mezo``, Liu et al. 2024, Sparse MeZO: Less Parameters for Better
Performance in Zeroth-Order LLM Fine-Tuning, arXiv:2402.15751) perturbs and updates only a
magnitude-selected subset, z_hat = m * z with m_i = 1 where |theta_i| <= h:

    g_hat = (L(theta + eps m*z) - L(theta - eps m*z)) / (2 eps),   theta <- theta - lr g_hat (m*z)

The paper's observation is that ZO noise hurts large weights most, so the mask keeps the small
ones. Here h is set per parameter tensor ("per layer") when training begins, as the quantile
that leaves ``sparsity`` of the tensor unperturbed, and the mask is recomputed from the current
weights at every step (the paper computes it on the fly instead of storing it; here it is held
for the one step, one byte per entry). The task's new head is perturbed densely: every method
trains it in full. Both methods share one module so Sparse MeZO reuses MeZO's step without one
plugin importing another.
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


def perturb(params: list[Any], seed: int, scale: float, masks: list[Any] | None = None) -> None:
    """theta <- theta + scale * z(seed), z regenerated parameter by parameter in a fixed order.

    With ``masks`` (Sparse MeZO) z becomes m * z: a None mask keeps the tensor dense. z is drawn
    in full either way, so the random stream, and MeZO without masks, are unchanged.
    """
    import torch

    generator = torch.Generator(device=params[0].device).manual_seed(seed)
    for i, p in enumerate(params):
        z = torch.randn(p.shape, generator=generator, device=p.device, dtype=p.dtype)
        if masks is not None and masks[i] is not None:
            z.mul_(masks[i])
        p.data.add_(z, alpha=scale)


def projected_gradient(loss_fn: Callable[[], Any], params: list[Any], seed: int,
                       eps: float, masks: list[Any] | None = None) -> tuple[float, float, float]:
    """(g, L+, L-): the two-point estimate of the directional derivative of the loss along z(seed)."""
    import torch

    devices = sorted({p.device.index for p in params if p.device.type == "cuda"})

    def loss_at() -> float:
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)  # the same dropout mask for both passes
            return float(loss_fn())

    with torch.no_grad():
        perturb(params, seed, eps, masks)
        plus = loss_at()
        perturb(params, seed, -2 * eps, masks)
        minus = loss_at()
        perturb(params, seed, eps, masks)
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


@dataclass
class SparseMeZOConfig(MeZOConfig):
    sparsity: float = 0.75  # fraction of each tensor left unperturbed (its largest-magnitude entries)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 <= self.sparsity < 1:
            raise ValueError("sparsity must be in [0, 1): the fraction of each tensor left unperturbed")


@register_method("sparse-mezo", kind="peft",
                 summary="MeZO that perturbs only the small-magnitude entries of each tensor",
                 source="suite", paper="Liu et al. 2024, Sparse MeZO (arXiv:2402.15751)")
class SparseMeZO(MeZO):
    Config = SparseMeZOConfig
    version = "1"

    def __init__(self, config: Any = None):
        super().__init__(config)
        self.dense: set[int] = set()  # ids of the task's new parameters: perturbed densely
        self.thresholds: list[Any] = []  # h per tensor (None: dense)
        self.last_density = float("nan")

    def apply(self, model: Any, ctx: MethodContext) -> Any:
        model = super().apply(model, ctx)
        self.dense = {id(p) for p in ctx.new_parameters()}
        return model

    def on_train_begin(self, model: Any, state: TrainState) -> None:
        import math

        import torch

        super().on_train_begin(model, state)
        keep = 1.0 - self.config.sparsity
        self.thresholds = []
        with torch.no_grad():
            for p in self.params:
                if id(p) in self.dense:
                    self.thresholds.append(None)
                    continue
                k = max(1, math.ceil(keep * p.numel()))
                self.thresholds.append(p.detach().abs().flatten().kthvalue(k).values)

    def masks(self) -> list[Any]:
        """m per tensor from the current weights: 1 where |theta| <= h (None: the whole tensor)."""
        import torch

        with torch.no_grad():
            return [None if h is None else p.detach().abs() <= h
                    for p, h in zip(self.params, self.thresholds, strict=True)]

    def train_step(self, model: Any, batch: dict, state: TrainState) -> float:
        import torch

        if not self.params:
            self.on_train_begin(model, state)
        seed = self._rng.randrange(2**31)
        lr = state.lr
        masks = self.masks()  # one mask for the step's three perturbations and its update
        g, plus, minus = projected_gradient(lambda: state.loss(batch), self.params, seed, self.config.eps,
                                            masks)
        with torch.no_grad():
            if self.config.weight_decay:
                for p, m in zip(self.params, masks, strict=True):
                    if p.ndim >= 2:
                        decay = 1 - lr * self.config.weight_decay
                        p.mul_(decay if m is None else torch.where(m, decay, 1.0))
            perturb(self.params, seed, -lr * g, masks)
        self.last_projected_grad = g
        total = sum(p.numel() for p in self.params)
        chosen = sum(p.numel() if m is None else float(m.sum()) for p, m in zip(self.params, masks, strict=True))
        self.last_density = chosen / total if total else float("nan")
        return (plus + minus) / 2

    def measurements(self, model: Any) -> dict[str, float]:
        return super().measurements(model) | {"sparse_mezo_density": float(self.last_density)}
