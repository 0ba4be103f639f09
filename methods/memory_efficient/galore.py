"""GaLore: full-parameter training with Adam states kept in a low-rank projection of the gradient.

Zhao et al. 2024, GaLore: Memory-Efficient LLM Training by Gradient Low-Rank Projection
(arXiv:2403.03507), Algorithm 2 (Adam with GaLore). For a weight matrix W (m x n) with
gradient G_t, every T steps the projector is refreshed from the gradient's SVD,
G_t = U S V^T: P_t = U[:, :r] when m < n, else Q_t = V[:, :r]^T on the other side. Then

    R_t = P_t^T G_t                   (r x n; or G_t Q_t^T, m x r)
    M_t = b1 M + (1 - b1) R_t,  V_t = b2 V + (1 - b2) R_t^2     (states of R's shape)
    N_t = M_hat_t / (sqrt(V_hat_t) + eps)                       (bias-corrected Adam)
    W_t = W_{t-1} - lr * alpha * P_t N_t   (or N_t Q_t)

so the optimizer state of a projected matrix is 2 r max(m, n) numbers instead of 2 m n. The
projected matrices are the linear layers of the transformer blocks (``target_modules``, the
same default as every adapter); every other parameter (embeddings, norms, biases, the task's
head) trains with plain AdamW, as in the paper. Weight decay is decoupled, on the full weight.

Natural GaLore (``natural=true``; Das 2024, Natural GaLore, arXiv:2410.16029) differs in one
place: the projected gradient g_t (flattened R_t) is preconditioned by the inverse empirical
Fisher of the last s projected gradients G = [g_t, ..., g_{t-s+1}] before Adam's moments,
through Woodbury's identity (an s x s solve):

    g~_t = (lambda I + G G^T)^{-1} g_t = (g_t - G (lambda I + G^T G)^{-1} G^T g_t) / lambda

Here the history restarts when the projector is refreshed (older gradients live in another
subspace), and Adam's bias correction and eps are GaLore's, so the option changes only that
step.

Written here rather than wrapping galore-torch 1.0: its package imports bitsandbytes at import
time (a CUDA-oriented dependency for one optimizer), it has no Natural GaLore, and the
algorithm is a few lines. ``tests/test_galore_reference.py`` checks it step by step against a port
of the reference implementation (jiaweizzhao/GaLore) in every run, including where the two differ
(the reference adds eps before the bias correction and decays the weight after the update; this
one follows torch's AdamW); ``tests/test_methods_more.py`` also checks it against galore-torch
itself where that is installed. Defaults follow the GaLore repository's
GLUE fine-tuning command (rank 4, scale 4, projector refreshed every 500 steps).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache
from typing import Any

from suite.method import Method, MethodContext
from suite.methods.common import measurements
from suite.methods.common.targets import TargetedMethod
from suite.metrics import cost
from suite.registry import register_method


@dataclass
class GaLoreConfig:
    rank: int = 4  # r: rank of the gradient projection
    update_gap: int = 500  # T: steps between projector refreshes
    scale: float = 4.0  # alpha: multiplies the projected-back update
    natural: bool = False  # Natural GaLore: inverse empirical Fisher on the projected gradient
    history: int = 10  # s: projected gradients in Natural GaLore's Fisher
    damping: float = 1e-3  # lambda: Tikhonov damping of Natural GaLore's Fisher
    target_modules: tuple[str, ...] | None = None  # None: every linear layer of the blocks (targets.DEFAULT_ADAPTER_TARGETS)

    def __post_init__(self) -> None:
        if self.rank <= 0:
            raise ValueError("rank must be a positive integer")
        if self.update_gap <= 0:
            raise ValueError("update_gap must be a positive integer (steps between projector refreshes)")
        if not math.isfinite(self.scale) or self.scale <= 0:
            raise ValueError("scale must be a positive number")
        if self.history <= 0:
            raise ValueError("history must be a positive integer")
        if not math.isfinite(self.damping) or self.damping <= 0:
            raise ValueError("damping must be a positive number")


def natural_direction(g: Any, history: Any, damping: float) -> Any:
    """(lambda I + G G^T)^{-1} g by Woodbury's identity; ``history`` is G (d x s), g a d-vector.

    Computed in float32 at least and cast back: torch.linalg.solve has no bf16 or fp16 kernel, and
    g lies in the span of G, so g - G(...) is a small remainder (lambda times the result) that
    bf16's 8 bits cannot resolve before the division by lambda.
    """
    import torch

    work = torch.promote_types(g.dtype, torch.float32)
    g_w, history_w = g.to(work), history.to(work)
    small = damping * torch.eye(history.shape[1], device=g.device, dtype=work) + history_w.T @ history_w
    return ((g_w - history_w @ torch.linalg.solve(small, history_w.T @ g_w)) / damping).to(g.dtype)


@cache
def galore_optimizer_class() -> type:
    import torch

    from suite.optim import adamw_step

    class GaLoreAdamW(torch.optim.Optimizer):
        """AdamW whose groups with a ``rank`` keep their states in GaLore's projected space.

        Groups without ``rank`` follow torch.optim.AdamW's update exactly (same formula and
        order of operations, ``suite.optim.adamw_step``), so only the projected matrices differ
        from the default optimizer.
        """

        def __init__(self, params: Any, lr: float, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                     weight_decay: float = 0.0):
            defaults = {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay, "rank": None,
                        "update_gap": 500, "scale": 1.0, "natural": False, "history": 10, "damping": 1e-3}
            super().__init__(params, defaults)

        @staticmethod
        def projected(p: torch.Tensor, group: dict) -> bool:
            return group["rank"] is not None and p.ndim == 2 and group["rank"] < min(p.shape)

        @staticmethod
        def refresh(grad: torch.Tensor, rank: int) -> tuple[str, torch.Tensor]:
            """The projector from the gradient's SVD, on its smaller side: ("left", U_r) or ("right", V_r^T)."""
            u, _, vh = torch.linalg.svd(grad.float(), full_matrices=False)
            if grad.shape[0] >= grad.shape[1]:
                return "right", vh[:rank].to(grad.dtype).contiguous()
            return "left", u[:, :rank].to(grad.dtype).contiguous()

        @staticmethod
        def back_projection(side: str, proj: torch.Tensor) -> Any:
            """The map from the projected space back to the weight's: P N, or N Q."""
            return (lambda n: proj @ n) if side == "left" else (lambda n: n @ proj)

        @torch.no_grad()
        def step(self, closure: Any = None) -> Any:
            loss = None
            if closure is not None:
                with torch.enable_grad():
                    loss = closure()
            for group in self.param_groups:
                for p in group["params"]:
                    if p.grad is None:
                        continue
                    grad = p.grad
                    state = self.state[p]
                    if not state:
                        state["step"] = 0
                    back = None
                    if self.projected(p, group):
                        if state["step"] % group["update_gap"] == 0:
                            state["side"], state["projector"] = self.refresh(grad, group["rank"])
                            state.pop("history", None)
                        side, proj = state["side"], state["projector"]
                        grad = proj.T @ grad if side == "left" else grad @ proj.T
                        if group["natural"]:
                            grad = self._natural(state, grad, group)
                        back = self.back_projection(side, proj)
                    if "exp_avg" not in state:
                        state["exp_avg"] = torch.zeros_like(grad, memory_format=torch.preserve_format)
                        state["exp_avg_sq"] = torch.zeros_like(grad, memory_format=torch.preserve_format)
                    state["step"] += 1
                    adamw_step(p, grad, state["exp_avg"], state["exp_avg_sq"], state["step"], lr=group["lr"],
                               betas=group["betas"], eps=group["eps"], weight_decay=group["weight_decay"],
                               project_back=back, scale=group["scale"])
            return loss

        @staticmethod
        def _natural(state: dict, grad: torch.Tensor, group: dict) -> torch.Tensor:
            """Natural GaLore: precondition the projected gradient with the last ``history`` of them."""
            flat = grad.reshape(-1, 1)
            history = state.get("history")
            history = flat if history is None else torch.cat([flat, history[:, : group["history"] - 1]], dim=1)
            state["history"] = history
            return natural_direction(flat, history, group["damping"]).view_as(grad)

    return GaLoreAdamW


def state_bytes(optimizer: Any) -> int:
    """Bytes of every tensor the optimizer holds in its state (moments, projectors, history)."""
    import torch

    return sum(t.numel() * t.element_size() for s in optimizer.state.values() for t in s.values()
               if torch.is_tensor(t))


@register_method("galore", kind="peft",
                 summary="full-parameter training, Adam states in a low-rank gradient projection",
                 source="suite", paper="Zhao et al. 2024, GaLore (arXiv:2403.03507); Natural GaLore "
                                       "(arXiv:2410.16029) with natural=true")
class GaLore(TargetedMethod, Method):
    Config = GaLoreConfig
    mergeable = True
    metrics = (measurements.OPTIMIZER_STATE,
               cost("galore_adamw_state_bytes", "AdamW state (for scale)", "B", fmt="bytes",
                    summary="what AdamW's full-rank moments would hold for the same parameters"))

    def __init__(self, config: Any = None):
        super().__init__(config)
        self.projected: set[int] = set()  # ids of the weights whose gradients are projected
        self.optimizer: Any = None

    def apply(self, model: Any, ctx: MethodContext) -> Any:
        from torch import nn

        from suite.errors import UserError
        from suite.methods.common.new_modules import not_adapted
        from suite.methods.common.targets import (
            DEFAULT_ADAPTER_TARGETS,
            matching_modules,
            require_targets,
        )

        keys = require_targets(model, self.name, DEFAULT_ADAPTER_TARGETS, self.config.target_modules)
        chosen = matching_modules(model, keys, nn.Linear, exclude=not_adapted(model, ctx))
        if not chosen:
            raise UserError(f"method '{self.name}' cannot apply to this model: no linear layer matches "
                            f"target_modules {keys}")
        for p in model.parameters():  # full-parameter training
            p.requires_grad_(True)
        self.projected = {id(m.weight) for _, m in chosen}
        return model

    def make_optimizer(self, model: Any, groups: list[dict], recipe: Any) -> Any:
        from suite.errors import UserError

        if recipe.optimizer != "adamw":
            raise UserError(f"method '{self.name}' supplies its own AdamW with projected states; "
                            f"--optimizer {recipe.optimizer} cannot apply (leave the default, adamw)")
        c = self.config
        split: list[dict] = []
        for group in groups:
            plain = [p for p in group["params"] if id(p) not in self.projected]
            low_rank = [p for p in group["params"] if id(p) in self.projected]
            if plain:
                split.append({**group, "params": plain})
            if low_rank:
                split.append({**group, "params": low_rank, "rank": c.rank, "update_gap": c.update_gap,
                              "scale": c.scale, "natural": c.natural, "history": c.history,
                              "damping": c.damping})
        self.optimizer = galore_optimizer_class()(split, lr=recipe.lr)
        return self.optimizer

    def measurements(self, model: Any) -> dict[str, float]:
        """Optimizer-state memory (its peak: states only grow), beside what AdamW would hold."""
        if self.optimizer is None:
            return {}
        held = [p for g in self.optimizer.param_groups for p in g["params"] if p in self.optimizer.state]
        projected = sum(1 for g in self.optimizer.param_groups for p in g["params"]
                        if self.optimizer.projected(p, g))
        return {"optimizer_state_bytes": float(state_bytes(self.optimizer)),
                "galore_adamw_state_bytes": float(sum(2 * p.numel() * p.element_size() for p in held)),
                "galore_projected_matrices": float(projected)}

    def merge(self, model: Any) -> Any:
        return model
