"""The quantized linear layer every quantizer installs, and the input transforms they use.

``QuantLinear`` subclasses ``nn.Linear`` on purpose: peft's LoRA wraps any ``nn.Linear``,
so ``nf4+lora`` (QLoRA) and ``gptq+lora`` need no custom peft dispatch. Its ``weight`` is
the frozen, dequantised weight (values exactly on the format's grid, as
``suite.numerics.formats.fake_quantize`` gives them); the packed size is kept in
``storage_bytes``.

Forward: ``x -> transform(x) -> fake-quantise activations (optional) -> x W^T + b``. The
transform is what SmoothQuant and AWQ (divide by a per-channel scale, weights multiplied
by it) and QuaRot-style rotation (a block Hadamard ``H``, weights rotated by the same
``H``) apply; they leave the full-precision output unchanged, which the tests check. The
rotation is ``suite.numerics.hadamard.apply_block_hadamard`` in its dense form: the one
Hadamard definition, whose fast form is the Hadamard kernels' reference.
Activation fake-quantisation uses a straight-through estimator, so LoRA on top of a
W4A4 model still gets gradients for earlier layers.

Packed storage: every quantizer also keeps the weight as the format stores it
(``PackedWeight``: packed codes and scales, ``suite.numerics.formats.QTensor``), built by
a separate path from the dequantised ``weight``; ``run_packed = True`` makes the forward
dequantise from that storage instead (what a weight-only low-bit kernel does), and the
tests require both paths to give the same weight and the same outputs.

With ``real_fp8=True`` the matmul runs in FP8 through ``torch._scaled_mm`` (row-wise
scales: per-token activations, per-channel weights) on GPUs with FP8 tensor cores.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from suite.errors import UserError
from suite.numerics import formats as F
from suite.numerics.hadamard import apply_block_hadamard

# The options the fake_quantize kernels take (suite.numerics.dispatch); with others the formats module runs.
# ``group_size`` only with an integer format's ``granularity=group`` (the INT4 group kernel's scales).
DISPATCHED_OPTIONS = {"granularity", "rounding", "group_size"}
# The formats module's granularity aliases: a scale per output channel of a weight, or per token of an
# activation, is one per row of the 2-D tensor either way.
ROW_ALIASES = ("channel", "token")


def dispatch_options(fmt: str, opts: dict) -> dict | None:
    """The options ``fake_quantize`` dispatches ``fmt`` with, or None where the formats module runs:
    options a kernel takes, to nearest, written one way (the granularity aliases ``channel`` and
    ``token`` as ``row``; ``symmetric=True``, the integer formats' default, left out; an integer
    format's groups with their size, the format's default where not given), so a call means the
    same to the formats module and has one dispatch key."""
    spec = F.resolve_format(fmt)
    out = dict(opts)
    if "symmetric" in out and spec.family == "int":
        if out.pop("symmetric") is not True:
            return None  # asymmetric integers: no kernel
    if not set(out) <= DISPATCHED_OPTIONS or out.get("rounding", "nearest") != "nearest":
        return None
    grouped = spec.family == "int" and out.get("granularity") == "group"
    if grouped:
        out.setdefault("group_size", spec.defaults["group_size"])
    elif "group_size" in out:
        return None  # a group size the call does not use (or another format's option): the formats module
    if out.get("granularity") in ROW_ALIASES:
        out["granularity"] = "row"
    return out


def format_call(label: str, fmt: str, opts: dict) -> tuple[str, str, tuple | None]:
    """(label, description, dispatch key or None) of ``fake_quantize(x, fmt, opts)``: how a method
    declares its format operations (``format_calls``; ``suite.bench.methods`` lists the kernels)."""
    from suite.numerics import dispatch

    o = dispatch_options(fmt, opts)
    what = fmt + (f" ({', '.join(f'{k}={v}' for k, v in opts.items())})" if opts else "")
    return label, what, None if o is None else dispatch.key("fake_quantize", fmt, **o)


def fake_quantize(x: torch.Tensor, fmt: str, opts: dict) -> torch.Tensor:
    """``formats.fake_quantize`` for QAT weights, quantizers' weights and fake-quantised activations:
    with options a kernel takes (``dispatch_options``), through ``suite.numerics.dispatch``
    (activations as rows of their last dimension, where every scale of these formats lies), so a
    registered kernel serves it where the device and shape allow; anything else runs the formats
    module."""
    o = dispatch_options(fmt, opts) if x.dim() >= 2 else None
    if o is not None:
        from suite.numerics import dispatch

        rows = x.reshape(-1, x.shape[-1])
        return dispatch.call("fake_quantize", F.fake_quantize, rows, fmt, **o).reshape(x.shape)
    return F.fake_quantize(x, fmt, **opts)


class _STE(torch.autograd.Function):
    """Straight-through: forward the quantised value, pass the gradient unchanged."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, fmt: str, opts: dict) -> torch.Tensor:
        return fake_quantize(x, fmt, opts)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple:
        return grad, None, None


class _Fp8Matmul(torch.autograd.Function):
    """``x @ W^T`` on FP8 tensor cores: x quantised per token, W stored as FP8 codes with a
    scale per row. torch._scaled_mm has no derivative, so the backward is the simulated
    path's (straight-through for x's rounding, the dequantised weight for the product):
    without it, gradients to earlier layers (e.g. ``+lora`` on a real-FP8 base) vanish."""

    @staticmethod
    def forward(ctx: Any, x2: torch.Tensor, w8: torch.Tensor, w_scale: torch.Tensor,
                weight: torch.Tensor) -> torch.Tensor:
        qx = F.quantize(x2.detach().float(), "fp8_e4m3", granularity="row")
        out = torch._scaled_mm(qx.data, w8.t(), scale_a=qx.scale.reshape(-1, 1).float(),
                               scale_b=w_scale, out_dtype=torch.bfloat16)
        ctx.save_for_backward(weight)
        return out.to(x2.dtype)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple:
        (weight,) = ctx.saved_tensors
        return grad @ weight.to(grad.dtype), None, None, None


def fp8_matmul_supported(device: torch.device | str) -> tuple[bool, str]:
    """Whether ``torch._scaled_mm`` can run FP8 on ``device`` (CUDA, compute capability 8.9+)."""
    dev = torch.device(device)
    if dev.type != "cuda" or not torch.cuda.is_available():
        return False, "FP8 matmuls need a CUDA GPU and this run is on the CPU"
    major, minor = torch.cuda.get_device_capability(dev)
    if (major, minor) < (8, 9):
        return False, f"FP8 tensor cores need compute capability 8.9+ (Ada/Hopper), this GPU is {major}.{minor}"
    return True, ""


def int8_matmul_supported(device: torch.device | str) -> tuple[bool, str]:
    """Whether ``torch._int_mm`` runs INT8 GEMMs on ``device`` (CPUs; CUDA GPUs whose build has
    the kernel): tried once on a small product, so a platform without it is named, not hit mid-run."""
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        return False, "INT8 matmuls on CUDA need a CUDA GPU, and none is available"
    try:
        a = torch.ones(32, 32, dtype=torch.int8, device=dev)
        ok = int(torch._int_mm(a, a.t())[0, 0]) == 32
    except (RuntimeError, NotImplementedError) as exc:
        return False, f"torch._int_mm does not run on {dev} ({str(exc).splitlines()[0]})"
    return (True, "") if ok else (False, f"torch._int_mm gave a wrong sum on {dev}")


class PackedWeight:
    """A layer weight in real low-bit storage: ``qtensor`` (packed codes and scales), the
    column order it was quantised in (``perm``: GPTQ's act_order) and a per-input-channel
    divisor folded in after dequantisation (``col_divisor``: weight-only AWQ)."""

    def __init__(self, qtensor: F.QTensor, dtype: torch.dtype, perm: torch.Tensor | None = None,
                 col_divisor: torch.Tensor | None = None):
        self.qtensor, self.dtype, self.perm, self.col_divisor = qtensor, dtype, perm, col_divisor

    @property
    def nbytes(self) -> int:
        """Bytes really stored: packed codes, scales, zero points, permutation, divisors."""
        extra = sum(t.numel() * t.element_size() for t in (self.perm, self.col_divisor) if t is not None)
        return self.qtensor.nbytes + extra

    def dequantize(self) -> torch.Tensor:
        """The weight in the layer's basis and dtype, the operations of the fake path in order."""
        w = F.dequantize(self.qtensor)
        if self.perm is not None:
            w = w[:, torch.argsort(self.perm)]
        if self.col_divisor is not None:
            w = w.float() / self.col_divisor
        return w.to(self.dtype)


class QuantLinear(nn.Linear):
    """A frozen, quantised ``nn.Linear`` with optional input transform and activation quant."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 device: Any = None, dtype: Any = None):
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        self.weight.requires_grad_(False)
        self.act_fmt: str | None = None
        self.act_opts: dict = {}
        self.hadamard_block = 0
        self.storage_bytes = 0
        self.real_fp8 = False
        self.register_buffer("input_scale", None)  # SmoothQuant / AWQ per-channel divisor
        self._fp8: tuple | None = None  # (weight codes fp8 [out, in], per-channel scale [out])
        self._weight_sum = 0.0
        self.packed: PackedWeight | None = None  # real low-bit storage of the weight
        self.run_packed = False  # forward from ``packed`` (dequantised per call) instead of ``weight``

    @classmethod
    def from_linear(cls, linear: nn.Linear, weight_q: torch.Tensor, *,
                    input_scale: torch.Tensor | None = None, hadamard_block: int = 0,
                    act_fmt: str | None = None, act_opts: dict | None = None,
                    storage_bytes: int = 0) -> QuantLinear:
        """Build from ``linear``; ``weight_q`` is the dequantised weight IN THE TRANSFORMED
        basis (already multiplied by ``input_scale`` / rotated by the Hadamard)."""
        layer = cls(linear.in_features, linear.out_features, linear.bias is not None,
                    device=linear.weight.device, dtype=linear.weight.dtype)
        with torch.no_grad():
            layer.weight.copy_(weight_q)
            if linear.bias is not None:
                layer.bias.copy_(linear.bias)
                layer.bias.requires_grad_(linear.bias.requires_grad)
        layer.input_scale = None if input_scale is None else input_scale.detach().to(
            linear.weight.device, torch.float32)
        layer.hadamard_block = hadamard_block
        layer.act_fmt = act_fmt
        layer.act_opts = dict(act_opts or {})
        layer.storage_bytes = storage_bytes
        layer._weight_sum = float(weight_q.detach().double().sum())
        return layer

    def weight_changed_under_transform(self) -> bool:
        """True when something (a peft merge) changed the weight of a layer whose weight is
        in a transformed basis: adding an original-basis delta there would be wrong."""
        if self.input_scale is None and not self.hadamard_block:
            return False
        return float(self.weight.detach().double().sum()) != self._weight_sum

    def transform_input(self, x: torch.Tensor) -> torch.Tensor:
        if self.input_scale is not None:
            x = x / self.input_scale.to(x.dtype)
        if self.hadamard_block:
            x = apply_block_hadamard(x, self.hadamard_block)
        return x

    def enable_real_fp8(self) -> None:
        """Store the weight as FP8 E4M3 with per-channel scales for ``torch._scaled_mm``."""
        ok, why = fp8_matmul_supported(self.weight.device)
        if not ok:
            raise UserError(f"real=true asks for FP8 matmuls, but {why}; drop real=true to simulate")
        if self.in_features % 16 or self.out_features % 16:
            raise UserError(f"real=true: FP8 matmuls (cuBLASLt) need both dimensions of every quantised "
                            f"layer divisible by 16, and a layer is {self.out_features} x "
                            f"{self.in_features}; skip it (skip=<name>) or drop real=true to simulate")
        q = F.quantize(self.weight.detach().float(), "fp8_e4m3", granularity="row")
        self._fp8 = (q.data, q.scale.reshape(1, -1).float())
        self.real_fp8 = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.transform_input(x)
        if self.real_fp8 and self._fp8 is not None:
            return self._forward_fp8(x)
        if self.act_fmt is not None:
            x = _STE.apply(x, self.act_fmt, self.act_opts)
        weight = self.weight
        if self.run_packed and self.packed is not None:
            weight = self.packed.dequantize().to(self.weight.device)
        return nn.functional.linear(x, weight, self.bias)

    def _forward_fp8(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        w8, w_scale = self._fp8
        out = _Fp8Matmul.apply(x.reshape(-1, shape[-1]), w8, w_scale, self.weight.detach())
        if self.bias is not None:
            out = out + self.bias
        return out.reshape(*shape[:-1], self.out_features)

    def effective_weight(self) -> torch.Tensor:
        """The weight in the ORIGINAL basis: ``x @ W_eff^T`` equals this layer's output
        without activation quantisation (used to merge into a plain ``nn.Linear``)."""
        w = self.weight.detach().float()
        if self.hadamard_block:
            w = apply_block_hadamard(w, self.hadamard_block)  # (W H) H^T = W; H symmetric
        if self.input_scale is not None:
            w = w / self.input_scale
        return w.to(self.weight.dtype)

    def extra_repr(self) -> str:
        extra = f", act={self.act_fmt}" if self.act_fmt else ""
        extra += ", smooth" if self.input_scale is not None else ""
        extra += f", hadamard={self.hadamard_block}" if self.hadamard_block else ""
        extra += ", real_fp8" if self.real_fp8 else ""
        return super().extra_repr() + extra
