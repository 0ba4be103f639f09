"""Pruning machinery: sparsity patterns, the mask rules of magnitude pruning and Wanda, the
masked linear layer, and the storage a sparse weight needs.

* Patterns (``SparsityPattern``): unstructured at a fraction (``0.5``) or semi-structured
  N:M (``2:4``: in every run of M consecutive input weights of a row, N are kept; the
  layout NVIDIA's sparse tensor cores run).
* ``magnitude_mask``: keep the largest ``|W|``; unstructured over the whole layer (the
  layer-wise magnitude baseline of Wanda's and SparseGPT's tables).
* ``wanda_mask``: Wanda (Sun et al. 2024, arXiv:2306.11695, eq. 1): score
  ``S_ij = |W_ij| * ||X_j||_2`` with ``||X_j||`` the norm of input feature j over the
  calibration tokens; compared per output row (the paper's "per output" group, section 3).
* SparseGPT lives beside GPTQ (``algorithms.sparsegpt_prune``): same Hessian, same sweep.
* ``SparseLinear``: an ``nn.Linear`` whose forward uses ``weight * mask``, so fine-tuning
  after pruning (``+full``) gets zero gradients where the mask is 0 and the weights there
  stay exactly 0; subclassing ``nn.Linear`` lets peft's LoRA wrap it (``+lora``).
* ``mask_adapters``: with ``+lora`` the adapter's update ``B A`` is dense; masked, the
  layer computes ``x (M * (W + s B A))^T`` (the masked merge of LoRAPrune, Zhang et al.
  2023, arXiv:2305.18403, and SQFT's SparsePEFT), so merging the adapter keeps the layer
  exactly as sparse as the pruned base, and the evaluated model is the merged one.
* ``sparse_bytes``: bytes of a layer in a sparse storage format: unstructured as a bitmask
  (1 bit per weight) plus the kept values (the "sparse-bitmask" layout of llm-compressor's
  compressed-tensors); N:M as the kept values plus ceil(log2 M) bits of position per kept
  value (the 2-bit metadata of NVIDIA's 2:4 format).
"""

from __future__ import annotations

import math
import types
from dataclasses import dataclass

import torch
from torch import nn

from suite.errors import CellFailure, UserError


@dataclass(frozen=True)
class SparsityPattern:
    """Unstructured (``n == m == 0``, ``fraction`` pruned) or N:M (keep ``n`` of every ``m``)."""

    fraction: float
    n: int = 0
    m: int = 0

    @property
    def structured(self) -> bool:
        return self.m > 0

    @property
    def label(self) -> str:
        return f"{self.n}:{self.m}" if self.structured else f"{self.fraction:g}"

    @classmethod
    def parse(cls, text: str) -> SparsityPattern:
        """``"0.5"`` / ``"50%"`` (fraction pruned) or ``"2:4"`` (keep 2 of every 4); ValueError
        naming the problem otherwise."""
        raw = str(text).strip()
        if ":" in raw:
            left, _, right = raw.partition(":")
            try:
                n, m = int(left), int(right)
            except ValueError:
                raise ValueError(f"sparsity '{raw}': N:M needs two integers, e.g. 2:4") from None
            if m < 2 or not 0 < n < m:
                raise ValueError(f"sparsity '{raw}': N:M keeps N of every M weights, so it needs "
                                 f"0 < N < M and M >= 2 (e.g. 2:4)")
            return cls(1.0 - n / m, n, m)
        try:
            value = float(raw[:-1]) / 100 if raw.endswith("%") else float(raw)
        except ValueError:
            raise ValueError(f"sparsity '{raw}' is neither a fraction (0.5) nor N:M (2:4)") from None
        if not 0.0 <= value < 1.0:
            raise ValueError(f"sparsity {raw} must be a fraction in [0, 1) (0.5 prunes half)")
        return cls(value)

    def check_layer(self, name: str, in_features: int) -> str | None:
        """Why a layer with ``in_features`` inputs cannot take this pattern; None if it can."""
        if self.structured and in_features % self.m:
            return (f"layer '{name}' has {in_features} inputs, not a multiple of {self.m}, so it cannot "
                    f"take the {self.label} pattern")
        return None


# -- mask rules ----------------------------------------------------------------------------------
def _keep_top(score: torch.Tensor, n_prune: int) -> torch.Tensor:
    """Keep mask over the last dim: prune the ``n_prune`` lowest scores of each row exactly."""
    keep = torch.ones_like(score, dtype=torch.bool)
    if n_prune > 0:
        idx = torch.topk(score, n_prune, dim=-1, largest=False).indices
        keep.scatter_(-1, idx, False)
    return keep


def nm_mask(score: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """N:M keep mask: in every run of ``m`` consecutive inputs of a row, the ``n`` highest scores."""
    rows, cols = score.shape
    if cols % m:
        raise UserError(f"an N:M pattern {n}:{m} needs the input dimension ({cols}) to be a multiple of {m}")
    return _keep_top(score.reshape(rows, cols // m, m), m - n).reshape(rows, cols)


def score_mask(score: torch.Tensor, pattern: SparsityPattern, per_row: bool) -> torch.Tensor:
    """Keep mask from a score: N:M, or unstructured over each row (``per_row``) or the layer."""
    if pattern.structured:
        return nm_mask(score, pattern.n, pattern.m)
    if per_row:
        return _keep_top(score, int(round(pattern.fraction * score.shape[1])))
    flat = _keep_top(score.reshape(1, -1), int(round(pattern.fraction * score.numel())))
    return flat.reshape(score.shape)


def magnitude_mask(weight: torch.Tensor, pattern: SparsityPattern) -> torch.Tensor:
    """Magnitude pruning: keep the largest ``|W|`` (unstructured: over the whole layer)."""
    return score_mask(weight.detach().float().abs(), pattern, per_row=False)


def wanda_mask(weight: torch.Tensor, input_sq_sum: torch.Tensor, pattern: SparsityPattern) -> torch.Tensor:
    """Wanda: keep the largest ``|W_ij| * ||X_j||_2`` (unstructured: per output row).
    ``input_sq_sum[j]`` is the sum of ``x_j^2`` over the calibration tokens."""
    norm = input_sq_sum.float().clamp(min=0).sqrt().to(weight.device)
    return score_mask(weight.detach().float().abs() * norm.reshape(1, -1), pattern, per_row=True)


# -- storage -------------------------------------------------------------------------------------
def sparse_bytes(mask: torch.Tensor, value_bytes: int, pattern: SparsityPattern) -> int:
    """Bytes of a weight with keep ``mask`` in a sparse format (module docstring)."""
    kept = int(mask.sum())
    if pattern.structured:
        meta_bits = kept * math.ceil(math.log2(pattern.m))
        return kept * value_bytes + (meta_bits + 7) // 8
    return kept * value_bytes + (mask.numel() + 7) // 8


# -- the layer -----------------------------------------------------------------------------------
class SparseLinear(nn.Linear):
    """``nn.Linear`` with a keep mask: ``y = x (W * M)^T + b``. Pruned weights are stored as
    0 and get no gradient, so full fine-tuning keeps the pattern."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 device=None, dtype=None):
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        self.register_buffer("mask", torch.ones(out_features, in_features, dtype=torch.bool,
                                                device=device), persistent=False)

    @classmethod
    def from_linear(cls, linear: nn.Linear, weight: torch.Tensor, keep: torch.Tensor) -> SparseLinear:
        layer = cls(linear.in_features, linear.out_features, linear.bias is not None,
                    device=linear.weight.device, dtype=linear.weight.dtype)
        with torch.no_grad():
            layer.mask.copy_(keep.to(layer.mask.device))
            layer.weight.copy_(weight.to(layer.weight.dtype) * layer.mask)
            if linear.bias is not None:
                layer.bias.copy_(linear.bias)
        return layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear(x, self.weight * self.mask, self.bias)

    def zero_pruned(self) -> None:
        with torch.no_grad():
            self.weight.mul_(self.mask)

    def extra_repr(self) -> str:
        kept = float(self.mask.float().mean()) if self.mask.numel() else 1.0
        return super().extra_repr() + f", sparsity={1 - kept:.3f}"


def _adapter_names(module: nn.Module) -> list[str]:
    names = getattr(module, "active_adapters", None) or []
    return [n for n in names if n in getattr(module, "lora_A", {})]


def _masked_adapter_forward(self: nn.Module, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    """A peft LoRA layer over a SparseLinear: ``x (M * (W + sum of delta weights))^T + b``."""
    base = self.get_base_layer()
    if getattr(self, "disable_adapters", False) or getattr(self, "merged", False):
        return base(x)
    weight = base.weight
    for name in _adapter_names(self):
        weight = weight + self.get_delta_weight(name).to(weight.dtype)
    return nn.functional.linear(x.to(weight.dtype), weight * base.mask, base.bias)


def mask_adapters(model: nn.Module) -> int:
    """Make every peft LoRA layer whose base is a SparseLinear compute the masked merged
    weight (once per layer); returns how many layers are masked. DoRA's magnitude and
    non-additive tuners have no masked merge: refused with the way out."""
    count = 0
    for name, module in model.named_modules():
        base = getattr(module, "base_layer", None)
        if not isinstance(base, SparseLinear) or isinstance(module, SparseLinear):
            continue
        if getattr(module, "_suite_masked", False):
            count += 1
            continue
        if not hasattr(module, "get_delta_weight") or not _adapter_names(module):
            raise CellFailure(f"the adapter on pruned layer '{name}' ({type(module).__name__}) has no "
                              f"additive weight update to mask; set mask_adapter=false on the pruning "
                              f"method (the adapter then stays a dense side path)")
        if any(getattr(module, "use_dora", {}).get(a, False) for a in _adapter_names(module)):
            raise CellFailure(f"DoRA on pruned layer '{name}': its magnitude rescales the whole weight, "
                              f"so a masked merge is not defined here; set mask_adapter=false")
        module.forward = types.MethodType(_masked_adapter_forward, module)
        module._suite_masked = True
        count += 1
    return count


def effective_weight(module: nn.Module) -> torch.Tensor:
    """The weight a pruned layer computes with: ``W * M``, plus its adapters' update (masked
    when ``mask_adapters`` made it so, else added densely)."""
    base = module.get_base_layer() if hasattr(module, "get_base_layer") else module
    w = base.weight.detach() * base.mask
    if base is module or getattr(module, "merged", False):
        return w
    delta = sum((module.get_delta_weight(n).detach() for n in _adapter_names(module)),
                torch.zeros_like(w)) if hasattr(module, "get_delta_weight") else torch.zeros_like(w)
    if getattr(module, "_suite_masked", False):
        return (base.weight.detach() + delta.to(w.dtype)) * base.mask
    return w + delta.to(w.dtype)


def unprune(model: nn.Module, keep_mask: bool) -> nn.Module:
    """Replace every SparseLinear by a plain ``nn.Linear`` holding ``W * M`` (``keep_mask``)
    or ``W`` as it stands (a dense adapter merged into it)."""
    for name, module in list(model.named_modules()):
        if isinstance(module, SparseLinear):
            linear = nn.Linear(module.in_features, module.out_features, module.bias is not None,
                               device=module.weight.device, dtype=module.weight.dtype)
            with torch.no_grad():
                linear.weight.copy_(module.weight * module.mask if keep_mask else module.weight)
                if module.bias is not None:
                    linear.bias.copy_(module.bias)
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, child, linear)
    return model
