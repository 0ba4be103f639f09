"""NVFP4 with one E4M3 scale per 16 x 16 tile (NVIDIA's NVFP4 recipe's weight layout), rounded to nearest.

The reference of the dispatch operation ``fake_quantize_tiles`` as the kernel benchmark times it
(``fake_quantize_nvfp4_tiles``): the tensor zero-padded to whole tiles, each tile quantised as one
NVFP4 block of 256 values under the tensor's FP32 scale (``formats.nvfp4_tensor_scale`` of the
amax; the E4M3 tile scale and the element rounding of ``formats``' NVFP4), so ``W`` and ``W^T``
get the same values. The training recipes call it through ``methods/train/gemm.py``'s
``nvfp4_tiles``, which the tests hold equal to this bit for bit.
"""

from __future__ import annotations

import torch

from suite.numerics import elements as el
from suite.numerics import formats as F


def _fp4_nearest(v: torch.Tensor) -> torch.Tensor:
    """``v`` (within +-6) rounded to the nearest E2M1 value, ties to the even code."""
    m = v.abs()
    step = torch.where(m >= 4.0, 2.0, torch.where(m >= 2.0, 1.0, 0.5))
    return torch.copysign(torch.round(m / step) * step, v)


def nvfp4_tiles(t: torch.Tensor) -> torch.Tensor:
    """``t`` (float32, [rows, cols], any sizes) fake-quantised as NVFP4 in 16 x 16 tiles."""
    rows, cols = t.shape
    tp = torch.nn.functional.pad(t, (0, (-cols) % 16, 0, (-rows) % 16))
    r, c = tp.shape
    tiles = tp.reshape(r // 16, 16, c // 16, 16).permute(0, 2, 1, 3).reshape(-1, 256)
    ts = F.nvfp4_tensor_scale(t.abs().amax()).to(t.device)
    e4m3 = torch.float8_e4m3fn
    s8 = torch.clamp(tiles.abs().amax(-1, keepdim=True) / el.FP4_E2M1.max / ts, min=torch.finfo(e4m3).tiny,
                     max=el.FP8_E4M3.max).to(e4m3).float()
    scaled = torch.clamp(tiles * ((1.0 / ts) / s8), -el.FP4_E2M1.max, el.FP4_E2M1.max)
    q = _fp4_nearest(scaled) * (ts * s8)
    return q.reshape(r // 16, c // 16, 16, 16).permute(0, 2, 1, 3).reshape(r, c)[:rows, :cols]
