"""Triton quantise / dequantise kernels that match ``suite.numerics.formats`` bit for bit.

One kernel body serves every format (a ``tl.constexpr`` picks the arithmetic), so the
scale rules live in one place here, written after the formats module:

* divisions are IEEE round-to-nearest (``tl.math.div_rn``), as torch's float32 division;
* round-half-to-even to an integer is ``(v + 1.5 * 2^23) - 1.5 * 2^23`` (exact for
  |v| < 2^22, which every clamped value here is);
* FP8 E4M3 codes are the RNE saturating cast after a clamp to +-448; stochastic rounding
  truncates to the E4M3 grid by integer arithmetic and takes the next code up with the
  same rule as FP4 below;
* FP8 E5M2 codes (the gradients' format, round to nearest only) likewise by integer
  arithmetic after a clamp to +-57344, everywhere (no hardware cast is used for them);
* FP4 E2M1 nearest rounding compares with the exact midpoints of its grid, ties to the
  even code, as the formats module's table search does; stochastic rounding takes the
  upper neighbour when ``u < (a - lo) / (hi - lo)``, the same rule, fed the same uniforms.

Layout: X is [M, N] row-major; blocks run along N. Programs own [BM, BN] tiles. With
``DUAL`` the tile is also quantised along M (X^T quantised along its rows, the layout a
weight-gradient GEMM wants) from the same registers: one read of X for both layouts.

Sizes: every element offset (and the in-kernel RNG's offset) is int64, from an int64
program id, so tensors above 2**31 - 1 elements index correctly; the launch grid is 1-D
(CUDA caps grid axes 1 and 2 at 65535 programs, axis 0 at 2**31 - 1).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from suite.kernel import triton_interpreted
from suite.kernels._tiling import autotuned, autotuning, configs, keep, launch
from suite.numerics.hadamard import hadamard_scale

# Format ids, read inside the kernels: compiled Triton lets a kernel read a module global only
# when it is a ``tl.constexpr`` (the interpreter reads any), so they are constexprs; host code
# keys its tables and launches by their ``.value``.
FP8 = tl.constexpr(0)  # fp8_e4m3, one float32 scale per row (or a given per-tensor scale)
MXFP8 = tl.constexpr(1)  # OCP MX: E4M3 elements, blocks of 32, E8M0 scale
MXFP4 = tl.constexpr(2)  # OCP MX: E2M1 elements, blocks of 32, E8M0 scale
NVFP4 = tl.constexpr(3)  # E2M1, blocks of 16, E4M3 block scale, float32 tensor scale
INT8 = tl.constexpr(4)  # symmetric int8, one float32 scale per row
INT4 = tl.constexpr(5)  # symmetric int4, one float32 scale per group, packed two per byte
FP8E5 = tl.constexpr(6)  # fp8_e5m2, one float32 scale per row (or a given per-tensor scale); round to nearest only

FORMAT_IDS = {"fp8_e4m3": FP8.value, "mxfp8_e4m3": MXFP8.value, "mxfp4": MXFP4.value, "nvfp4": NVFP4.value,
              "int8": INT8.value, "int4": INT4.value, "fp8_e5m2": FP8E5.value}
FP8_MAX = {FP8.value: 448.0, FP8E5.value: 57344.0, INT8.value: 127.0}  # per-tensor scale = amax / this
PACKED = {MXFP4.value, NVFP4.value, INT4.value}
# Launch option of every value kernel here: each operation rounds on its own, as in the PyTorch
# reference. Compiled Triton contracts a * b + c into one fused multiply-add by default (one
# rounding instead of two); the interpreter never does, so only a GPU would differ.
NO_FMA = {"enable_fp_fusion": False}


@triton.jit
def _rne(v):
    return (v + 12582912.0) - 12582912.0


@triton.jit
def _fp4_value(m):
    """Magnitude code 0..7 of E2M1 -> its value (0, .5, 1, 1.5, 2, 3, 4, 6)."""
    e = m >> 1
    mant = (m & 1).to(tl.float32)
    pow2 = tl.where(e == 3, 4.0, tl.where(e == 2, 2.0, 1.0))
    return tl.where(e == 0, mant * 0.5, (1.0 + mant * 0.5) * pow2)


@triton.jit
def _e4m3_bits_soft(v):
    """float32 -> E4M3 bits by integer arithmetic: clamp to +-448, round to nearest even.

    The same result as the hardware's ``cvt.rn.satfinite.e4m3x2.f32``; used where that
    instruction is not there (the CPU interpreter, whose float8 cast truncates carries).
    """
    sign = (v.to(tl.int32, bitcast=True) >> 31) & 1
    a = tl.minimum(tl.abs(v), 448.0)
    ab = a.to(tl.int32, bitcast=True)
    normal = ((ab + 0x7FFFF + ((ab >> 20) & 1)) >> 20) - 960  # drop 20 mantissa bits, rebias
    sub = _rne(a * 512.0).to(tl.int32)  # multiples of 2^-9 below 2^-6
    code = tl.where(a < 0.015625, sub, normal)
    code = tl.where(v != v, 0x7F, code)
    return code | (sign << 7)


@triton.jit
def _e5m2_bits_soft(v):
    """float32 -> E5M2 bits by integer arithmetic: clamp to +-57344, round to nearest even (the
    formats module's saturating cast); NaN -> 0x7F."""
    sign = (v.to(tl.int32, bitcast=True) >> 31) & 1
    a = tl.minimum(tl.abs(v), 57344.0)
    ab = a.to(tl.int32, bitcast=True)
    normal = ((ab + 0xFFFFF + ((ab >> 21) & 1)) >> 21) - 448  # drop 21 mantissa bits, rebias
    sub = _rne(tl.minimum(a, 0.00006103515625) * 65536.0).to(tl.int32)  # multiples of 2^-16 below 2^-14
    # (the minimum keeps the unused lanes' products inside int32)
    code = tl.where(a < 0.00006103515625, sub, normal)
    code = tl.where(v != v, 0x7F, code)
    return code | (sign << 7)


@triton.jit
def _e5m2_value_soft(c):
    """E5M2 bits (int32) -> float32, built from bits (exact everywhere)."""
    e = (c >> 2) & 31
    m = c & 3
    normal = (((e + 112) << 23) | (m << 21)).to(tl.float32, bitcast=True)
    val = tl.where(e == 0, m.to(tl.float32) * 0.0000152587890625, normal)
    val = tl.where(e == 31, float("nan"), val)
    return tl.where((c & 0x80) != 0, -val, val)


@triton.jit
def _bf16_bits_soft(v):
    """float32 -> bf16 bits, round to nearest even (the interpreter's own cast truncates)."""
    b = v.to(tl.int32, bitcast=True)
    r = (b + 0x7FFF + ((b >> 16) & 1)) >> 16
    r = tl.where(v != v, 0x7FC0, r)
    return r.to(tl.int16)


@triton.jit
def _e4m3_value_soft(c):
    """E4M3 bits (int32) -> float32, built from bits (exact everywhere)."""
    e = (c >> 3) & 15
    m = c & 7
    normal = (((e + 120) << 23) | (m << 20)).to(tl.float32, bitcast=True)
    val = tl.where(e == 0, m.to(tl.float32) * 0.001953125, normal)
    val = tl.where((c & 0x7F) == 0x7F, float("nan"), val)
    return tl.where((c & 0x80) != 0, -val, val)


@triton.jit
def _fp4_code(v, u, SR: tl.constexpr):
    """float32 (already scaled) -> E2M1 code (int32, sign in bit 3), saturating."""
    a = tl.minimum(tl.abs(v), 6.0)
    a = tl.where(v != v, 0.0, a)
    if SR:
        idx = ((a > 0.0).to(tl.int32) + (a > 0.5).to(tl.int32) + (a > 1.0).to(tl.int32)
               + (a > 1.5).to(tl.int32) + (a > 2.0).to(tl.int32) + (a > 3.0).to(tl.int32)
               + (a > 4.0).to(tl.int32))
        lower = tl.maximum(idx - 1, 0)
        hi = _fp4_value(idx)
        lo = _fp4_value(lower)
        p_up = tl.math.div_rn(a - lo, tl.where(hi == lo, 1.0, hi - lo))
        mag = tl.where(a == hi, idx, tl.where(u >= p_up, lower, idx))
    else:
        mag = ((a > 0.25).to(tl.int32) + (a >= 0.75).to(tl.int32) + (a > 1.25).to(tl.int32)
               + (a >= 1.75).to(tl.int32) + (a > 2.5).to(tl.int32) + (a >= 3.5).to(tl.int32)
               + (a > 5.0).to(tl.int32))
    sign = (v.to(tl.int32, bitcast=True) >> 31) & 1
    return mag | (sign << 3)


@triton.jit
def _fp8_code(v, SOFT: tl.constexpr):
    """float32 -> E4M3 bit pattern (int32): clamp to +-448, RNE cast."""
    if SOFT:
        return _e4m3_bits_soft(v)
    q = tl.clamp(v, -448.0, 448.0).to(tl.float8e4nv)
    return q.to(tl.uint8, bitcast=True).to(tl.int32)


@triton.jit
def _fp8_code_sr(v, u):
    """float32 -> E4M3 bits with stochastic rounding: the upper neighbour when
    ``u < (a - lo) / (hi - lo)``, the formats module's rule; saturating at 448, NaN -> 0x7F.

    ``lo`` is ``a`` truncated to the E4M3 grid by integer arithmetic (drop 20 mantissa bits
    and rebias for normals, multiples of 2^-9 below 2^-6), ``hi`` the next code up.
    """
    a = tl.minimum(tl.abs(v), 448.0)
    a = tl.where(v != v, 0.0, a)
    ab = a.to(tl.int32, bitcast=True)
    lo_code = tl.where(a < 0.015625, (a * 512.0).to(tl.int32), (ab >> 20) - 960)
    lo = _e4m3_value_soft(lo_code)
    exact = a == lo
    hi = _e4m3_value_soft(tl.where(exact, lo_code, lo_code + 1))
    p_up = tl.math.div_rn(a - lo, tl.where(exact, 1.0, hi - lo))
    mag = tl.where(exact | (u >= p_up), lo_code, lo_code + 1)
    sign = (v.to(tl.int32, bitcast=True) >> 31) & 1
    return tl.where(v != v, 0x7F, mag | (sign << 7))


@triton.jit
def _fp8_encode(v, u, SR: tl.constexpr, SOFT: tl.constexpr):
    if SR:
        return _fp8_code_sr(v, u)
    return _fp8_code(v, SOFT)


@triton.jit
def _butterfly(x, R: tl.constexpr, C: tl.constexpr, h: tl.constexpr):
    """One Walsh-Hadamard stage of stride h: (a, b) -> (a + b, a - b) in blocks of 2h."""
    y = tl.permute(tl.reshape(x, (R, C // (2 * h), 2, h)), (0, 1, 3, 2))
    a, b = tl.split(y)
    return tl.reshape(tl.permute(tl.join(a + b, a - b), (0, 1, 3, 2)), (R, C))


@triton.jit
def _hadamard_rows(x, R: tl.constexpr, C: tl.constexpr, H: tl.constexpr):
    """Block Walsh-Hadamard along the columns of a [R, C] tile, blocks of H, unnormalised.

    Stages of stride 1, 2, 4, ... H/2: the same float32 additions in the same order as the
    reference (``suite.numerics.hadamard.fwht``), so results match bit for bit; per block
    it is x @ H_sylvester.
    """
    x = _butterfly(x, R, C, 1)
    if H >= 4:
        x = _butterfly(x, R, C, 2)
    if H >= 8:
        x = _butterfly(x, R, C, 4)
    if H >= 16:
        x = _butterfly(x, R, C, 8)
    if H >= 32:
        x = _butterfly(x, R, C, 16)
    if H >= 64:
        x = _butterfly(x, R, C, 32)
    if H >= 128:
        x = _butterfly(x, R, C, 64)
    return x


@triton.jit
def _finite_abs(x):
    return tl.where((x == x) & (tl.abs(x) < float("inf")), tl.abs(x), 0.0)


@triton.jit
def _e8m0(amax, EMAX: tl.constexpr):
    """OCP MX scale code from a block's amax: floor(log2(amax)) - emax, clamped; NaN -> 255."""
    exp = ((amax.to(tl.int32, bitcast=True) >> 23) & 0xFF) - 127
    code = tl.minimum(tl.maximum(exp - EMAX, -127), 128) + 127
    return tl.where(amax != amax, 255, code)


@triton.jit
def _e8m0_value(code):
    """2^(code - 127) as float32 (code 0 is the subnormal 2^-127); 255 -> +inf divisor."""
    bits = tl.where(code == 0, 0x00400000, code << 23)
    val = bits.to(tl.float32, bitcast=True)
    return tl.where(code == 255, float("inf"), val)


@triton.jit
def _encode(xb, u, ts, FMT: tl.constexpr, SR: tl.constexpr, SOFT: tl.constexpr):
    """Blocks [R, NB, G] float32 -> (codes [R, NB, G] int32, scale [R, NB] in storage bits).

    Scale bits: float32 for FP8/INT (returned as float32), E8M0 code for MX, E4M3 bits for
    NVFP4 (both int32).
    """
    if FMT == MXFP8:
        code = _e8m0(tl.max(tl.abs(xb), axis=2), 8)
        v = tl.math.div_rn(xb, _e8m0_value(code)[:, :, None])
        return _fp8_encode(v, u, SR, SOFT), code
    elif FMT == MXFP4:
        code = _e8m0(tl.max(tl.abs(xb), axis=2), 2)
        v = tl.math.div_rn(xb, _e8m0_value(code)[:, :, None])
        return _fp4_code(v, u, SR), code
    elif FMT == NVFP4:
        bscale = tl.math.div_rn(tl.max(tl.abs(xb), axis=2), 6.0)
        s = tl.clamp(tl.math.div_rn(bscale, ts), 0.015625, 448.0)
        s8 = _fp8_code(s, SOFT)
        recip = tl.math.div_rn(tl.math.div_rn(1.0, ts), _e4m3_value_soft(s8))
        v = tl.clamp(xb * recip[:, :, None], -6.0, 6.0)
        return _fp4_code(v, u, SR), s8
    elif FMT == FP8:
        if ts > 0:  # a given per-tensor scale
            scale = tl.zeros((xb.shape[0], xb.shape[1]), tl.float32) + ts
        else:
            scale = tl.math.div_rn(tl.max(_finite_abs(xb), axis=2), 448.0)
            scale = tl.where(scale > 0, scale, 1.0)
        return _fp8_encode(tl.math.div_rn(xb, scale[:, :, None]), u, SR, SOFT), scale
    elif FMT == FP8E5:
        if ts > 0:  # a given per-tensor scale
            scale = tl.zeros((xb.shape[0], xb.shape[1]), tl.float32) + ts
        else:
            scale = tl.math.div_rn(tl.max(_finite_abs(xb), axis=2), 57344.0)
            scale = tl.where(scale > 0, scale, 1.0)
        return _e5m2_bits_soft(tl.math.div_rn(xb, scale[:, :, None])), scale
    else:  # INT8 / INT4, symmetric
        QMAX: tl.constexpr = 127.0 if FMT == INT8 else 7.0
        if ts > 0:  # a given per-tensor scale (INT8)
            scale = tl.zeros((xb.shape[0], xb.shape[1]), tl.float32) + ts
        else:
            scale = tl.math.div_rn(tl.max(_finite_abs(xb), axis=2), QMAX)
            scale = tl.where(scale > 0, scale, 1.0)
        v = _rne(tl.math.div_rn(xb, scale[:, :, None]))
        v = tl.where(xb != xb, 0.0, tl.clamp(v, -QMAX, QMAX))
        return v.to(tl.int32), scale


@triton.jit
def _tile_ids(M, BM: tl.constexpr):
    """(tile row, tile column) of this program, int64, from a 1-D grid whose tile rows run
    fastest (the order a 2-D grid (rows, columns) launches in)."""
    pid = tl.program_id(0).to(tl.int64)
    tiles_m = tl.cdiv(M, BM)
    return pid % tiles_m, pid // tiles_m


@triton.jit
def _tile(M, N, BM: tl.constexpr, BN: tl.constexpr):
    """This program's [BM, BN] tile of a row-major [M, N] tensor: its column indices, its element
    offsets (int64) and which of them lie inside the tensor."""
    pid_m, pid_n = _tile_ids(M, BM)
    rm = pid_m * BM + tl.arange(0, BM)
    rn = pid_n * BN + tl.arange(0, BN)
    return rn, rm[:, None] * N + rn[None, :], (rm[:, None] < M) & (rn[None, :] < N)


def _value_tiles(M: int, N: int) -> tuple[int, int, tuple[int]]:
    """(BM, BN, grid) of the value-in / value-out kernels (fake quantisation as the recipes run it):
    smaller tiles in the interpreter, which pays per element of a tile, not per program."""
    BM, BN = (32, 128) if triton_interpreted() else (16, 256)
    return BM, BN, (triton.cdiv(M, BM) * triton.cdiv(N, BN),)


def _grid(M: int, N: int):
    """The 1-D launch grid for the [BM, BN] tiles the launch's config chose."""
    return lambda meta: (triton.cdiv(M, meta["BM"]) * triton.cdiv(N, meta["BN"]),)


@triton.jit
def _store_tile(x, u, ts, q_ptr, s_ptr, row0, col0, R, C,
                RB: tl.constexpr, CB: tl.constexpr, G: tl.constexpr,
                FMT: tl.constexpr, SR: tl.constexpr, PACK: tl.constexpr, SOFT: tl.constexpr):
    """Quantise a [RB, CB] tile of rows (blocks of G along the columns) and store it.
    ``row0`` and ``col0`` are int64, so every offset below is."""
    NB: tl.constexpr = CB // G
    codes, scale = _encode(tl.reshape(x, (RB, NB, G)), tl.reshape(u, (RB, NB, G)), ts, FMT, SR,
                           SOFT)
    codes = tl.reshape(codes, (RB, CB))
    rows = row0 + tl.arange(0, RB)
    rmask = rows[:, None] < R
    if PACK:
        pair = tl.reshape(codes & 0xF, (RB, CB // 2, 2))
        lo, hi = tl.split(pair)
        byte = (lo | (hi << 4)).to(tl.uint8)
        pc = col0 // 2 + tl.arange(0, CB // 2)
        tl.store(q_ptr + rows[:, None] * (C // 2) + pc[None, :], byte,
                 mask=rmask & (pc[None, :] < C // 2))
    else:
        cc = col0 + tl.arange(0, CB)
        tl.store(q_ptr + rows[:, None] * C + cc[None, :], codes.to(q_ptr.dtype.element_ty),
                 mask=rmask & (cc[None, :] < C))
    n_scales = tl.cdiv(C, G)
    sc = col0 // G + tl.arange(0, NB)
    tl.store(s_ptr + rows[:, None] * n_scales + sc[None, :], scale.to(s_ptr.dtype.element_ty),
             mask=rmask & (sc[None, :] < n_scales))


@triton.jit
def _quant_kernel(x_ptr, q_ptr, s_ptr, qt_ptr, st_ptr, ts_ptr, noise_ptr, seed, M, N,
                  FMT: tl.constexpr, G: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr,
                  DUAL: tl.constexpr, SR: tl.constexpr, HAS_TS: tl.constexpr,
                  SOFT: tl.constexpr, HAD: tl.constexpr = 0, had_scale=1.0):
    """SR: 0 nearest, 1 stochastic with uniforms read from ``noise_ptr`` (shaped like X),
    2 stochastic with uniforms drawn here (``tl.rand(seed, element index)``; Triton's
    Philox takes int64 offsets: the low and high words are two of its counters, so indices
    below 2**32 draw what int32 offsets drew and larger ones stay distinct)."""
    pid_m, pid_n = _tile_ids(M, BM)
    rm = pid_m * BM + tl.arange(0, BM)
    rn = pid_n * BN + tl.arange(0, BN)
    mask = (rm[:, None] < M) & (rn[None, :] < N)
    offs = rm[:, None] * N + rn[None, :]
    x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    if HAD > 0:  # fused block Hadamard (rotation) before quantising: Quartet / HALO
        x = _hadamard_rows(x, BM, BN, HAD) * had_scale
    if SR == 1:
        u = tl.load(noise_ptr + offs, mask=mask, other=0.0)
    elif SR == 2:
        u = tl.rand(seed, offs)
    else:
        u = tl.zeros((BM, BN), tl.float32)
    if HAS_TS:
        ts = tl.load(ts_ptr)
    else:
        ts = 0.0
    _store_tile(x, u, ts, q_ptr, s_ptr, pid_m * BM, pid_n * BN, M, N, BM, BN, G, FMT, SR > 0,
                FMT == MXFP4 or FMT == NVFP4 or FMT == INT4, SOFT)
    if DUAL:
        if SR == 1:
            ut = tl.trans(tl.load(noise_ptr + tl.cast(M, tl.int64) * N + offs, mask=mask,
                                  other=0.0))
        elif SR == 2:
            ut = tl.trans(tl.rand(seed + 1, offs))
        else:
            ut = tl.zeros((BN, BM), tl.float32)
        _store_tile(tl.trans(x), ut, ts, qt_ptr, st_ptr, pid_n * BN, pid_m * BM, N, M, BN, BM,
                    G, FMT, SR > 0, FMT == MXFP4 or FMT == NVFP4 or FMT == INT4, SOFT)


@triton.jit
def _amax_kernel(x_ptr, out_ptr, numel, BLOCK: tl.constexpr, HAD: tl.constexpr, had_scale, signs_ptr,
                 SIGNS: tl.constexpr):
    """Per-program finite amax (the first pass of a per-tensor scale), of the Hadamard
    transform of x when HAD > 0 (blocks of HAD never straddle rows: N % HAD == 0; ``SIGNS``: of
    x times the HAD signs, repeated over the blocks, first)."""
    pid = tl.program_id(0).to(tl.int64)
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    x = tl.load(x_ptr + offs, mask=offs < numel, other=0.0).to(tl.float32)
    if SIGNS:
        x = x * tl.load(signs_ptr + offs % HAD)
    if HAD > 0:
        x = tl.reshape(_hadamard_rows(tl.reshape(x, (1, BLOCK)), 1, BLOCK, HAD) * had_scale,
                       (BLOCK,))
    tl.store(out_ptr + pid, tl.max(_finite_abs(x), axis=0))


# Autotune candidates of the amax pass (GPU only; see kernels/_tiling.py): BLOCK, warps,
# stages (no loop: stages unused). Every BLOCK is a multiple of every Hadamard size.
AMAX_CANDIDATES = configs(["BLOCK"], [(4096, 4, 3), (8192, 4, 3), (8192, 8, 3), (16384, 8, 3)])


def _prune_amax(candidates, named_args, **kwargs):
    had = kwargs.get("HAD", 0)
    return keep(candidates, lambda c: had == 0 or c.kwargs["BLOCK"] % had == 0)


# Each program writes its own partial; how many there are depends on BLOCK, so the buffer
# is sized for the smallest BLOCK and zeroed: slots a larger BLOCK leaves unwritten stay 0,
# below any amax, and reset_to_zero clears what the timed candidates wrote before the
# winner runs.
_AMAX = autotuned(_amax_kernel, AMAX_CANDIDATES, key=["numel", "HAD", "SIGNS"], prune=_prune_amax,
                  reset_to_zero=["out_ptr"])


def _amax_fixed() -> dict:
    """The amax pass's launch without autotuning (the interpreter pays per program)."""
    return {"BLOCK": 1024 if triton_interpreted() else 8192, "num_warps": 8}


def tensor_amax(x: torch.Tensor, hadamard: int = 0, had_scale: float = 1.0,
                signs: torch.Tensor | None = None) -> torch.Tensor:
    """Finite amax of ``x`` (or of its block Hadamard transform, of ``x`` times ``signs`` repeated
    over the blocks where given) as a 0-dim float32 tensor: Triton partials, then one small max."""
    n = x.numel()
    fixed = _amax_fixed()
    pin = getattr(_AMAX, "pinned_config", None)
    if pin is not None or not autotuning(x.device):
        block = (pin.kwargs if pin is not None else fixed)["BLOCK"]
        partial = torch.empty(triton.cdiv(n, block), device=x.device, dtype=torch.float32)
    else:
        smallest = min(c.kwargs["BLOCK"] for c in AMAX_CANDIDATES)
        partial = torch.zeros(triton.cdiv(n, smallest), device=x.device, dtype=torch.float32)
    launch(_AMAX, lambda meta: (triton.cdiv(n, meta["BLOCK"]),), fixed, x.device,
           x, partial, n, HAD=hadamard, had_scale=had_scale, signs_ptr=x if signs is None else signs,
           SIGNS=signs is not None, **NO_FMA)
    return partial.max()


@triton.jit
def _dequant_kernel(q_ptr, s_ptr, ts_ptr, y_ptr, M, N,
                    FMT: tl.constexpr, G: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr,
                    BF16_SOFT: tl.constexpr):
    """Packed codes + scales -> dense values (formats.dequantize, bit for bit)."""
    NB: tl.constexpr = BN // G
    pid_m, pid_n = _tile_ids(M, BM)
    rm = pid_m * BM + tl.arange(0, BM)
    rmask = rm[:, None] < M
    if FMT == MXFP4 or FMT == NVFP4 or FMT == INT4:
        pc = pid_n * (BN // 2) + tl.arange(0, BN // 2)
        b = tl.load(q_ptr + rm[:, None] * (N // 2) + pc[None, :],
                    mask=rmask & (pc[None, :] < N // 2), other=0).to(tl.int32)
        codes = tl.reshape(tl.join(b & 0xF, b >> 4), (BM, BN))
    else:
        cc = pid_n * BN + tl.arange(0, BN)
        codes = tl.load(q_ptr + rm[:, None] * N + cc[None, :],
                        mask=rmask & (cc[None, :] < N), other=0)
    n_scales = tl.cdiv(N, G)
    sc = pid_n * NB + tl.arange(0, NB)
    smask = rmask & (sc[None, :] < n_scales)
    if FMT == MXFP4 or FMT == NVFP4:
        val = _fp4_value(codes & 7)
        val = tl.where((codes & 8) != 0, -val, val)
    elif FMT == INT4:
        val = tl.where(codes >= 8, codes - 16, codes).to(tl.float32)
    elif FMT == INT8:
        val = codes.to(tl.float32)
    elif FMT == FP8E5:
        val = _e5m2_value_soft(codes.to(tl.int32))
    else:  # FP8 / MXFP8: E4M3 bit patterns
        val = _e4m3_value_soft(codes.to(tl.int32))
    if FMT == MXFP4 or FMT == MXFP8:
        code = tl.load(s_ptr + rm[:, None] * n_scales + sc[None, :], mask=smask, other=127)
        code = code.to(tl.int32)
        scale = tl.where(code == 255, float("nan"), _e8m0_value(code))
    elif FMT == NVFP4:
        s8 = tl.load(s_ptr + rm[:, None] * n_scales + sc[None, :], mask=smask, other=0)
        scale = tl.load(ts_ptr) * _e4m3_value_soft(s8.to(tl.int32))
    else:
        scale = tl.load(s_ptr + rm[:, None] * n_scales + sc[None, :], mask=smask, other=1.0)
    y = tl.reshape(tl.reshape(val, (BM, NB, G)) * scale[:, :, None], (BM, BN))
    cc = pid_n * BN + tl.arange(0, BN)
    if BF16_SOFT:  # y_ptr is an int16 view of the bf16 output
        yv = _bf16_bits_soft(y)
    else:
        yv = y.to(y_ptr.dtype.element_ty)
    tl.store(y_ptr + rm[:, None] * N + cc[None, :], yv, mask=rmask & (cc[None, :] < N))


BLOCK = {MXFP8.value: 32, MXFP4.value: 32, NVFP4.value: 16, INT4.value: 128}

# Autotune candidates (GPU only; see kernels/_tiling.py): (tile sizes..., num_warps,
# num_stages). These kernels have no loop, so num_stages is Triton's default and unused.
# Row-scaled FP8/INT8: the tile is [BM rows, next_pow2(N)], BN fixed by the caller so a
# row (one scale) is never split; only rows per program and warps are tuned.
ROW_CANDIDATES = configs(["BM"], [(1, 4, 3), (1, 8, 3), (2, 8, 3), (4, 8, 3), (8, 8, 3),
                                  (16, 8, 3)])
ROW_TILE_MAX = 16384  # elements of a row tile kept in registers (BM = 1 is always allowed)
# Block formats along N: every BN is a multiple of 128, the largest scale block (INT4
# groups) and Hadamard block, so no candidate splits a block; the prune re-checks.
BLOCK_CANDIDATES = configs(["BM", "BN"], [(8, 256, 4, 3), (16, 256, 8, 3), (32, 256, 8, 3),
                                          (16, 512, 8, 3), (32, 128, 4, 3), (64, 128, 8, 3)])
# *_dual: blocks run along both axes (X^T is quantised along M), so BM and BN must both
# hold whole blocks; per-tensor FP8 dual uses G = 128 and keeps only the 128x128 tiles.
DUAL_CANDIDATES = configs(["BM", "BN"], [(64, 64, 4, 3), (64, 64, 8, 3), (64, 128, 8, 3),
                                         (128, 64, 8, 3), (128, 128, 4, 3), (128, 128, 8, 3)])


def block_fits(config, G: int, had: int = 0, dual: bool = False) -> bool:
    """Whether a [BM, BN] tile holds whole blocks: scale blocks of G and Hadamard blocks
    along N, and scale blocks of G along M too when X^T is quantised from the same tile."""
    bm, bn = config.kwargs["BM"], config.kwargs["BN"]
    return bn % max(G, had) == 0 and (not dual or bm % G == 0)


def _prune_blocks(candidates, named_args, **kwargs):
    """Drop tiles that would split a block (the prune reads G, HAD, DUAL: all in the key)."""
    G, had, dual = kwargs["G"], kwargs.get("HAD", 0), kwargs.get("DUAL", False)
    return keep(candidates, lambda c: block_fits(c, G, had, dual))


def _prune_rows(candidates, named_args, **kwargs):
    """Row tiles of at most ROW_TILE_MAX elements (BN = next_pow2(N) is in the key)."""
    bn = kwargs["BN"]
    return keep(candidates,
                lambda c: c.kwargs["BM"] == 1 or c.kwargs["BM"] * bn <= ROW_TILE_MAX)


_QUANT_KEY = ["M", "N", "FMT", "G", "SR", "HAS_TS", "HAD", "DUAL"]
_QUANT_ROW = autotuned(_quant_kernel, ROW_CANDIDATES, key=[*_QUANT_KEY, "BN"], prune=_prune_rows)
_QUANT_BLOCK = autotuned(_quant_kernel, BLOCK_CANDIDATES, key=_QUANT_KEY, prune=_prune_blocks)
_QUANT_DUAL = autotuned(_quant_kernel, DUAL_CANDIDATES, key=_QUANT_KEY, prune=_prune_blocks)
_DEQUANT_ROW = autotuned(_dequant_kernel, ROW_CANDIDATES, key=["M", "N", "FMT", "G", "BN"],
                         prune=_prune_rows)
_DEQUANT_BLOCK = autotuned(_dequant_kernel, BLOCK_CANDIDATES, key=["M", "N", "FMT", "G"],
                           prune=_prune_blocks)


def _plan(fmt_id: int, N: int, dual: bool, per_tensor: bool, dequant: bool = False):
    """(autotuned kernel, G, arguments the caller fixes, fixed launch config): the fixed
    config (``_tiles``) is the one every launch used before autotuning and still uses
    wherever the autotuner does not run."""
    G, BM, BN, warps = _tiles(fmt_id, N, dual or per_tensor)
    if fmt_id in (FP8, FP8E5, INT8) and not (dual or per_tensor):
        kernel = _DEQUANT_ROW if dequant else _QUANT_ROW
        return kernel, G, {"BN": BN}, {"BM": BM, "num_warps": warps}
    kernel = _DEQUANT_BLOCK if dequant else (_QUANT_DUAL if dual else _QUANT_BLOCK)
    return kernel, G, {}, {"BM": BM, "BN": BN, "num_warps": warps}


def _tiles(fmt_id: int, N: int, dual: bool) -> tuple[int, int, int, int]:
    """(G, BM, BN, num_warps) for a format and row length, without autotuning."""
    if fmt_id in (FP8, FP8E5, INT8) and not dual:
        bn = triton.next_power_of_2(N)
        return bn, max(1, min(8, 8192 // bn)), bn, 8
    g = BLOCK.get(fmt_id, 128)
    if triton_interpreted():  # few, large programs: the interpreter pays per program
        return g, max(g, 32) if dual else 32, 128, 4
    if dual:
        return g, max(g, 64), max(g, 64), 8
    return g, 16, max(g, 256), 8


def quantize(x: torch.Tensor, fmt: str, *, dual: bool = False, rounding: str = "nearest",
             noise: torch.Tensor | None = None, seed: int = 0, per_tensor: bool = False,
             hadamard: int = 0, tensor_scale: torch.Tensor | None = None):
    """Quantise a 2-D contiguous tensor. Returns (data, scale[, tensor_scale]) and, with
    ``dual``, the same for X^T appended: the storage of ``formats.quantize``. With
    ``hadamard`` = 16/32/128 the rows are first rotated by the normalised block Hadamard
    transform (``dual`` is then not supported: X^T would need the rotation along columns).
    ``tensor_scale`` (with ``per_tensor``; FP8 / INT8): a given positive per-tensor scale, used
    as it is instead of the amax pass's (delayed scaling: the amax of earlier steps)."""
    had_scale = hadamard_scale(hadamard) if hadamard else 1.0
    fmt_id = FORMAT_IDS[fmt]
    M, N = x.shape
    x = x.contiguous()
    kernel, G, tile_args, fixed = _plan(fmt_id, N, dual, per_tensor)
    dev = x.device
    sr = 0 if rounding == "nearest" else (1 if noise is not None else 2)
    if sr and fmt_id == FP8E5:
        raise ValueError("the E5M2 kernel rounds to nearest only")
    ts = None
    if fmt_id == NVFP4:
        from suite.numerics.formats import nvfp4_tensor_scale

        ts = nvfp4_tensor_scale(tensor_amax(x, hadamard, had_scale)).reshape(())
    elif per_tensor and tensor_scale is not None:
        ts = tensor_scale.to(device=dev, dtype=torch.float32).reshape(())
    elif per_tensor:
        amax = tensor_amax(x, hadamard, had_scale)
        top = FP8_MAX[fmt_id]
        ts = torch.where(amax / top > 0, amax / top, torch.ones_like(amax)).reshape(())

    def buffers(rows: int, cols: int):
        if fmt_id in PACKED:
            q = torch.empty(rows, cols // 2, device=dev, dtype=torch.uint8)
        elif fmt_id == INT8:
            q = torch.empty(rows, cols, device=dev, dtype=torch.int8)
        elif fmt_id == FP8E5:
            q = torch.empty(rows, cols, device=dev, dtype=torch.float8_e5m2)
        else:
            q = torch.empty(rows, cols, device=dev, dtype=torch.float8_e4m3fn)
        n_scales = triton.cdiv(cols, G)
        if fmt_id in (MXFP8, MXFP4):
            s = torch.empty(rows, n_scales, device=dev, dtype=torch.uint8)
        elif fmt_id == NVFP4:
            s = torch.empty(rows, n_scales, device=dev, dtype=torch.float8_e4m3fn)
        else:
            s = torch.empty(rows, n_scales, device=dev, dtype=torch.float32)
        return q, s

    def bits(t):
        return t.view(torch.uint8) if t.dtype in (torch.float8_e4m3fn, torch.float8_e5m2) else t

    q, s = buffers(M, N)
    qt, st = buffers(N, M) if dual else (q, s)
    u = noise.contiguous().float() if sr == 1 else x
    launch(kernel, _grid(M, N), fixed, dev,
           x, bits(q), bits(s), bits(qt), bits(st), ts if ts is not None else x, u, seed, M, N,
           FMT=fmt_id, G=G, DUAL=dual, SR=sr, HAS_TS=ts is not None, SOFT=triton_interpreted(),
           HAD=hadamard, had_scale=had_scale, **tile_args, **NO_FMA)
    if per_tensor:
        out = (q, ts)
        return out + (qt, ts) if dual else out
    out = (q, s) if ts is None else (q, s, ts)
    if dual:
        out += (qt, st) if ts is None else (qt, st, ts)
    return out


def dequantize(q: torch.Tensor, scale: torch.Tensor, fmt: str, shape: tuple[int, int],
               dtype: torch.dtype, tensor_scale: torch.Tensor | None = None) -> torch.Tensor:
    """Packed storage of a 2-D tensor back to ``dtype`` (the inverse of ``quantize``)."""
    fmt_id = FORMAT_IDS[fmt]
    M, N = shape
    kernel, G, tile_args, fixed = _plan(fmt_id, N, False, False, dequant=True)
    y = torch.empty(M, N, device=q.device, dtype=dtype)
    qb = q.view(torch.uint8) if q.dtype in (torch.float8_e4m3fn, torch.float8_e5m2) else q
    sb = scale.view(torch.uint8) if scale.dtype == torch.float8_e4m3fn else scale
    soft = triton_interpreted() and dtype == torch.bfloat16
    launch(kernel, _grid(M, N), fixed, q.device,
           qb, sb, tensor_scale if tensor_scale is not None else sb,
           y.view(torch.int16) if soft else y, M, N,
           FMT=fmt_id, G=G, BF16_SOFT=soft, **tile_args, **NO_FMA)
    return y


@triton.jit
def _e4m3_soft_kernel(x_ptr, y_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    x = tl.load(x_ptr + offs, mask=offs < n)
    tl.store(y_ptr + offs, _e4m3_bits_soft(x).to(tl.uint8), mask=offs < n)


def e4m3_soft_encode(x: torch.Tensor) -> torch.Tensor:
    """float32 -> E4M3 bits (uint8) through the integer encoder (tested against torch)."""
    x = x.contiguous().float()
    y = torch.empty(x.numel(), dtype=torch.uint8, device=x.device)
    _e4m3_soft_kernel[(triton.cdiv(x.numel(), 1024),)](x, y, x.numel(), BLOCK=1024, **NO_FMA)
    return y.reshape(x.shape)


# -- FP4 fake quantisation as the recipes run it, fused: optional block Hadamard first, then the block ----
# format's scale and the element rounding, quantise and dequantise in registers (one read of X, one write)
# read inside the kernel, so constexprs (see the format ids)
SCALE_OCP, SCALE_SR34, SCALE_QUEST = (tl.constexpr(i) for i in range(3))  # MXFP4's OCP scale (NVFP4: its own), over 3/4, QuEST's RMS
ROUND_EVEN, ROUND_DOWN, ROUND_STOCHASTIC = (tl.constexpr(i) for i in range(3))  # nearest (ties to even / toward zero), stochastic
QUEST_SCALE = tl.constexpr(2.92247856 / 6.0)  # gemm.QUEST_GAUSSIAN_SCALE (core may not import methods)


@triton.jit
def _fp4_code_ties_down(v):
    """float32 (already scaled) -> E2M1 code, nearest with ties toward zero (every threshold strict),
    saturating: Quartet's QuEST kernel."""
    a = tl.minimum(tl.abs(v), 6.0)
    a = tl.where(v != v, 0.0, a)
    mag = ((a > 0.25).to(tl.int32) + (a > 0.75).to(tl.int32) + (a > 1.25).to(tl.int32)
           + (a > 1.75).to(tl.int32) + (a > 2.5).to(tl.int32) + (a > 3.5).to(tl.int32)
           + (a > 5.0).to(tl.int32))
    sign = (v.to(tl.int32, bitcast=True) >> 31) & 1
    return mag | (sign << 3)


@triton.jit
def _mix32(x):
    """lowbias32 of uint32 words (``suite.numerics.counter_rng.mix32``; uint32 products wrap)."""
    x = x ^ (x >> 16)
    x = x * 0x7FEB352D
    x = x ^ (x >> 15)
    x = x * 0x846CA68B
    return x ^ (x >> 16)


@triton.jit
def _counter_uniforms(offs, key_ptr):
    """The uniforms ``counter_rng.counter_uniforms`` gives the elements at int64 offsets ``offs`` of a
    call keyed by the two words at ``key_ptr``: computed here, never read from memory."""
    k0 = tl.load(key_ptr).to(tl.uint32)
    k1 = tl.load(key_ptr + 1).to(tl.uint32)
    low = (offs & 0xFFFFFFFF).to(tl.uint32)
    high = (offs >> 32).to(tl.uint32)
    h = _mix32(_mix32(low + k0) ^ k1 ^ high)
    return (h >> 8).to(tl.float32) * 5.9604644775390625e-08  # 2^-24


@triton.jit
def _fold_halves(x, R: tl.constexpr, NB: tl.constexpr, H: tl.constexpr):
    """[R, NB, 2H] -> [R, NB, H]: the first half of each block plus its second half."""
    a, b = tl.split(tl.permute(tl.reshape(x, (R, NB, 2, H)), (0, 1, 3, 2)))
    return a + b


@triton.jit
def _block_sum32(x, R: tl.constexpr, NB: tl.constexpr):
    """Sum of each block of 32 ([R, NB, 32] -> [R, NB]) by folding halves, in the order of
    ``gemm._pairwise_sum``, so the sums equal the reference's bit for bit."""
    x = _fold_halves(x, R, NB, 16)
    x = _fold_halves(x, R, NB, 8)
    x = _fold_halves(x, R, NB, 4)
    x = _fold_halves(x, R, NB, 2)
    return tl.reshape(_fold_halves(x, R, NB, 1), (R, NB))


@triton.jit
def _fp4_fake_kernel(x_ptr, u_ptr, y_ptr, keep_ptr, ts_ptr, signs_ptr, M, N, had_scale,
                     FMT: tl.constexpr, G: tl.constexpr, SCALE: tl.constexpr, ROUND: tl.constexpr,
                     HAD: tl.constexpr, SIGNS: tl.constexpr, KEYED: tl.constexpr, SOFT: tl.constexpr,
                     BM: tl.constexpr, BN: tl.constexpr):
    """Y = the FP4 block format's value of X ([M, N] float32, blocks of G along N), after a block
    Hadamard of HAD points along N (0: none; ``SIGNS``: X times the HAD signs first, repeated over
    the blocks), as ``suite.numerics.hadamard.apply_block_hadamard(method="fast")`` rotates.
    Scales: MXFP4 E8M0 (``SCALE_SR34``: divided by 3/4; ``SCALE_QUEST``: ``2^floor(log2(c * std
    + 1e-8))`` of the block's spread, and ``keep_ptr`` gets 1 where the scaled value is inside
    +-6, else 0); NVFP4 E4M3 block scale under the FP32 tensor scale read from ``ts_ptr``. Rounding: to
    nearest (ties to even or toward zero) or stochastic by the uniforms U, or with ``KEYED`` by the
    counter-based uniforms of the key at ``u_ptr`` (``suite.numerics.counter_rng``), made here."""
    rn, offs, mask = _tile(M, N, BM, BN)
    x = tl.load(x_ptr + offs, mask=mask, other=0.0)
    if HAD > 0:
        if SIGNS:
            x = x * tl.load(signs_ptr + rn % HAD)[None, :]
        x = _hadamard_rows(x, BM, BN, HAD) * had_scale
    NB: tl.constexpr = BN // G
    xb = tl.reshape(x, (BM, NB, G))
    if ROUND == ROUND_STOCHASTIC:
        if KEYED:
            ub = tl.reshape(_counter_uniforms(offs, u_ptr), (BM, NB, G))
        else:
            ub = tl.reshape(tl.load(u_ptr + offs, mask=mask, other=0.0), (BM, NB, G))
    else:
        ub = xb
    if FMT == MXFP4:
        if SCALE == SCALE_QUEST:
            mean = tl.math.div_rn(_block_sum32(xb, BM, NB), 32.0)  # `/` compiles to approximate division
            var = tl.math.div_rn(_block_sum32(xb * xb, BM, NB), 32.0) - mean * mean
            var = tl.where(var < 0.0, 0.0, var)  # NaN stays NaN, as the reference's clamp
            spread = QUEST_SCALE * tl.sqrt_rn(var) + 1e-8
            exponent = ((spread.to(tl.int32, bitcast=True) >> 23) & 0xFF) - 127
            scale = ((exponent + 127) << 23).to(tl.float32, bitcast=True)
        else:
            scale = _e8m0_value(_e8m0(tl.max(tl.abs(xb), axis=2), 2))
            if SCALE == SCALE_SR34:
                scale = tl.math.div_rn(scale, 0.75)
        v = tl.math.div_rn(xb, scale[:, :, None])
        out_scale = scale
    else:  # NVFP4
        ts = tl.load(ts_ptr)
        bscale = tl.math.div_rn(tl.max(tl.abs(xb), axis=2), 6.0)
        s8 = _e4m3_value_soft(_fp8_code(tl.clamp(tl.math.div_rn(bscale, ts), 0.015625, 448.0), SOFT))
        recip = tl.math.div_rn(tl.math.div_rn(1.0, ts), s8)
        v = tl.clamp(xb * recip[:, :, None], -6.0, 6.0)
        out_scale = ts * s8
    if ROUND == ROUND_DOWN:
        code = _fp4_code_ties_down(v)
    else:
        code = _fp4_code(v, ub, ROUND == ROUND_STOCHASTIC)
    val = _fp4_value(code & 7) * out_scale[:, :, None]
    val = tl.where((code & 8) != 0, -val, val)
    tl.store(y_ptr + offs, tl.reshape(val, (BM, BN)), mask=mask)
    if SCALE == SCALE_QUEST:
        tl.store(keep_ptr + offs, tl.reshape((tl.abs(v) < 6.0).to(tl.float32), (BM, BN)), mask=mask)


def fake_quantize_fp4(x: torch.Tensor, fmt: str, *, scaling: str = "block", rounding: str = "nearest",
                      ties: str = "even", u: torch.Tensor | None = None, key: torch.Tensor | None = None,
                      hadamard: int = 0, signs: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """FP4 fake quantisation of x (float32 [M, N], N a multiple of the block and of ``hadamard``) in
    one kernel, after an optional block Hadamard of ``hadamard`` points (``signs``: a vector of that
    many +-1, repeated over the blocks). ``fmt`` ``mxfp4`` (``scaling`` ``block``, ``sr34`` or
    ``quest``) or ``nvfp4`` (``block``: an amax pass of the rotated X first, for the tensor scale);
    ``rounding`` ``nearest`` (``ties`` ``even`` or ``down``) or ``stochastic`` with the counter-based
    uniforms of ``key`` (int64, two words: ``counter_rng``), or given uniforms ``u`` (shaped like x). Returns the values and, for ``quest``, the keep mask (float32: 1 where the
    gradient passes), else None."""
    fmt_id = FORMAT_IDS[fmt]
    G = BLOCK[fmt_id]
    M, N = x.shape
    x = x.contiguous()
    y = torch.empty_like(x)
    quest = scaling == "quest"
    keep = torch.empty_like(x) if quest else y
    had_scale = hadamard_scale(hadamard) if hadamard else 1.0
    signs = signs.to(device=x.device, dtype=torch.float32).contiguous() if signs is not None else None
    ts = x
    if fmt_id == NVFP4:
        from suite.numerics.formats import nvfp4_tensor_scale

        ts = nvfp4_tensor_scale(tensor_amax(x, hadamard, had_scale, signs)).reshape(()).to(torch.float32)
    stochastic = rounding == "stochastic"
    round_id = (ROUND_STOCHASTIC if stochastic else (ROUND_DOWN if ties == "down" else ROUND_EVEN)).value
    scale_id = {"block": SCALE_OCP, "sr34": SCALE_SR34, "quest": SCALE_QUEST}[scaling].value
    BM, BN, grid = _value_tiles(M, N)
    keyed = stochastic and key is not None
    noise = (key.to(device=x.device, dtype=torch.int64).contiguous() if keyed else u.contiguous()) if stochastic else x
    _fp4_fake_kernel[grid](x, noise, y, keep, ts, signs if signs is not None else x,
                           M, N, had_scale, FMT=fmt_id, G=G, SCALE=scale_id, ROUND=round_id, HAD=hadamard,
                           SIGNS=signs is not None, KEYED=keyed, SOFT=triton_interpreted(), BM=BM, BN=BN,
                           num_warps=4, **NO_FMA)  # QuEST's mean, variance and spread round as eager
    return y, (keep if quest else None)


def fake_quantize_fp4_keyed(x: torch.Tensor, key: torch.Tensor, fmt: str, scaling: str = "block",
                            hadamard: int = 0, signs: torch.Tensor | None = None) -> torch.Tensor:
    """``suite.numerics.stochastic.fake_quantize_keyed(x, fmt, key, scaling, hadamard, signs)`` in one
    kernel: x float32 [M, N], N a multiple of the block (32 MXFP4, 16 NVFP4) and of ``hadamard``."""
    return fake_quantize_fp4(x, fmt, scaling=scaling, rounding="stochastic", key=key, hadamard=hadamard,
                             signs=signs)[0]


# -- NVFP4 in 16 x 16 tiles (suite.numerics.tiles), fused ------------------------------------------------
@triton.jit
def _nvfp4_tile_kernel(x_ptr, y_ptr, ts_ptr, M, N, SOFT: tl.constexpr, BN: tl.constexpr):
    """Y = NVFP4 of X with one E4M3 scale per 16 x 16 tile, rounded to nearest: a program owns a
    band of 16 rows and BN columns (BN // 16 tiles); rows and columns past the edge read as zeros,
    the zero padding of the reference."""
    _, offs, mask = _tile(M, N, 16, BN)
    x = tl.load(x_ptr + offs, mask=mask, other=0.0)
    NB: tl.constexpr = BN // 16
    xb = tl.reshape(x, (16, NB, 16))
    amax = tl.max(tl.max(tl.abs(xb), axis=2), axis=0)  # [NB]: one per tile
    ts = tl.load(ts_ptr)
    s = tl.clamp(tl.math.div_rn(tl.math.div_rn(amax, 6.0), ts), 0.015625, 448.0)
    s8 = _e4m3_value_soft(_fp8_code(s, SOFT))
    recip = tl.math.div_rn(tl.math.div_rn(1.0, ts), s8)
    v = tl.clamp(xb * recip[None, :, None], -6.0, 6.0)
    code = _fp4_code(v, v, False)
    val = _fp4_value(code & 7) * (ts * s8)[None, :, None]
    val = tl.where((code & 8) != 0, -val, val)
    tl.store(y_ptr + offs, tl.reshape(val, (16, BN)), mask=mask)


def fake_quantize_nvfp4_tiles(x: torch.Tensor) -> torch.Tensor:
    """``suite.numerics.tiles.nvfp4_tiles(x)`` in one kernel (after the tensor amax): x float32 [M, N]."""
    from suite.numerics.formats import nvfp4_tensor_scale

    M, N = x.shape
    x = x.contiguous()
    y = torch.empty_like(x)
    ts = nvfp4_tensor_scale(tensor_amax(x)).reshape(()).to(torch.float32)
    BN = 128 if triton_interpreted() else 256
    grid = (triton.cdiv(M, 16) * triton.cdiv(N, BN),)
    _nvfp4_tile_kernel[grid](x, y, ts, M, N, SOFT=triton_interpreted(), BN=BN, num_warps=4, **NO_FMA)
    return y


# -- MX with the scale rounded up (RCEIL: TransformerEngine's and torchao's MXFP8 training rule), fused ----
@triton.jit
def _pow2_ceil_code(y):
    """E8M0 code of ``2^ceil(log2 y)`` for y >= 0, clamped to 2^-127 .. 2^127, from y's exponent and
    mantissa fields (the reference's exact rule, ``gemm._pow2_ceil``): y = 0 or subnormal gives
    2^-127 or 2^-126, infinity 2^127."""
    bits = y.to(tl.int32, bitcast=True)
    exponent = ((bits >> 23) & 0xFF) - 127
    up = tl.where((bits & 0x7FFFFF) == 0, exponent, exponent + 1)
    up = tl.where(exponent == -127, tl.where(y > 5.877471754111438e-39, -126, -127), up)
    return tl.minimum(tl.maximum(up, -127), 127) + 127


@triton.jit
def _mx_rceil_kernel(x_ptr, y_ptr, M, N, FP4: tl.constexpr, EMAX: tl.constexpr, SOFT: tl.constexpr,
                     BM: tl.constexpr, BN: tl.constexpr):
    """Y = MX (blocks of 32 along N) of X with the scale ``2^ceil(log2(amax / max))`` (2^-127 for a
    block whose amax is not above 0), elements to nearest: one read of X, one write of Y."""
    _, offs, mask = _tile(M, N, BM, BN)
    x = tl.load(x_ptr + offs, mask=mask, other=0.0)
    NB: tl.constexpr = BN // 32
    xb = tl.reshape(x, (BM, NB, 32))
    amax = tl.max(tl.abs(xb), axis=2)
    code = tl.where(amax > 0, _pow2_ceil_code(tl.math.div_rn(amax, EMAX)), 0)
    scale = _e8m0_value(code)
    v = tl.math.div_rn(xb, scale[:, :, None])
    if FP4:
        q = _fp4_code(v, v, False)
        val = _fp4_value(q & 7)
        val = tl.where((q & 8) != 0, -val, val)
    else:
        val = _e4m3_value_soft(_fp8_code(v, SOFT))
    tl.store(y_ptr + offs, tl.reshape(val * scale[:, :, None], (BM, BN)), mask=mask)


def fake_quantize_mx_rceil(x: torch.Tensor, fmt: str) -> torch.Tensor:
    """``gemm.mx_rceil(x, fmt)`` to nearest in one kernel: x float32 [M, N], N a multiple of 32;
    ``fmt`` ``mxfp8_e4m3`` or ``mxfp4``."""
    fp4 = fmt == "mxfp4"
    M, N = x.shape
    x = x.contiguous()
    y = torch.empty_like(x)
    BM, BN, grid = _value_tiles(M, N)
    _mx_rceil_kernel[grid](x, y, M, N, FP4=fp4, EMAX=6.0 if fp4 else 448.0, SOFT=triton_interpreted(),
                           BM=BM, BN=BN, num_warps=4, **NO_FMA)
    return y
