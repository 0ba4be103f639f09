"""Every number format of the suite, defined once: quantizers, low-precision training and
the GPU kernels all call (or match bit for bit) the functions here.

Public API
----------
``fake_quantize(x, fmt, **opts) -> Tensor``
    Quantise then dequantise: same shape and dtype as ``x`` (arithmetic in float32).
``quantize(x, fmt, **opts) -> QTensor``
    Real storage: packed codes (two FP4/INT4/NF4 codes per byte, four FP6 codes in three
    bytes, FP8 as ``torch.float8_*``), scales in their storage type (E8M0 as ``uint8``,
    NVFP4 block scales as ``torch.float8_e4m3fn``). ``QTensor.nbytes`` is the true size.
``dequantize(q: QTensor) -> Tensor``
    ``dequantize(quantize(x, f, **o))`` equals ``fake_quantize(x, f, **o)`` bit for bit.
``effective_bits(fmt, shape, **opts) -> float``
    Bits per value including scales and zero points.
``FORMATS`` / ``resolve_format(fmt)``
    The registered format names and their specs.

Formats (``fmt``) and their options
-----------------------------------
Scales always run along the LAST dimension; leading dimensions are flattened to rows, so
for an ``nn.Linear`` weight ``[out, in]`` a "row" is an output channel and a group runs
along the input dimension, and for activations ``[..., K]`` a "row" is a token.

* ``int2`` .. ``int8``: ``symmetric`` (True: restricted range [-(2^(b-1)-1), 2^(b-1)-1],
  scale = amax / qmax; False: unsigned [0, 2^b-1], scale = (max(x,0) - min(x,0)) /
  (2^b-1), zero point = round(-min/scale)), ``granularity`` ``"tensor" | "channel"``
  (aliases ``"row"``, ``"token"``) ``| "group"``, ``group_size`` (default 128).
* ``fp8_e4m3``, ``fp8_e5m2``: ``granularity`` ``"none"`` (plain saturating cast, no
  scale) ``| "tensor" | "row" | "block"`` (1 x ``block_size`` tiles, default 128)
  ``| "tile"`` (``block_size`` x ``block_size`` tiles over the last two dimensions, the
  DeepSeek-V3 weight layout); scale = amax / max_finite (float32), codes =
  satfinite_cast(x / scale). Packed ``tile`` storage keeps one scale per tile.
* ``mxfp8_e4m3``, ``mxfp8_e5m2``, ``mxfp6_e2m3``, ``mxfp6_e3m2``, ``mxfp4``: OCP
  Microscaling v1.0, blocks of ``block_size`` = 32 with one E8M0 scale. Scale choice of
  the spec (section 6.3): ``X = 2^(floor(log2(amax)) - emax_elem)``, clamped to the E8M0
  range [2^-127, 2^127]; code 255 (NaN) when the block holds a NaN, which turns the whole
  block to NaN on decode. ``floor(log2(amax))`` is the float32 exponent field of amax
  (0 and float32 subnormals give -127). Elements: ``x / X``, saturated, rounded.
* any minifloat ``fp<bits>_e<E>m<M>[_ieee|_fn][_b<bias>]`` (3 to 8 bits; see
  ``elements.parse_float_element``; e.g. ``fp6_e3m2``, ``fp5_e2m2``, ``fp8_e3m4_ieee``,
  ``fp4_e2m1_b0``): the options and scale rule of ``fp8_*`` (default ``"tensor"``); without a
  suffix the element has no NaN, so ``fake_quantize`` keeps NaN in place and ``quantize``
  refuses it. Packed: 8 bits one byte, 6 and 4 bits as above, 3/5/7 bits densely
  (``elements.pack_bits``, last dimension a multiple of 8).
* ``mx`` + any minifloat name (``mxfp5_e2m2``, ``mxfp8_e3m4``): OCP MX block scaling of that
  element, exactly the rules of the registered MX formats (its ``emax_elem`` is
  ``floor(log2(max finite))``).
* ``nvfp4``: E2M1 elements in blocks of 16; block scale in E4M3 and an FP32 per-tensor
  scale (``tensor_scale=True``): ``s_t = amax_tensor / (448 * 6)`` (amax over finite
  values, or ``tensor_amax`` when calibrated); ``s_b = e4m3(clamp(amax_block / 6 / s_t,
  2^-6, 448))``; elements ``e2m1(clamp(x * ((1 / s_t) / s_b), -6, 6))``; decode
  ``e2m1 * (s_t * s_b)``. This is the arithmetic (operation order included) of torchao's
  ``nvfp4_quantize``, which matches NVIDIA's kernels.
* ``nf4``: QLoRA NormalFloat4. Blocks of ``block_size`` (64) over the FLATTENED tensor,
  absmax scale per block; element = nearest code book entry of ``x / absmax``. With
  ``double_quant=True`` the absmax scales lose their mean and are stored as int8 in blocks
  of ``scaler_block_size`` (256): ``q = clamp(round(c * 256 / (2 * absmax(c))), -128, 127)``
  with one float32 factor per scaler block and one float32 mean (torchao's NF4Tensor
  scheme, so its tensors serve as oracle).

Common options: ``rounding`` ``"nearest"`` (round half to even; NF4 ties go to the lower
code) ``| "stochastic"`` (unbiased; ``generator`` a ``torch.Generator``, or ``noise`` a
tensor of uniforms in [0, 1) shaped like ``x`` so that a kernel can be fed the same
random numbers). The rounding rules themselves live in ``suite.numerics.rounding``.

Special values
--------------
Out-of-range values and +-inf saturate to the largest finite element ("satfinite"). NaN:
FP8 elements keep their NaN code; MX and NVFP4 blocks with a NaN get a NaN scale (whole
block decodes to NaN). Integer and NF4 scales are computed from the finite values only;
``fake_quantize`` keeps a NaN where it was, and ``quantize`` refuses a non-finite input
for them (no code could represent it). The FP8 scaled formats likewise take amax over
finite values. An all-zero block gets scale 1 (int, FP8; NF4 keeps absmax 0 and divides by 1) so it
decodes to exact zeros.

Notes for kernel authors: divide with IEEE round-to-nearest (``tl.math.div_rn`` in
Triton, not the approximate default), keep float32 subnormals (no flush-to-zero: an MX
scale of 2^-127 is a float32 subnormal), and pack as described in ``elements``.
torchao's MX reference (FLOOR mode) quantises a block whose scale code is 0 with 2^-126
but decodes it with 2^-127; this module uses 2^-127 both ways, as the spec says, and
agrees with torchao on every other block.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

from suite.errors import UserError
from suite.numerics import elements as el
from suite.numerics.rounding import ROUNDING_MODES, round_int

__all__ = [
    "FORMATS", "FormatSpec", "QTensor", "resolve_format", "fake_quantize", "quantize",
    "dequantize", "effective_bits", "mx_scale_e8m0", "nvfp4_tensor_scale", "int_qparams",
    "int_codes", "int_dequant", "int_qtensor", "quantize_with_scale", "MINIFLOAT_FORMATS",
]


@dataclass(frozen=True)
class FormatSpec:
    """What a format name means: its family (scaling scheme) and element type."""

    name: str
    family: str  # "int" | "fp8" | "float" (any parsed minifloat) | "mx" | "nvfp4" | "nf4"
    element: str  # an element name of elements.FLOAT_ELEMENTS, "int<b>" or "nf4"
    bits: int  # bits per element
    defaults: dict = field(default_factory=dict)
    summary: str = ""


def _specs() -> dict[str, FormatSpec]:
    out: dict[str, FormatSpec] = {}
    for b in range(2, 9):
        out[f"int{b}"] = FormatSpec(
            f"int{b}", "int", f"int{b}", b,
            {"symmetric": True, "granularity": "channel", "group_size": 128},
            f"{b}-bit integer, absmax (sym) or min/max (asym) scale",
        )
    for e in ("e4m3", "e5m2"):
        out[f"fp8_{e}"] = FormatSpec(
            f"fp8_{e}", "fp8", f"fp8_{e}", 8, {"granularity": "tensor", "block_size": 128},
            f"FP8 {e.upper()} with an amax float32 scale per tensor/row/block",
        )
    for name, elem in (("mxfp8_e4m3", "fp8_e4m3"), ("mxfp8_e5m2", "fp8_e5m2"),
                       ("mxfp6_e2m3", "fp6_e2m3"), ("mxfp6_e3m2", "fp6_e3m2"),
                       ("mxfp4", "fp4_e2m1")):
        out[name] = FormatSpec(
            name, "mx", elem, el.FLOAT_ELEMENTS[elem].bits, {"block_size": 32},
            f"OCP MX: {elem} elements, blocks of 32, E8M0 shared scale",
        )
    out["nvfp4"] = FormatSpec(
        "nvfp4", "nvfp4", "fp4_e2m1", 4,
        {"block_size": 16, "tensor_scale": True, "tensor_amax": None},
        "NVFP4: E2M1 elements, blocks of 16, E4M3 block scale, FP32 tensor scale",
    )
    out["nf4"] = FormatSpec(
        "nf4", "nf4", "nf4", 4,
        {"block_size": 64, "double_quant": True, "scaler_block_size": 256},
        "QLoRA NormalFloat4, absmax blocks of 64, double-quantised int8 scales",
    )
    return out


FORMATS: dict[str, FormatSpec] = _specs()
ALIASES = {
    "fp8": "fp8_e4m3", "e4m3": "fp8_e4m3", "e5m2": "fp8_e5m2", "mxfp8": "mxfp8_e4m3",
    "mxfp6": "mxfp6_e2m3", "mxfp4_e2m1": "mxfp4", "fp4": "nvfp4",
}
_COMMON = {"rounding": "nearest", "generator": None, "noise": None}
_GRANULARITY = {
    "none": "none", "tensor": "tensor", "channel": "row", "row": "row", "token": "row",
    "group": "group", "block": "group", "tile": "tile",
}


def resolve_format(fmt: str) -> FormatSpec:
    """The spec of ``fmt`` (aliases accepted); an unknown name is a UserError.

    Besides the registered names, any minifloat parses (``MINIFLOAT_FORMATS``):
    ``fp<bits>_e<E>m<M>[_ieee|_fn][_b<bias>]`` with a float32 scale per tensor / row / block
    (the ``fp8_*`` options), and ``mx`` + that name for OCP-MX block scaling (E8M0 scale per
    32) of that element. A name of that shape that does not parse says which part is wrong.
    """
    name = ALIASES.get(fmt, fmt)
    if name in FORMATS:
        return FORMATS[name]
    if _looks_like_minifloat(name):
        return _parse_minifloat_format(name)
    from suite.errors import UnknownNameError

    raise UnknownNameError("number format", fmt, list(FORMATS) + list(ALIASES),
                           hint=f"Any minifloat too: {MINIFLOAT_FORMATS}.")


MINIFLOAT_FORMATS = (f"{el.MINIFLOAT_GRAMMAR} (scale per tensor, row, block or tile as fp8_*), "
                     f"mx{el.MINIFLOAT_GRAMMAR} (OCP MX blocks of 32, E8M0 scale)")


def _looks_like_minifloat(name: str) -> bool:
    import re

    return re.match(r"(mx)?fp\d+_", name) is not None


_PARSED: dict[str, FormatSpec] = {}


def _parse_minifloat_format(name: str) -> FormatSpec:
    """A FormatSpec for any minifloat name (cached); UserError naming the wrong part."""
    if name in _PARSED:
        return _PARSED[name]
    mx = name.startswith("mx")
    try:
        elem = el.parse_float_element(name[2:] if mx else name)
    except ValueError as exc:
        where = f"number format '{name}' (its element " if mx else "number format "
        raise UserError(f"{where}{exc}{')' if mx else ''}") from None
    if mx:
        spec = FormatSpec(name, "mx", elem.name, elem.bits, {"block_size": 32},
                          f"OCP MX-style: {elem.name} elements, blocks of 32, E8M0 shared scale")
    else:
        spec = FormatSpec(name, "float", elem.name, elem.bits,
                          {"granularity": "tensor", "block_size": 128},
                          f"minifloat {elem.name} with an amax float32 scale per tensor/row/block")
    _PARSED[name] = spec
    return spec


def _scaled_float(spec: FormatSpec) -> bool:
    """FP8 and every parsed minifloat: one float32 amax scale per tensor / row / block / tile."""
    return spec.family in ("fp8", "float")


def _resolve_opts(spec: FormatSpec, opts: dict[str, Any]) -> dict[str, Any]:
    allowed = dict(spec.defaults)
    allowed.update(_COMMON)
    if spec.family == "nf4":
        allowed["_codebook"] = None  # tests: torchao's rounded code book
    unknown = sorted(set(opts) - set(allowed))
    if unknown:
        raise UserError(
            f"format '{spec.name}' has no option {', '.join(map(repr, unknown))}; "
            f"valid options: {', '.join(k for k in allowed if not k.startswith('_'))}"
        )
    out = {**allowed, **opts}
    if out["rounding"] not in ROUNDING_MODES:
        raise UserError(
            f"format '{spec.name}': rounding must be 'nearest' or 'stochastic', "
            f"got {out['rounding']!r}"
        )
    if "granularity" in out:
        g = _GRANULARITY.get(str(out["granularity"]))
        if g is None or (g in ("none", "tile") and not _scaled_float(spec)):
            valid = [k for k in _GRANULARITY if _scaled_float(spec) or k not in ("none", "tile")]
            raise UserError(
                f"format '{spec.name}': granularity {out['granularity']!r} is not one of "
                f"{', '.join(valid)}"
            )
        out["granularity"] = g
    for key in ("group_size", "block_size", "scaler_block_size"):
        if key in out and (not isinstance(out[key], int) or out[key] < 1):
            raise UserError(f"format '{spec.name}': {key} must be a positive integer")
    return out


# -- blocking -----------------------------------------------------------------------------
def _as_rows(x: torch.Tensor) -> torch.Tensor:
    if x.dim() == 0:
        return x.reshape(1, 1)
    return x.reshape(-1, x.shape[-1])


def _blocked(x: torch.Tensor, spec: FormatSpec, granularity: str, block: int) -> torch.Tensor:
    """``x`` as ``[rows, n_blocks, block]``; a block size that does not divide the last
    dimension is a UserError (no silent padding)."""
    rows = _as_rows(x)
    if granularity == "tensor":
        return rows.reshape(1, 1, -1)
    if granularity in ("row", "none"):
        return rows.unsqueeze(1)
    k = rows.shape[-1]
    if granularity == "tile" and rows.shape[0] % block != 0:
        raise UserError(
            f"format '{spec.name}': tile scaling needs block_size={block} to divide the "
            f"{rows.shape[0]} rows of a tensor of shape {tuple(x.shape)} as well as its last "
            f"dimension; choose a block_size that divides both (e.g. "
            f"{_divisor_hint(math.gcd(rows.shape[0], k), block)})"
        )
    if k % block != 0:
        what = "group_size" if spec.family == "int" else "block_size"
        raise UserError(
            f"format '{spec.name}': {what}={block} does not divide the last dimension "
            f"{k} of a tensor of shape {tuple(x.shape)}; choose a {what} that divides {k} "
            f"(e.g. {_divisor_hint(k, block)})"
        )
    return rows.reshape(rows.shape[0], k // block, block)


def _divisor_hint(k: int, block: int) -> int:
    for d in range(min(block, k), 0, -1):
        if k % d == 0:
            return d
    return 1


def _finite_amax(xb: torch.Tensor) -> torch.Tensor:
    finite = torch.isfinite(xb)
    return torch.where(finite, xb.abs(), torch.zeros_like(xb)).amax(-1, keepdim=True)


def _tile_amax(xb: torch.Tensor) -> torch.Tensor:
    """Finite amax of each ``b x b`` tile of blocked rows ``[R, K/b, b]``: ``[R/b, K/b]``."""
    rows, n_blocks, b = xb.shape
    tiles = xb.reshape(rows // b, b, n_blocks, b).transpose(1, 2).reshape(rows // b, n_blocks, b * b)
    return _finite_amax(tiles).squeeze(-1)


def _tile_to_rows(tile_scale: torch.Tensor, block: int) -> torch.Tensor:
    """One scale per tile ``[R/b, K/b]`` -> the blocked-row layout ``[R, K/b, 1]``."""
    return tile_scale.repeat_interleave(block, 0).unsqueeze(-1)


def _noise_blocked(noise: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor | None:
    return None if noise is None else noise.reshape(like.shape)


# -- the internal unpacked encoding ---------------------------------------------------------
@dataclass
class _Enc:
    codes: torch.Tensor  # [rows, n_blocks, block] (uint8, or int16 for signed ints)
    scale: torch.Tensor | None = None  # storage type: fp32, uint8 E8M0, fp8 E4M3
    zero_point: torch.Tensor | None = None
    tensor_scale: torch.Tensor | None = None
    scale_mean: torch.Tensor | None = None
    nan_mask: torch.Tensor | None = None  # where NaN must be restored (no NaN code)


def _encode(x: torch.Tensor, spec: FormatSpec, o: dict[str, Any]) -> _Enc:
    x32 = x.detach().float() if x.dtype != torch.float32 else x.detach()
    noise = o["noise"]
    if noise is not None and tuple(noise.shape) != tuple(x.shape):
        raise UserError(f"noise must have the shape of x {tuple(x.shape)}, got {tuple(noise.shape)}")
    rnd = {"generator": o["generator"]}
    if spec.family == "int":
        return _encode_int(x32, spec, o, rnd)
    if _scaled_float(spec):
        return _encode_fp8(x32, spec, o, rnd)
    if spec.family == "mx":
        return _encode_mx(x32, spec, o, rnd)
    if spec.family == "nvfp4":
        return _encode_nvfp4(x32, spec, o, rnd)
    return _encode_nf4(x32, spec, o, rnd)


def int_qparams(xb: torch.Tensor, bits: int, symmetric: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(scale, zero point or None) of the integer formats over the last dim, from the
    finite values. GPTQ calls this per group so that it quantises with these exact rules."""
    qmin, qmax = el.int_range(bits, symmetric)
    finite = torch.isfinite(xb)
    xf = torch.where(finite, xb, torch.zeros_like(xb))
    if symmetric:
        scale = xf.abs().amax(-1, keepdim=True) / qmax
        return torch.where(scale > 0, scale, torch.ones_like(scale)), None
    lo = xf.amin(-1, keepdim=True).clamp(max=0)
    hi = xf.amax(-1, keepdim=True).clamp(min=0)
    scale = (hi - lo) / qmax
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    return scale, torch.round(-lo / scale).clamp(qmin, qmax)


def int_codes(xb: torch.Tensor, scale: torch.Tensor, zp: torch.Tensor | None, bits: int,
              symmetric: bool, rounding: str = "nearest", **rnd: Any) -> torch.Tensor:
    """Integer codes (as float) of ``xb`` with given scale / zero point; NaN -> 0."""
    qmin, qmax = el.int_range(bits, symmetric)
    v = round_int(xb / scale, rounding, **rnd)
    if zp is not None:
        v = v + zp
    return torch.where(torch.isnan(xb), torch.zeros_like(v), v).clamp(qmin, qmax)


def int_dequant(codes: torch.Tensor, scale: torch.Tensor, zp: torch.Tensor | None) -> torch.Tensor:
    q = codes.float()
    if zp is not None:
        q = q - zp.float()
    return q * scale


def _encode_int(x, spec, o, rnd) -> _Enc:
    xb = _blocked(x, spec, o["granularity"], o["group_size"])
    scale, zp = int_qparams(xb, spec.bits, o["symmetric"])
    v = int_codes(xb, scale, zp, spec.bits, o["symmetric"], o["rounding"],
                  noise=_noise_blocked(o["noise"], xb), **rnd)
    if zp is not None:
        zp = zp.to(torch.uint8)
    return _Enc(v.to(torch.int16), scale, zp, nan_mask=torch.isnan(xb))


def _encode_fp8(x, spec, o, rnd) -> _Enc:
    elem = el.float_element(spec.element)
    xb = _blocked(x, spec, o["granularity"], o["block_size"])
    noise = _noise_blocked(o["noise"], xb)
    # an element without a NaN code (parsed minifloats): fake quantisation keeps NaN in place
    nan = torch.isnan(xb) if elem.nan_code is None else None
    if o["granularity"] == "none":
        return _Enc(el.encode_float(xb, elem, o["rounding"], noise=noise, **rnd), nan_mask=nan)
    if o["granularity"] == "tile":
        scale = _tile_to_rows(_tile_amax(xb), o["block_size"]) / elem.max
    else:
        scale = _finite_amax(xb) / elem.max
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    return _Enc(el.encode_float(xb / scale, elem, o["rounding"], noise=noise, **rnd), scale,
                nan_mask=nan)


def mx_scale_e8m0(amax: torch.Tensor, elem: el.FloatElement) -> torch.Tensor:
    """E8M0 code (uint8) of the OCP MX shared scale for blocks with absolute max ``amax``:
    ``floor(log2(amax)) - emax_elem`` from the float32 exponent field, clamped, NaN -> 255."""
    a = amax.float().contiguous()
    exp = ((a.view(torch.int32) >> 23) & 0xFF) - 127
    biased = (exp - elem.emax).clamp(-127, 128) + 127
    biased = torch.where(torch.isnan(a), torch.full_like(biased, 255), biased)
    return biased.to(torch.uint8)


def _e8m0_to_float(code: torch.Tensor) -> torch.Tensor:
    """2^(code - 127) as float32 (exact, 2^-127 is a float32 subnormal); 255 -> NaN."""
    c = code.to(torch.int32)
    val = torch.ldexp(torch.ones_like(c, dtype=torch.float32), c - 127)
    return torch.where(c == 255, torch.full_like(val, float("nan")), val)


def _encode_mx(x, spec, o, rnd) -> _Enc:
    elem = el.float_element(spec.element)
    xb = _blocked(x, spec, "group", o["block_size"])
    amax = xb.abs().amax(-1, keepdim=True)  # NaN propagates: a NaN block gets scale 255
    code = mx_scale_e8m0(amax, elem)
    # a NaN block (code 255) divides by +inf, as torchao's reference does: its codes are 0
    # (NaN where x is NaN); the NaN scale makes the whole block NaN on decode anyway
    div = torch.where(code == 255, torch.full_like(amax, float("inf")), _e8m0_to_float(code))
    codes = el.encode_float(xb / div, elem, o["rounding"],
                            noise=_noise_blocked(o["noise"], xb), **rnd)
    return _Enc(codes, code)


def nvfp4_tensor_scale(amax: torch.Tensor | float) -> torch.Tensor:
    """FP32 per-tensor scale of NVFP4 from the tensor's amax: ``amax / (448 * 6)``."""
    a = torch.as_tensor(amax, dtype=torch.float32)
    s = a / (el.FP8_E4M3.max * el.FP4_E2M1.max)
    return torch.where(s > 0, s, torch.ones_like(s))


def _encode_nvfp4(x, spec, o, rnd) -> _Enc:
    e4m3 = torch.float8_e4m3fn
    tiny = torch.finfo(e4m3).tiny
    xb = _blocked(x, spec, "group", o["block_size"])
    block_scale = xb.abs().amax(-1, keepdim=True) / el.FP4_E2M1.max
    if o["tensor_scale"]:
        amax = o["tensor_amax"]
        if amax is None:
            amax = _finite_amax(xb.reshape(1, -1)).reshape(())
        ts = nvfp4_tensor_scale(amax).to(x.device)
        s8 = torch.clamp(block_scale / ts, min=tiny, max=el.FP8_E4M3.max).to(e4m3)
        recip = (1.0 / ts) / s8.float()
    else:
        ts = None
        s8 = torch.clamp(block_scale, min=tiny, max=el.FP8_E4M3.max).to(e4m3)
        recip = 1.0 / s8.float()
    scaled = torch.clamp(xb * recip, -el.FP4_E2M1.max, el.FP4_E2M1.max)
    codes = el.encode_float(scaled, el.FP4_E2M1, o["rounding"],
                            noise=_noise_blocked(o["noise"], xb), **rnd)
    return _Enc(codes, s8, tensor_scale=ts)


def _encode_nf4(x, spec, o, rnd) -> _Enc:
    bs = o["block_size"]
    flat = x.reshape(-1)
    if flat.numel() % bs != 0:
        raise UserError(
            f"format 'nf4': block_size={bs} does not divide the {flat.numel()} elements of a "
            f"tensor of shape {tuple(x.shape)}; choose a block_size that divides it"
        )
    xb = flat.reshape(1, -1, bs)
    nan = torch.isnan(xb)
    absmax = _finite_amax(xb)
    div = torch.where(absmax > 0, absmax, torch.ones_like(absmax))
    book = o["_codebook"]
    codes = el.encode_nf4(xb / div, o["rounding"], codebook=book,
                          noise=_noise_blocked(o["noise"], xb), **rnd)
    if not o["double_quant"]:
        return _Enc(codes, absmax, nan_mask=nan)
    scalers = absmax.reshape(-1)
    mean = scalers.mean()
    centred = scalers - mean
    sbs = o["scaler_block_size"]
    pad = (-centred.numel()) % sbs
    blocks = torch.nn.functional.pad(centred, (0, pad)).reshape(-1, sbs)
    s_absmax = blocks.abs().amax(-1, keepdim=True)
    s_absmax = torch.where(s_absmax > 0, s_absmax, torch.ones_like(s_absmax))
    factor = 256 / (2 * s_absmax)
    q = (blocks * factor).round().clamp(-128, 127).to(torch.int8)
    q = q.reshape(-1)[: centred.numel()]
    return _Enc(codes, q, tensor_scale=factor.reshape(-1), scale_mean=mean, nan_mask=nan)


def _nf4_scales(enc: _Enc, o: dict[str, Any]) -> torch.Tensor:
    if not o["double_quant"]:
        return enc.scale
    sbs = o["scaler_block_size"]
    q = enc.scale
    pad = (-q.numel()) % sbs
    qb = torch.nn.functional.pad(q, (0, pad)).reshape(-1, sbs)
    deq = (qb / enc.tensor_scale.unsqueeze(-1)).reshape(-1)[: q.numel()] + enc.scale_mean
    return deq.reshape(1, -1, 1)


def _decode(enc: _Enc, spec: FormatSpec, o: dict[str, Any]) -> torch.Tensor:
    """Unpacked encoding -> float32 blocks ``[rows, n_blocks, block]``."""
    if spec.family == "int":
        out = int_dequant(enc.codes, enc.scale, enc.zero_point)
    elif spec.family in ("fp8", "float", "mx", "nvfp4"):
        elem = el.float_element(spec.element)
        vals = el.decode_float(enc.codes, elem)
        if _scaled_float(spec):
            out = vals if enc.scale is None else vals * enc.scale
        elif spec.family == "mx":
            out = vals * _e8m0_to_float(enc.scale)
        else:
            s = enc.scale.float()
            out = vals * (enc.tensor_scale * s if enc.tensor_scale is not None else s)
    else:
        book = o["_codebook"] if o["_codebook"] is not None else el.nf4_codebook()
        vals = book.to(enc.codes.device, torch.float32)[enc.codes.long()]
        out = vals * _nf4_scales(enc, o)
    if enc.nan_mask is not None:
        out = torch.where(enc.nan_mask, torch.full_like(out, float("nan")), out)
    return out


# -- public API ------------------------------------------------------------------------------
def fake_quantize(x: torch.Tensor, fmt: str, **opts: Any) -> torch.Tensor:
    """Quantise ``x`` to ``fmt`` and back: same shape and dtype, values on the format's grid.

    Not differentiable by itself (use a straight-through estimator around it to train).
    """
    spec = resolve_format(fmt)
    o = _resolve_opts(spec, opts)
    out = _decode(_encode(x, spec, o), spec, o)
    return out.reshape(x.shape).to(x.dtype)


@dataclass
class QTensor:
    """A tensor in real storage: packed codes plus the scales the format needs."""

    fmt: str
    opts: dict
    shape: tuple
    dtype: torch.dtype
    data: torch.Tensor
    scale: torch.Tensor | None = None
    zero_point: torch.Tensor | None = None
    tensor_scale: torch.Tensor | None = None
    scale_mean: torch.Tensor | None = None

    def tensors(self) -> list[torch.Tensor]:
        return [t for t in (self.data, self.scale, self.zero_point, self.tensor_scale,
                            self.scale_mean) if t is not None]

    @property
    def nbytes(self) -> int:
        """Bytes of storage, scales and zero points included."""
        return sum(t.numel() * t.element_size() for t in self.tensors())

    @property
    def bits_per_value(self) -> float:
        n = 1
        for s in self.shape:
            n *= s
        return 8.0 * self.nbytes / max(n, 1)

    def dequantize(self) -> torch.Tensor:
        return dequantize(self)


def _pack(codes: torch.Tensor, spec: FormatSpec, shape: tuple, o: dict[str, Any]) -> torch.Tensor:
    c = codes.reshape(shape) if len(shape) else codes.reshape(1)
    if spec.family == "int":
        if spec.bits <= 4:  # int2..int4 share the nibble layout (two's complement if signed)
            _need_multiple(c, 2, spec)
            return el.pack_nibbles(c.to(torch.int16) & 0xF)
        return c.to(torch.int8 if o["symmetric"] else torch.uint8)
    if spec.family == "nf4":
        flat = c.reshape(-1)
        _need_multiple(flat, 2, spec)
        return el.pack_nibbles(flat)
    elem = el.float_element(spec.element)
    if elem.bits == 8:
        c = c.contiguous()
        return c.view(elem.torch_dtype) if elem.torch_dtype is not None else c.to(torch.uint8)
    if elem.bits == 6:
        _need_multiple(c, 4, spec)
        return el.pack_6bit(c)
    if elem.bits == 4:
        _need_multiple(c, 2, spec)
        return el.pack_nibbles(c)
    _need_multiple(c, 8, spec)  # 3, 5, 7 bits: runs of 8 codes in `bits` bytes
    return el.pack_bits(c, elem.bits)


def _need_multiple(c: torch.Tensor, m: int, spec: FormatSpec) -> None:
    if c.shape[-1] % m != 0:
        raise UserError(
            f"format '{spec.name}': packed storage needs the last dimension to be a multiple "
            f"of {m}, got shape {tuple(c.shape)}; use fake_quantize for this tensor"
        )


def _unpack(q: QTensor, spec: FormatSpec) -> torch.Tensor:
    d = q.data
    if spec.family == "int":
        if spec.bits <= 4:
            c = el.unpack_nibbles(d).to(torch.int16)
            if q.opts["symmetric"]:
                c = torch.where(c >= 8, c - 16, c)
            return c
        return d.to(torch.int16)
    if spec.family == "nf4":
        return el.unpack_nibbles(d)
    elem = el.float_element(spec.element)
    if elem.bits == 8:
        return d.view(torch.uint8)
    if elem.bits == 6:
        return el.unpack_6bit(d)
    if elem.bits == 4:
        return el.unpack_nibbles(d)
    return el.unpack_bits(d, elem.bits)


def integer_codes(x: torch.Tensor, fmt: str, **opts: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """An integer format's codes (int16, ``x``'s shape) and scale, as ``quantize`` stores them but
    unpacked, and without its non-finite check, so that ``torch.compile`` traces it whole (an
    integer GEMM's operand, ``methods.train.gemm.integer_codes``)."""
    spec = resolve_format(fmt)
    if spec.family != "int":
        raise UserError(f"integer_codes takes an integer format, not '{spec.name}'")
    enc = _encode(x, spec, _resolve_opts(spec, opts))
    return enc.codes.reshape(x.shape), enc.scale


def quantize(x: torch.Tensor, fmt: str, **opts: Any) -> QTensor:
    """Quantise ``x`` into packed storage (see the module docstring for the layouts)."""
    spec = resolve_format(fmt)
    o = _resolve_opts(spec, opts)
    if spec.family in ("int", "nf4") and not bool(torch.isfinite(x).all()):
        raise UserError(
            f"format '{spec.name}' has no code for NaN or inf, and the tensor holds one; "
            f"fix the non-finite values first (fake_quantize keeps NaN in place)"
        )
    if (spec.family == "float" and el.float_element(spec.element).nan_code is None
            and bool(torch.isnan(x).any())):
        raise UserError(
            f"format '{spec.name}' has no code for NaN, and the tensor holds one; fix the NaN "
            f"first or use a name with _ieee or _fn (fake_quantize keeps NaN in place)"
        )
    enc = _encode(x, spec, o)
    shape = tuple(x.shape)
    scale = enc.scale
    if scale is not None and spec.family != "nf4":
        scale = scale.reshape(enc.codes.shape[:2]) if scale.numel() > 1 else scale.reshape(())
        if o.get("granularity") == "tile":  # one stored scale per tile, not per row
            scale = scale[:: o["block_size"]].contiguous()
    zp = enc.zero_point
    if zp is not None:
        zp = zp.reshape(enc.codes.shape[:2]) if zp.numel() > 1 else zp.reshape(())
    stored = {k: v for k, v in o.items() if k not in ("generator", "noise", "_codebook")}
    if isinstance(stored.get("tensor_amax"), torch.Tensor):
        stored["tensor_amax"] = float(stored["tensor_amax"])
    return QTensor(spec.name, stored, shape, x.dtype, _pack(enc.codes, spec, shape, o), scale, zp,
                   enc.tensor_scale, enc.scale_mean)


def int_qtensor(codes: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor | None, fmt: str,
                dtype: torch.dtype = torch.float32, **opts: Any) -> QTensor:
    """Packed storage of integer codes chosen elsewhere, with the scales they were chosen with.

    Why: GPTQ picks each column's codes after error feedback and L4Q learns its scales, so
    neither is ``quantize(x)`` of a tensor; storing their codes and scales as they are is
    what makes the packed weight equal the weight they computed (recomputing the scales from
    the final weight is the classic GPTQ-port bug). ``codes`` has the weight's shape (float
    or int, within the format's range), ``scale`` / ``zero_point`` one entry per row-block
    of ``opts``' granularity. ``dequantize`` gives ``(codes - zero_point) * scale``.
    """
    spec = resolve_format(fmt)
    if spec.family != "int":
        raise UserError(f"int_qtensor packs integer formats, not '{spec.name}'")
    o = _resolve_opts(spec, opts)
    shape = tuple(codes.shape)
    blocked = _blocked(_as_rows(codes), spec, o["granularity"], o["group_size"])
    qmin, qmax = el.int_range(spec.bits, o["symmetric"])
    c = blocked.float()
    if bool(((c < qmin) | (c > qmax) | (c != c.round())).any()):
        raise ValueError(f"int_qtensor: codes outside the integers {qmin}..{qmax} of {spec.name}")
    n_blocks = blocked.shape[:2]
    scale = scale.float().reshape(n_blocks) if scale.numel() > 1 else scale.float().reshape(())
    zp = None
    if not o["symmetric"]:
        if zero_point is None:
            raise ValueError("int_qtensor: an asymmetric format needs its zero points")
        zp = zero_point.reshape(n_blocks) if zero_point.numel() > 1 else zero_point.reshape(())
        zp = zp.to(torch.uint8)
    stored = {k: v for k, v in o.items() if k not in ("generator", "noise", "_codebook")}
    return QTensor(spec.name, stored, shape, dtype, _pack(blocked.to(torch.int16), spec, shape, o),
                   scale, zp)


def quantize_with_scale(x: torch.Tensor, fmt: str, scale: torch.Tensor,
                        zero_point: torch.Tensor | None = None, **opts: Any) -> QTensor:
    """``quantize`` of an integer format with given (e.g. learned) scales instead of the
    format's amax rule: codes ``clamp(round(x / scale) + zp)``, packed as ``int_qtensor``."""
    spec = resolve_format(fmt)
    if spec.family != "int":
        raise UserError(f"quantize_with_scale takes integer formats, not '{spec.name}'")
    o = _resolve_opts(spec, opts)
    xb = _blocked(x.detach().float(), spec, o["granularity"], o["group_size"])
    s = scale.float().reshape(*xb.shape[:2], 1) if scale.numel() > 1 else scale.float().reshape(1, 1, 1)
    zp = None
    if zero_point is not None:
        zp = (zero_point.float().reshape(*xb.shape[:2], 1) if zero_point.numel() > 1
              else zero_point.float().reshape(1, 1, 1))
    codes = int_codes(xb, s, zp, spec.bits, o["symmetric"])
    public = {k: v for k, v in opts.items() if k not in ("rounding", "generator", "noise")}
    return int_qtensor(codes.reshape(x.shape), s, zp, spec.name, x.dtype, **public)


def dequantize(q: QTensor) -> torch.Tensor:
    """Packed storage back to a dense tensor of the original shape and dtype."""
    spec = resolve_format(q.fmt)
    o = {**_resolve_opts(spec, {}), **q.opts}
    codes = _unpack(q, spec)
    shape = q.shape
    if spec.family == "nf4":
        codes = codes.reshape(1, -1, o["block_size"])
        scale = q.scale if o["double_quant"] else q.scale.reshape(1, -1, 1)
    else:
        rows = _as_rows(torch.empty(shape, device="meta"))
        if spec.family == "int":
            gran, block = o["granularity"], o["group_size"]
        elif _scaled_float(spec):
            gran, block = o["granularity"], o["block_size"]
        else:
            gran, block = "group", o["block_size"]
        blocked = _blocked(rows, spec, gran, block)
        codes = codes.reshape(blocked.shape)
        if q.scale is None:
            scale = None
        elif gran == "tile":
            scale = _tile_to_rows(q.scale, block)
        else:
            scale = q.scale.reshape(*blocked.shape[:2], 1)
    zp = None if q.zero_point is None else q.zero_point.reshape(*codes.shape[:2], 1)
    enc = _Enc(codes, scale, zp, q.tensor_scale, q.scale_mean)
    return _decode(enc, spec, o).reshape(shape).to(q.dtype)


def effective_bits(fmt: str, shape: tuple[int, ...], **opts: Any) -> float:
    """Bits per value of ``fmt`` for a tensor of ``shape``, scales and zero points included,
    with ideal bit packing (how papers count). ``QTensor.nbytes`` is what ``quantize``
    stores: the same, except that int2/int3 codes take a nibble and int5-int7 a byte."""
    spec = resolve_format(fmt)
    o = _resolve_opts(spec, opts)
    numel = 1
    for s in shape:
        numel *= s
    k = shape[-1] if shape else 1
    rows = max(numel // max(k, 1), 1)
    bits = spec.bits * numel
    if spec.family == "int" or _scaled_float(spec):
        gran = o["granularity"]
        per = o["group_size"] if spec.family == "int" else o["block_size"]
        n_scales = {"none": 0, "tensor": 1, "row": rows,
                    "tile": (rows // per) * (k // per)}.get(gran, rows * (k // per))
        bits += n_scales * 32
        if spec.family == "int" and not o["symmetric"]:
            bits += n_scales * 8
    elif spec.family == "mx":
        bits += numel // o["block_size"] * 8
    elif spec.family == "nvfp4":
        bits += numel // o["block_size"] * 8 + (32 if o["tensor_scale"] else 0)
    else:
        n_blocks = numel // o["block_size"]
        if o["double_quant"]:
            n_sb = -(-n_blocks // o["scaler_block_size"])
            bits += n_blocks * 8 + n_sb * 32 + 32
        else:
            bits += n_blocks * 32
    return bits / max(numel, 1)
