"""Element codecs: the scalar number formats that every block format is built from.

Each element type maps a float32 value (already divided by its scale) to an integer code
and back. The code layout is the one the hardware and the OCP / NVIDIA specifications use,
so packed tensors can be handed to kernels as they are:

* floating-point elements (FP8 E4M3/E5M2, FP6 E2M3/E3M2, FP4 E2M1): ``sign | exponent |
  mantissa`` with the sign in the top bit of the element width; FP8 codes are the bit
  patterns of ``torch.float8_e4m3fn`` / ``torch.float8_e5m2``;
* NF4: the index (0..15) into the QLoRA code book, sorted ascending;
* integers: two's complement (signed) or plain unsigned codes.

Rounding is round-to-nearest-even (ties go to the code whose last mantissa bit is 0) or
stochastic (round up with probability equal to the distance from the lower neighbour,
so the expectation equals the input); both live in ``rounding``. Values beyond the largest finite magnitude saturate
to it, and +-inf saturates too ("satfinite", what ``cvt.rn.satfinite`` does on GPUs and
what torchao's reference casts do). NaN maps to the format's NaN code where it has one
(FP8); FP6/FP4/NF4/integers have none, and the fake-quantisation path keeps NaN in place.

Why a value table and not bit tricks: one routine rounds every format identically (nearest
and stochastic), and the midpoints between neighbouring values of these small formats are
exact in float32, so the comparison ``|x| < midpoint`` decides nearest rounding exactly.
Tests tie the result bit for bit to torch's FP8 casts and torchao's FP6/FP4 casts.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from functools import cache

import torch

from suite.numerics.rounding import round_on_grid

# The NF4 code book of QLoRA (Dettmers et al. 2023, appendix; bitsandbytes' published
# float32 values): quantiles of N(0, 1), normalised to [-1, 1], with an exact zero.
NF4_CODEBOOK: tuple[float, ...] = (
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
    -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
    0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
    0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0,
)


@dataclass(frozen=True)
class FloatElement:
    """A small IEEE-like float: 1 sign bit, ``ebits`` exponent bits, ``mbits`` mantissa bits.

    ``special`` says which top codes are not finite numbers:
    ``"fn"`` (E4M3FN: only S.1111.111 is NaN, no inf), ``"ieee"`` (E5M2: exponent all ones
    is inf/NaN), ``"none"`` (FP6/FP4: every code is a finite number).
    """

    name: str
    ebits: int
    mbits: int
    special: str
    torch_dtype: torch.dtype | None = None
    exp_bias: int | None = None  # None: the IEEE bias 2^(ebits-1) - 1

    @property
    def bits(self) -> int:
        return 1 + self.ebits + self.mbits

    @property
    def bias(self) -> int:
        if self.exp_bias is not None:
            return self.exp_bias
        return (1 << (self.ebits - 1)) - 1

    @property
    def sign_bit(self) -> int:
        return 1 << (self.ebits + self.mbits)

    @property
    def nan_code(self) -> int | None:
        if self.special == "fn":
            return (1 << (self.ebits + self.mbits)) - 1
        if self.special == "ieee":
            return ((1 << self.ebits) - 1) << self.mbits | (1 << (self.mbits - 1))
        return None

    @property
    def finite_codes(self) -> int:
        """How many magnitude codes are finite numbers (the special codes left out)."""
        n_codes = 1 << (self.ebits + self.mbits)
        if self.special == "fn":
            return n_codes - 1  # S.1111.111 is NaN
        if self.special == "ieee":
            return n_codes - (1 << self.mbits)  # exponent all ones: inf and NaN
        return n_codes

    @property
    def max(self) -> float:
        """The largest finite magnitude, as float32 holds it. Plain Python (no tensor), so that
        ``torch.compile`` reads it as a constant instead of breaking its graph there."""
        return _as_float32(self.magnitude_of(self.finite_codes - 1))

    @property
    def emax(self) -> int:
        """Exponent of the largest power of two the format holds (OCP MX ``emax_elem``)."""
        return int(math.floor(math.log2(self.max)))

    def magnitude_of(self, code: int) -> float:
        e, m = code >> self.mbits, code & ((1 << self.mbits) - 1)
        if e == 0:
            return m / (1 << self.mbits) * 2.0 ** (1 - self.bias)
        return (1 + m / (1 << self.mbits)) * 2.0 ** (e - self.bias)


FP8_E4M3 = FloatElement("fp8_e4m3", 4, 3, "fn", torch.float8_e4m3fn)
FP8_E5M2 = FloatElement("fp8_e5m2", 5, 2, "ieee", torch.float8_e5m2)
FP6_E2M3 = FloatElement("fp6_e2m3", 2, 3, "none")
FP6_E3M2 = FloatElement("fp6_e3m2", 3, 2, "none")
FP4_E2M1 = FloatElement("fp4_e2m1", 2, 1, "none")
FLOAT_ELEMENTS = {e.name: e for e in (FP8_E4M3, FP8_E5M2, FP6_E2M3, FP6_E3M2, FP4_E2M1)}

# -- any minifloat ------------------------------------------------------------------------------
MINIFLOAT_GRAMMAR = "fp<bits>_e<E>m<M>[_ieee|_fn][_b<bias>]"
_SPECIAL_SUFFIX = {"ieee": "ieee", "fn": "fn"}


def minifloat_name(ebits: int, mbits: int, special: str = "none", bias: int | None = None) -> str:
    """The canonical name of a minifloat: ``fp6_e3m2``, ``fp8_e4m3_fn``, ``fp5_e2m2_b1``."""
    name = f"fp{1 + ebits + mbits}_e{ebits}m{mbits}"
    if special != "none":
        name += f"_{special}"
    if bias is not None and bias != (1 << (ebits - 1)) - 1:
        name += f"_b{bias}"
    return name


@cache
def parse_float_element(name: str) -> FloatElement:
    """The element a minifloat name describes (grammar ``MINIFLOAT_GRAMMAR``).

    Why a grammar and not a list: "Post-Training Quantization with Low-precision Minifloats
    and Integers on FPGAs" (Aggarwal et al. 2024) sweeps every exponent/mantissa split of 3
    to 8 bits, with and without IEEE special values and with a configurable exponent bias.
    Without a suffix every code is a finite number (as OCP FP6/FP4); ``_ieee`` reserves the
    all-ones exponent for inf and NaN (IEEE 754); ``_fn`` reserves only the all-ones code
    for NaN (as E4M3FN); ``_b<bias>`` replaces the bias 2^(E-1)-1. Subnormals are kept
    (exponent field 0). The registered names (``fp8_e4m3``: NaN only, ``fp8_e5m2``: IEEE,
    ``fp6_e2m3``, ``fp6_e3m2``, ``fp4_e2m1``) keep their OCP meaning; a parsed name whose
    values equal a registered element returns that element (with its torch dtype).

    A malformed name raises ValueError saying which part is wrong.
    """
    if name in FLOAT_ELEMENTS:
        return FLOAT_ELEMENTS[name]
    import re

    head = re.fullmatch(r"fp(\d+)_(.*)", name)
    if head is None:
        raise ValueError(f"'{name}' is not a minifloat name: write {MINIFLOAT_GRAMMAR}, e.g. fp6_e3m2")
    bits, parts = int(head.group(1)), head.group(2).split("_")
    em = re.fullmatch(r"e(\d+)m(\d+)", parts[0])
    if em is None:
        raise ValueError(f"'{name}': the exponent/mantissa part '{parts[0]}' must read e<E>m<M> "
                         f"(e.g. e3m2); grammar {MINIFLOAT_GRAMMAR}")
    ebits, mbits = int(em.group(1)), int(em.group(2))
    if not 3 <= bits <= 8:
        raise ValueError(f"'{name}': the bit width 'fp{bits}' must be 3 to 8")
    if 1 + ebits + mbits != bits:
        raise ValueError(f"'{name}': the bit width 'fp{bits}' does not match the split '{parts[0]}': "
                         f"1 sign + {ebits} exponent + {mbits} mantissa bits = {1 + ebits + mbits}")
    if ebits < 1:
        raise ValueError(f"'{name}': the exponent part 'e{ebits}' needs at least 1 exponent bit "
                         f"(without one the format is an integer: use int<bits>)")
    special, bias = "none", None
    for part in parts[1:]:
        if part in _SPECIAL_SUFFIX:
            if special != "none":
                raise ValueError(f"'{name}': the special-values suffix appears twice ('_{special}', '_{part}')")
            special = _SPECIAL_SUFFIX[part]
        elif re.fullmatch(r"b-?\d+", part):
            if bias is not None:
                raise ValueError(f"'{name}': the bias suffix appears twice")
            bias = int(part[1:])
        else:
            raise ValueError(f"'{name}': unknown suffix '_{part}'; expected _ieee (inf and NaN), "
                             f"_fn (NaN only) or _b<bias> (exponent bias); grammar {MINIFLOAT_GRAMMAR}")
    if special == "ieee" and (mbits < 1 or ebits < 2):
        raise ValueError(f"'{name}': the suffix '_ieee' needs at least 2 exponent bits and 1 mantissa "
                         f"bit (an all-ones exponent with a non-zero mantissa is NaN); drop '_ieee'")
    default_bias = (1 << (ebits - 1)) - 1
    b = default_bias if bias is None else bias
    # every value and every midpoint between neighbours exact in float32 (the codec's premise)
    if 1 - b - mbits - 1 < -149 or ((1 << ebits) - 1) - b > 127:
        raise ValueError(f"'{name}': the bias {b} puts values outside float32 (the smallest "
                         f"step 2^{1 - b - mbits}, the top binade 2^{(1 << ebits) - 1 - b}); "
                         f"choose a bias between {(1 << ebits) - 1 - 127} and {148 - mbits}")
    canonical = minifloat_name(ebits, mbits, special, bias)
    elem = FloatElement(canonical, ebits, mbits, special,
                        exp_bias=None if bias is None or bias == default_bias else bias)
    for known in FLOAT_ELEMENTS.values():  # same values as a registered element: use it
        if (known.ebits, known.mbits, known.special, known.bias) == (ebits, mbits, special, elem.bias):
            return known
    if magnitudes(elem).numel() < 2:
        raise ValueError(f"'{name}' has no positive finite value; use fewer special codes")
    return elem


def float_element(name: str) -> FloatElement:
    """A registered element by name, or any minifloat name (``parse_float_element``)."""
    elem = FLOAT_ELEMENTS.get(name)
    return elem if elem is not None else parse_float_element(name)


def enumerate_values(elem: FloatElement) -> list[float]:
    """Every finite value of ``elem`` by brute force over all its bit patterns, from the
    definition alone (``(-1)^s 2^(e - bias) (1 + m / 2^M)``, subnormal at e = 0), with the
    special codes left out: the oracle the tests hold the codecs to."""
    out = []
    top_e = (1 << elem.ebits) - 1
    for code in range(1 << elem.bits):
        s = code >> (elem.ebits + elem.mbits)
        e = (code >> elem.mbits) & top_e
        m = code & ((1 << elem.mbits) - 1)
        if elem.special == "ieee" and e == top_e:
            continue
        if elem.special == "fn" and e == top_e and m == (1 << elem.mbits) - 1:
            continue
        frac = m / (1 << elem.mbits)
        mag = frac * 2.0 ** (1 - elem.bias) if e == 0 else (1 + frac) * 2.0 ** (e - elem.bias)
        out.append(-mag if s else mag)
    return out


def _as_float32(value: float) -> float:
    """``value`` rounded to float32 (inf beyond its range), as a float32 tensor would hold it."""
    try:
        return struct.unpack("f", struct.pack("f", value))[0]
    except OverflowError:
        return math.inf


@cache
def _magnitudes_cpu(elem: FloatElement) -> torch.Tensor:
    return torch.tensor([elem.magnitude_of(c) for c in range(elem.finite_codes)], dtype=torch.float32)


def magnitudes(elem: FloatElement, device: torch.device | str = "cpu") -> torch.Tensor:
    """Finite magnitudes of ``elem`` indexed by magnitude code (ascending)."""
    return _magnitudes_cpu(elem).to(device)


@cache
def _decode_table_cpu(elem: FloatElement) -> torch.Tensor:
    mags = _magnitudes_cpu(elem)
    half = 1 << (elem.ebits + elem.mbits)
    table = torch.full((half,), float("nan"))
    table[: mags.numel()] = mags
    if elem.special == "ieee":
        table[mags.numel()] = float("inf")
    return torch.cat([table, -table])


def decode_table(elem: FloatElement, device: torch.device | str = "cpu") -> torch.Tensor:
    """float32 value of every code of ``elem`` (NaN/inf where the code means that)."""
    return _decode_table_cpu(elem).to(device)


def encode_float(x: torch.Tensor, elem: FloatElement, rounding: str = "nearest", *,
                 generator: torch.Generator | None = None,
                 noise: torch.Tensor | None = None, native: bool = True) -> torch.Tensor:
    """float32 -> uint8 codes of ``elem`` (saturating; NaN -> NaN code or 0 where none).

    FP8 nearest rounding uses torch's own cast (``native``; same result as the table path,
    which the tests check, only faster)."""
    x = x.float()
    if rounding == "nearest" and elem.torch_dtype is not None and native:
        # torch's own cast is RNE; clamp first so overflow and inf saturate on every version
        q = x.clamp(-elem.max, elem.max).to(elem.torch_dtype)
        return q.view(torch.uint8)
    a = x.abs().clamp(max=elem.max)
    nan = torch.isnan(x)
    a = torch.where(nan, torch.zeros_like(a), a)
    mag = round_on_grid(a, magnitudes(elem, x.device), rounding, tie="even",
                        generator=generator, noise=noise)
    code = torch.where(torch.signbit(x), mag | elem.sign_bit, mag)
    if elem.nan_code is not None:
        code = torch.where(nan, torch.full_like(code, elem.nan_code), code)
    return code.to(torch.uint8)


def decode_float(codes: torch.Tensor, elem: FloatElement) -> torch.Tensor:
    """uint8 codes of ``elem`` -> float32 values."""
    if elem.torch_dtype is not None:
        return codes.contiguous().view(elem.torch_dtype).float()
    return decode_table(elem, codes.device)[codes.long()]


def encode_nf4(x: torch.Tensor, rounding: str = "nearest", *,
               codebook: torch.Tensor | None = None,
               generator: torch.Generator | None = None,
               noise: torch.Tensor | None = None) -> torch.Tensor:
    """Values in [-1, 1] -> NF4 indices (uint8); ties go to the lower code (as torchao)."""
    book = codebook if codebook is not None else nf4_codebook(x.device)
    v = x.float().clamp(-1.0, 1.0)
    v = torch.where(torch.isnan(v), torch.zeros_like(v), v)
    return round_on_grid(v, book.to(x.device, torch.float32), rounding, tie="low",
                         generator=generator, noise=noise).to(torch.uint8)


def nf4_codebook(device: torch.device | str = "cpu") -> torch.Tensor:
    return torch.tensor(NF4_CODEBOOK, dtype=torch.float32, device=device)


def int_range(bits: int, symmetric: bool) -> tuple[int, int]:
    """(qmin, qmax): symmetric uses the restricted range [-(2^(b-1)-1), 2^(b-1)-1] so that
    zero is the centre and no code is wasted on the asymmetric -2^(b-1); asymmetric is
    unsigned [0, 2^b - 1] with a zero point."""
    if symmetric:
        qmax = (1 << (bits - 1)) - 1
        return -qmax, qmax
    return 0, (1 << bits) - 1


# -- packing ------------------------------------------------------------------------------
def pack_nibbles(codes: torch.Tensor) -> torch.Tensor:
    """Two 4-bit codes per byte along the last dim; element 2i in the low nibble (the
    layout of ``torch.float4_e2m1fn_x2`` and of torchao's MX/NVFP4 tensors)."""
    c = codes.to(torch.uint8) & 0xF
    return c[..., 0::2] | (c[..., 1::2] << 4)


def unpack_nibbles(packed: torch.Tensor) -> torch.Tensor:
    lo, hi = packed & 0xF, packed >> 4
    return torch.stack([lo, hi], dim=-1).flatten(-2)


def pack_6bit(codes: torch.Tensor) -> torch.Tensor:
    """Four 6-bit codes in three bytes along the last dim, little-endian: element 4i in bits
    0-5 of the 24-bit word, 4i+1 in bits 6-11, and so on."""
    c = codes.to(torch.int32) & 0x3F
    c = c.unflatten(-1, (-1, 4))
    word = c[..., 0] | (c[..., 1] << 6) | (c[..., 2] << 12) | (c[..., 3] << 18)
    out = torch.stack([word & 0xFF, (word >> 8) & 0xFF, (word >> 16) & 0xFF], dim=-1)
    return out.flatten(-2).to(torch.uint8)


def pack_bits(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Any width of 1 to 8 bits, densely along the last dim (a multiple of 8): each run of 8
    codes fills ``bits`` bytes little-endian, element i of the run in bits ``i*bits`` on.
    For 4 and 6 bits this is the layout of ``pack_nibbles`` and ``pack_6bit``."""
    mask = (1 << bits) - 1
    c = (codes.to(torch.int64) & mask).unflatten(-1, (-1, 8))
    word = torch.zeros(c.shape[:-1], dtype=torch.int64, device=codes.device)
    for i in range(8):
        word |= c[..., i] << (i * bits)
    out = torch.stack([(word >> (8 * j)) & 0xFF for j in range(bits)], dim=-1)
    return out.flatten(-2).to(torch.uint8)


def unpack_bits(packed: torch.Tensor, bits: int) -> torch.Tensor:
    b = packed.to(torch.int64).unflatten(-1, (-1, bits))
    word = torch.zeros(b.shape[:-1], dtype=torch.int64, device=packed.device)
    for j in range(bits):
        word |= b[..., j] << (8 * j)
    mask = (1 << bits) - 1
    out = torch.stack([(word >> (i * bits)) & mask for i in range(8)], dim=-1)
    return out.flatten(-2).to(torch.uint8)


def unpack_6bit(packed: torch.Tensor) -> torch.Tensor:
    b = packed.to(torch.int32).unflatten(-1, (-1, 3))
    word = b[..., 0] | (b[..., 1] << 8) | (b[..., 2] << 16)
    out = torch.stack([(word >> s) & 0x3F for s in (0, 6, 12, 18)], dim=-1)
    return out.flatten(-2).to(torch.uint8)
