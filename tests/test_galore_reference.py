"""GaLore against a port of its reference implementation, in every run (galore-torch not needed).

The reference is jiaweizzhao/GaLore at commit 2cc66f88cce189e505affbb91042a8e77f5bf4e9:
``galore_torch/galore_projector.py`` (``GaLoreProjector``, projection type "std") and
``galore_torch/adamw.py`` (``AdamW.step``). The galore-torch 1.0 wheel ships the same arithmetic for
matrices (its copies differ only in device moves and the tensor projector). galore-torch imports
bitsandbytes when imported, so it is not a test dependency; ``ReferenceGaLoreAdamW`` below ports
the arithmetic, not the text.

The reference differs from torch's AdamW, which ``suite.optim.adamw_step`` (and so our GaLore)
follows, in two places:

- eps: the reference adds eps to sqrt(v) before the bias correction and folds sqrt(1 - b2^t)
  into the step size, so its eps acts as eps / sqrt(1 - b2^t) on the bias-corrected sqrt(v_hat);
  ours adds eps to sqrt(v_hat).
- weight decay: the reference decays the weight after the update (the update is decayed too);
  ours decays before it, as torch does.

So they agree where eps is negligible and there is no weight decay (eps=1e-12, weight_decay=0),
and elsewhere differ by the closed form tested below.
"""

from __future__ import annotations

import math

import pytest
import torch

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# -- the port ---------------------------------------------------------------------------------------
class ReferenceProjector:
    """GaLoreProjector with proj_type "std": the smaller side of the gradient's SVD."""

    def __init__(self, rank: int, update_proj_gap: int, scale: float):
        self.rank, self.update_proj_gap, self.scale = rank, update_proj_gap, scale
        self.ortho_matrix: torch.Tensor | None = None

    def _refresh(self, grad: torch.Tensor, iteration: int, side: str) -> None:
        if self.ortho_matrix is None or iteration % self.update_proj_gap == 0:
            u, _, vh = torch.linalg.svd(grad.float(), full_matrices=False)  # SVD in float32, cast back
            factor = vh[: self.rank, :] if side == "right" else u[:, : self.rank]
            self.ortho_matrix = factor.to(grad.dtype)

    def project(self, grad: torch.Tensor, iteration: int) -> torch.Tensor:
        if grad.shape[0] >= grad.shape[1]:
            self._refresh(grad, iteration, "right")
            return grad @ self.ortho_matrix.t()
        self._refresh(grad, iteration, "left")
        return self.ortho_matrix.t() @ grad

    def project_back(self, low_rank: torch.Tensor) -> torch.Tensor:
        # the side is read from the low-rank tensor's shape, as the reference does
        if low_rank.shape[0] >= low_rank.shape[1]:
            return (low_rank @ self.ortho_matrix) * self.scale
        return (self.ortho_matrix @ low_rank) * self.scale


class ReferenceGaLoreAdamW(torch.optim.Optimizer):
    """galore_torch.AdamW: groups with a ``rank`` keep their moments in the projected space."""

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-6,
                 weight_decay: float = 0.0, correct_bias: bool = True):
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay,
                                  "correct_bias": correct_bias})

    @torch.no_grad()
    def step(self) -> None:
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                state = self.state[p]
                state.setdefault("step", 0)
                if "rank" in group:
                    if "projector" not in state:
                        state["projector"] = ReferenceProjector(group["rank"], group["update_proj_gap"],
                                                                group["scale"])
                    grad = state["projector"].project(grad, state["step"])  # the step count before this step
                if "exp_avg" not in state:
                    state["exp_avg"], state["exp_avg_sq"] = torch.zeros_like(grad), torch.zeros_like(grad)
                exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
                state["step"] += 1
                exp_avg.mul_(beta1).add_(grad, alpha=1.0 - beta1)
                exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1.0 - beta2)
                denom = exp_avg_sq.sqrt().add_(group["eps"])  # eps before the bias correction
                step_size = group["lr"]
                if group["correct_bias"]:
                    step_size *= math.sqrt(1.0 - beta2 ** state["step"]) / (1.0 - beta1 ** state["step"])
                update = exp_avg / denom
                if "rank" in group:
                    update = state["projector"].project_back(update)
                p.add_(update, alpha=-step_size)
                if group["weight_decay"] > 0.0:  # decay after the update
                    p.add_(p, alpha=-group["lr"] * group["weight_decay"])


# -- the two, side by side ----------------------------------------------------------------------------
LR, SCALE, RANK, GAP = 0.1, 0.5, 3, 2
BETAS = (0.9, 0.999)


def _pair(eps: float, weight_decay: float):
    """Ours and the reference on the same parameters: a wide matrix (projected on the left), a tall
    and a square one (on the right), and a bias (plain Adam in both)."""
    from suite.methods.memory_efficient.galore import galore_optimizer_class

    generator = torch.Generator().manual_seed(0)
    shapes = [(6, 20), (20, 6), (8, 8), (6,)]
    ours = [torch.nn.Parameter(torch.randn(s, generator=generator)) for s in shapes]
    theirs = [torch.nn.Parameter(p.detach().clone()) for p in ours]
    hyper = {"betas": BETAS, "eps": eps, "weight_decay": weight_decay}
    mine = galore_optimizer_class()([{"params": ours[:3], "rank": RANK, "update_gap": GAP, "scale": SCALE},
                                     {"params": ours[3:]}], lr=LR, **hyper)
    reference = ReferenceGaLoreAdamW([{"params": theirs[:3], "rank": RANK, "update_proj_gap": GAP, "scale": SCALE},
                                      {"params": theirs[3:]}], lr=LR, **hyper)
    return (mine, ours), (reference, theirs), generator


def _step_both(mine, ours, reference, theirs, generator) -> None:
    for p, q in zip(ours, theirs, strict=True):
        g = torch.randn(p.shape, generator=generator)
        p.grad, q.grad = g.clone(), g.clone()
    mine.step()
    reference.step()


def test_galore_matches_the_reference_port_where_both_agree():
    """eps=1e-12 and no weight decay: the two formulas are one (up to rounding), through projector
    refreshes (every 2 steps) on both sides of the SVD."""
    (mine, ours), (reference, theirs), generator = _pair(eps=1e-12, weight_decay=0.0)
    for _ in range(7):
        _step_both(mine, ours, reference, theirs, generator)
        for p, q in zip(ours, theirs, strict=True):
            torch.testing.assert_close(mine.state[p]["exp_avg"], reference.state[q]["exp_avg"], atol=1e-6, rtol=1e-5)
            torch.testing.assert_close(mine.state[p]["exp_avg_sq"], reference.state[q]["exp_avg_sq"],
                                       atol=1e-7, rtol=1e-5)
            torch.testing.assert_close(p.detach(), q.detach(), atol=1e-6, rtol=1e-5)
    for p, q in zip(ours[:3], theirs[:3], strict=True):  # the same projector on the same side
        torch.testing.assert_close(mine.state[p]["projector"], reference.state[q]["projector"].ortho_matrix)


def test_galore_differs_from_the_reference_only_by_eps_placement_and_decay_order():
    """Where they disagree (eps=1e-3, weight_decay=0.1), one step from the same weights and moments
    moves each by its own closed form, and the gap is bounded.

    With m, v the shared moments, t the step, bc1 = 1 - b1^t, bc2 = 1 - b2^t, lambda = lr * wd,
    a = lr * scale and B the projection back (isometric: orthonormal P or Q; the identity for the bias):

        ours (torch AdamW order):  n = (m / bc1) / (sqrt(v / bc2) + eps)
                                   w' = w (1 - lambda) - a B(n)
        reference (GaLore's):      n_ref = (m / bc1) / (sqrt(v / bc2) + eps / sqrt(bc2))
                                   w'_ref = (w - a B(n_ref)) (1 - lambda)

    Elementwise |n - n_ref| <= (1 - sqrt(bc2)) |n| (sqrt(v / bc2) >= 0), which shrinks as t grows,
    so ||w'_ref - w'|| <= a (1 - sqrt(bc2)) ||n|| + lambda a ||n_ref||.
    """
    eps, weight_decay = 1e-3, 0.1
    (mine, ours), (reference, theirs), generator = _pair(eps=eps, weight_decay=weight_decay)
    decay = LR * weight_decay
    b1, b2 = BETAS
    for t in range(1, 8):
        with torch.no_grad():  # the same weights before this step: only this step's difference shows
            for p, q in zip(ours, theirs, strict=True):
                q.copy_(p)
        before = [p.detach().clone() for p in ours]
        _step_both(mine, ours, reference, theirs, generator)
        bc1, bc2 = 1 - b1 ** t, 1 - b2 ** t
        for index, (p, q, w) in enumerate(zip(ours, theirs, before, strict=True)):
            state = mine.state[p]
            m, v = state["exp_avg"], state["exp_avg_sq"]
            # the moments are the same in both: the difference is only in the step
            torch.testing.assert_close(m, reference.state[q]["exp_avg"], atol=1e-6, rtol=1e-5)
            torch.testing.assert_close(v, reference.state[q]["exp_avg_sq"], atol=1e-7, rtol=1e-5)
            n = (m / bc1) / ((v / bc2).sqrt() + eps)
            n_ref = (m / bc1) / ((v / bc2).sqrt() + eps / math.sqrt(bc2))
            if index < 3:
                back = mine.back_projection(state["side"], state["projector"])
                a = LR * SCALE
            else:
                back, a = (lambda x: x), LR
            torch.testing.assert_close(p.detach(), w * (1 - decay) - a * back(n), atol=1e-6, rtol=1e-5)
            torch.testing.assert_close(q.detach(), (w - a * back(n_ref)) * (1 - decay), atol=1e-6, rtol=1e-5)
            assert ((n - n_ref).abs() <= (1 - math.sqrt(bc2)) * n.abs() + 1e-7).all()
            gap = float((q.detach() - p.detach()).norm())
            bound = a * (1 - math.sqrt(bc2)) * float(n.norm()) + decay * a * float(n_ref.norm())
            assert 0 < gap <= bound * (1 + 1e-4) + 1e-6, (t, index, gap, bound)


def test_the_reference_port_is_galore_torch_where_installed():
    """Where galore-torch is installed, the port steps exactly as its AdamW does (eps and weight
    decay where they show), so the tests above check against the package too."""
    galore_torch = pytest.importorskip("galore_torch")
    generator = torch.Generator().manual_seed(1)
    params = [torch.nn.Parameter(torch.randn(s, generator=generator)) for s in [(6, 20), (20, 6), (6,)]]
    copies = [torch.nn.Parameter(p.detach().clone()) for p in params]
    hyper = {"lr": LR, "eps": 1e-3, "weight_decay": 0.1}
    port = ReferenceGaLoreAdamW([{"params": params[:2], "rank": RANK, "update_proj_gap": GAP, "scale": SCALE},
                                 {"params": params[2:]}], **hyper)
    package = galore_torch.GaLoreAdamW([{"params": copies[:2], "rank": RANK, "update_proj_gap": GAP,
                                         "scale": SCALE, "proj_type": "std"}, {"params": copies[2:]}],
                                       no_deprecation_warning=True, **hyper)
    for _ in range(5):
        for p, q in zip(params, copies, strict=True):
            g = torch.randn(p.shape, generator=generator)
            p.grad, q.grad = g.clone(), g.clone()
        port.step()
        package.step()
    for p, q in zip(params, copies, strict=True):
        torch.testing.assert_close(p.detach(), q.detach(), atol=0, rtol=0)
