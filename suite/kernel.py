"""The Kernel contract: a PyTorch reference (the oracle), fast implementations, a cost model.

A kernel plugin subclasses :class:`Kernel` and registers it with
``@register_kernel(name, kind=..., summary=...)``. The bench harness (``suite.bench``)
only sees this contract: it asks a kernel which shapes and dtypes it supports, draws fresh
random inputs, runs each implementation, checks it against the reference on those very
inputs, and turns the time into GB/s, TFLOP/s and a fraction of the measured roofline
through the cost model (``bytes_moved`` and ``flops``).

An implementation says what it needs to run (``any`` device, a ``cuda`` GPU, or ``triton``,
which means a GPU or the Triton interpreter on the CPU under ``TRITON_INTERPRET=1``), so
the harness can skip what this machine cannot run instead of failing half-way.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from suite.errors import UserError

Shape = tuple[int, ...]

DTYPE_ALIASES = {
    "bf16": "bfloat16",
    "bfloat16": "bfloat16",
    "fp16": "float16",
    "half": "float16",
    "float16": "float16",
    "fp32": "float32",
    "float": "float32",
    "float32": "float32",
}

DTYPE_BYTES = {"bfloat16": 2, "float16": 2, "float32": 4}


@dataclass(frozen=True)
class Impl:
    """One implementation of a kernel: ``fn(*inputs) -> output`` and what it needs to run."""

    name: str
    fn: Callable[..., Any]
    needs: str = "any"  # "any" | "cuda" | "triton"
    peer: bool = False  # a peer library's kernel (torchao, torch.compile, cuBLAS baseline)
    exact: bool | None = None  # override the kernel's comparison (None: the kernel decides)
    checked: bool = True  # False for a peer whose output layout differs from the reference's
    default_on_cpu: bool = True  # False: a CPU run includes it only when named in --impls
    note: str = ""

    def unavailable_reason(self, device_type: str) -> str | None:
        """Why this implementation cannot run here, or None when it can."""
        if self.needs == "cuda" and device_type != "cuda":
            return "needs a CUDA GPU"
        if self.needs == "triton":
            try:
                import triton  # noqa: F401
            except ImportError:
                return "needs triton (pip install 'suite[kernels]')"
            if device_type != "cuda" and not triton_interpreted():
                return "needs a CUDA GPU (or TRITON_INTERPRET=1 for correctness runs)"
        return None


def triton_interpreted() -> bool:
    """True when Triton kernels run in the CPU interpreter (correct, but far too slow to time)."""
    return os.environ.get("TRITON_INTERPRET", "0").lower() in {"1", "true", "yes", "on"}


def parse_shape(text: str) -> Shape:
    """``"8192x8192"`` -> ``(8192, 8192)``; a malformed shape is a UserError."""
    parts = text.lower().replace("*", "x").split("x")
    try:
        shape = tuple(int(p) for p in parts)
    except ValueError:
        raise UserError(
            f"cannot parse shape '{text}': write the sizes joined by 'x', e.g. 4096x4096"
        ) from None
    if any(s <= 0 for s in shape):
        raise UserError(f"shape '{text}' has a size <= 0; every size must be positive")
    return shape


def format_shape(shape: Sequence[int]) -> str:
    return "x".join(str(int(s)) for s in shape)


def parse_dtype(text: str) -> str:
    """A dtype name or alias -> the canonical torch name (``bf16`` -> ``bfloat16``)."""
    try:
        return DTYPE_ALIASES[text.lower()]
    except KeyError:
        raise UserError(
            f"unknown dtype '{text}'; choose one of: {', '.join(sorted(set(DTYPE_ALIASES)))}"
        ) from None


def torch_dtype(name: str):
    import torch

    return getattr(torch, parse_dtype(name))


class Kernel:
    """Base class of every kernel plugin.

    Subclasses set the class attributes and implement ``make_inputs``, ``reference``,
    ``impls``, ``bytes_moved`` and ``flops``; ``check`` guards shapes and dtypes so an
    unsupported case is a clear UserError, never a silent wrong result.
    """

    name: ClassVar[str] = ""
    dims: ClassVar[tuple[str, ...]] = ("M", "N")  # what each size in a shape means
    dtypes: ClassVar[tuple[str, ...]] = ("bfloat16",)
    shapes: ClassVar[tuple[Shape, ...]] = ()  # full-size shapes for a GPU
    cpu_shapes: ClassVar[tuple[Shape, ...]] = ()  # small shapes for CPU runs and CI gates
    divisors: ClassVar[dict[str, int]] = {}  # dim -> the size it must be a multiple of
    tolerance: ClassVar[float | None] = None  # None: outputs must match bit for bit
    bound: ClassVar[str] = "memory"  # "memory" | "compute": which roof the fraction uses

    # -- what a subclass implements --------------------------------------------------------
    def make_inputs(self, shape: Shape, dtype: str, device: str, generator) -> tuple:
        """Fresh random, non-zero inputs for one call (positional arguments of every impl)."""
        raise NotImplementedError

    def reference(self, *inputs):
        """The PyTorch oracle: runs anywhere, defines the right answer."""
        raise NotImplementedError

    def impls(self) -> dict[str, Impl]:
        """Every implementation by name; ``reference`` is added by the harness."""
        return {}

    def bytes_moved(self, shape: Shape, dtype: str) -> int:
        """The fewest bytes the operation must move through device memory."""
        raise NotImplementedError

    def flops(self, shape: Shape, dtype: str) -> int:
        return 0

    # -- shared behaviour ------------------------------------------------------------------
    def all_impls(self) -> dict[str, Impl]:
        out = {"reference": Impl("reference", self.reference, exact=True)}
        out.update(self.impls())
        return out

    def default_shapes(self, device_type: str) -> list[Shape]:
        if device_type == "cuda" and self.shapes:
            return list(self.shapes)
        return list(self.cpu_shapes or self.shapes)

    def check(self, shape: Shape, dtype: str) -> None:
        """Raise UserError when this kernel does not support ``shape`` or ``dtype``."""
        if len(shape) != len(self.dims):
            raise UserError(
                f"kernel '{self.name}' takes shapes of {len(self.dims)} sizes "
                f"({'x'.join(self.dims)}), got '{format_shape(shape)}'"
            )
        dtype = parse_dtype(dtype)
        if dtype not in self.dtypes:
            raise UserError(
                f"kernel '{self.name}' does not support dtype {dtype}; supported: "
                f"{', '.join(self.dtypes)}"
            )
        for dim, size in zip(self.dims, shape, strict=True):
            div = self.divisors.get(dim)
            if div and size % div:
                raise UserError(
                    f"kernel '{self.name}': {dim}={size} must be a multiple of {div} "
                    f"(shape {'x'.join(self.dims)}={format_shape(shape)}); pad the tensor "
                    f"or choose another size"
                )

    def matches(self, out, ref, exact: bool | None = None) -> tuple[bool, float]:
        """Compare an implementation's output with the reference's: (ok, worst error)."""
        exact = (self.tolerance is None) if exact is None else exact
        return compare_outputs(out, ref, None if exact else self.tolerance)


def _flatten(x) -> list:
    if isinstance(x, (tuple, list)):
        out = []
        for item in x:
            out.extend(_flatten(item))
        return out
    if isinstance(x, dict):
        return _flatten([x[k] for k in sorted(x)])
    return [x]


def as_bits(t):
    """A view of a tensor's raw bits, so ``torch.equal`` compares NaNs and -0.0 exactly."""
    import torch

    t = t.contiguous()
    if t.dtype == torch.bool:
        return t.to(torch.uint8)
    if t.is_floating_point():
        width = t.element_size()
        return t.view({1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[width])
    return t


def compare_outputs(out, ref, tolerance: float | None) -> tuple[bool, float]:
    """Bit-exact (``tolerance is None``) or relative Frobenius error of every float tensor.

    Integer and packed tensors are always compared exactly. NaN never passes a tolerance check.
    """
    import torch

    outs, refs = _flatten(out), _flatten(ref)
    if len(outs) != len(refs):
        return False, float("inf")
    worst = 0.0
    for o, r in zip(outs, refs, strict=True):
        if not isinstance(o, torch.Tensor):
            if o != r:
                return False, float("inf")
            continue
        if o.shape != r.shape or o.dtype != r.dtype:
            return False, float("inf")
        o, r = o.cpu(), r.cpu()
        if tolerance is None or not o.is_floating_point() or o.element_size() == 1:
            if not torch.equal(as_bits(o), as_bits(r)):
                return False, float("inf")
            continue
        o64, r64 = o.double(), r.double()
        if not torch.isfinite(o64).all():
            return False, float("inf")
        err = float((o64 - r64).norm() / r64.norm().clamp_min(1e-300))
        worst = max(worst, err)
        if err > tolerance:
            return False, worst
    return True, worst


def randn(shape: Sequence[int], dtype: str, device: str, generator, scale: float = 1.0):
    """Random normal data drawn in float32 on the generator's device; never an exact zero."""
    import torch

    gen_device = generator.device if generator is not None else device
    x = torch.randn(*shape, generator=generator, dtype=torch.float32, device=gen_device) * scale
    x = torch.where(x == 0, torch.full_like(x, 1e-3), x)
    return x.to(device=device, dtype=torch_dtype(dtype))


def compiled(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``torch.compile`` of ``fn``, compiled on first call (the peer 'torch.compile of the reference')."""
    cache: dict[str, Any] = {}

    def run(*args):
        if "fn" not in cache:
            import torch

            cache["fn"] = torch.compile(fn, dynamic=False)
        return cache["fn"](*args)

    return run
