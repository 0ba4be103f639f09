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
from suite.kernels._tiling import grouped_tile

from suite.kernel import triton_interpreted

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


def w4a16_matmul(x: torch.Tensor, codes: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """x [M, K] (bf16/fp16) @ dequant(codes [N, K/2], scales [N, K/128]).T -> [M, N]."""
    x = x.contiguous()
    M, K = x.shape
    N = codes.shape[0]
    y = torch.empty(M, N, device=x.device, dtype=x.dtype)
    if triton_interpreted():
        BM, BN, warps, stages = 32, 32, 4, 1
    elif M <= 64:  # decode-like: few rows, weight streaming dominates
        BM, BN, warps, stages = 16, 128, 4, 4
    else:
        BM, BN, warps, stages = 128, 128, 8, 3
    grid = (triton.cdiv(M, BM) * triton.cdiv(N, BN),)
    _w4a16_kernel[grid](x, codes, scales.contiguous(), y, M, N, K, BM=BM, BN=BN, G=GROUP,
                        GROUP_M=8, DOT_F32=triton_interpreted(), num_warps=warps,
                        num_stages=stages)
    return y
