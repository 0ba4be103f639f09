"""Quantise and dequantise kernels for every training/inference number format.

The reference is ``suite.numerics.formats`` itself (the single definition of the
formats); the Triton kernels (``_quant_triton``) must match it bit for bit. ``*_dual``
kernels also write X^T quantised along its rows (the layout of the weight-gradient GEMM)
from the same read of X. Formats whose scale spans the whole tensor (per-tensor FP8,
NVFP4) read X twice, an amax pass then the quantise pass, and their cost model counts
both reads (``_Quantize.x_reads``). Peers: ``torch.compile`` of the reference, and torchao's casts
where torchao has one (its layouts and scale rules differ in corner cases, so their outputs
are timed, not checked).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

from suite.errors import UserError
from suite.kernel import DTYPE_BYTES, Impl, Kernel, compiled, parse_dtype, randn
from suite.registry import register_kernel

BLOCKS = {"mxfp8_e4m3": 32, "mxfp4": 32, "nvfp4": 16, "int4": 128}
CODE_BITS = {"fp8_e4m3": 8, "fp8_e5m2": 8, "mxfp8_e4m3": 8, "mxfp4": 4, "nvfp4": 4, "int8": 8, "int4": 4}
SCALE_BYTES = {"fp8_e4m3": 4, "fp8_e5m2": 4, "mxfp8_e4m3": 1, "mxfp4": 1, "nvfp4": 1, "int8": 4, "int4": 4}


def _storage(q) -> tuple:
    """The tensors of a formats.QTensor in the order the Triton wrappers return them."""
    out = (q.data, q.scale)
    return out + (q.tensor_scale,) if q.tensor_scale is not None else out


def _triton_and_compiled(kernel: Kernel) -> dict[str, Impl]:
    """A kernel's Triton implementation, timed against its reference under ``torch.compile`` (a peer)."""
    return {"triton": Impl("triton", kernel.triton, needs="triton"),
            "torch_compile": Impl("torch_compile", compiled(kernel.reference), peer=True, default_on_cpu=False)}


class _QuantBase(Kernel):
    fmt: ClassVar[str] = ""
    opts: ClassVar[dict[str, Any]] = {}
    dims = ("M", "N")
    dtypes = ("bfloat16", "float16", "float32")
    shapes = ((8192, 8192), (16384, 8192))
    cpu_shapes = ((256, 1024),)
    max_row = 0  # row-wise formats keep a whole row in registers

    def check(self, shape, dtype):
        super().check(shape, dtype)
        if self.max_row and shape[1] > self.max_row:
            raise UserError(f"kernel '{self.name}' keeps a row in registers: N={shape[1]} is over "
                            f"{self.max_row}; quantise with a block format or split the rows")

    def make_inputs(self, shape, dtype, device, generator):
        return (randn(shape, dtype, device, generator, scale=2.0),)

    def row_scales(self, shape) -> int:
        M, N = shape
        block = BLOCKS.get(self.fmt)
        if self.opts.get("granularity") == "tensor":
            return 1
        return M * (N // block if block else 1)


class _Quantize(_QuantBase):
    dual: ClassVar[bool] = False
    per_tensor: ClassVar[bool] = False
    stochastic: ClassVar[bool] = False

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        block = BLOCKS.get(cls.fmt)
        if block:
            cls.divisors = {"N": block, "M": block} if cls.dual else {"N": block}
        if cls.fmt in ("fp8_e4m3", "fp8_e5m2", "int8") and not cls.per_tensor:
            cls.max_row = 32768

    def reference(self, x):
        from suite.numerics import formats

        out = _storage(formats.quantize(x, self.fmt, **self.opts))
        if self.dual:
            out += _storage(formats.quantize(x.t().contiguous(), self.fmt, **self.opts))
        return out

    def triton(self, x):
        from suite.kernels._quant_triton import quantize

        return quantize(x, self.fmt, dual=self.dual, per_tensor=self.per_tensor)

    def impls(self):
        out = _triton_and_compiled(self)
        peer = self.torchao_peer()
        if peer is not None:
            out["torchao"] = Impl("torchao", peer, needs="cuda", peer=True, checked=False)
        return out

    def torchao_peer(self):
        return None

    def x_reads(self) -> int:
        """How often the algorithm must read X: twice when the scale depends on the whole
        tensor (per-tensor FP8, NVFP4's FP32 tensor scale), once otherwise.

        A tensor-wide amax must be complete before the first element can be quantised, so
        the Triton kernels make an amax pass and then the quantise pass, as torchao's
        per-tensor float8 cast does. At the benchmark shapes X (128-512 MiB) is far larger
        than the L2 cache (50 MiB on H100), so the second read comes from device memory;
        only a given (delayed) scale avoids it (``quantize_fp8_tensor_given``).
        """
        return 2 if self.per_tensor or self.fmt == "nvfp4" else 1

    def bytes_moved(self, shape, dtype):
        """Reads of X (``x_reads``) + codes + scales written; for ``*_dual`` both layouts,
        from one quantise pass. A per-tensor scale (FP8's, NVFP4's FP32 one) is one float32
        written once, shared by both layouts. The amax pass's per-program partials (4 bytes
        per 8192 elements) are an implementation detail and not counted."""
        M, N = shape
        n = M * N
        code_bytes = n * CODE_BITS[self.fmt] // 8
        written = code_bytes + self.row_scales(shape) * SCALE_BYTES[self.fmt]
        if self.fmt == "nvfp4":
            written += 4  # the FP32 tensor scale beside the E4M3 block scales
        if self.dual:
            written += code_bytes
            if not self.per_tensor:  # the per-tensor scale is shared, not written again
                written += self.row_scales((N, M)) * SCALE_BYTES[self.fmt]
        return self.x_reads() * n * DTYPE_BYTES[parse_dtype(dtype)] + written


def _torchao_mxfp8(dual: bool):
    def run(x):
        from torchao.prototype.mx_formats.kernels import triton_to_mxfp8_dim0, triton_to_mxfp8_dim1

        out = triton_to_mxfp8_dim0(x, inner_block_size=32, scaling_mode="floor")
        return out + triton_to_mxfp8_dim1(x, inner_block_size=32, scaling_mode="floor") if dual else out

    return run


def _torchao_to_mx(dual: bool):
    holder: dict = {}

    def run(x):
        import torch

        if "fn" not in holder:
            from torchao.prototype.mx_formats.mx_tensor import to_mx

            holder["fn"] = torch.compile(to_mx)
        out = holder["fn"](x, torch.float4_e2m1fn_x2, 32)
        return out + holder["fn"](x.t().contiguous(), torch.float4_e2m1fn_x2, 32) if dual else out

    return run


def _torchao_nvfp4(dual: bool):
    holder: dict = {}

    def run(x):
        import torch

        if "fn" not in holder:
            from torchao.prototype.mx_formats.nvfp4_tensor import (
                nvfp4_quantize,
                per_tensor_amax_to_scale,
            )

            def cast(t):
                scale = per_tensor_amax_to_scale(torch.max(torch.abs(t)))
                return nvfp4_quantize(t, 16, scale)

            holder["fn"] = torch.compile(cast)
        out = holder["fn"](x)
        return out + holder["fn"](x.t().contiguous()) if dual else out

    return run


def _quant(name: str, fmt: str, summary: str, opts: dict | None = None, **flags):
    def make(peer=None):
        attrs = {"name": name, "fmt": fmt, "opts": opts or {}, **flags}
        if peer is not None:
            attrs["torchao_peer"] = lambda self: peer(flags.get("dual", False))
        cls = type(name.title().replace("_", ""), (_Quantize,), attrs)
        cls.__module__ = __name__
        return register_kernel(name, kind="quant", summary=summary)(cls)

    return make


_quant("quantize_fp8_tensor", "fp8_e4m3", "FP8 E4M3 cast with one amax scale per tensor",
       {"granularity": "tensor"}, per_tensor=True)()
_quant("quantize_fp8_tensor_dual", "fp8_e4m3", "FP8 E4M3 per-tensor cast of X and X^T (one amax pass + one pass for both)",
       {"granularity": "tensor"}, per_tensor=True, dual=True)()
_quant("quantize_fp8_row", "fp8_e4m3", "FP8 E4M3 cast with one amax scale per row",
       {"granularity": "row"})()
_quant("quantize_fp8_e5m2_tensor", "fp8_e5m2", "FP8 E5M2 cast with one amax scale per tensor (gradients)",
       {"granularity": "tensor"}, per_tensor=True)()
_quant("quantize_fp8_e5m2_row", "fp8_e5m2", "FP8 E5M2 cast with one amax scale per row (gradients)",
       {"granularity": "row"})()
_quant("quantize_mxfp8", "mxfp8_e4m3", "MXFP8 (E4M3, blocks of 32, E8M0 scales)")(_torchao_mxfp8)
_quant("quantize_mxfp8_dual", "mxfp8_e4m3", "MXFP8 of X and X^T in one pass",
       dual=True)(_torchao_mxfp8)
_quant("quantize_mxfp4", "mxfp4", "MXFP4 (E2M1, blocks of 32, E8M0 scales), packed")(_torchao_to_mx)
_quant("quantize_mxfp4_dual", "mxfp4", "MXFP4 of X and X^T in one pass",
       dual=True)(_torchao_to_mx)
_quant("quantize_nvfp4", "nvfp4", "NVFP4 (E2M1, blocks of 16, E4M3 + FP32 scales), packed")(
    _torchao_nvfp4)
_quant("quantize_nvfp4_dual", "nvfp4", "NVFP4 of X and X^T (one amax pass + one pass for both)",
       dual=True)(_torchao_nvfp4)
_quant("quantize_int8_row", "int8", "symmetric INT8, one scale per row",
       {"granularity": "row"})()
_quant("quantize_int8_tensor", "int8", "symmetric INT8, one amax scale per tensor",
       {"granularity": "tensor"}, per_tensor=True)()
_quant("quantize_int4_group", "int4", "symmetric INT4, one scale per group of 128, packed",
       {"granularity": "group", "group_size": 128})()


class _Dequantize(_QuantBase):
    """Inputs: a formats.QTensor; output: the dense tensor in the original dtype."""

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        block = BLOCKS.get(cls.fmt)
        if block:
            cls.divisors = {"N": block}
        if cls.fmt in ("fp8_e4m3", "fp8_e5m2", "int8"):
            cls.max_row = 32768

    def make_inputs(self, shape, dtype, device, generator):
        from suite.numerics import formats

        x = randn(shape, dtype, device, generator, scale=2.0)
        return (formats.quantize(x, self.fmt, **self.opts),)

    def reference(self, q):
        from suite.numerics import formats

        return formats.dequantize(q)

    def triton(self, q):
        from suite.kernels._quant_triton import dequantize

        return dequantize(q.data, q.scale, self.fmt, q.shape, q.dtype, q.tensor_scale)

    def impls(self):
        return _triton_and_compiled(self)

    def bytes_moved(self, shape, dtype):
        """Codes + scales (+ NVFP4's FP32 tensor scale) read, the dense tensor written."""
        M, N = shape
        n = M * N
        read = n * CODE_BITS[self.fmt] // 8 + self.row_scales(shape) * SCALE_BYTES[self.fmt]
        if self.fmt == "nvfp4":
            read += 4
        return read + n * DTYPE_BYTES[parse_dtype(dtype)]


def _dequant(name: str, fmt: str, summary: str, opts: dict | None = None) -> None:
    cls = type(name.title().replace("_", ""), (_Dequantize,),
               {"name": name, "fmt": fmt, "opts": opts or {}})
    cls.__module__ = __name__
    register_kernel(name, kind="quant", summary=summary)(cls)


_dequant("dequantize_fp8_row", "fp8_e4m3", "FP8 E4M3 with row scales -> dense",
         {"granularity": "row"})
_dequant("dequantize_fp8_e5m2_row", "fp8_e5m2", "FP8 E5M2 with row scales -> dense",
         {"granularity": "row"})
_dequant("dequantize_mxfp8", "mxfp8_e4m3", "MXFP8 -> dense")
_dequant("dequantize_mxfp4", "mxfp4", "MXFP4 (packed) -> dense")
_dequant("dequantize_nvfp4", "nvfp4", "NVFP4 (packed) -> dense")
_dequant("dequantize_int8_row", "int8", "INT8 with row scales -> dense", {"granularity": "row"})
_dequant("dequantize_int4_group", "int4", "INT4 groups of 128 (packed) -> dense",
         {"granularity": "group", "group_size": 128})


# -- the same kernels serving the recipes (suite.numerics.dispatch) -------------------------------------
# Round-to-nearest fake quantisation, the block formats the training recipes run: Triton quantise
# then dequantise, which the correctness tests hold to suite.numerics.formats bit for bit.
FAKE_QUANTIZE_FORMATS = {"mxfp4": 32, "mxfp8_e4m3": 32, "nvfp4": 16}


# FP8 E4M3 / E5M2 with one scale per tensor or per row (fp8-train's, COAT's and HALO-fp8's operands): the
# quantise kernel (an amax pass first for a tensor scale), then the row-scaled dequantise kernel.
FP8_FORMATS = ("fp8_e4m3", "fp8_e5m2", "int8")  # (INT8 too: one float32 scale per tensor or row)
FP8_GRANULARITIES = ("tensor", "row")
FP8_MAX_ROW = 32768  # the row kernels keep a whole row in registers
# Symmetric INT4 with a scale per group of 128 inputs (rtn's, hawq's and qat's default weights): the
# quantise kernel then the dequantise kernel, as FP8's, over the group layout they store.
INT_GROUPS = {"int4": BLOCKS["int4"]}


def _triton_fake_quantize(x, fmt: str, rounding: str = "nearest", granularity: str | None = None,
                          hadamard: int = 0, signs=None, group_size: int | None = None):
    import torch

    from suite.kernels._quant_triton import dequantize, fake_quantize_fp4, quantize

    if hadamard:  # rotate and quantise in one pass
        return fake_quantize_fp4(x, fmt, hadamard=hadamard, signs=signs)[0]
    x = x.contiguous()
    if fmt in INT_GROUPS:
        q, scale = quantize(x, fmt)
        y = dequantize(q, scale, fmt, tuple(x.shape), torch.float32)
        return torch.where(torch.isnan(x), x, y)  # no NaN code: kept where it was (formats' rule)
    if fmt in FP8_FORMATS:
        q, scale = quantize(x, fmt, per_tensor=granularity == "tensor")[:2]
        if granularity == "tensor":
            scale = scale.reshape(1, 1).expand(x.shape[0], 1).contiguous()
        y = dequantize(q, scale, fmt, tuple(x.shape), torch.float32)
        # INT8 has no NaN code: fake quantisation keeps a NaN where it was (formats' rule)
        return torch.where(torch.isnan(x), x, y) if fmt == "int8" else y
    stored = quantize(x, fmt)
    tensor_scale = stored[2] if len(stored) > 2 else None
    return dequantize(stored[0], stored[1], fmt, tuple(x.shape), torch.float32, tensor_scale)


def _supports_fake_quantize(on_cpu_too: bool, x, fmt: str, rounding: str = "nearest",
                            granularity: str | None = None, hadamard: int = 0, signs=None,
                            group_size: int | None = None) -> bool:
    if group_size is not None:  # integer groups (layers.dispatch_options gives the size with them)
        shaped = (not hadamard and granularity == "group" and group_size == INT_GROUPS.get(fmt)
                  and x.shape[-1] > 0 and x.shape[-1] % group_size == 0)
    elif hadamard:
        shaped = fmt in ("mxfp4", "nvfp4") and granularity is None and _rotation_fits(x, hadamard, signs) \
            and x.shape[-1] % FAKE_QUANTIZE_FORMATS[fmt] == 0
    elif fmt in FP8_FORMATS:
        shaped = granularity in FP8_GRANULARITIES and 0 < x.shape[-1] <= FP8_MAX_ROW
    else:
        block = FAKE_QUANTIZE_FORMATS.get(fmt)
        shaped = block is not None and granularity is None and x.shape[-1] % block == 0
    return shaped and rounding == "nearest" and _kernel_input(on_cpu_too, x)


# Block rotations the fused FP4 kernel applies before it quantises (``_quant_triton._hadamard_rows``'s sizes)
ROTATION_BLOCKS = (16, 32, 64, 128)


def _rotation_fits(x, hadamard: int, signs) -> bool:
    """A block rotation the FP4 kernel takes: a size it rotates by, whole blocks along the row, and
    signs (where given) a float32 vector of that many entries on x's device."""
    import torch

    return (hadamard in ROTATION_BLOCKS and x.dim() == 2 and x.shape[-1] % hadamard == 0
            and (signs is None or (tuple(signs.shape) == (hadamard,) and signs.dtype == torch.float32
                                   and signs.device == x.device)))


def _triton_importable() -> bool:
    import importlib.util

    return importlib.util.find_spec("triton") is not None


def _kernel_input(on_cpu_too: bool, x) -> bool:
    """What every value kernel here needs of X: float32 rows ([M, N], M > 0) on a CUDA device (or
    the CPU under the interpreter, ``on_cpu_too``), with Triton installed."""
    import torch

    return (x.dim() == 2 and x.dtype == torch.float32 and x.shape[0] > 0 and (x.is_cuda or on_cpu_too)
            and _triton_importable())


# Stochastic rounding (suite.numerics.stochastic): one fused kernel, making the uniforms of the caller's key.
def _triton_fake_quantize_stochastic(x, fmt: str, key, scaling: str = "block", hadamard: int = 0, signs=None):
    from suite.kernels._quant_triton import fake_quantize_fp4_keyed

    return fake_quantize_fp4_keyed(x, key, fmt, scaling, hadamard, signs)


def _supports_fake_quantize_stochastic(on_cpu_too: bool, x, fmt: str, key, scaling: str = "block",
                                       hadamard: int = 0, signs=None) -> bool:
    import torch

    from suite.numerics.stochastic import SHAPES

    block = SHAPES.get((fmt, scaling))
    return (block is not None and _kernel_input(on_cpu_too, x) and (not hadamard or _rotation_fits(x, hadamard, signs))
            and x.shape[1] % block == 0 and key.dtype == torch.int64 and tuple(key.shape) == (2,)
            and key.device == x.device)


# QuEST's MXFP4 forward quantiser (gemm.quest_mxfp4: RMS scale, clip mask), optionally after a block
# Hadamard (Quartet's forward): one fused kernel, values and the keep mask out.
def _triton_fake_quantize_quest(x, ties: str = "down", hadamard: int = 0, signs=None):
    from suite.kernels._quant_triton import fake_quantize_fp4

    return fake_quantize_fp4(x, "mxfp4", scaling="quest", ties=ties, hadamard=hadamard, signs=signs)


def _supports_fake_quantize_quest(on_cpu_too: bool, x, ties: str = "down", hadamard: int = 0, signs=None) -> bool:
    return (ties in ("down", "even") and _kernel_input(on_cpu_too, x) and x.shape[1] > 0 and x.shape[1] % 32 == 0
            and (not hadamard or _rotation_fits(x, hadamard, signs)))


class _FakeQuantizeValues(Kernel):
    """A fake quantisation as the recipes run it: float32 X in, float32 values out (no stored codes
    and scales), timed against its reference compiled; subclasses give ``reference``, ``triton`` and
    ``bytes_moved``."""

    dims = ("M", "N")
    dtypes = ("float32",)
    shapes = ((8192, 8192), (16384, 8192))
    cpu_shapes = ((256, 1024),)

    def make_inputs(self, shape, dtype, device, generator):
        return (randn(shape, dtype, device, generator, scale=2.0),)

    def impls(self):
        return _triton_and_compiled(self)


class _FakeQuantizeFp4(_FakeQuantizeValues):
    """An FP4 fake quantisation as the recipes run it (``_quant_triton.fake_quantize_fp4``): float32 X
    in (with a key for stochastic rounding's counter-based uniforms, made in the kernel; +-1 signs for
    a randomised rotation), float32 values
    out (QuEST: and its float32 keep mask), one fused pass after an optional block Hadamard (NVFP4: an amax
    pass of the rotated X first). References: ``suite.numerics.stochastic`` and ``gemm``'s nearest and
    QuEST quantisers, each rotating with ``suite.numerics.hadamard.rotate_blocks``."""

    fmt: ClassVar[str] = ""
    scaling: ClassVar[str] = "block"  # block, sr34 (MXFP4 over 3/4), quest (MXFP4, ties toward zero)
    rounding: ClassVar[str] = "nearest"
    hadamard: ClassVar[int] = 0
    signs: ClassVar[bool] = False

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        if cls.fmt:
            cls.divisors = {"N": math.lcm(BLOCKS[cls.fmt], cls.hadamard or 1)}

    def make_inputs(self, shape, dtype, device, generator):
        import torch

        gen_device = generator.device if generator is not None else device
        inputs = [randn(shape, dtype, device, generator, scale=2.0)]
        if self.rounding == "stochastic":
            inputs.append(torch.randint(0, 2 ** 32, (2,), generator=generator, dtype=torch.int64,
                                        device=gen_device).to(device))
        if self.signs:
            bits = torch.randint(0, 2, (self.hadamard,), generator=generator, device=gen_device)
            inputs.append((bits * 2 - 1).to(device=device, dtype=torch.float32))
        return tuple(inputs)

    def _extra(self, rest: tuple) -> tuple:
        """(key, signs) from the inputs after X."""
        rest = list(rest)
        key = rest.pop(0) if self.rounding == "stochastic" else None
        return key, (rest.pop(0) if self.signs else None)

    def reference(self, x, *rest):
        from suite.methods.train import gemm
        from suite.numerics.stochastic import fake_quantize_keyed

        key, signs = self._extra(rest)
        if self.scaling == "quest":
            return gemm.quest_reference(x, "down", self.hadamard, signs)
        if self.rounding == "stochastic":
            return fake_quantize_keyed(x, self.fmt, key, self.scaling, self.hadamard, signs)
        return gemm.fake_quantize_nearest(x, self.fmt, self.hadamard, signs)

    def triton(self, x, *rest):
        from suite.kernels._quant_triton import fake_quantize_fp4

        key, signs = self._extra(rest)
        values, keep = fake_quantize_fp4(x, self.fmt, scaling=self.scaling, rounding=self.rounding,
                                         ties="down" if self.scaling == "quest" else "even", key=key,
                                         hadamard=self.hadamard, signs=signs)
        return (values, keep) if self.scaling == "quest" else values

    def bytes_moved(self, shape, dtype):
        """X read (twice for NVFP4: the tensor amax, then the quantise pass), Y written (QuEST: and its
        float32 mask); stochastic rounding's uniforms are made in registers, never read."""
        n = shape[0] * shape[1]
        reads = 2 if self.fmt == "nvfp4" else 1
        return reads * n * 4 + n * 4 + (n * 4 if self.scaling == "quest" else 0)


def _fp4(name: str, summary: str, fmt: str, **attrs) -> None:
    cls = type(name.title().replace("_", ""), (_FakeQuantizeFp4,), {"name": name, "fmt": fmt, **attrs})
    cls.__module__ = __name__
    # kind fake_quant: values in, values out (no stored codes and scales, as the quant kernels have)
    register_kernel(name, kind="fake_quant", summary=summary)(cls)


_SR = {"rounding": "stochastic"}
_fp4("fake_quantize_mxfp4_sr", "MXFP4 quantise-dequantise, stochastic rounding (counter-based uniforms made in the kernel)", "mxfp4", **_SR)
_fp4("fake_quantize_mxfp4_sr34",
     "MXFP4 with the OCP scale x 4/3 (never saturates), stochastic rounding (Quartet's backward)",
     "mxfp4", scaling="sr34", **_SR)
_fp4("fake_quantize_nvfp4_sr", "NVFP4 quantise-dequantise, stochastic rounding (counter-based uniforms made in the kernel)", "nvfp4", **_SR)
_fp4("fake_quantize_mxfp4_quest", "MXFP4 with QuEST's RMS scale and clip mask, ties toward zero", "mxfp4",
     scaling="quest")
_fp4("fake_quantize_mxfp4_quest_h32",
     "32-point Hadamard then MXFP4 with QuEST's RMS scale and clip mask, one pass (Quartet's forward)", "mxfp4",
     scaling="quest", hadamard=32)
_fp4("fake_quantize_mxfp4_sr34_h32",
     "random-sign 32-point Hadamard then MXFP4 x 4/3, stochastic rounding, one pass (Quartet's backward)",
     "mxfp4", scaling="sr34", hadamard=32, signs=True, **_SR)
_fp4("fake_quantize_nvfp4_sr_h16",
     "random-sign 16-point Hadamard then NVFP4, stochastic rounding, one pass (the NVFP4 recipe's wgrad dY)",
     "nvfp4", hadamard=16, signs=True, **_SR)
_fp4("fake_quantize_nvfp4_h16",
     "random-sign 16-point Hadamard then NVFP4 to nearest, one pass (the NVFP4 recipe's wgrad X)",
     "nvfp4", hadamard=16, signs=True)


class FakeQuantizeNvfp4Tiles(_FakeQuantizeValues):
    """NVFP4 with one E4M3 scale per 16 x 16 tile (``suite.numerics.tiles``; the NVFP4 recipe's
    weights): float32 X in, float32 values out, an amax pass then one fused pass."""

    name = "fake_quantize_nvfp4_tiles"

    def reference(self, x):
        from suite.numerics.tiles import nvfp4_tiles

        return nvfp4_tiles(x)

    def triton(self, x):
        from suite.kernels._quant_triton import fake_quantize_nvfp4_tiles

        return fake_quantize_nvfp4_tiles(x)

    def bytes_moved(self, shape, dtype):
        """X read twice (the tensor amax, then the quantise pass), Y written."""
        return 3 * shape[0] * shape[1] * 4


register_kernel("fake_quantize_nvfp4_tiles", kind="fake_quant",
                summary="NVFP4 in 16x16 tiles (E4M3 per tile x FP32 per tensor) quantise-dequantise, "
                        "nearest (the NVFP4 recipe's weights)")(FakeQuantizeNvfp4Tiles)


class FakeQuantizeMxRceil(_FakeQuantizeValues):
    """MX with the scale rounded up (``2^ceil(log2(amax / max))``, RCEIL; ``gemm.mx_rceil``, the
    rule mxfp8-train defaults to), elements to nearest: float32 X in, float32 values out, one pass."""

    fmt: ClassVar[str] = ""
    divisors = {"N": 32}  # whole blocks along the row

    def reference(self, x):
        from suite.methods.train.gemm import mx_rceil_nearest

        return mx_rceil_nearest(x, self.fmt)

    def triton(self, x):
        from suite.kernels._quant_triton import fake_quantize_mx_rceil

        return fake_quantize_mx_rceil(x, self.fmt)

    def bytes_moved(self, shape, dtype):
        """X read once, Y written."""
        return 2 * shape[0] * shape[1] * 4


for _fmt, _short in (("mxfp8_e4m3", "mxfp8"), ("mxfp4", "mxfp4")):
    register_kernel(f"fake_quantize_{_short}_rceil", kind="fake_quant",
                    summary=f"{_short.upper()} with the scale rounded up (RCEIL) quantise-dequantise, nearest "
                            f"(the MX training recipes' scale=rceil)")(
        type(f"FakeQuantize{_short.capitalize()}Rceil", (FakeQuantizeMxRceil,),
             {"fmt": _fmt, "name": f"fake_quantize_{_short}_rceil"}))


def _triton_fake_quantize_mx_rceil(x, fmt: str):
    from suite.kernels._quant_triton import fake_quantize_mx_rceil

    return fake_quantize_mx_rceil(x, fmt)


def _supports_fake_quantize_mx_rceil(on_cpu_too: bool, x, fmt: str) -> bool:
    return (fmt in ("mxfp8_e4m3", "mxfp4") and _kernel_input(on_cpu_too, x) and x.shape[1] > 0
            and x.shape[1] % 32 == 0)


def _triton_fake_quantize_tiles(x, fmt: str):
    from suite.kernels._quant_triton import fake_quantize_nvfp4_tiles

    return fake_quantize_nvfp4_tiles(x)


def _supports_fake_quantize_tiles(on_cpu_too: bool, x, fmt: str) -> bool:
    return fmt == "nvfp4" and _kernel_input(on_cpu_too, x) and x.shape[1] > 0


# -- delayed scaling: FP8 per tensor with a given amax (fp8-train:scaling=delayed) -----------------------
# The amax is the largest of earlier steps' (gemm.LayerState.delayed_amax), so no amax pass runs: the
# quantise kernel takes the scale amax / max as given (values beyond it saturate), then the row-scaled
# dequantise kernel gives every row that one scale. Reference: the recipe's gemm.fake_quantize_given_amax.
GIVEN_AMAX_FORMATS = ("fp8_e4m3", "fp8_e5m2")


class _QuantizeGivenAmax(_QuantBase):
    """The quantise pass of FP8 per tensor with a given amax (delayed scaling): X and the amax in,
    codes and the scale out, one read of X (no amax pass). The inputs' amax is 3/4 of X's, so the
    largest values saturate, as delayed scaling's do when a tensor outgrows its history."""

    opts = {"granularity": "tensor"}

    def make_inputs(self, shape, dtype, device, generator):
        x = randn(shape, dtype, device, generator, scale=2.0)
        return x, x.float().abs().amax() * 0.75

    def reference(self, x, amax):
        from suite.methods.train.gemm import fp8_given_amax
        from suite.numerics import elements as el

        q = fp8_given_amax(x.float(), el.float_element(self.fmt), amax)
        return q.codes, q.scale

    def triton(self, x, amax):
        from suite.kernels._quant_triton import quantize
        from suite.methods.train.gemm import given_amax_scale

        return quantize(x.contiguous(), self.fmt, per_tensor=True,
                        tensor_scale=given_amax_scale(amax.to(x.device), self.fmt))

    def impls(self):
        return _triton_and_compiled(self)

    def bytes_moved(self, shape, dtype):
        """X read once (no amax pass: the point of a given scale), codes and the scale written (the
        given amax's 4 bytes read are not counted, as the amax pass's partials are not)."""
        n = shape[0] * shape[1]
        return n * DTYPE_BYTES[parse_dtype(dtype)] + n * CODE_BITS[self.fmt] // 8 + 4


for _fmt, _name, _what in (("fp8_e4m3", "quantize_fp8_tensor_given", "E4M3"),
                           ("fp8_e5m2", "quantize_fp8_e5m2_tensor_given", "E5M2")):
    _cls = type(_name.title().replace("_", ""), (_QuantizeGivenAmax,), {"name": _name, "fmt": _fmt})
    _cls.__module__ = __name__
    register_kernel(_name, kind="quant",
                    summary=f"FP8 {_what} cast with a given per-tensor amax (delayed scaling: no amax pass, "
                            f"saturating)")(_cls)


def _triton_fake_quantize_given_amax(x, fmt: str, amax):
    import torch

    from suite.kernels._quant_triton import dequantize, quantize
    from suite.methods.train.gemm import given_amax_scale

    x = x.contiguous()
    q, scale = quantize(x, fmt, per_tensor=True, tensor_scale=given_amax_scale(amax.to(x.device), fmt))
    rows = scale.reshape(1, 1).expand(x.shape[0], 1).contiguous()
    return dequantize(q, rows, fmt, tuple(x.shape), torch.float32)


def _supports_fake_quantize_given_amax(on_cpu_too: bool, x, fmt: str, amax) -> bool:
    import torch

    return (fmt in GIVEN_AMAX_FORMATS and _kernel_input(on_cpu_too, x) and 0 < x.shape[1] <= FP8_MAX_ROW
            and isinstance(amax, torch.Tensor) and amax.numel() == 1)


def _timed_by_fake_quantize_given_amax(fmt: str) -> tuple[str, ...]:
    """The given-amax quantise kernel of ``fmt``, then its row-scaled dequantise kernel (one scale
    for every row)."""
    return tuple(_kernel_names(_QuantizeGivenAmax, fmt=fmt)
                 + _kernel_names(_Dequantize, fmt=fmt, opts={"granularity": "row"}))


def _register_dispatch_given_amax() -> None:
    from suite.numerics import dispatch

    dispatch.register("fake_quantize_given_amax", "triton", _triton_fake_quantize_given_amax,
                      _supports_fake_quantize_given_amax, timed_by=_timed_by_fake_quantize_given_amax)


_register_dispatch_given_amax()


# -- which benchmark kernels time what an implementation runs (suite bench kernels lists the methods) ---
def _timed_by_fake_quantize(fmt: str, *options: str) -> tuple[str, ...]:
    """The nearest-rounding kernel is ``quantize`` then ``dequantize`` of ``fmt``: the single-layout
    benchmark kernels of that format with those options (``granularity=tensor``: FP8's per-tensor
    quantise kernel, then the row-scaled dequantise kernel given the one scale for every row)."""
    from suite.registry import KERNELS

    opts = dict(o.split("=", 1) for o in options if "=" in o)
    opts.pop("rounding", None)
    if "hadamard" in opts:  # rotate and quantise: the fused FP4 kernel
        return _timed_by_fp4(fmt, "block", "nearest", *options)
    want = {"quantize": opts, "dequantize": {"granularity": "row"} if opts.get("granularity") == "tensor" else opts}
    out = []
    for entry in KERNELS.entries():
        cls = entry.target
        if not (isinstance(cls, type) and issubclass(cls, (_Quantize, _Dequantize)) and cls.fmt == fmt):
            continue
        role = "quantize" if issubclass(cls, _Quantize) else "dequantize"
        if not getattr(cls, "dual", False) and {k: str(v) for k, v in cls.opts.items()} == want[role]:
            out.append(cls.name)
    return tuple(sorted(out, key=lambda n: not n.startswith("quantize")))


def _kernel_names(base: type, **attrs: Any) -> list[str]:
    """The registered benchmark kernels whose class derives from ``base`` and has these attributes."""
    from suite.registry import KERNELS

    return [e.target.name for e in KERNELS.entries()
            if isinstance(e.target, type) and issubclass(e.target, base)
            and all(getattr(e.target, k) == v for k, v in attrs.items())]


def _timed_by_fp4(fmt: str, scaling: str, rounding: str, *options: str) -> tuple[str, ...]:
    """The FP4 fake-quantisation benchmark kernels of this format, scaling and rounding, at the
    rotation the call names (``hadamard=<points>``, else none)."""
    opts = dict(o.split("=", 1) for o in options if "=" in o)
    return tuple(_kernel_names(_FakeQuantizeFp4, fmt=fmt, scaling=scaling, rounding=rounding,
                               hadamard=int(opts.get("hadamard", 0))))


def _timed_by_fake_quantize_stochastic(fmt: str, scaling: str = "block", *options: str) -> tuple[str, ...]:
    return _timed_by_fp4(fmt, scaling, "stochastic", *options)


def _triton_quantize_codes(x, fmt: str, granularity: str = "tensor"):
    """INT8 codes and their one scale for a real integer GEMM: the per-tensor quantise kernel alone."""
    from suite.kernels._quant_triton import quantize

    q, scale = quantize(x.contiguous(), fmt, per_tensor=True)[:2]
    return q, scale.float().reshape(())


def _supports_quantize_codes(on_cpu_too: bool, x, fmt: str, granularity: str = "tensor") -> bool:
    return fmt == "int8" and granularity == "tensor" and _kernel_input(on_cpu_too, x) and 0 < x.shape[1]


def _register_dispatch() -> None:
    from suite.numerics import dispatch

    dispatch.register("fake_quantize", "triton", _triton_fake_quantize, _supports_fake_quantize,
                      timed_by=_timed_by_fake_quantize)
    dispatch.register("fake_quantize_stochastic", "triton", _triton_fake_quantize_stochastic,
                      _supports_fake_quantize_stochastic, timed_by=_timed_by_fake_quantize_stochastic)
    dispatch.register("fake_quantize_quest", "triton", _triton_fake_quantize_quest, _supports_fake_quantize_quest,
                      timed_by=lambda ties="down", *options: _timed_by_fp4("mxfp4", "quest", "nearest", *options))
    dispatch.register("fake_quantize_tiles", "triton", _triton_fake_quantize_tiles, _supports_fake_quantize_tiles,
                      timed_by=lambda fmt: ("fake_quantize_nvfp4_tiles",) if fmt == "nvfp4" else ())
    dispatch.register("quantize_codes", "triton", _triton_quantize_codes, _supports_quantize_codes,
                      timed_by=lambda fmt, *options: tuple(_kernel_names(_Quantize, fmt=fmt, per_tensor=True)))
    dispatch.register("fake_quantize_mx_rceil", "triton", _triton_fake_quantize_mx_rceil,
                      _supports_fake_quantize_mx_rceil,
                      timed_by=lambda fmt: (f"fake_quantize_{fmt.removesuffix('_e4m3')}_rceil",))


_register_dispatch()
