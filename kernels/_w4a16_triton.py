"""Triton: W4A16 GEMM, y = x W^T with W stored as packed symmetric INT4, one scale per 128.

The weight layout is ``formats.quantize(W, "int4", granularity="group", group_size=128)``:
codes [N, K/2] uint8 (element 2i in the low nibble, two's complement), scales [N, K/128]
float32. Each program owns a [BM, BN] tile of y and walks K in steps of one group (128):
it reads BN x 64 bytes of codes and BN scales, dequantises in registers (the same
``code * scale`` as the formats module, rounded to x's dtype) and feeds the tensor cores,
so W crosses device memory at 4.25 bits per weight instead of 16.

Under ``TRITON_INTERPRET=1`` the dot operands stay float32 (``DOT_F32``): the interpreter
multiplies bf16 as raw integers and truncates float32 -> bf16 casts.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from suite.kernel import triton_interpreted
from suite.kernels._tiling import (
    autotuned,
    configs,
    grouped_tile,
    keep,
    launch,
    launch_kwargs,
)

GROUP = 128


@triton.jit
def _w4a16_kernel(x_ptr, q_ptr, s_ptr, y_ptr, M, N, K,
                  BM: tl.constexpr, BN: tl.constexpr, G: tl.constexpr, GROUP_M: tl.constexpr,
                  DOT_F32: tl.constexpr):
    # int64 tile ids: rm * K, rn * K/2 and rm * N must not wrap above 2**31 - 1 elements
    pid_m, pid_n = grouped_tile(tl.program_id(0).to(tl.int64), M, N, BM, BN, GROUP_M)
    rm = pid_m * BM + tl.arange(0, BM)
    rn = pid_n * BN + tl.arange(0, BN)
    rk = tl.arange(0, G)
    rb = tl.arange(0, G // 2)
    n_groups = K // G
    acc = tl.zeros((BM, BN), dtype=tl.float32)
    for g in range(0, n_groups):
        x = tl.load(x_ptr + rm[:, None] * K + (g * G + rk)[None, :], mask=rm[:, None] < M,
                    other=0.0)
        b = tl.load(q_ptr + rn[:, None] * (K // 2) + (g * (G // 2) + rb)[None, :],
                    mask=rn[:, None] < N, other=0).to(tl.int32)
        codes = tl.reshape(tl.join(b & 0xF, b >> 4), (BN, G))
        vals = tl.where(codes >= 8, codes - 16, codes).to(tl.float32)
        scale = tl.load(s_ptr + rn * n_groups + g, mask=rn < N, other=1.0)
        w = vals * scale[:, None]
        if DOT_F32:
            acc = tl.dot(x.to(tl.float32), tl.trans(w), acc, input_precision="ieee")
        else:
            acc = tl.dot(x, tl.trans(w.to(x.dtype)), acc)
    tl.store(y_ptr + rm[:, None] * N + rn[None, :], acc.to(y_ptr.dtype.element_ty),
             mask=(rm[:, None] < M) & (rn[None, :] < N))


# Autotune candidates (GPU only; see kernels/_tiling.py): BM, BN, num_warps, num_stages.
# BK is one INT4 group (G = 128) by construction: each K step reads one scale per column.
# Short BM for decode-like M (weight streaming), 128-256 for prefill-like M. The two fixed
# GPU configs below are among them. Shared memory per stage is about BM*128*2 bytes of x
# plus BN*64 bytes of codes (256x128 at 3 stages: ~216 KB before the dequantised W tile
# the dot reads; a config over 227 KB fails with OutOfResources and the autotuner skips it).
CANDIDATES = configs(["BM", "BN"], [
    (16, 64, 4, 4), (16, 128, 4, 4), (32, 128, 4, 4), (64, 128, 4, 4),
    (128, 128, 8, 3), (128, 256, 8, 3), (256, 128, 8, 3), (64, 256, 8, 3),
])


def _prune(candidates, named_args, **kwargs):
    """Drop tiles taller than M padded to 16 (rows of padding only); M is in the key."""
    rows = max(16, triton.next_power_of_2(named_args["M"]))
    return keep(candidates, lambda c: c.kwargs["BM"] <= rows)


_W4A16 = autotuned(_w4a16_kernel, CANDIDATES, key=["M", "N", "K"], prune=_prune)


def _config(M: int) -> dict:
    """Tiles without autotuning (picked without a GPU)."""
    if triton_interpreted():
        return {"BM": 32, "BN": 32, "num_warps": 4, "num_stages": 1}
    if M <= 64:  # decode-like: few rows, weight streaming dominates
        return launch_kwargs(CANDIDATES[1])
    return launch_kwargs(CANDIDATES[4])


def w4a16_matmul(x: torch.Tensor, codes: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """x [M, K] (bf16/fp16) @ dequant(codes [N, K/2], scales [N, K/128]).T -> [M, N]."""
    x = x.contiguous()
    M, K = x.shape
    N = codes.shape[0]
    y = torch.empty(M, N, device=x.device, dtype=x.dtype)
    launch(_W4A16, lambda meta: (triton.cdiv(M, meta["BM"]) * triton.cdiv(N, meta["BN"]),),
           _config(M), x.device, x, codes, scales.contiguous(), y, M, N, K, G=GROUP,
           GROUP_M=8, DOT_F32=triton_interpreted())
    return y
