"""The quantised GEMMs of a linear layer's training step, on the shared numerics.

A linear layer trains with three GEMMs, each ``C = A @ B^T`` over the last dimension of
both operands (the contraction)::

    forward  Y  = X @ W^T      A = X     [M, K]   B = W     [N, K]   contract K (in_features)
    dgrad    dX = dY @ W       A = dY    [M, N]   B = W^T   [K, N]   contract N (out_features)
    wgrad    dW = dY^T @ X     A = dY^T  [N, M]   B = X^T   [K, M]   contract M (tokens)

A ``LinearRecipe`` says, per GEMM, how each operand is quantised (an ``Operand``: a
``suite.numerics`` format with its scales along the contraction, which is what scaled GEMM
hardware takes) and which Hadamard rotations surround the product: along the contraction
(applied to both operands, so it cancels in the product) or, HALO's, along the rows of
``A`` (undone on the output). ``LinearRecipe.operand_rows`` lays the declaration out as the
operand table of the README (format, block, scale, rounding, rotation, clipping).
``LowPrecisionLinear`` runs the three GEMMs through one custom autograd function,
``_LowPrecisionLinearFn``.

Emulated (everywhere): each operand is fake-quantised (``suite.numerics.formats``: values
exactly on the format's grid, float32), and the product accumulates in FP32, the
accumulation precision of the hardware's scaled GEMMs, and is rounded once to the dtype the
layer keeps it in (the output's: BF16 under autocast; the input's for dX, the weight's for
dW), as torchao's emulation does. Where that is BF16 and both operands' values are BF16
numbers (``Operand.bf16_exact``: the MX formats under power-of-two scales), a CPU multiplies
them in a BF16 GEMM, which accumulates in FP32 too: the same product, up to the order of the
additions, at BF16's speed (``emulated_matmul``). Real: both operands FP8 with tensor or row
scales go through ``torch._scaled_mm`` (on GPUs that have FP8), both INT8 per tensor through
``torch._int_mm`` (``int8_mm``: exact INT32 sums, then the scales; CPUs and CUDA GPUs); nothing
else has a real kernel here. The layer counts which of its GEMMs ran how.

The backward quantises the saved high-precision ``X`` and ``W`` along their new contraction
dimension (what torchao and TransformerEngine do); an operand whose quantisation does not
depend on the layout (``Operand.layout_free``: one scale per tensor, or square tiles) is
quantised as it lies and multiplied as a transposed view, and a dY both backward GEMMs take
alike is quantised once. Recipes marked ``from_forward`` (Quartet) instead re-quantise the
forward's quantised, rotated operands, get gradients in the rotated basis, mask them with the
forward's clip masks and rotate back.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from suite.methods.train import coat
from suite.numerics import compiled, dispatch
from suite.numerics import elements as el
from suite.numerics import formats as F
from suite.numerics.compiled import fused
from suite.numerics.counter_rng import counter_uniforms, new_key
from suite.numerics.hadamard import (
    apply_block_hadamard,
    apply_hadamard,
    butterfly_passes,
    fwht,
    is_power_of_two,
    next_hadamard_size,
    random_signs,
    rotate_blocks,
)
from suite.numerics.stochastic import SHAPES as STOCHASTIC_SHAPES

# Short operand format names -> suite.numerics format names.
FORMAT_NAMES = {"e4m3": "fp8_e4m3", "e5m2": "fp8_e5m2", "int8": "int8", "mxfp8": "mxfp8_e4m3",
                "mxfp8_e5m2": "mxfp8_e5m2", "mxfp4": "mxfp4", "nvfp4": "nvfp4"}
FP8_ELEMENTS = {"e4m3": el.FP8_E4M3, "e5m2": el.FP8_E5M2}
SHORT_NAMES = {v: k for k, v in FORMAT_NAMES.items()}  # suite.numerics format names -> short ones
BLOCK_OF = {"mxfp8": 32, "mxfp8_e5m2": 32, "mxfp4": 32, "nvfp4": 16}
# Block formats whose round-to-nearest fake quantisation goes through suite.numerics.dispatch.
NEAREST_REFERENCE = {"mxfp4": lambda t: mxfp4_fast(t), "nvfp4": lambda t: nvfp4_fast(t, 16),
                     "mxfp8": lambda t: _fake_quantize_scaled(t, "mxfp8_e4m3", None)}
QUEST_GAUSSIAN_SCALE = 2.92247856 / 6.0  # QuEST's RMS multiple for a Gaussian, over FP4's largest value
FAST_HADAMARD_ABOVE = 64  # larger blocks rotate with the butterflies, O(n log n)
# Butterflies of blocks up to this size run fused (suite.numerics.compiled): inductor keeps every
# stage of such a block in one loop; past it, it stores each stage as eager does, for no gain.
FUSED_BUTTERFLIES_UP_TO = 256
# Block rotations a rotate-and-quantise call takes with the FP4 quantisers (the Triton kernel's sizes)
ROTATED_BLOCKS = (16, 32, 64, 128)
# Scalings of the MX formats whose scale is a power of two (E8M0) and nothing else: their values
# are an FP4/FP8 element times 2^k, a BF16 number (sr34's 4/3 and NVFP4's FP32 tensor scale are not)
POWER_OF_TWO_SCALINGS = ("block", "rceil", "quest")


@dataclass(frozen=True)
class Operand:
    """How one GEMM operand is quantised; scales always run along the contraction dimension.

    ``fmt``: ``fp32`` (unchanged), ``bf16``, ``e4m3``, ``e5m2``, ``int8``, ``mxfp8``, ``mxfp4``,
    ``nvfp4``. ``scaling``: ``tensor`` / ``row`` (FP8, INT8: one amax scale per tensor or per
    row of the operand), ``delayed`` (FP8 per tensor from the amax history of earlier steps,
    TransformerEngine's DelayedScaling), ``block`` (MX and NVFP4: the format's own 1 x 32 or
    1 x 16 blocks), ``tile`` (NVFP4 16 x 16 tiles: the same scale for W and W^T), ``quest``
    (MXFP4 with QuEST's RMS-based power-of-two scale; values beyond the clip range saturate
    and their gradient is zeroed), ``sr34`` (MXFP4 whose OCP scale is divided by 3/4, so that
    stochastic rounding never saturates: Tseng et al. 2025, Quartet's backward). ``ties``:
    where round-to-nearest sends an exact tie, ``even`` (IEEE, the hardware's conversions) or
    ``down`` (toward zero: Quartet's QuEST kernel).
    """

    fmt: str = "fp32"
    scaling: str = "tensor"
    rounding: str = "nearest"
    ties: str = "even"

    def __post_init__(self) -> None:
        # refuse what no quantiser here does, rather than round otherwise than declared
        if self.scaling == "delayed" and self.rounding != "nearest":
            raise ValueError(f"an operand with delayed scaling rounds to nearest, not '{self.rounding}'")
        if self.ties == "down" and self.scaling != "quest":
            raise ValueError("ties toward zero are QuEST's rule (scaling='quest'); the other quantisers round "
                             "ties to even")

    def takes_rotation(self, block: int) -> bool:
        """Whether this operand's quantiser rotates too, in the same dispatched call (a block
        Hadamard of ``block`` points before an FP4 quantiser: one pass in the kernel)."""
        return block in ROTATED_BLOCKS and self.fmt in ("mxfp4", "nvfp4") and (
            self.scaling == "quest" or (self.rounding == "nearest" and self.scaling == "block")
            or (self.rounding == "stochastic" and (FORMAT_NAMES[self.fmt], self.scaling) in STOCHASTIC_SHAPES))

    def dispatched(self, hadamard: int = 0) -> tuple[str, ...] | None:
        """The ``suite.numerics.dispatch`` call that quantises this operand, as (operation, format[,
        scaling]) (``quantize`` makes it; ``suite bench kernels`` lists methods by it), or None
        where PyTorch alone does (no kernel can serve it). ``hadamard``: the block rotation the call
        applies first (``takes_rotation``), named in the call as ``hadamard=<points>``."""
        call = self._dispatched()
        return (*call, f"hadamard={hadamard}") if call and hadamard else call

    def _dispatched(self) -> tuple[str, ...] | None:
        if self.scaling == "quest" and self.fmt == "mxfp4":
            return ("fake_quantize_quest", self.ties)
        if self.rounding == "nearest" and self.scaling == "block" and self.fmt in NEAREST_REFERENCE:
            return ("fake_quantize", FORMAT_NAMES[self.fmt])
        if self.rounding == "nearest" and self.fmt in (*FP8_ELEMENTS, "int8") and self.scaling in ("tensor", "row"):
            return ("fake_quantize", FORMAT_NAMES[self.fmt], f"granularity={self.scaling}")
        if self.rounding == "nearest" and self.scaling == "delayed" and self.fmt in FP8_ELEMENTS:
            return ("fake_quantize_given_amax", FORMAT_NAMES[self.fmt])
        if self.rounding == "nearest" and self.scaling == "tile" and self.fmt == "nvfp4":
            return ("fake_quantize_tiles", "nvfp4")
        if self.rounding == "nearest" and self.scaling == "rceil" and self.fmt in ("mxfp8", "mxfp4"):
            return ("fake_quantize_mx_rceil", FORMAT_NAMES[self.fmt])
        if self.rounding == "stochastic" and (FORMAT_NAMES.get(self.fmt), self.scaling) in STOCHASTIC_SHAPES:
            return ("fake_quantize_stochastic", FORMAT_NAMES[self.fmt], self.scaling)
        return None

    def describe(self) -> str:
        name = {"fp32": "FP32", "bf16": "BF16", "e4m3": "E4M3", "e5m2": "E5M2", "int8": "INT8",
                "mxfp8": "MXFP8 E4M3", "mxfp8_e5m2": "MXFP8 E5M2", "mxfp4": "MXFP4",
                "nvfp4": "NVFP4"}[self.fmt]
        how = {"tensor": "per tensor", "row": "per row", "delayed": "per tensor, delayed",
               "block": "(OCP floor scale)", "rceil": "(scale rounded up)", "tile": "16x16 tiles",
               "quest": "QuEST RMS scale + clip mask", "sr34": "3/4 scale"}[self.scaling]
        if self.fmt in ("fp32", "bf16"):
            how = ""
        sr = ", stochastic rounding" if self.rounding == "stochastic" else ""
        if self.rounding == "nearest" and self.ties == "down":
            sr = ", ties rounded toward zero"
        return f"{name}{' ' + how if how else ''}{sr}"

    def table_cells(self, axis: str, history: int = 16) -> dict[str, str]:
        """This operand's format, block, scale, rounding and clipping as the README's operand
        table prints them; ``axis`` names the GEMM's contraction (K, N or M)."""
        element = {"fp32": "FP32", "bf16": "BF16", "e4m3": "FP8 E4M3", "e5m2": "FP8 E5M2", "int8": "INT8",
                   "mxfp8": "MXFP8 (E4M3)", "mxfp8_e5m2": "MXFP8 (E5M2)", "mxfp4": "MXFP4 (E2M1)",
                   "nvfp4": "NVFP4 (E2M1)"}[self.fmt]
        if self.fmt in ("fp32", "bf16"):
            return {"format": element, "block": "-", "scale": "-", "rounding": "nearest, ties to even",
                    "clipping": "-"}
        top = "127" if self.fmt == "int8" else ("6" if self.fmt in ("mxfp4", "nvfp4") else
                                               ("57344" if "e5m2" in self.fmt else "448"))
        block = {"tensor": "tensor", "delayed": "tensor", "row": f"row (along {axis})", "tile": "16x16 tile",
                 "block": f"1x{BLOCK_OF.get(self.fmt, 0)} along {axis}", "rceil": f"1x32 along {axis}",
                 "quest": f"1x32 along {axis}", "sr34": f"1x32 along {axis}"}[self.scaling]
        if self.fmt == "nvfp4":
            scale = "E4M3 per block x FP32 per tensor"
        elif self.fmt.startswith("mx"):
            scale = {"block": "E8M0, 2^(floor(log2 amax) - emax) (OCP)", "rceil": "E8M0, amax/max rounded up",
                     "quest": "E8M0, 2^floor(log2(0.487 x block std)) (QuEST)",
                     "sr34": "E8M0 (OCP) x 4/3"}[self.scaling]
        elif self.scaling == "delayed":
            scale = f"FP32, largest amax of the last {history} steps / {top}"
        else:
            scale = f"FP32, amax / {top}"
        rounding = "stochastic" if self.rounding == "stochastic" else \
            f"nearest, ties {'toward zero' if self.ties == 'down' else 'to even'}"
        if self.scaling == "quest":
            clipping = f"clipped at +-{top} x scale; gradient zeroed there"
        elif self.scaling == "delayed":
            clipping = f"saturates at +-{top} (amax of earlier steps)"
        elif self.scaling == "block":
            clipping = (f"clamped at +-{top} where the E4M3 block scale rounds down" if self.fmt == "nvfp4"
                        else f"block maximum may saturate at +-{top}")
        elif self.scaling == "tile":
            clipping = f"clamped at +-{top} where the E4M3 tile scale rounds down"
        elif self.scaling == "sr34":
            clipping = "none (the 4/3 keeps the block maximum below 6)"
        else:
            clipping = "none (the maximum maps to the largest value)"
        return {"format": element, "block": block, "scale": scale, "rounding": rounding, "clipping": clipping}

    @property
    def bf16_exact(self) -> bool:
        """Whether every value this operand quantises to is a BF16 number, so that a BF16 GEMM
        multiplies it unchanged: BF16 itself, and MX elements under a power-of-two scale (exact
        while the values stay in BF16's range: a block whose amax is at least 2^-109)."""
        return self.fmt == "bf16" or (self.fmt in ("mxfp8", "mxfp8_e5m2", "mxfp4")
                                      and self.scaling in POWER_OF_TWO_SCALINGS)

    @property
    def layout_free(self) -> bool:
        """Whether quantising ``t^T`` gives the transpose of ``t`` quantised: unchanged, BF16,
        FP8/INT8 with one scale for the whole tensor, or NVFP4's square 16 x 16 tiles, each value
        rounded to nearest on its own. The backward then quantises X, W or dY as they lie and
        multiplies transposed views (a BLAS GEMM reads them in place) instead of transposed copies."""
        if self.rounding != "nearest":
            return self.fmt in ("fp32", "bf16")
        return self.fmt in ("fp32", "bf16") or self.scaling == "tile" or (
            self.fmt in (*FP8_ELEMENTS, "int8") and self.scaling in ("tensor", "delayed"))

    @property
    def real_capable(self) -> bool:
        """FP8 with tensor, delayed or row scales: what ``torch._scaled_mm`` takes."""
        return self.fmt in FP8_ELEMENTS and self.scaling in ("tensor", "row", "delayed") \
            and self.rounding == "nearest"

    @property
    def int8_capable(self) -> bool:
        """INT8 with one scale per tensor, rounded to nearest: codes an integer GEMM multiplies
        (``int8_mm``) with the scales applied once after the INT32 sum."""
        return self.fmt == "int8" and self.scaling == "tensor" and self.rounding == "nearest"


@dataclass(frozen=True)
class Gemm:
    """One of the three GEMMs: its operands and the rotations around it.

    ``hadamard``: a rotation along the contraction applied to both operands (0: none; -1: at
    full size, ``suite.numerics.hadamard.apply_hadamard``: HALO's; ``b > 0``: blocks of
    ``b``). ``signs``: ``none``, ``layer`` (one random sign vector per layer, drawn once,
    NVIDIA's NVFP4 recipe) or ``step`` (fresh signs at every call, Quartet's backward).
    ``outer_hadamard``: rotate the rows of ``A`` (HALO's rotation of the output gradient along
    the tokens) and undo it on the product, with the same sizes as ``hadamard`` (at full size
    the rows are zero-padded to the next size the construction takes).
    """

    a: Operand
    b: Operand
    hadamard: int = 0
    signs: str = "none"
    outer_hadamard: int = 0

    @property
    def fp8_product(self) -> bool:
        """Whether both operands are FP8 codes ``torch._scaled_mm`` may multiply, with scales alike."""
        return self.a.real_capable and self.b.real_capable and self.a.scaling == self.b.scaling

    @property
    def int8_product(self) -> bool:
        """Whether both operands are INT8 codes an integer GEMM may multiply (``Operand.int8_capable``)."""
        return self.a.int8_capable and self.b.int8_capable

    @property
    def bf16_operands(self) -> bool:
        """Whether both operands' quantised values are BF16 numbers (``Operand.bf16_exact``)."""
        return self.a.bf16_exact and self.b.bf16_exact

    def takes_view(self, side: str) -> bool:
        """Whether operand ``side`` (``a`` or ``b``) may come as a transposed view: it is
        ``Operand.layout_free`` and not rotated (a Hadamard runs along the dimension as laid out)."""
        return getattr(self, side).layout_free and not self.hadamard and not (side == "a" and self.outer_hadamard)

    @property
    def contraction_multiple(self) -> int:
        """What the contraction is zero-padded to a multiple of: whole blocks of both formats and of
        the rotation."""
        return math.lcm(max(self.hadamard, 0) or 1, BLOCK_OF.get(self.a.fmt, 1), BLOCK_OF.get(self.b.fmt, 1),
                        16 if "tile" in (self.a.scaling, self.b.scaling) else 1)

    def fused_rotation(self) -> int:
        """The block rotation along the contraction that both operands' quantisers apply in their
        dispatched calls (``Operand.takes_rotation``), else 0 (the rotation runs on its own)."""
        block = self.hadamard
        return block if block > 0 and self.a.takes_rotation(block) and self.b.takes_rotation(block) else 0

    def dispatched(self, side: str) -> tuple[str, ...] | None:
        """The dispatch call that quantises operand ``side`` (``a`` or ``b``), rotation included."""
        return getattr(self, side).dispatched(self.fused_rotation())

    def describe(self, a: str, b: str) -> str:
        text = f"{a} {self.a.describe()} x {b} {self.b.describe()}"
        if self.hadamard:
            size = "full-size" if self.hadamard < 0 else f"{self.hadamard}-point"
            rand = {"none": "", "layer": " random-sign", "step": " re-randomised"}[self.signs]
            text += f", after a{rand} {size} Hadamard on the contraction"
        if self.outer_hadamard:
            size = "full-size" if self.outer_hadamard < 0 else f"{self.outer_hadamard}-point"
            text += f", {a} rotated along its rows ({size} Hadamard, undone on the product)"
        return text

    def rotation_cell(self, operand: str, axis: str, rows: str) -> str:
        """The rotation of ``operand`` (``a`` or ``b``) as the operand table prints it."""
        parts = []
        if self.hadamard:
            size = "full-size" if self.hadamard < 0 else f"{self.hadamard}-point"
            rand = {"none": "", "layer": "random-sign (per layer) ", "step": "random-sign (every call) "}[self.signs]
            parts.append(f"{rand}{size} Hadamard along {axis}")
        if self.outer_hadamard and operand == "a":
            size = "full-size" if self.outer_hadamard < 0 else f"{self.outer_hadamard}-point"
            parts.append(f"{size} Hadamard along {rows}, undone on the product")
        return "; ".join(parts) or "-"


@dataclass(frozen=True)
class LinearRecipe:
    """How a linear layer's three GEMMs run in training (see the module docstring)."""

    forward: Gemm
    dgrad: Gemm
    wgrad: Gemm
    from_forward: bool = False  # Quartet: backward from the forward's quantised rotated operands
    store_fp8_input: bool = False  # COAT: keep X for the backward as FP8 codes (per tensor)

    def describe(self) -> str:
        return (f"forward Y = X W^T: {self.forward.describe('X', 'W')}; "
                f"dgrad dX = dY W: {self.dgrad.describe('dY', 'W')}; "
                f"wgrad dW = dY^T X: {self.wgrad.describe('dY', 'X')}")

    @property
    def int8_products(self) -> bool:
        """Whether all three GEMMs may multiply INT8 codes (``Gemm.int8_product``): HALO's default."""
        return all(g.int8_product for g in (self.forward, self.dgrad, self.wgrad))

    def operands(self) -> list[Operand]:
        return [g.a for g in (self.forward, self.dgrad, self.wgrad)] + \
            [g.b for g in (self.forward, self.dgrad, self.wgrad)]

    def operand_rows(self, history: int = 16) -> list[dict[str, str]]:
        """One row per GEMM operand (forward X, W; dgrad dY, W; wgrad dY, X): what it is taken
        from and how it is quantised and rotated, from this declaration alone."""
        rows = []
        gemms = (("forward", self.forward, "K", "M", ("X", "W")), ("dgrad", self.dgrad, "N", "M", ("dY", "W")),
                 ("wgrad", self.wgrad, "M", "N", ("dY", "X")))
        for gemm, g, axis, outer_rows, (name_a, name_b) in gemms:
            for which, name, op in (("a", name_a, g.a), ("b", name_b, g.b)):
                source = "the step's " + ("output gradient" if name == "dY" else
                                          "input" if name == "X" else "weight")
                if gemm != "forward" and name != "dY":
                    if self.from_forward:
                        source = f"the forward's quantised, rotated {name}"
                    elif self.store_fp8_input and name == "X":
                        source = "the forward's FP8 E4M3 copy of X (per tensor)"
                rows.append({"gemm": gemm, "operand": name, "taken from": source,
                             **op.table_cells(axis, history),
                             "rotation": g.rotation_cell(which, axis, "the tokens" if outer_rows == "M" else outer_rows)})
        return rows


@dataclass
class Quantized:
    """An operand after quantisation: float32 values on the grid, and what else the GEMM needs."""

    values: torch.Tensor | None  # None for INT8 codes a real integer GEMM takes (no float copy is made)
    mask: torch.Tensor | None = None  # QuEST: float32, 1 where the value was not clipped (its gradient passes)
    codes: torch.Tensor | None = None  # real codes: FP8 for torch._scaled_mm, INT8 for torch._int_mm
    scale: torch.Tensor | None = None  # their dequantisation scale: a scalar or one per row

    def transposed(self) -> Quantized:
        """The same operand transposed, as views (for a ``layout_free`` operand: one scale at most)."""
        assert self.mask is None and (self.scale is None or self.scale.numel() == 1)
        return Quantized(None if self.values is None else self.values.t(),
                         codes=None if self.codes is None else self.codes.t(), scale=self.scale)


@dataclass
class LayerState:
    """Per-layer state of a recipe: RNG for stochastic rounding and signs, amax histories, counts."""

    name: str
    recipe: LinearRecipe
    seed: int
    real: bool = False  # real GEMMs where both operands allow it: FP8 (torch._scaled_mm), INT8 (torch._int_mm)
    amax_history: int = 16
    histories: dict[str, torch.Tensor] = field(default_factory=dict)  # per role: a ring of amaxes
    recorded: dict[str, int] = field(default_factory=dict)  # per role: amaxes recorded so far
    real_gemms: int = 0
    emulated_gemms: int = 0
    _generators: dict[str, torch.Generator] = field(default_factory=dict)
    _signs: dict[int, torch.Tensor] = field(default_factory=dict)

    def generator(self, device: torch.device) -> torch.Generator:
        key = str(device)
        if key not in self._generators:
            self._generators[key] = torch.Generator(device=device).manual_seed(self.seed)
        return self._generators[key]

    def signs(self, block: int, kind: str, device: torch.device) -> torch.Tensor | None:
        """A +-1 vector of ``block`` entries: fixed per layer, or fresh from the layer's generator."""
        if kind == "none":
            return None
        if kind == "layer":
            if block not in self._signs:
                self._signs[block] = random_signs(block, torch.Generator().manual_seed(self.seed + block))
            return self._signs[block].to(device)
        return random_signs(block, self.generator(torch.device("cpu")), device=device)

    def delayed_amax(self, role: str, t: torch.Tensor) -> torch.Tensor:
        """The amax to scale ``t`` with: the largest of the earlier steps' (this step's at the
        first step, which has no history), then this step's amax joins the history."""
        current = t.detach().abs().amax().float()
        # One preallocated ring per role, written in place: a new small tensor per step and
        # role would fragment the CPU allocator until the process's RSS doubled.
        ring = self.histories.get(role)
        if ring is None:
            ring = self.histories[role] = torch.zeros(self.amax_history, device=current.device)
        n = self.recorded.get(role, 0)
        used = ring[:min(n, self.amax_history)].amax() if n else current.clone()
        ring[n % self.amax_history] = current
        self.recorded[role] = n + 1
        return used

    # -- quantisation ------------------------------------------------------------------------------
    def quantize(self, t: torch.Tensor, op: Operand, amax: torch.Tensor | None = None,
                 real: bool = False, hadamard: int = 0, signs: torch.Tensor | None = None) -> Quantized:
        """``t`` (float32, [rows, contraction]) quantised as ``op`` says, scales along the last dim;
        ``hadamard`` (where ``op.takes_rotation``): rotated first, in the same dispatched call.
        A transposed view of a ``layout_free`` operand is quantised as it lies in memory (the
        quantisers read contiguous rows fastest) and handed back transposed."""
        if op.layout_free and not hadamard and t.dim() == 2 and not t.is_contiguous() and t.t().is_contiguous():
            return self.quantize(t.t(), op, amax, real, hadamard, signs).transposed()
        rot: dict[str, Any] = {"hadamard": hadamard} if hadamard else {}
        if signs is not None:
            rot["signs"] = signs
        rnd: dict[str, Any] = {"rounding": op.rounding}
        if op.rounding == "stochastic":
            rnd["generator"] = self.generator(t.device)
        if op.fmt == "fp32":
            return Quantized(t)
        if op.fmt == "bf16":
            return Quantized(t.to(torch.bfloat16).float())
        served = op.dispatched() is not None  # a dispatch call makes it: a kernel may serve it
        if not served:  # runs in PyTorch whatever --kernels says: counted as such
            dispatch.unserved(f"quantize:{op.fmt}/{op.scaling}/{op.rounding}")
        if op.rounding == "stochastic" and served:  # a kernel may serve it, keyed by the generator
            key = new_key(rnd["generator"], t.device)
            return Quantized(dispatch.call("fake_quantize_stochastic", fused_stochastic, t,
                                           FORMAT_NAMES[op.fmt], key, op.scaling, **rot))
        if op.scaling == "quest":  # a kernel may serve it (suite.numerics.dispatch)
            values, mask = dispatch.call("fake_quantize_quest", quest_reference, t, op.ties, **rot)
            return Quantized(values, mask=mask)
        if op.scaling == "sr34":
            return mxfp4_sr34(t, op.rounding, rnd.get("generator"))
        if op.scaling == "tile":
            if served:  # a kernel may serve it (suite.numerics.dispatch)
                return Quantized(dispatch.call("fake_quantize_tiles", lambda x, fmt: nvfp4_tiles(x), t, "nvfp4"))
            return Quantized(nvfp4_tiles(t, **rnd))
        if op.scaling == "rceil":
            if served:  # a kernel may serve it (suite.numerics.dispatch)
                return Quantized(dispatch.call("fake_quantize_mx_rceil", mx_rceil_nearest, t, FORMAT_NAMES[op.fmt]))
            return Quantized(mx_rceil(t, op.fmt, op.rounding, rnd.get("generator")))
        if op.rounding == "nearest" and op.fmt in NEAREST_REFERENCE:  # a kernel may serve it (suite.numerics.dispatch)
            return Quantized(dispatch.call("fake_quantize", fake_quantize_nearest, t, FORMAT_NAMES[op.fmt], **rot))
        if op.fmt == "mxfp4":
            return Quantized(mxfp4_fast(t, op.rounding, rnd.get("generator")))
        if op.fmt == "nvfp4":
            return Quantized(nvfp4_fast(t, 16, op.rounding, rnd.get("generator")))
        if op.scaling == "delayed":
            if amax is None:
                raise ValueError("delayed scaling needs the amax to use")
            if real or not served:  # real FP8 needs the codes and scale for torch._scaled_mm
                return fp8_given_amax(t, FP8_ELEMENTS[op.fmt], amax)
            # emulated: values only, which a kernel may serve (suite.numerics.dispatch)
            return Quantized(dispatch.call("fake_quantize_given_amax", fake_quantize_given_amax, t,
                                           FORMAT_NAMES[op.fmt], amax))
        name = FORMAT_NAMES[op.fmt]
        if op.fmt in FP8_ELEMENTS or op.fmt == "int8":
            rnd["granularity"] = op.scaling
        if real and op.int8_capable:  # a real integer GEMM's operand: its codes and scale only (a kernel may serve it)
            codes, scale = dispatch.call("quantize_codes", integer_codes, t, "int8", granularity="tensor")
            return Quantized(None, codes=codes, scale=scale)
        if real and op.real_capable:
            q = F.quantize(t, name, granularity=op.scaling)
            return Quantized(F.dequantize(q), codes=q.data, scale=q.scale.float())
        if served:  # FP8 / INT8 per tensor / per row: a kernel may serve it, else the fused reference
            return Quantized(dispatch.call("fake_quantize", _fake_quantize_scaled, t, name, granularity=op.scaling))
        if op.rounding == "nearest":  # FP8/INT8 by their scaling; a block format by its own blocks
            return Quantized(_fake_quantize_scaled(t, name, rnd.get("granularity")))
        return Quantized(F.fake_quantize(t, name, **rnd))

    # -- one GEMM --------------------------------------------------------------------------------------
    def gemm(self, a: torch.Tensor, b: torch.Tensor, g: Gemm, amax: tuple = (None, None),
             out_dtype: torch.dtype = torch.float32, given: Quantized | None = None) -> torch.Tensor:
        """``a @ b^T`` with ``g``'s rotations and quantisation, [rows(a), rows(b)], rounded once to
        ``out_dtype`` (where the caller keeps it; after HALO's rotation of the rows is undone).
        ``given``: ``a`` already quantised as ``g.a`` says (by ``quantize``, with ``real`` where
        the GEMM may run real), an operand another GEMM shares; ``a`` then only gives its shape."""
        rows = a.shape[0]
        if g.outer_hadamard:
            # rows zero-padded to the rotation's size; the padded rows of the product are dropped
            size = next_hadamard_size(rows) if g.outer_hadamard < 0 else -(-rows // g.outer_hadamard) * g.outer_hadamard
            a = torch.nn.functional.pad(a.t(), (0, size - rows))
            a = (rotate_full(a) if g.outer_hadamard < 0 else rotate(a, g.outer_hadamard)).t()
        use_real = self.real_gemm(g)
        if given is not None:
            assert g.takes_view("a") and g.contraction_multiple == 1, "a shared operand is neither rotated nor padded"
            qa, qb = given, self.quantize(b, g.b, amax[1], real=use_real)
        else:
            qa, qb, _ = self.quantize_pair(a, b, g, amax, use_real)
        if not g.outer_hadamard:
            return self.matmul(qa, qb, use_real, out_dtype, g.bf16_operands)
        c = self.matmul(qa, qb, use_real).t()  # a view: each rotation takes the layout it reads best
        c = rotate_full(c, inverse=True) if g.outer_hadamard < 0 else rotate(c, g.outer_hadamard)
        return c.t()[:rows].to(out_dtype)

    def real_gemm(self, g: Gemm) -> bool:
        """Whether ``g`` runs real (FP8 tensor cores, or an INT8 integer GEMM): the layer runs real
        and both operands allow it."""
        return self.real and (g.fp8_product or g.int8_product)

    def quantize_pair(self, a: torch.Tensor, b: torch.Tensor, g: Gemm, amax: tuple = (None, None),
                      real: bool = False) -> tuple[Quantized, Quantized, int]:
        """Both operands padded, rotated along the contraction and quantised; returns them and the
        rotation's block. Where both quantisers take the rotation (``Gemm.fused_rotation``), each
        operand is one dispatched call (rotate and quantise in one kernel pass where one serves)."""
        fused_block = g.fused_rotation()
        if not fused_block:
            a, b, block = self.rotate_pair(a, b, g)
            return self.quantize(a, g.a, amax[0], real=real), self.quantize(b, g.b, amax[1], real=real), block
        a, b = self.pad_pair(a, b, g)
        s = self.signs(fused_block, g.signs, a.device)  # drawn before the keys, as rotate_pair does
        return (self.quantize(a, g.a, hadamard=fused_block, signs=s),
                self.quantize(b, g.b, hadamard=fused_block, signs=s), fused_block)

    @staticmethod
    def pad_pair(a: torch.Tensor, b: torch.Tensor, g: Gemm) -> tuple[torch.Tensor, torch.Tensor]:
        """Both operands zero-padded along the contraction to whole blocks of their formats and rotation."""
        return pad_last(a, g.contraction_multiple), pad_last(b, g.contraction_multiple)

    def rotate_pair(self, a: torch.Tensor, b: torch.Tensor, g: Gemm) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Pad the contraction for the block formats and rotate both operands along it."""
        block = max(g.hadamard, 0)
        a, b = self.pad_pair(a, b, g)
        if g.hadamard < 0:  # the whole (padded) contraction at once
            block = a.shape[-1]
            s = self.signs(block, g.signs, a.device)
            a, b = rotate_full(a, s), rotate_full(b, s)
        elif block > 1:
            s = self.signs(block, g.signs, a.device)
            full = None if s is None else s.repeat(a.shape[-1] // block)
            a, b = rotate(a, block, full), rotate(b, block, full)
        return a, b, block

    def matmul(self, qa: Quantized, qb: Quantized, use_real: bool, out_dtype: torch.dtype = torch.float32,
               bf16_operands: bool = False) -> torch.Tensor:
        """The product of two quantised operands in ``out_dtype``: real where ``use_real`` and both
        have codes (FP8 tensor cores, BF16 out; INT8 codes in an integer GEMM, FP32 out), else
        emulated; counted either way. ``bf16_operands``: both operands' values are BF16 numbers
        (``Gemm.bf16_operands``)."""
        if use_real and qa.codes is not None and qb.codes is not None:
            self.real_gemms += 1
            if qa.codes.dtype == torch.int8:
                return int8_mm(qa, qb).to(out_dtype)
            return scaled_mm(qa, qb).to(out_dtype)
        self.emulated_gemms += 1
        return emulated_matmul(qa.values, qb.values, out_dtype, bf16_operands)


def emulated_matmul(a: torch.Tensor, b: torch.Tensor, out_dtype: torch.dtype = torch.float32,
                    bf16_operands: bool = False) -> torch.Tensor:
    """``a @ b^T`` accumulated in FP32 and rounded once to ``out_dtype``.

    For a BF16 result of operands whose values are BF16 numbers (``bf16_operands``), a CPU
    multiplies them in a BF16 GEMM: it reads them unchanged and accumulates in FP32 before its
    one rounding to BF16, so it is the FP32 GEMM's product rounded, up to the order of the
    additions, at BF16's speed. Elsewhere (other operands or results; GPUs, whose BF16 GEMMs
    may reduce in BF16) the FP32 product is rounded.
    """
    if out_dtype == torch.bfloat16 and bf16_operands and a.device.type == "cpu":
        return a.bfloat16() @ b.bfloat16().t()
    return (a @ b.t()).to(out_dtype)


# -- numerics the formats module does not have as one call ---------------------------------------------
def pad_last(t: torch.Tensor, multiple: int) -> torch.Tensor:
    """Zero-pad the last dimension to a multiple (zeros leave amax and every product unchanged)."""
    extra = (-t.shape[-1]) % multiple
    return torch.nn.functional.pad(t, (0, extra)) if extra else t


def pad_rows(t: torch.Tensor, multiple: int) -> torch.Tensor:
    extra = (-t.shape[0]) % multiple
    return torch.nn.functional.pad(t, (0, 0, 0, extra)) if extra else t


def rotate(t: torch.Tensor, block: int, signs: torch.Tensor | None = None, inverse: bool = False) -> torch.Tensor:
    """The normalised block Hadamard of ``suite.numerics.hadamard`` along the last dimension."""
    if FAST_HADAMARD_ABOVE < block <= FUSED_BUTTERFLIES_UP_TO ** 2:
        # as it lies: rows of ``t`` in memory take the passes along them (``fwht``); the transpose of a
        # contiguous tensor with a block too large for one loop (HALO's dY^T along the tokens) takes
        # them along the first dimension of t^T
        if block > FUSED_BUTTERFLIES_UP_TO and not t.is_contiguous():
            return _butterflies_in_two(t, block, signs, inverse)
        return _butterflies(t.contiguous(), block, signs, inverse)
    method = "fast" if block > FAST_HADAMARD_ABOVE else "dense"
    return apply_block_hadamard(t.contiguous(), block, signs=signs, inverse=inverse, method=method)


@fused
def _butterflies(t: torch.Tensor, block: int, signs: torch.Tensor | None, inverse: bool) -> torch.Tensor:
    return apply_block_hadamard(t, block, signs=signs, inverse=inverse, method="fast")


@fused
def _butterflies_in_two(t: torch.Tensor, block: int, signs: torch.Tensor | None, inverse: bool) -> torch.Tensor:
    """``apply_block_hadamard(method="fast")`` of a block too large for one fused loop (HALO's
    rotation along the tokens), computed on the transpose ``[n, rows]``: each butterfly then adds
    whole rows of ``rows`` values (vectorised, whatever the stride), and ``butterfly_passes`` runs
    three stages per pass (each pass one loop of loads, additions and stores). The same additions
    in the same order as the fast transform (its stages from the smallest stride up), normalised
    once, so equal bit for bit; the result is contiguous ``[rows, n]`` like ``t``'s shape."""
    n = t.shape[-1]
    u = t.reshape(-1, n).t()
    s = None if signs is None else signs.to(t.dtype)[:, None]
    if s is not None and not inverse:
        u = u * s
    u = butterfly_passes(u, block) * torch.tensor(block ** -0.5, dtype=t.dtype, device=t.device)
    if s is not None and inverse:
        u = u * s
    return u.t().contiguous().reshape(t.shape)


def rotate_full(t: torch.Tensor, signs: torch.Tensor | None = None, inverse: bool = False) -> torch.Tensor:
    """The full-size Hadamard of the last dimension (HALO's): ``rotate`` for a power of two,
    else ``suite.numerics.hadamard.apply_hadamard``'s Kronecker construction."""
    n = t.shape[-1]
    if is_power_of_two(n):
        return rotate(t, n, signs, inverse)
    return apply_hadamard(t.contiguous(), signs=signs, inverse=inverse, butterflies=_butterflies_unscaled)


@fused
def _butterflies_unscaled(t: torch.Tensor, block: int) -> torch.Tensor:
    """``fwht`` (the Kronecker construction's ``2^m`` part: one fused loop instead of three eager
    passes per stage; additions only, so equal bit for bit)."""
    return fwht(t, block)


def fp8_given_amax(t: torch.Tensor, elem: el.FloatElement, amax: torch.Tensor) -> Quantized:
    """FP8 per tensor with a given amax (delayed scaling): the arithmetic of the formats
    module's tensor scaling (scale = amax / max, saturating cast), with the amax supplied."""
    values, codes, scale = _fp8_given_amax(t, elem.name, amax.to(t.device))
    return Quantized(values, codes=codes.view(elem.torch_dtype), scale=scale)


def fake_quantize_given_amax(t: torch.Tensor, fmt: str, amax: torch.Tensor) -> torch.Tensor:
    """``fp8_given_amax``'s values for a ``suite.numerics`` format name (``fp8_e4m3``, ``fp8_e5m2``):
    FP8 per tensor with the scale ``amax / max`` (1 where ``amax`` is 0), values beyond ``amax``
    saturating (delayed scaling), the reference its kernel equals (``fake_quantize_given_amax``)."""
    return _fp8_given_amax(t, fmt, amax.to(t.device))[0]


def given_amax_scale(amax: torch.Tensor, element: str) -> torch.Tensor:
    """FP8 per tensor's scale for a given amax: ``amax / max``, 1 where that is not positive (the
    given-amax kernel takes it as is)."""
    scale = amax.float() / el.float_element(element).max
    return torch.where(scale > 0, scale, torch.ones_like(scale))


@fused
def _fp8_given_amax(t: torch.Tensor, element: str, amax: torch.Tensor) -> tuple[torch.Tensor, ...]:
    elem = el.float_element(element)
    scale = given_amax_scale(amax, element)
    codes = el.encode_float(t / scale, elem)
    return el.decode_float(codes, elem) * scale, codes, scale.reshape(())


@fused
def _fake_quantize_scaled(t: torch.Tensor, name: str, granularity: str | None) -> torch.Tensor:
    """``formats.fake_quantize`` to nearest: FP8 or INT8 with one scale per tensor or row
    (``granularity``), or a block format with its own blocks (None)."""
    return F.fake_quantize(t, name) if granularity is None else F.fake_quantize(t, name, granularity=granularity)


def uniforms(shape: tuple[int, ...], rounding: str, generator: torch.Generator | None,
             device: torch.device) -> torch.Tensor | None:
    """The uniforms stochastic rounding of a tensor of ``shape`` uses (None to nearest), drawn
    eagerly from ``generator``: the fused quantisers take them as an input, so compiled and
    eager runs consume the same random stream."""
    if rounding == "nearest":
        return None
    return torch.rand(shape, generator=generator, device=device, dtype=torch.float32)


def nvfp4_tiles(t: torch.Tensor, rounding: str = "nearest", generator: torch.Generator | None = None) -> torch.Tensor:
    """NVFP4 with one E4M3 scale per 16 x 16 tile (NVIDIA's weight layout) and the tensor's FP32
    scale: each tile is quantised as one NVFP4 block of 256 values by ``formats.fake_quantize``
    (same scale rule and element rounding, as ``nvfp4_fast``), so ``W`` and ``W^T`` get the
    same values."""
    rows, cols = t.shape
    tiles = (-(-rows // 16) * -(-cols // 16), 256)
    return _nvfp4_tiles(t, rounding, uniforms(tiles, rounding, generator, t.device))


@fused
def _nvfp4_tiles(t: torch.Tensor, rounding: str, u: torch.Tensor | None) -> torch.Tensor:
    rows, cols = t.shape
    tp = pad_last(pad_rows(t, 16), 16)
    r, c = tp.shape
    tiles = tp.reshape(r // 16, 16, c // 16, 16).permute(0, 2, 1, 3).reshape(-1, 256)
    q = _nvfp4(tiles, 256, rounding, u, t.abs().amax())
    back = q.reshape(r // 16, c // 16, 16, 16).permute(0, 2, 1, 3).reshape(r, c)
    return back[:rows, :cols]


def fake_quantize_nearest(t: torch.Tensor, fmt: str, hadamard: int = 0, signs: torch.Tensor | None = None) -> torch.Tensor:
    """Round-to-nearest fake quantisation of a block format along the last dim, the reference a
    registered kernel must equal: ``formats.fake_quantize`` (MXFP4 and NVFP4 through their faster,
    equal forms ``mxfp4_fast`` and ``nvfp4_fast``); ``hadamard``: of ``t`` rotated first
    (``rotate_blocks``, with ``signs``)."""
    if hadamard:
        return _rotated_nearest(t, fmt, hadamard, signs)
    return NEAREST_REFERENCE[SHORT_NAMES[fmt]](t)


@fused
def _rotated_nearest(t: torch.Tensor, fmt: str, hadamard: int, signs: torch.Tensor | None) -> torch.Tensor:
    """``fake_quantize_nearest`` of ``t`` rotated: the rotation and the quantiser in one compiled function."""
    return fake_quantize_nearest(rotate_blocks(t, hadamard, signs), fmt)


def fp4_round(v: torch.Tensor, rounding: str = "nearest", generator: torch.Generator | None = None,
              ties: str = "even", u: torch.Tensor | None = None) -> torch.Tensor:
    """``v`` rounded onto the FP4 E2M1 values (saturating at 6): the same values as
    ``elements.decode_float(elements.encode_float(v, FP4_E2M1, rounding), FP4_E2M1)``, which
    the tests check bit for bit (stochastic: with the same generator, the same uniforms), in a
    few elementwise operations instead of a search over the value table.

    Within each binade of E2M1 the values are evenly spaced (``0.5`` below 2, then ``1`` up to 4,
    then ``2``), so rounding is ``round(|v| / step) * step`` with that binade's power-of-two step:
    ``torch.round`` rounds half to even, and an even quotient is the even mantissa.
    ``ties="down"`` sends exact ties toward zero instead (``ceil(q - 1/2)``, exact in float32
    for these quotients): Quartet's kernel, whose thresholds are strict ``>``. ``v`` is float32:
    the binade comes from its exponent bits, not from ``log2``, whose float32 result is an ulp
    off in different places in ATen's vectorised code and in inductor's, so the compiled and
    eager forms agree everywhere. Stochastic rounding takes the uniforms ``u`` (shaped like
    ``v``) where given, else draws them.
    """
    m = v.abs().clamp(max=el.FP4_E2M1.max)
    # the step 2^(clamp(floor(log2 m), 0, 2) - 1) built from m's biased exponent field (m >= 0, so
    # the sign bit is clear): exact, and as few passes as the log2 form (0 and subnormals: 1/2;
    # NaN stays NaN)
    step = (((m.view(torch.int32) >> 23).clamp(127, 129) - 1) << 23).view(torch.float32)
    q = m / step
    if rounding == "nearest":
        q = torch.round(q) if ties == "even" else torch.ceil(q - 0.5).clamp(min=0)
    else:
        if u is None:
            u = torch.rand(m.shape, generator=generator, device=m.device, dtype=torch.float32)
        low = torch.floor(q)
        q = low + (u < q - low).to(q.dtype)
    return torch.copysign(q * step, v)


def mxfp4_fast(t: torch.Tensor, rounding: str = "nearest", generator: torch.Generator | None = None) -> torch.Tensor:
    """``formats.fake_quantize(t, "mxfp4", rounding=...)`` (blocks of 32 along the last dim, the
    OCP scale ``formats.mx_scale_e8m0``), with ``fp4_round`` for the elements."""
    return _mxfp4(t, rounding, uniforms(t.shape, rounding, generator, t.device))


@fused
def _mxfp4(t: torch.Tensor, rounding: str, u: torch.Tensor | None) -> torch.Tensor:
    rows, k = t.shape
    blocks = t.reshape(rows, k // 32, 32)
    scale = _e8m0(F.mx_scale_e8m0(blocks.abs().amax(-1, keepdim=True), el.FP4_E2M1))
    u = None if u is None else u.reshape(blocks.shape)
    return (fp4_round(blocks / scale, rounding, u=u) * scale).reshape(rows, k)


def nvfp4_fast(t: torch.Tensor, block: int = 16, rounding: str = "nearest",
               generator: torch.Generator | None = None, tensor_amax: torch.Tensor | None = None) -> torch.Tensor:
    """``formats.fake_quantize(t, "nvfp4", block_size=block, ...)``: the formats module's NVFP4
    arithmetic (FP32 tensor scale ``nvfp4_tensor_scale``, E4M3 block scale, the same operation
    order), with ``fp4_round`` for the elements."""
    return _nvfp4(t, block, rounding, uniforms(t.shape, rounding, generator, t.device), tensor_amax)


@fused
def _nvfp4(t: torch.Tensor, block: int, rounding: str, u: torch.Tensor | None,
           tensor_amax: torch.Tensor | None) -> torch.Tensor:
    rows, k = t.shape
    blocks = t.reshape(rows, k // block, block)
    amax = t.abs().amax() if tensor_amax is None else tensor_amax
    ts = F.nvfp4_tensor_scale(amax).to(t.device)
    e4m3 = torch.float8_e4m3fn
    s8 = torch.clamp(blocks.abs().amax(-1, keepdim=True) / el.FP4_E2M1.max / ts, min=torch.finfo(e4m3).tiny,
                     max=el.FP8_E4M3.max).to(e4m3).float()
    scaled = torch.clamp(blocks * ((1.0 / ts) / s8), -el.FP4_E2M1.max, el.FP4_E2M1.max)
    u = None if u is None else u.reshape(blocks.shape)
    return (fp4_round(scaled, rounding, u=u) * (ts * s8)).reshape(rows, k)


def _e8m0(code: torch.Tensor) -> torch.Tensor:
    return torch.ldexp(torch.ones_like(code, dtype=torch.float32), code.to(torch.int32) - 127)


def mxfp4_sr34(t: torch.Tensor, rounding: str = "stochastic", generator: torch.Generator | None = None) -> Quantized:
    """MXFP4 (blocks of 32) with the OCP scale divided by 3/4: block maxima land at or below 6,
    so stochastic rounding is unbiased and never saturates (Tseng et al. 2025; Quartet's
    gradient quantiser). Scale: ``formats.mx_scale_e8m0``; elements: the FP4 element codec."""
    return Quantized(_mxfp4_sr34(t, rounding, uniforms(t.shape, rounding, generator, t.device)))


def fused_stochastic(t: torch.Tensor, fmt: str, key: torch.Tensor, scaling: str = "block", hadamard: int = 0,
                     signs: torch.Tensor | None = None) -> torch.Tensor:
    """``suite.numerics.stochastic.fake_quantize_keyed`` (the reference its kernel equals) through the
    fused quantisers: compiled, the counter-based uniforms of ``key`` are one loop, the rotation and the
    quantiser another (inductor's CPU code for the hash inside the quantiser's block loops is several
    times slower than the two); equal to it bit for bit (tests)."""
    u = _uniforms_like(t, key)
    if hadamard:
        return _rotated_stochastic(t, fmt, u, scaling, hadamard, signs)
    return _stochastic(t, fmt, u, scaling)


@fused
def _uniforms_like(t: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
    """``counter_uniforms`` for ``t``'s shape (``t`` is the operand, so the mode sizes the call by it)."""
    return counter_uniforms(tuple(t.shape), key)


@fused
def _rotated_stochastic(t: torch.Tensor, fmt: str, u: torch.Tensor, scaling: str, hadamard: int,
                        signs: torch.Tensor | None) -> torch.Tensor:
    """``_stochastic`` of ``t`` rotated (``rotate_blocks``): the rotation and the quantiser in one
    compiled function."""
    return _stochastic(rotate_blocks(t, hadamard, signs), fmt, u, scaling)


def _stochastic(t: torch.Tensor, fmt: str, u: torch.Tensor, scaling: str) -> torch.Tensor:
    if fmt == "nvfp4":
        return _nvfp4(t, 16, "stochastic", u, None)
    return _mxfp4_sr34(t, "stochastic", u) if scaling == "sr34" else _mxfp4(t, "stochastic", u)


@fused
def _mxfp4_sr34(t: torch.Tensor, rounding: str, u: torch.Tensor | None) -> torch.Tensor:
    rows, k = t.shape
    blocks = t.reshape(rows, k // 32, 32)
    amax = blocks.abs().amax(-1, keepdim=True)
    scale = _e8m0(F.mx_scale_e8m0(amax, el.FP4_E2M1)) / 0.75
    u = None if u is None else u.reshape(blocks.shape)
    return (fp4_round(blocks / scale, rounding, u=u) * scale).reshape(rows, k)


MX_ELEMENTS = {"mxfp8": el.FP8_E4M3, "mxfp8_e5m2": el.FP8_E5M2, "mxfp4": el.FP4_E2M1}


def mx_rceil(t: torch.Tensor, fmt: str, rounding: str = "nearest",
             generator: torch.Generator | None = None) -> torch.Tensor:
    """MX blocks of 32 with the power-of-two scale rounded up, ``2^ceil(log2(amax / max))``
    (clamped to E8M0's range), so the block maximum never exceeds the element's largest value:
    the rule TransformerEngine and torchao (RCEIL) train MXFP8 with. Elements: the codec of
    ``suite.numerics.elements``."""
    elem = MX_ELEMENTS[fmt]
    if elem is el.FP4_E2M1 or rounding == "nearest":
        return _mx_rceil(t, fmt, rounding, uniforms(t.shape, rounding, generator, t.device))
    rows, k = t.shape
    blocks = t.reshape(rows, k // 32, 32)
    amax = blocks.abs().amax(-1, keepdim=True)
    scale = torch.where(amax > 0, _pow2_ceil(amax / elem.max), torch.full_like(amax, 2.0 ** -127))
    codes = el.encode_float(blocks / scale, elem, rounding, generator=generator)
    return (el.decode_float(codes, elem) * scale).reshape(rows, k)


def mx_rceil_nearest(t: torch.Tensor, fmt: str) -> torch.Tensor:
    """``mx_rceil`` to nearest for a ``suite.numerics`` format name (``mxfp8_e4m3``, ``mxfp4``): the
    reference its kernel equals."""
    return mx_rceil(t, SHORT_NAMES[fmt])


def _exponent(v: torch.Tensor) -> torch.Tensor:
    """The unbiased exponent field of float32 ``v`` (int32): ``floor(log2 |v|)`` exactly for a
    normal ``v``; -127 for zero and subnormals, 128 for inf and NaN. Bit arithmetic, which
    vectorises in ATen and in inductor alike (``frexp`` does not in ATen)."""
    return ((v.view(torch.int32) >> 23) & 0xFF) - 127


def _pow2_ceil(v: torch.Tensor) -> torch.Tensor:
    """``2^ceil(log2 v)`` clamped to ``2^-127 .. 2^127`` for positive ``v``, from the exponent and
    mantissa fields, so it is exact: a float32 ``log2`` rounds ``v`` just above a power of two
    down onto it, and does so in different places in ATen and in inductor. Infinity gives
    ``2^127`` and a subnormal ``2^-126`` or ``2^-127``, as the log2 form did."""
    bits = v.view(torch.int32)
    exponent = _exponent(v)
    up = torch.where((bits & 0x7FFFFF) == 0, exponent, exponent + 1)
    up = torch.where(exponent == -127, torch.where(v > 2.0 ** -127, -126, -127), up)
    return torch.ldexp(torch.ones_like(v), up.clamp(-127, 127))


@fused
def _mx_rceil(t: torch.Tensor, fmt: str, rounding: str, u: torch.Tensor | None) -> torch.Tensor:
    """``mx_rceil`` with FP4 elements (any rounding, ``u`` the uniforms) or FP8 ones to nearest."""
    elem = MX_ELEMENTS[fmt]
    rows, k = t.shape
    blocks = t.reshape(rows, k // 32, 32)
    amax = blocks.abs().amax(-1, keepdim=True)
    scale = torch.where(amax > 0, _pow2_ceil(amax / elem.max), torch.full_like(amax, 2.0 ** -127))
    if elem is el.FP4_E2M1:
        u = None if u is None else u.reshape(blocks.shape)
        return (fp4_round(blocks / scale, rounding, u=u) * scale).reshape(rows, k)
    codes = el.encode_float(blocks / scale, elem)
    return (el.decode_float(codes, elem) * scale).reshape(rows, k)


def _pairwise_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum over the last dimension (a power of two) by folding halves: the order of a warp's
    butterfly reduction, and exact for a block of equal values."""
    while t.shape[-1] > 1:
        half = t.shape[-1] // 2
        t = t[..., :half] + t[..., half:]
    return t


def quest_mxfp4(t: torch.Tensor, ties: str = "down", hadamard: int = 0) -> Quantized:
    """QuEST's MXFP4 forward quantiser, with the arithmetic of Quartet's kernel
    (IST-DASLab/Quartet, ``mxfp4_triton.py``): per block of 32, ``std = sqrt(E[x^2] - E[x]^2)``,
    the power-of-two scale ``2^floor(log2(c * std + 1e-8))`` with ``c = 2.92247856 / 6`` (the
    RMS multiple that minimises a Gaussian's error, over FP4's largest value), elements rounded
    to nearest with ties toward zero and saturated at 6; the mask marks the values inside the
    range, whose gradient passes. A variance that rounding makes negative is taken as 0 (the
    kernel's square root would return NaN there). A constant block has no spread: its scale
    bottoms out at ``2^-27`` and it saturates, gradient masked, as in the kernel. ``hadamard``:
    ``t`` rotated first (``rotate_blocks``: Quartet's forward rotates by 32 points). The mask is
    float32 (1 where the gradient passes), what the backward multiplies by."""
    values, mask = quest_reference(t, ties, hadamard)
    return Quantized(values, mask=mask)


def quest_reference(t: torch.Tensor, ties: str = "down", hadamard: int = 0,
                    signs: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``quest_mxfp4``'s values and float32 mask, of ``t`` rotated first where ``hadamard`` (with
    ``signs``): the reference of the dispatch operation ``fake_quantize_quest``. Compiled, the
    rotation and the quantiser are two fused functions: inductor recomputes the butterflies for
    each of the quantiser's block reductions when they share one."""
    if hadamard:
        t = _rotated(t, hadamard, signs)
    return _quest_mxfp4(t, ties)


@fused
def _rotated(t: torch.Tensor, block: int, signs: torch.Tensor | None) -> torch.Tensor:
    return rotate_blocks(t, block, signs)


@fused
def _quest_mxfp4(t: torch.Tensor, ties: str) -> tuple[torch.Tensor, torch.Tensor]:
    rows, k = t.shape
    blocks = t.reshape(rows, k // 32, 32)
    mean = _pairwise_sum(blocks) / 32
    var = (_pairwise_sum(blocks * blocks) / 32 - mean * mean).clamp(min=0)
    # the square root correctly rounded (float64, then float32: exact for a float32 input), and
    # floor(log2) from the exponent field: ATen's vectorised float32 sqrt and log2 are an ulp off
    # in places where inductor's are not, and the floor turns such an ulp into a factor of 2
    std = var.double().sqrt().float()
    scale = torch.ldexp(torch.ones_like(std), _exponent(QUEST_GAUSSIAN_SCALE * std + 1e-8))
    scaled = blocks / scale
    values = (fp4_round(scaled, ties=ties) * scale).reshape(rows, k)
    # float32, not bool: inductor's CPU code stores a bool output elementwise, at several times the cost
    return values, (scaled.abs() < el.FP4_E2M1.max).to(torch.float32).reshape(rows, k)


def scaled_mm(qa: Quantized, qb: Quantized) -> torch.Tensor:
    """``A @ B^T`` on FP8 tensor cores: ``torch._scaled_mm`` with tensor or row scales, every
    dimension zero-padded to a multiple of 16 (cuBLASLt's requirement); the BF16 result
    ``torch._scaled_mm`` gives, which the caller casts once to the dtype it keeps."""
    a, b = qa.codes, qb.codes
    rows_a, rows_b = a.shape[0], b.shape[0]
    a = pad_rows(_pad_codes(a), 16)
    b = pad_rows(_pad_codes(b), 16)
    sa, sb = qa.scale, qb.scale
    if sa.numel() > 1:  # row scales: one per row of each operand, padded rows scaled by 1
        sa = torch.nn.functional.pad(sa.reshape(-1), (0, a.shape[0] - rows_a), value=1.0).reshape(-1, 1)
        sb = torch.nn.functional.pad(sb.reshape(-1), (0, b.shape[0] - rows_b), value=1.0).reshape(1, -1)
    else:
        sa, sb = sa.reshape(()), sb.reshape(())
    out = torch._scaled_mm(a, b.t(), scale_a=sa.float(), scale_b=sb.float(), out_dtype=torch.bfloat16)
    return out[:rows_a, :rows_b]


# |code| <= 127: an INT32 sum of this many products cannot overflow (2^31 - 1 >= 127^2 * INT32_SAFE_TERMS)
INT32_SAFE_TERMS = (2**31 - 1) // 127**2


@fused
def integer_codes(t: torch.Tensor, fmt: str = "int8", granularity: str = "tensor") -> tuple[torch.Tensor, torch.Tensor]:
    """``t``'s symmetric INT8 codes with one amax scale per tensor (``formats.quantize``'s), and that
    scale as a scalar: the operand of ``int8_mm``, and the reference of the dispatched
    ``quantize_codes`` (the only format and granularity it takes)."""
    if fmt != "int8" or granularity != "tensor":
        raise ValueError(f"integer codes are INT8 per tensor here, not {fmt} per {granularity}")
    codes, scale = F.integer_codes(t, fmt, granularity=granularity)
    return codes.to(torch.int8), scale.float().reshape(())


def int8_mm(qa: Quantized, qb: Quantized, pad: bool | None = None) -> torch.Tensor:
    """``A @ B^T`` as an INT8 GEMM computes it: the codes' products summed exactly in INT32
    (``torch._int_mm``), converted to FP32 and multiplied once by the product of the two tensor
    scales, which is HALO's INT8 kernel (IST-DASLab/HALO ``qllmt/nn/halo_helpers.py``: CUTLASS
    with ``alpha = scale_a * scale_b``). Exact integer sums make the result the same on any
    device. FP32 out. A contraction too long for INT32 is summed in chunks, in INT64. ``pad``
    (default: on CUDA) zero-pads every dimension as cuBLASLt's INT8 GEMM needs (more than 16 rows,
    K and N multiples of 8); zero codes add nothing."""
    a, b = qa.codes, qb.codes
    rows_a, rows_b, k = a.shape[0], b.shape[0], a.shape[1]
    if a.device.type == "cuda" if pad is None else pad:
        a, b = pad_rows(_pad_codes(a), 32), pad_rows(_pad_codes(b), 16)
    if k <= INT32_SAFE_TERMS:
        acc = torch._int_mm(a, b.t())
    else:
        acc = sum(torch._int_mm(a[:, i:i + INT32_SAFE_TERMS].contiguous(), b[:, i:i + INT32_SAFE_TERMS].t())
                  .to(torch.int64) for i in range(0, k, INT32_SAFE_TERMS))
    return acc[:rows_a, :rows_b].float() * (qa.scale * qb.scale)


def _pad_codes(codes: torch.Tensor) -> torch.Tensor:
    extra = (-codes.shape[-1]) % 16
    if not extra:
        return codes.contiguous()
    padded = torch.zeros(codes.shape[0], codes.shape[1] + extra, dtype=torch.uint8, device=codes.device)
    padded[:, :codes.shape[1]] = codes.view(torch.uint8)
    return padded.view(codes.dtype)  # byte 0 is +0.0 in both FP8 formats, and 0 in INT8


@contextlib.contextmanager
def no_autocast(device_type: str):
    """The quantised GEMMs compute in float32 whatever autocast the model runs under."""
    with torch.autocast(device_type=device_type, enabled=False):
        yield


# -- the autograd function ------------------------------------------------------------------------------
class _LowPrecisionLinearFn(torch.autograd.Function):
    """``Y = X W^T`` with the recipe's quantised forward, dgrad and wgrad GEMMs; Y in the layer's
    output dtype, the gradients in their inputs' dtypes, each rounded once from FP32."""

    @staticmethod
    def forward(ctx: Any, x2: torch.Tensor, weight: torch.Tensor, state: LayerState,
                out_dtype: torch.dtype) -> torch.Tensor:
        recipe = state.recipe
        g = recipe.forward
        ctx.fast = compiled.current_mode()  # the backward may run in another thread: take the mode along
        with no_autocast(x2.device.type):
            x, w = x2.detach().float(), weight.detach().float()
            amax = (None, None)
            if g.a.scaling == "delayed":
                amax = (state.delayed_amax("x", x), state.delayed_amax("w", w))
            ctx.amax_x, ctx.amax_w = amax
            if recipe.from_forward:
                # the rotation is undone in the backward by the plain (sign-free) Hadamard
                assert g.signs == "none", "a from_forward recipe rotates its forward without signs"
                qx, qw, block = state.quantize_pair(x, w, g)
                y = state.matmul(qx, qw, use_real=False, out_dtype=out_dtype, bf16_operands=g.bf16_operands)
                ctx.block = block
                ctx.save_for_backward(qx.values, qw.values,
                                      qx.mask if qx.mask is not None else torch.empty(0),
                                      qw.mask if qw.mask is not None else torch.empty(0))
            else:
                y = state.gemm(x, w, g, amax, out_dtype)
                if recipe.store_fp8_input:
                    ctx.x_fp8 = coat.fp8_tensor_copy(x)
                    ctx.save_for_backward(weight)
                else:
                    ctx.x_fp8 = None
                    ctx.save_for_backward(x2, weight)
        ctx.state = state
        ctx.k = x.shape[-1]
        ctx.x_dtype, ctx.w_dtype = x2.dtype, weight.dtype
        return y  # in the layer's output dtype: the gradient arrives in it

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple:
        state: LayerState = ctx.state
        recipe = state.recipe
        dx = dw = None
        with no_autocast(grad.device.type), compiled.emulation(ctx.fast):
            dy = grad.float()
            # the wgrad contracts the tokens: where its quantisers need dY^T and X^T laid out so, each
            # is made in one copy (float_transposed); elsewhere they are views (transposed_operand)
            if recipe.from_forward:
                xq, wq, mask_x, mask_w = ctx.saved_tensors
                if ctx.needs_input_grad[0]:
                    dx = _back_to_input_basis(state.gemm(dy, float_transposed(wq), recipe.dgrad),
                                              mask_x, ctx.block, ctx.k)
                if ctx.needs_input_grad[1]:
                    dw = _back_to_input_basis(state.gemm(float_transposed(grad), float_transposed(xq), recipe.wgrad),
                                              mask_w, ctx.block, ctx.k)
            else:
                if ctx.x_fp8 is not None:
                    (weight,) = ctx.saved_tensors
                    x = coat.fp8_tensor_copy_decoded(ctx.x_fp8.data, ctx.x_fp8.scale)
                else:
                    x, weight = ctx.saved_tensors
                amax_dy = state.delayed_amax("dy", dy) if recipe.dgrad.a.scaling == "delayed" else None
                dgrad, wgrad = recipe.dgrad, recipe.wgrad
                # dY quantised once where both GEMMs take it alike, as it lies, and both run real or
                # both emulated (torchao does the same)
                shared = None
                real = state.real_gemm(dgrad)
                if all(ctx.needs_input_grad[:2]) and dgrad.a == wgrad.a and real == state.real_gemm(wgrad) and all(
                        g.takes_view("a") and g.contraction_multiple == 1 for g in (dgrad, wgrad)):
                    shared = state.quantize(dy, dgrad.a, amax_dy, real=real)
                if ctx.needs_input_grad[0]:
                    dx = state.gemm(dy, transposed_operand(weight.detach(), dgrad.takes_view("b")), dgrad,
                                    (amax_dy, ctx.amax_w), ctx.x_dtype, given=shared)
                    dx = dx[:, :ctx.k]
                if ctx.needs_input_grad[1]:
                    dy_t = dy.t() if wgrad.takes_view("a") else float_transposed(grad)
                    dw = state.gemm(dy_t, transposed_operand(x, wgrad.takes_view("b")), wgrad, (amax_dy, ctx.amax_x),
                                    ctx.w_dtype, given=None if shared is None else shared.transposed())
                    dw = dw[:, :ctx.k]
        return (dx.to(ctx.x_dtype) if dx is not None else None,
                dw.to(ctx.w_dtype) if dw is not None else None, None, None)


def float_transposed(t: torch.Tensor) -> torch.Tensor:
    """``t^T`` as a contiguous float32 tensor, in one copy (the cast and the transpose together:
    the backward's operands come in BF16 and lie along the wrong dimension)."""
    out = torch.empty((t.shape[1], t.shape[0]), dtype=torch.float32, device=t.device)
    return out.copy_(t.t())


def transposed_operand(t: torch.Tensor, view: bool) -> torch.Tensor:
    """``t^T`` in float32: a view where the GEMM takes one (``Gemm.takes_view``: its quantiser takes
    it as it lies and the GEMM reads it in place), else a contiguous copy (``float_transposed``)."""
    return t.float().t() if view else float_transposed(t)


def _back_to_input_basis(grad: torch.Tensor, mask: torch.Tensor, block: int, k: int) -> torch.Tensor:
    """Quartet: a gradient w.r.t. the rotated, quantised operand -> w.r.t. the original one:
    zero where the forward clipped (QuEST's trust mask), rotate back, drop the padding."""
    if mask.numel():
        grad = grad * mask.to(grad.dtype)
    if block > 1:
        grad = rotate(grad, block)  # the plain block Hadamard is symmetric: its own inverse
    return grad[:, :k]


class LowPrecisionLinear(nn.Linear):
    """An ``nn.Linear`` (same parameters) whose three training GEMMs follow a ``LinearRecipe``.

    It subclasses ``nn.Linear`` so that peft's adapters wrap it as they wrap any linear layer
    (``fp8-train+lora``). The output has the autocast dtype where autocast is on (as a real
    FP8 GEMM returns BF16), else the input's dtype; the bias is added in that dtype.
    """

    state: LayerState

    @classmethod
    def from_linear(cls, linear: nn.Linear, state: LayerState) -> LowPrecisionLinear:
        layer = cls.__new__(cls)
        nn.Module.__init__(layer)
        layer.in_features, layer.out_features = linear.in_features, linear.out_features
        layer.weight = linear.weight
        layer.bias = linear.bias
        layer.state = state
        layer.train(linear.training)
        return layer

    def to_linear(self) -> nn.Linear:
        """A plain ``nn.Linear`` with the same parameters (merge, export)."""
        plain = nn.Linear.__new__(nn.Linear)
        nn.Module.__init__(plain)
        plain.in_features, plain.out_features = self.in_features, self.out_features
        plain.weight, plain.bias = self.weight, self.bias
        plain.train(self.training)
        return plain

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        device_type = x.device.type
        out_dtype = torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else x.dtype
        shape = x.shape
        y = _LowPrecisionLinearFn.apply(x.reshape(-1, shape[-1]), self.weight, self.state, out_dtype)
        y = y.reshape(*shape[:-1], self.out_features)
        if self.bias is not None:
            y = y + self.bias.to(out_dtype)
        return y

    def extra_repr(self) -> str:
        mode = "real FP8" if self.state.real else "emulated"
        return super().extra_repr() + f", {mode}"


def check_real_shapes(layers: dict[str, nn.Linear]) -> list[str]:
    """Layers whose dimensions ``torch._scaled_mm`` cannot take (both must be multiples of 16)."""
    return [f"{name} ({lin.out_features} x {lin.in_features})" for name, lin in layers.items()
            if lin.in_features % 16 or lin.out_features % 16]
