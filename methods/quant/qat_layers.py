"""Layers for quantisation-aware training on the shared formats.

* ``FakeQuantLinear``: the weight (and optionally the input) fake-quantised in every
  forward with ``formats.fake_quantize`` (through ``layers.fake_quantize``: a kernel where
  one serves), gradients passed straight through (Bengio et al. 2013; the STE every QAT
  recipe uses). ``convert()`` gives the ``QuantLinear`` a
  post-training quantizer would install for the trained weight: the same function on the
  same tensor, so the converted model computes exactly what training saw.
* ``L4QLinear``: L4Q (Jeon et al. 2024, arXiv:2402.04902): the LoRA update is inside the
  quantiser, ``y = x Q(W0 + s B A)^T + b``, so the trained layer is one quantised weight
  (QLoRA's ``Q(W0) x + s B A x`` keeps a full-precision side path, and merging it gives a
  dense weight). For integer formats the step sizes are learned with LSQ (Esser et al.
  2020, arXiv:1902.08153): ``Q(W) = clamp(round(W / s), -qmax, qmax) * s`` with the
  gradient of ``s`` scaled by ``1 / sqrt(n_group * qmax)``; L4Q initialises them from the
  pre-trained weight (here: the absmax rule of ``int<b>``). The step is held as
  ``s = s0 * exp(theta)`` (theta trained, 0 at the start): Adam's update size does not
  depend on the gradient's scale, so a step held directly would move by about the learning
  rate per update, far more than its own size for small weights; in log form it moves by
  a fraction of itself. Other formats keep their own scale rule with a straight-through
  estimator.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from suite.methods.quant.layers import _STE, PackedWeight, QuantLinear, fake_quantize
from suite.numerics import formats as F


class FakeQuantLinear(nn.Linear):
    """``nn.Linear`` whose forward uses ``fake_quantize(W)`` (and ``fake_quantize(x)``)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, device: Any = None,
                 dtype: Any = None):
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        self.w_fmt, self.w_opts = "int8", {}
        self.act_fmt: str | None = None
        self.act_opts: dict = {}

    @classmethod
    def from_linear(cls, linear: nn.Linear, w_fmt: str, w_opts: dict, act_fmt: str | None = None,
                    act_opts: dict | None = None) -> FakeQuantLinear:
        layer = cls(linear.in_features, linear.out_features, linear.bias is not None,
                    device=linear.weight.device, dtype=linear.weight.dtype)
        with torch.no_grad():
            layer.weight.copy_(linear.weight)
            if linear.bias is not None:
                layer.bias.copy_(linear.bias)
        layer.w_fmt, layer.w_opts = w_fmt, dict(w_opts)
        layer.act_fmt, layer.act_opts = act_fmt, dict(act_opts or {})
        return layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.act_fmt is not None:
            x = _STE.apply(x, self.act_fmt, self.act_opts)
        return nn.functional.linear(x, _STE.apply(self.weight, self.w_fmt, self.w_opts), self.bias)

    def convert(self) -> QuantLinear:
        """The quantised layer with what training computed: ``fake_quantize(W)``, packed too. The
        same dispatched operation as the forward's (``layers.fake_quantize``): a kernel serves it
        where it serves training, and either way the values are the formats module's."""
        w = self.weight.detach()
        wq = fake_quantize(w, self.w_fmt, self.w_opts)
        nbytes = int(round(F.effective_bits(self.w_fmt, tuple(w.shape), **self.w_opts) * w.numel() / 8))
        layer = QuantLinear.from_linear(self, wq, act_fmt=self.act_fmt, act_opts=self.act_opts,
                                        storage_bytes=nbytes)
        try:
            layer.packed = PackedWeight(F.quantize(w.float(), self.w_fmt, **self.w_opts), w.dtype)
        except Exception:  # noqa: BLE001 - a shape the packed layout cannot hold: dequantised only
            layer.packed = None
        return layer


class _GradScale(torch.autograd.Function):
    """Identity forward (bit for bit), gradient times ``g``: LSQ's step-size gradient scale."""

    @staticmethod
    def forward(ctx: Any, s: torch.Tensor, g: float) -> torch.Tensor:
        ctx.g = g
        return s.view_as(s)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple:
        return grad * ctx.g, None


class _RoundSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, v: torch.Tensor) -> torch.Tensor:
        return torch.round(v)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        return grad


def lsq_fake_quant(w: torch.Tensor, step: torch.Tensor, qmax: int, group: int, grad_scale: float) -> torch.Tensor:
    """LSQ: ``clamp(round(W / s), -qmax, qmax) * s`` over groups of ``group`` inputs
    (``group`` = the row length for one step per row); gradients: STE through the rounding,
    zero outside the clamp, LSQ's for ``s``. The same float32 operations as
    ``formats.int_codes`` / ``int_dequant``, so the packed weight is bit for bit equal."""
    rows, cols = w.shape
    wb = w.float().reshape(rows, cols // group, group)
    s = _GradScale.apply(step, grad_scale).reshape(rows, cols // group, 1)
    v = _RoundSTE.apply(torch.clamp(wb / s, -qmax, qmax))
    return (v * s).reshape(rows, cols).to(w.dtype)


class L4QLinear(nn.Module):
    """``y = x Q(W0 + scaling * B A)^T + b``: frozen ``W0`` and ``b``, trained ``A``, ``B`` and
    (integer formats) the LSQ step sizes."""

    def __init__(self, linear: nn.Linear, r: int, alpha: float, fmt: str, opts: dict, learn_scale: bool):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight = nn.Parameter(linear.weight.detach().clone(), requires_grad=False)
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach().clone(),
                                                                   requires_grad=False)
        dev, dt = linear.weight.device, linear.weight.dtype
        self.lora_A = nn.Parameter(torch.empty(r, self.in_features, device=dev, dtype=dt))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))  # peft's LoRA initialisation
        self.lora_B = nn.Parameter(torch.zeros(self.out_features, r, device=dev, dtype=dt))
        self.scaling = alpha / r
        self.fmt, self.opts = fmt, dict(opts)
        spec = F.resolve_format(fmt)
        self.lsq = self.learns_scale(fmt, self.opts, learn_scale)
        if self.lsq:
            self.group = self.opts.get("group_size", self.in_features) \
                if self.opts.get("granularity") == "group" else self.in_features
            self.qmax = (1 << (spec.bits - 1)) - 1
            wb = self.weight.detach().float().reshape(self.out_features, -1, self.group)
            init, _ = F.int_qparams(wb, spec.bits, True)  # the format's absmax rule on W0
            self.register_buffer("step_init", init.reshape(self.out_features, -1))
            self.log_step = nn.Parameter(torch.zeros_like(self.step_init))
            self.grad_scale = 1.0 / math.sqrt(self.group * self.qmax)

    @staticmethod
    def learns_scale(fmt: str, opts: dict, learn_scale: bool) -> bool:
        """Whether the step sizes are learned (LSQ): symmetric integer formats with ``learn_scale``."""
        return bool(learn_scale and F.resolve_format(fmt).family == "int" and opts.get("symmetric", True))

    def step_size(self) -> torch.Tensor:
        """The LSQ step sizes ``s0 * exp(theta)`` (exactly ``s0`` before training)."""
        return self.step_init * torch.exp(self.log_step)

    def merged_weight(self) -> torch.Tensor:
        return self.weight + self.scaling * (self.lora_B @ self.lora_A)

    def quantized_weight(self) -> torch.Tensor:
        w = self.merged_weight()
        if self.lsq:
            return lsq_fake_quant(w, self.step_size(), self.qmax, self.group, self.grad_scale)
        return _STE.apply(w, self.fmt, self.opts)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear(x, self.quantized_weight(), self.bias)

    def convert(self) -> QuantLinear:
        """One quantised layer holding ``Q(W0 + s B A)`` as training computed it, packed with
        the learned step sizes (``formats.quantize_with_scale``) or the format's own rule."""
        with torch.no_grad():
            w = self.merged_weight().detach()
            wq = self.quantized_weight().detach()
        plain = nn.Linear(self.in_features, self.out_features, self.bias is not None,
                          device=w.device, dtype=w.dtype)
        if self.bias is not None:
            with torch.no_grad():
                plain.bias.copy_(self.bias)
        nbytes = int(round(F.effective_bits(self.fmt, tuple(w.shape), **self.opts) * w.numel() / 8))
        layer = QuantLinear.from_linear(plain, wq, storage_bytes=nbytes)
        try:
            if self.lsq:
                qt = F.quantize_with_scale(w.float(), self.fmt, self.step_size().detach(), **self.opts)
            else:
                qt = F.quantize(w.float(), self.fmt, **self.opts)
            layer.packed = PackedWeight(qt, w.dtype)
        except Exception:  # noqa: BLE001 - a shape the packed layout cannot hold: dequantised only
            layer.packed = None
        return layer

    def extra_repr(self) -> str:
        return (f"in={self.in_features}, out={self.out_features}, r={self.lora_A.shape[0]}, "
                f"format={self.fmt}, lsq={self.lsq}")
