"""SpIEL: sparse fine-tuning at a fixed density, with periodic drop and regrow.

Ansell et al. 2024, Scaling Sparse Fine-Tuning to Large Language Models (arXiv:2401.16405).
Each adapted weight is W + Delta, where Delta is non-zero only on an active index set eta of
fixed size d = density * numel (eq. 1; only the d values phi of Delta train). Every
``interval`` steps (Sec. 3.1): drop the ``drop_fraction`` of active indices whose |phi| is
smallest, and regrow as many new indices where the gradient of the dense weight is largest
(SpIEL-AG, here with the gradient of the update step itself). Regrown entries start at 0
with fresh optimiser state, so the density stays exactly d. Mergeable: W' = W + scatter(phi).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any

from suite.method import Method, MethodContext
from suite.methods.common.targets import TargetedMethod
from suite.registry import register_method

if TYPE_CHECKING:  # pragma: no cover
    from suite.train import TrainState


@cache
def spiel_linear_class() -> type:
    import torch
    import torch.nn.functional as F

    class SpIELLinear(torch.nn.Module):
        """``base`` frozen; a trainable value per active index of its weight."""

        def __init__(self, base: torch.nn.Linear, n_active: int, generator: torch.Generator):
            super().__init__()
            self.base = base
            for p in base.parameters():
                p.requires_grad_(False)
            numel = base.weight.numel()
            active = torch.randperm(numel, generator=generator)[:n_active].to(base.weight.device)
            self.register_buffer("indices", active)
            self.spiel_delta = torch.nn.Parameter(torch.zeros(n_active, device=base.weight.device,
                                                              dtype=base.weight.dtype))
            self.capture = False
            self.dense_grad: torch.Tensor | None = None

        def _store(self, grad: torch.Tensor) -> None:
            self.dense_grad = grad.detach()

        def effective_weight(self) -> torch.Tensor:
            w = self.base.weight
            return w.reshape(-1).index_add(0, self.indices, self.spiel_delta.to(w.dtype)).view_as(w)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            w = self.effective_weight()
            if self.capture and w.requires_grad:
                w.register_hook(self._store)
            return F.linear(x, w, self.base.bias)

        @torch.no_grad()
        def merged(self) -> torch.nn.Linear:
            self.base.weight.copy_(self.effective_weight())
            return self.base

    return SpIELLinear


@dataclass
class SpIELConfig:
    density: float = 0.01  # fraction of each adapted weight matrix that trains
    interval: int = 20  # steps between drop-and-regrow updates
    drop_fraction: float = 0.25  # fraction of the active indices replaced at each update
    target_modules: tuple[str, ...] | None = None  # None: every linear layer of the blocks

    def __post_init__(self) -> None:
        if not 0 < self.density <= 1:
            raise ValueError("density must be in (0, 1]")
        if self.interval < 1:
            raise ValueError("interval must be >= 1")
        if not 0 <= self.drop_fraction <= 1:
            raise ValueError("drop_fraction must be in [0, 1]")


@register_method("spiel", kind="peft", summary="sparse fine-tuning at fixed density with drop and regrow",
                 source="suite", paper="Ansell et al. 2024, Scaling Sparse Fine-Tuning to LLMs, SpIEL "
                                       "(arXiv:2401.16405)")
class SpIEL(TargetedMethod, Method):
    Config = SpIELConfig
    mergeable = True
    default_lr = 5e-3

    def __init__(self, config: Any = None):
        super().__init__(config)
        self.updates = 0
        self.regrown = 0

    def modules(self, model: Any) -> list[Any]:
        cls = spiel_linear_class()
        return [m for m in model.modules() if isinstance(m, cls)]

    def apply(self, model: Any, ctx: MethodContext) -> Any:
        import torch

        from suite.errors import UserError
        from suite.methods.common.new_modules import not_adapted, train_new_modules
        from suite.methods.common.targets import matching_modules, require_targets, set_module

        keys = require_targets(model, self.name, "all-linear", self.config.target_modules)
        chosen = matching_modules(model, keys, torch.nn.Linear, not_adapted(model, ctx))
        if not chosen:
            raise UserError(f"method 'spiel' cannot apply to this model: no linear layer matches {keys}")
        for p in model.parameters():
            p.requires_grad_(False)
        generator = torch.Generator().manual_seed(ctx.seed)
        cls = spiel_linear_class()
        for name, module in chosen:
            n = max(1, round(self.config.density * module.weight.numel()))
            set_module(model, name, cls(module, n, generator))
        train_new_modules(ctx)
        return model

    def _is_update_step(self, step: int, state: TrainState) -> bool:
        """``step`` counts finished steps; the update happens while step+1 is a multiple of interval."""
        return (step + 1) % self.config.interval == 0 and step + 1 < state.total_steps

    def on_train_begin(self, model: Any, state: TrainState) -> None:
        for m in self.modules(model):
            m.capture = self._is_update_step(0, state)

    def before_optimizer_step(self, model: Any, step: int, state: TrainState) -> None:
        if not self._is_update_step(step, state):
            return
        import torch

        state = state.optimizer.state if state.optimizer is not None else {}
        for m in self.modules(model):
            grad, m.dense_grad, m.capture = m.dense_grad, None, False
            k = int(self.config.drop_fraction * m.indices.numel())
            if grad is None or k == 0:
                continue
            with torch.no_grad():
                drop = torch.topk(m.spiel_delta.abs(), k, largest=False).indices
                score = grad.reshape(-1).abs().float()
                score[m.indices] = -1.0  # only inactive positions can be regrown
                grow = torch.topk(score, k).indices
                m.indices[drop] = grow
                m.spiel_delta[drop] = 0.0
                if m.spiel_delta.grad is not None:
                    m.spiel_delta.grad[drop] = 0.0
                for value in state.get(m.spiel_delta, {}).values():
                    if torch.is_tensor(value) and value.shape == m.spiel_delta.shape:
                        value[drop] = 0.0
            self.regrown += k
        self.updates += 1

    def on_step_end(self, model: Any, step: int, state: TrainState) -> None:
        capture = self._is_update_step(step, state)
        for m in self.modules(model):
            m.capture = capture

    def measurements(self, model: Any) -> dict[str, float]:
        return {"spiel_updates": float(self.updates), "spiel_regrown": float(self.regrown)}

    def merge(self, model: Any) -> Any:
        from suite.methods.common.targets import set_module

        cls = spiel_linear_class()
        for name, module in list(model.named_modules()):
            if isinstance(module, cls):
                set_module(model, name, module.merged())
        return model
