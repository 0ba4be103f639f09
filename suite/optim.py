"""Optimizers by name (``--optimizer``): torch's, and whatever the installed libraries offer.

Every entry takes parameter groups (weight decay already split, see ``parameter_groups``)
and a learning rate. A method may supply its own optimizer instead (``Method.make_optimizer``:
GaLore's projected states, COAT's FP8 states); the loop asks the methods first, and those
optimizers share ``adamw_step`` below. Entries from optional libraries say which extra installs
them when it is missing.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch

from suite.errors import UnknownNameError, UserError

Groups = list[dict]


@dataclass(frozen=True)
class OptimizerEntry:
    summary: str
    build: Callable[[Groups, float], torch.optim.Optimizer]
    library: str = "torch"  # the package that must be importable


def _torchao(name: str) -> Callable[[Groups, float], torch.optim.Optimizer]:
    def build(groups: Groups, lr: float) -> torch.optim.Optimizer:
        import torchao.optim

        return getattr(torchao.optim, name)(groups, lr=lr)

    return build


def _bnb(name: str) -> Callable[[Groups, float], torch.optim.Optimizer]:
    def build(groups: Groups, lr: float) -> torch.optim.Optimizer:
        import bitsandbytes

        return getattr(bitsandbytes.optim, name)(groups, lr=lr)

    return build


OPTIMIZERS: dict[str, OptimizerEntry] = {
    "adamw": OptimizerEntry("torch AdamW (default)", lambda g, lr: torch.optim.AdamW(g, lr=lr)),
    "adam": OptimizerEntry("torch Adam (weight decay as L2)", lambda g, lr: torch.optim.Adam(g, lr=lr)),
    "sgd": OptimizerEntry("torch SGD with momentum 0.9",
                          lambda g, lr: torch.optim.SGD(g, lr=lr, momentum=0.9)),
    "adamw-8bit": OptimizerEntry("torchao AdamW with 8-bit block-quantised states",
                                 _torchao("AdamW8bit"), "torchao"),
    "adamw-4bit": OptimizerEntry("torchao AdamW with 4-bit block-quantised states",
                                 _torchao("AdamW4bit"), "torchao"),
    "adamw-fp8": OptimizerEntry("torchao AdamW with FP8 (E4M3) states", _torchao("AdamWFp8"), "torchao"),
    "bnb-adamw-8bit": OptimizerEntry("bitsandbytes 8-bit AdamW (CUDA)", _bnb("AdamW8bit"), "bitsandbytes"),
}


def parameter_groups(named: Iterable[tuple[str, torch.nn.Parameter]], weight_decay: float,
                     decay_all: bool = False) -> Groups:
    """Decay matrices; biases and norm weights get none (the usual convention), unless ``decay_all``
    (one group, as ``torch.optim.AdamW(model.parameters())`` decays: peft's method_comparison)."""
    decay, no_decay = [], []
    for name, p in named:
        (no_decay if not decay_all and (p.ndim < 2 or "norm" in name.lower()) else decay).append(p)
    return [g for g in ({"params": decay, "weight_decay": weight_decay},
                        {"params": no_decay, "weight_decay": 0.0}) if g["params"]]


def check_optimizer(name: str) -> None:
    """Before any cell runs: the name is known and its library is installed."""
    import importlib.util

    entry = OPTIMIZERS.get(name)
    if entry is None:
        raise UnknownNameError("optimizer", name, OPTIMIZERS)
    if entry.library != "torch" and importlib.util.find_spec(entry.library) is None:
        raise UserError(f"optimizer '{name}' needs {entry.library}, which is not installed "
                        f"(pip install {entry.library})")


def build_optimizer(name: str, groups: Groups, lr: float) -> torch.optim.Optimizer:
    check_optimizer(name)
    return OPTIMIZERS[name].build(groups, lr)


def adamw_step(param: torch.Tensor, grad: torch.Tensor, exp_avg: torch.Tensor, exp_avg_sq: torch.Tensor,
               step: int, *, lr: float, betas: tuple[float, float], eps: float, weight_decay: float,
               project_back: Callable[[torch.Tensor], torch.Tensor] | None = None, scale: float = 1.0,
               lerp: bool = True) -> None:
    """One AdamW step as torch.optim.AdamW computes it (decoupled weight decay times lr, bias
    correction, eps after the corrected square root), so the optimizers that keep their moments
    elsewhere differ from it only there.

    ``grad`` and the moments (updated in place; ``step`` counts this one) live where the caller
    keeps them: GaLore's projected space, COAT's decoded FP32 copies of its FP8 codes, which it
    stores back. ``project_back`` maps the normalised update to the parameter's space, applied
    times ``scale`` (GaLore's alpha). ``lerp=False`` forms the first moment as b1 m + (1 - b1) g,
    as COAT does, which rounds differently from torch's lerp. The two halves are
    ``adamw_moments`` and ``adamw_apply``: an optimizer may run the first over many parameters'
    moments at once (COAT's, flat) and the second per parameter.
    """
    denom = adamw_moments(grad, exp_avg, exp_avg_sq, step, betas=betas, eps=eps, lerp=lerp)
    adamw_apply(param, exp_avg, denom, step, lr=lr, beta1=betas[0], weight_decay=weight_decay,
                project_back=project_back, scale=scale)


def adamw_moments(grad: torch.Tensor, exp_avg: torch.Tensor, exp_avg_sq: torch.Tensor, step: int, *,
                  betas: tuple[float, float], eps: float, lerp: bool = True) -> torch.Tensor:
    """``adamw_step``'s moment updates (in place) and the update's denominator, the bias-corrected
    square root of the second moment plus ``eps``: elementwise, so any slice of the result is
    what the same call on that slice alone gives."""
    beta1, beta2 = betas
    if lerp:
        exp_avg.lerp_(grad, 1 - beta1)
    else:
        exp_avg.mul_(beta1).add_(grad, alpha=1 - beta1)
    exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
    return (exp_avg_sq.sqrt() / math.sqrt(1 - beta2 ** step)).add_(eps)


def adamw_apply(param: torch.Tensor, exp_avg: torch.Tensor, denom: torch.Tensor, step: int, *, lr: float,
                beta1: float, weight_decay: float,
                project_back: Callable[[torch.Tensor], torch.Tensor] | None = None, scale: float = 1.0) -> None:
    """``adamw_step``'s change to ``param``: decoupled weight decay, then the bias-corrected first
    moment over ``denom`` (``adamw_moments``) times ``-lr``."""
    if weight_decay:
        param.mul_(1 - lr * weight_decay)
    bias1 = 1 - beta1 ** step
    if project_back is None:
        # the moments may be wider than the parameter (COAT's FP32 beside a bf16 weight)
        param.addcdiv_(exp_avg.to(param.dtype), denom.to(param.dtype), value=-lr / bias1)
    else:
        param.add_(project_back(exp_avg / denom), alpha=-lr * scale / bias1)
