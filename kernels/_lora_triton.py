"""Triton: LoRA forward, y = x W^T + s (x A^T) B^T, as one kernel or as a well-tiled pair.

Both variants share one kernel body (``_lora_fwd_kernel``) and the same candidate tile
configurations (autotuned on a GPU, each variant separately, so each runs at its best
tile; one fixed configuration elsewhere), so a GPU run that ranks them side by side
measures where the rank-r product x A^T comes from, not a tiling accident:

``lora_forward`` (impl ``triton``), one kernel. Each program owns a [BM, BN] tile of y.
While it streams x and W along K for the main product it also accumulates x A^T ([BM, BR],
r padded to BR = max(16, next_pow2(r)) with masked zeros), so x is read once for both
products; the low-rank term is added in the epilogue with one more small dot against B.
The price is that every one of the N/BN column tiles recomputes the same M x K x r
product: (N/BN - 1) * 2*M*K*BR extra FLOPs, about BR/BN of the main GEMM's 2*M*N*K. At
BN = 256 (the fixed GPU config once M*N >= 4096^2, and the widest autotune candidate) and
8192x8192x8192: r = 16 -> 31 extra passes, 66.6 GFLOP on top of the minimal 1103.8 GFLOP
(+6.0%); r = 64 -> +24%; r = 128 -> +47%. With BN = 128 the fractions double (r = 16:
about +12%), with BN = 64 they quadruple; the autotuner weighs this against the tile's
other costs by timing. The recompute dots are thin (BR columns), so they also run at a
lower tensor-core efficiency than the main product.

``lora_forward_pair`` (impl ``triton_pair``), two kernels. ``_lora_down_kernel`` computes
T = s * x A^T ([M, r], float32) exactly once, one program per BM rows of x (64 without
autotuning, 32 in the interpreter) streaming K; then ``_lora_fwd_kernel`` with ``RECOMPUTE=False`` runs the
plain tiled GEMM x W^T and its epilogue adds T[BM rows] @ B[BN cols]^T (a [BM, BR] x [BR,
BN] dot) before the store. It does the minimal FLOPs; what it adds is traffic. T in
float32 is written once and read back by every column tile: 8*M*r bytes from DRAM at
least, 1 MiB at 8192x8192x8192, r = 16 (0.26% of the 384.5 MiB the kernel's
``bytes_moved`` counts; its repeated reads hit L2), so the roofline formula is left as it
is. The real extra is kernel 1's own pass over x (M*K input-dtype bytes, 128 MiB at
8192^3: x does not fit in L2, so kernel 2 reads it from DRAM again): about 40 us at 3.35
TB/s against roughly 1.5 ms of GEMM (1.1 TFLOP at ~700 TFLOP/s), a few percent,
independent of r. So the pair should win at large r and the two should be close at r = 16
with BN = 256; only a GPU run decides.

Why T is float32: it is tiny (above), it holds the accumulator unrounded so kernel 1 can
be checked on its own against float32 math at a tight tolerance, and the one rounding to
the input dtype (of s * x A^T, before the tensor-core dot with B) then happens in the
epilogue at exactly the point where the one-kernel variant rounds, so the two variants
differ only in summation order.

Under ``TRITON_INTERPRET=1`` the dot operands are upcast to float32 first (``DOT_F32``):
Triton 3.9's interpreter runs a bf16 ``tl.dot`` on the raw 16-bit integers. The upcast is
exact (bf16 and fp16 embed in float32), so the interpreted kernel still checks the tiling,
masking and epilogue; on a GPU the dots run on bf16 tensor cores.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from suite.kernel import triton_interpreted
from suite.kernels._tiling import autotuned, configs, grouped_tile, launch, launch_kwargs


@triton.jit
def _lora_fwd_kernel(
    x_ptr, w_ptr, a_ptr, b_ptr, t_ptr, y_ptr,
    M, N, K, R, scale,
    sxm, sxk, swn, swk, sar, sak, sbn, sbr, stm, str_, sym, syn,
    BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, BR: tl.constexpr,
    GROUP_M: tl.constexpr, RECOMPUTE: tl.constexpr, DOT_F32: tl.constexpr,
):
    """One [BM, BN] tile of y. RECOMPUTE: accumulate x A^T here (a_ptr, scale); otherwise
    load the precomputed T = s * x A^T (t_ptr, float32) in the epilogue."""
    # int64 indices: row * stride must not wrap for operands above 2**31 - 1 elements
    # (x [M, K], W [N, K], y [M, N], A [R, K] with a huge K, or a transposed view's stride).
    pid_m, pid_n = grouped_tile(tl.program_id(0).to(tl.int64), M, N, BM, BN, GROUP_M)

    rm = pid_m * BM + tl.arange(0, BM)
    rn = pid_n * BN + tl.arange(0, BN)
    rr = tl.arange(0, BR).to(tl.int64)
    rk = tl.arange(0, BK).to(tl.int64)
    acc = tl.zeros((BM, BN), dtype=tl.float32)
    if RECOMPUTE:
        xa = tl.zeros((BM, BR), dtype=tl.float32)
    for k0 in range(0, K, BK):
        kk = k0 + rk
        x = tl.load(x_ptr + rm[:, None] * sxm + kk[None, :] * sxk,
                    mask=(rm[:, None] < M) & (kk[None, :] < K), other=0.0)
        w = tl.load(w_ptr + rn[None, :] * swn + kk[:, None] * swk,
                    mask=(rn[None, :] < N) & (kk[:, None] < K), other=0.0)
        if DOT_F32:  # the CPU interpreter multiplies bf16 as raw integers: upcast (exact)
            x = x.to(tl.float32)
            w = w.to(tl.float32)
        acc = tl.dot(x, w, acc)
        if RECOMPUTE:
            a = tl.load(a_ptr + rr[None, :] * sar + kk[:, None] * sak,
                        mask=(rr[None, :] < R) & (kk[:, None] < K), other=0.0)
            if DOT_F32:
                a = a.to(tl.float32)
            xa = tl.dot(x, a, xa)
    b = tl.load(b_ptr + rn[None, :] * sbn + rr[:, None] * sbr,
                mask=(rn[None, :] < N) & (rr[:, None] < R), other=0.0)
    if RECOMPUTE:
        xa = xa * scale
    else:
        xa = tl.load(t_ptr + rm[:, None] * stm + rr[None, :] * str_,
                     mask=(rm[:, None] < M) & (rr[None, :] < R), other=0.0)
    xa = xa.to(b.dtype)  # the one rounding of s * x A^T, as the unfused layer rounds it
    if DOT_F32:
        xa = xa.to(tl.float32)
        b = b.to(tl.float32)
    acc = tl.dot(xa, b, acc)
    tl.store(y_ptr + rm[:, None] * sym + rn[None, :] * syn, acc.to(y_ptr.dtype.element_ty),
             mask=(rm[:, None] < M) & (rn[None, :] < N))


@triton.jit
def _lora_down_kernel(
    x_ptr, a_ptr, t_ptr, M, K, R, scale,
    sxm, sxk, sar, sak, stm, str_,
    BM: tl.constexpr, BK: tl.constexpr, BR: tl.constexpr, DOT_F32: tl.constexpr,
):
    """T[BM rows] = scale * x[BM rows] @ A^T in float32; x streamed along K once."""
    rm = tl.program_id(0).to(tl.int64) * BM + tl.arange(0, BM)
    rr = tl.arange(0, BR).to(tl.int64)
    rk = tl.arange(0, BK).to(tl.int64)
    acc = tl.zeros((BM, BR), dtype=tl.float32)
    for k0 in range(0, K, BK):
        kk = k0 + rk
        x = tl.load(x_ptr + rm[:, None] * sxm + kk[None, :] * sxk,
                    mask=(rm[:, None] < M) & (kk[None, :] < K), other=0.0)
        a = tl.load(a_ptr + rr[None, :] * sar + kk[:, None] * sak,
                    mask=(rr[None, :] < R) & (kk[:, None] < K), other=0.0)
        if DOT_F32:
            x = x.to(tl.float32)
            a = a.to(tl.float32)
        acc = tl.dot(x, a, acc)
    tl.store(t_ptr + rm[:, None] * stm + rr[None, :] * str_, acc * scale,
             mask=(rm[:, None] < M) & (rr[None, :] < R))


# Autotune candidates of the main GEMM (GPU only; see kernels/_tiling.py): BM, BN, BK,
# GROUP_M, num_warps, num_stages. The two fixed GPU configs below are among them. Shared
# memory per stage is about (BM*BK + BN*BK + BR*BK) * 2 bytes (x, W and, when recomputing,
# A tiles); at R = 128 some candidates exceed Hopper's 227 KB per block, fail to load with
# OutOfResources and are skipped by the autotuner (128x128x64 at 4 stages, about 192 KB,
# fits at every rank).
MAIN_CANDIDATES = configs(["BM", "BN", "BK", "GROUP_M"], [
    (128, 256, 64, 8, 8, 3),
    (256, 128, 64, 8, 8, 3),
    (128, 128, 64, 8, 4, 4),
    (128, 128, 128, 8, 8, 3),
    (64, 256, 64, 8, 4, 4),
    (64, 128, 64, 8, 4, 4),
    (128, 64, 64, 8, 4, 4),
])
# Kernel 1 of the pair streams x once (memory-bound): rows per program and the K step.
DOWN_CANDIDATES = configs(["BM", "BK"], [
    (64, 128, 4, 3), (32, 128, 4, 3), (64, 64, 4, 4), (128, 64, 8, 3), (128, 128, 8, 3),
])
# RECOMPUTE tells the one-kernel impl from the pair's kernel 2 (different work per tile).
_MAIN = autotuned(_lora_fwd_kernel, MAIN_CANDIDATES, key=["M", "N", "K", "R", "RECOMPUTE"])
_DOWN = autotuned(_lora_down_kernel, DOWN_CANDIDATES, key=["M", "K", "R"])


def _config(M: int, N: int, K: int) -> dict:
    """Main-kernel tiles without autotuning, shared by both variants (picked without a GPU)."""
    if triton_interpreted():
        return {"BM": 32, "BN": 32, "BK": 32, "GROUP_M": 4, "num_warps": 4, "num_stages": 1}
    return launch_kwargs(MAIN_CANDIDATES[0 if M * N >= 4096 * 4096 else 2])


def _down_config(M: int) -> dict:
    """Kernel 1 without autotuning: 64-row blocks give M/64 programs, enough to keep an
    H100's 132 SMs loading at M >= 8192 (picked without a GPU)."""
    if triton_interpreted():
        return {"BM": 32, "BK": 32, "num_warps": 4, "num_stages": 1}
    return launch_kwargs(DOWN_CANDIDATES[0])


def _rank_block(R: int) -> int:
    return max(16, triton.next_power_of_2(R))  # tl.dot needs every dimension >= 16


def _launch_main(x, w, a, b, t, scale: float, recompute: bool) -> torch.Tensor:
    M, K = x.shape
    N, R = w.shape[0], b.shape[1]
    y = torch.empty(M, N, device=x.device, dtype=x.dtype)
    a_strides = (a.stride(0), a.stride(1)) if a is not None else (0, 0)
    t_strides = (t.stride(0), t.stride(1)) if t is not None else (0, 0)
    # An unused pointer argument gets a valid tensor of the right kind (never dereferenced).
    launch(
        _MAIN, lambda meta: (triton.cdiv(M, meta["BM"]) * triton.cdiv(N, meta["BN"]),),
        _config(M, N, K), x.device,
        x, w, a if a is not None else b, b, t if t is not None else y, y, M, N, K, R,
        float(scale),
        x.stride(0), x.stride(1), w.stride(0), w.stride(1), *a_strides,
        b.stride(0), b.stride(1), *t_strides, y.stride(0), y.stride(1),
        BR=_rank_block(R), RECOMPUTE=recompute, DOT_F32=triton_interpreted(),
    )
    return y


def lora_forward(x: torch.Tensor, w: torch.Tensor, a: torch.Tensor, b: torch.Tensor,
                 scale: float) -> torch.Tensor:
    """One kernel: y = x @ w.T + scale * (x @ a.T) @ b.T for 2-D x [M, K], w [N, K],
    a [r, K], b [N, r]; x @ a.T is recomputed per column tile (module docstring)."""
    return _launch_main(x, w, a, b, None, scale, recompute=True)


def lora_down(x: torch.Tensor, a: torch.Tensor, scale: float) -> torch.Tensor:
    """Kernel 1 of the pair: T = scale * x @ a.T, [M, r] float32, computed once."""
    M, K = x.shape
    R = a.shape[0]
    t = torch.empty(M, R, device=x.device, dtype=torch.float32)
    launch(
        _DOWN, lambda meta: (triton.cdiv(M, meta["BM"]),), _down_config(M), x.device,
        x, a, t, M, K, R, float(scale),
        x.stride(0), x.stride(1), a.stride(0), a.stride(1), t.stride(0), t.stride(1),
        BR=_rank_block(R), DOT_F32=triton_interpreted(),
    )
    return t


def matmul_add_lowrank(x: torch.Tensor, w: torch.Tensor, t: torch.Tensor,
                       b: torch.Tensor) -> torch.Tensor:
    """Kernel 2 of the pair: y = x @ w.T + t.to(x.dtype) @ b.T, t [M, r] float32, as one
    tiled GEMM whose epilogue adds the low-rank term before the store."""
    return _launch_main(x, w, None, b, t, 1.0, recompute=False)


def lora_forward_pair(x: torch.Tensor, w: torch.Tensor, a: torch.Tensor, b: torch.Tensor,
                      scale: float) -> torch.Tensor:
    """The pair: the same y as ``lora_forward``, with x @ a.T computed once (kernel 1)."""
    return matmul_add_lowrank(x, w, lora_down(x, a, scale), b)
