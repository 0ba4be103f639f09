"""Fused block Hadamard transform + quantise (MXFP4 / NVFP4 / FP8), optional stochastic rounding.

The rotation spreads outliers across a block before a 4-bit cast (QuaRot, HALO, Quartet
train with it). Its definition is ``suite.numerics.hadamard``, the one QuaRot's layer
uses too: per block of H (16/32/128) along the rows, the fast form (Walsh-Hadamard
butterflies with strides 1, 2, ..., H/2 in float32, then times float32(1/sqrt(H))), which
equals the dense ``x @ hadamard_matrix(H)`` up to float32 rounding and fixes the order of
every addition, so the Triton kernel (``_quant_triton``) matches it bit for bit. The
result is quantised by ``suite.numerics.formats`` (stochastic rounding: same uniforms ->
same bits).
"""

from __future__ import annotations

from typing import ClassVar

from suite.errors import UserError
from suite.kernel import DTYPE_BYTES, Impl, Kernel, compiled, parse_dtype, randn
from suite.registry import register_kernel

FORMATS = {"mxfp4": ("mxfp4", {}), "nvfp4": ("nvfp4", {}),
           "fp8": ("fp8_e4m3", {"granularity": "row"})}
HADAMARD_SIZES = (16, 32, 128)


def hadamard_rotate(x, h: int):
    """float32 rows rotated by the normalised block Hadamard of size ``h``: the fast form of
    ``suite.numerics.hadamard.apply_block_hadamard`` in float32, the kernel's arithmetic."""
    from suite.numerics.hadamard import apply_block_hadamard

    if h not in HADAMARD_SIZES:
        raise UserError(f"Hadamard block size {h} is not supported; choose one of {HADAMARD_SIZES}")
    return apply_block_hadamard(x.float(), h, method="fast")


def hadamard_quantize_reference(x, h: int, fmt: str, rounding: str = "nearest", noise=None,
                                generator=None):
    """The oracle: rotate, then ``formats.quantize``; returns the storage tensors."""
    from suite.numerics import formats

    name, opts = FORMATS[fmt]
    q = formats.quantize(hadamard_rotate(x, h), name, rounding=rounding, noise=noise,
                         generator=generator, **opts)
    out = (q.data, q.scale)
    return out + (q.tensor_scale,) if q.tensor_scale is not None else out


def hadamard_quantize(x, h: int, fmt: str, rounding: str = "nearest", noise=None, seed: int = 0):
    """The Triton kernel: one pass (two for NVFP4: its tensor amax is of the rotated x)."""
    from suite.kernels._quant_triton import quantize

    name, _ = FORMATS[fmt]
    return quantize(x, name, rounding=rounding, noise=noise, seed=seed, hadamard=h)


class _HadamardQuant(Kernel):
    fmt: ClassVar[str] = "mxfp4"
    h: ClassVar[int] = 32
    dims = ("M", "N")
    dtypes = ("bfloat16", "float16", "float32")
    shapes = ((8192, 8192), (16384, 8192))
    cpu_shapes = ((256, 1024),)

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        block = {"mxfp4": 32, "nvfp4": 16, "fp8": 1}[cls.fmt]
        cls.divisors = {"N": max(block, cls.h)}

    def check(self, shape, dtype):
        super().check(shape, dtype)
        if self.fmt == "fp8" and shape[1] > 32768:
            raise UserError(f"kernel '{self.name}' keeps a row in registers: N={shape[1]} is "
                            "over 32768; use the MXFP4/NVFP4 variant or split the rows")

    def make_inputs(self, shape, dtype, device, generator):
        return (randn(shape, dtype, device, generator, scale=2.0),)

    def reference(self, x):
        return hadamard_quantize_reference(x, self.h, self.fmt)

    def impls(self):
        def triton_impl(x):
            return hadamard_quantize(x, self.h, self.fmt)

        def triton_sr(x):
            return hadamard_quantize(x, self.h, self.fmt, rounding="stochastic", seed=1234)

        out = {
            "triton": Impl("triton", triton_impl, needs="triton"),
            "torch_compile": Impl("torch_compile", compiled(self.reference), peer=True,
                                  default_on_cpu=False),
        }
        out["triton_sr"] = Impl("triton_sr", triton_sr, needs="triton", checked=False,
                                note="stochastic rounding (in-kernel RNG): timed, "
                                "checked statistically by the tests")
        return out

    def bytes_moved(self, shape, dtype):
        """X read, codes + scales written. NVFP4 reads X twice: its FP32 tensor scale comes
        from the amax of the whole rotated tensor, which must be complete before the first
        block is quantised (an amax pass, then the quantise pass); at the benchmark shapes
        X is far larger than L2, so both reads come from device memory."""
        M, N = shape
        n = M * N
        codes = n // 2 if self.fmt != "fp8" else n
        scales = {"mxfp4": n // 32, "nvfp4": n // 16 + 4, "fp8": 4 * M}[self.fmt]
        x_reads = 2 if self.fmt == "nvfp4" else 1
        return x_reads * n * DTYPE_BYTES[parse_dtype(dtype)] + codes + scales

    def flops(self, shape, dtype):
        M, N = shape
        return M * N * (self.h.bit_length() - 1)  # one add per element per butterfly stage


for _fmt in FORMATS:
    for _h in HADAMARD_SIZES:
        _name = f"hadamard{_h}_{_fmt}"
        _cls = type(f"Hadamard{_h}{_fmt.title()}", (_HadamardQuant,),
                    {"name": _name, "fmt": _fmt, "h": _h, "__module__": __name__})
        register_kernel(_name, kind="quant",
                        summary=f"block Hadamard ({_h}) + {_fmt} quantise in one pass"
                        + (" after an amax pass" if _fmt == "nvfp4" else ""),
                        paper="arXiv:2505.14669")(_cls)
