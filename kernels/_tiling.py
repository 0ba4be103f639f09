"""Triton helpers shared by the GEMM-shaped kernels."""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def grouped_tile(pid, M, N, BM: tl.constexpr, BN: tl.constexpr, GROUP_M: tl.constexpr):
    """Map a flat program id to a (tile row, tile column) in grouped launch order.

    Programs launched next to each other cover GROUP_M tile rows of the same tile columns,
    so they reuse the same weight tiles while those are still in L2. Pass an int64 ``pid``
    and the tile ids come back int64, so the callers' element offsets cannot wrap.
    """
    num_pid_m = tl.cdiv(M, BM)
    num_pid_n = tl.cdiv(N, BN)
    in_group = GROUP_M * num_pid_n
    first_m = (pid // in_group) * GROUP_M
    size_m = min(num_pid_m - first_m, GROUP_M)
    pid_m = first_m + ((pid % in_group) % size_m)
    pid_n = (pid % in_group) // size_m
    return pid_m, pid_n
