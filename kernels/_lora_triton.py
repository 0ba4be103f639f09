"""Triton: fused LoRA forward, y = x W^T + s (x A^T) B^T, in one kernel.

Each program owns a [BM, BN] tile of y. While it streams x and W along K for the main
product it also accumulates x A^T ([BM, r], r padded to BR >= 16 with masked zeros), so x
is read once for both products; the low-rank term is added in the epilogue with one more
small dot against B. The recomputation of x A^T per N-tile costs r/BN of the main FLOPs.

Under ``TRITON_INTERPRET=1`` the dot operands are upcast to float32 first (``DOT_F32``):
Triton 3.9's interpreter runs a bf16 ``tl.dot`` on the raw 16-bit integers. The upcast is
exact (bf16 and fp16 embed in float32), so the interpreted kernel still checks the tiling,
masking and epilogue; on a GPU the dots run on bf16 tensor cores.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from suite.kernels._tiling import grouped_tile

from suite.kernel import triton_interpreted


@triton.jit
def _lora_fwd_kernel(
    x_ptr, w_ptr, a_ptr, b_ptr, y_ptr,
    M, N, K, R, scale,
    sxm, sxk, swn, swk, sar, sak, sbn, sbr, sym, syn,
    BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, BR: tl.constexpr,
    GROUP_M: tl.constexpr, DOT_F32: tl.constexpr,
):
    # int64 indices: row * stride must not wrap for operands above 2**31 - 1 elements
    # (x [M, K], W [N, K], y [M, N], A [R, K] with a huge K, or a transposed view's stride).
    pid_m, pid_n = grouped_tile(tl.program_id(0).to(tl.int64), M, N, BM, BN, GROUP_M)

    rm = pid_m * BM + tl.arange(0, BM)
    rn = pid_n * BN + tl.arange(0, BN)
    rr = tl.arange(0, BR).to(tl.int64)
    rk = tl.arange(0, BK).to(tl.int64)
    acc = tl.zeros((BM, BN), dtype=tl.float32)
    xa = tl.zeros((BM, BR), dtype=tl.float32)
    for k0 in range(0, K, BK):
        kk = k0 + rk
        x = tl.load(x_ptr + rm[:, None] * sxm + kk[None, :] * sxk,
                    mask=(rm[:, None] < M) & (kk[None, :] < K), other=0.0)
        w = tl.load(w_ptr + rn[None, :] * swn + kk[:, None] * swk,
                    mask=(rn[None, :] < N) & (kk[:, None] < K), other=0.0)
        a = tl.load(a_ptr + rr[None, :] * sar + kk[:, None] * sak,
                    mask=(rr[None, :] < R) & (kk[:, None] < K), other=0.0)
        if DOT_F32:  # the CPU interpreter multiplies bf16 as raw integers: upcast (exact)
            x = x.to(tl.float32)
            w = w.to(tl.float32)
            a = a.to(tl.float32)
        acc = tl.dot(x, w, acc)
        xa = tl.dot(x, a, xa)
    b = tl.load(b_ptr + rn[None, :] * sbn + rr[:, None] * sbr,
                mask=(rn[None, :] < N) & (rr[:, None] < R), other=0.0)
    xa = (xa * scale).to(b.dtype)
    if DOT_F32:
        xa = xa.to(tl.float32)
        b = b.to(tl.float32)
    acc = tl.dot(xa, b, acc)
    tl.store(y_ptr + rm[:, None] * sym + rn[None, :] * syn, acc.to(y_ptr.dtype.element_ty),
             mask=(rm[:, None] < M) & (rn[None, :] < N))


def _config(M: int, N: int, K: int) -> dict:
    if triton_interpreted():
        return {"BM": 32, "BN": 32, "BK": 32, "GROUP_M": 4, "num_warps": 4, "num_stages": 1}
    if M * N >= 4096 * 4096:
        return {"BM": 128, "BN": 256, "BK": 64, "GROUP_M": 8, "num_warps": 8, "num_stages": 3}
    return {"BM": 128, "BN": 128, "BK": 64, "GROUP_M": 8, "num_warps": 4, "num_stages": 4}


def lora_forward(x: torch.Tensor, w: torch.Tensor, a: torch.Tensor, b: torch.Tensor,
                 scale: float) -> torch.Tensor:
    """y = x @ w.T + scale * (x @ a.T) @ b.T for 2-D x [M, K], w [N, K], a [r, K], b [N, r]."""
    M, K = x.shape
    N, R = w.shape[0], a.shape[0]
    y = torch.empty(M, N, device=x.device, dtype=x.dtype)
    cfg = _config(M, N, K)
    BR = max(16, triton.next_power_of_2(R))
    grid = (triton.cdiv(M, cfg["BM"]) * triton.cdiv(N, cfg["BN"]),)
    _lora_fwd_kernel[grid](
        x, w, a, b, y, M, N, K, R, float(scale),
        x.stride(0), x.stride(1), w.stride(0), w.stride(1), a.stride(0), a.stride(1),
        b.stride(0), b.stride(1), y.stride(0), y.stride(1),
        BM=cfg["BM"], BN=cfg["BN"], BK=cfg["BK"], BR=BR, GROUP_M=cfg["GROUP_M"],
        DOT_F32=triton_interpreted(),
        num_warps=cfg["num_warps"], num_stages=cfg["num_stages"],
    )
    return y
