"""Stochastic-rounding fake quantisation of the FP4 block formats, fed its uniforms.

The training recipes round their gradient operands stochastically: NVFP4 (blocks of 16, NVIDIA's
recipe) and MXFP4 with the OCP scale divided by 3/4 (``sr34``: block maxima land at or below 6,
so rounding is unbiased and never saturates; Tseng et al. 2025, Quartet's backward). This is the
one reference of that operation (``suite.numerics.dispatch`` op ``fake_quantize_stochastic``):
the uniforms come in as a tensor ``u`` shaped like ``t``, so a kernel fed the same ``u`` must give
the same values bit for bit (``tests/test_kernel_stochastic.py``). The recipes call it through
``fake_quantize_keyed`` (the dispatch operation ``fake_quantize_stochastic``): the uniforms of a
per-call key (``suite.numerics.counter_rng``), which a kernel computes in registers.

Elements: E2M1 with stochastic rounding as ``suite.numerics.rounding`` defines it (the upper
neighbour when ``u < (|v| - lo) / (hi - lo)``, saturating at 6), computed in a few elementwise
operations: within each binade of E2M1 the values are evenly spaced, so ``|v| / step`` with the
binade's power-of-two step, plus a uniform, floors to the code. Scales: those of
``suite.numerics.formats`` (``mx_scale_e8m0``; NVFP4's ``nvfp4_tensor_scale`` and E4M3 block
scale), in the formats module's order of operations.
"""

from __future__ import annotations

import torch

from suite.numerics import elements as el
from suite.numerics import formats as F
from suite.numerics.counter_rng import counter_uniforms
from suite.numerics.hadamard import rotate_blocks

# (format, scaling) -> the block size along the last dimension
SHAPES = {("mxfp4", "block"): 32, ("mxfp4", "sr34"): 32, ("nvfp4", "block"): 16}


def fp4_stochastic(v: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """``v`` rounded stochastically onto the E2M1 values (saturating at 6) with uniforms ``u``."""
    m = v.abs().clamp(max=el.FP4_E2M1.max)
    step = torch.where(m >= 4.0, 2.0, torch.where(m >= 2.0, 1.0, 0.5))
    q = m / step
    low = torch.floor(q)
    q = low + (u < q - low).to(q.dtype)
    return torch.copysign(q * step, v)


def _e8m0(code: torch.Tensor) -> torch.Tensor:
    return torch.ldexp(torch.ones_like(code, dtype=torch.float32), code.to(torch.int32) - 127)


def fake_quantize_stochastic(t: torch.Tensor, fmt: str, u: torch.Tensor, scaling: str = "block",
                             hadamard: int = 0, signs: torch.Tensor | None = None) -> torch.Tensor:
    """``t`` (float32, [rows, k], k a multiple of the block) fake-quantised with stochastic rounding:
    ``fmt`` ``mxfp4`` (``scaling`` ``block``: the OCP scale; ``sr34``: it divided by 3/4) or
    ``nvfp4`` (``block``: E4M3 scales of 16 values and the FP32 tensor scale). ``hadamard``: rotate
    ``t`` first (``suite.numerics.hadamard.rotate_blocks``, with ``signs``), as Quartet's backward
    and NVFP4's weight gradient do; ``u`` are the uniforms of the rotated values."""
    t = rotate_blocks(t, hadamard, signs)
    block = SHAPES.get((fmt, scaling))
    if block is None:
        raise ValueError(f"no stochastic fake quantisation for format '{fmt}' with scaling '{scaling}'; "
                         f"there is {', '.join(f'{f}/{s}' for f, s in SHAPES)}")
    rows, k = t.shape
    if k % block or tuple(u.shape) != (rows, k):
        raise ValueError(f"t {tuple(t.shape)} needs whole blocks of {block} and u of its shape, got u {tuple(u.shape)}")
    blocks = t.reshape(rows, k // block, block)
    ub = u.reshape(rows, k // block, block)
    if fmt == "mxfp4":
        scale = _e8m0(F.mx_scale_e8m0(blocks.abs().amax(-1, keepdim=True), el.FP4_E2M1))
        if scaling == "sr34":
            scale = scale / 0.75
        return (fp4_stochastic(blocks / scale, ub) * scale).reshape(rows, k)
    ts = F.nvfp4_tensor_scale(t.abs().amax()).to(t.device)
    e4m3 = torch.float8_e4m3fn
    s8 = torch.clamp(blocks.abs().amax(-1, keepdim=True) / el.FP4_E2M1.max / ts, min=torch.finfo(e4m3).tiny,
                     max=el.FP8_E4M3.max).to(e4m3).float()
    scaled = torch.clamp(blocks * ((1.0 / ts) / s8), -el.FP4_E2M1.max, el.FP4_E2M1.max)
    return (fp4_stochastic(scaled, ub) * (ts * s8)).reshape(rows, k)


def fake_quantize_keyed(t: torch.Tensor, fmt: str, key: torch.Tensor, scaling: str = "block",
                        hadamard: int = 0, signs: torch.Tensor | None = None) -> torch.Tensor:
    """``fake_quantize_stochastic`` with the counter-based uniforms of ``key``
    (``counter_rng.counter_uniforms``): the reference of the dispatch operation
    ``fake_quantize_stochastic``, whose kernel makes the same uniforms itself."""
    return fake_quantize_stochastic(t, fmt, counter_uniforms(tuple(t.shape), key), scaling, hadamard, signs)
