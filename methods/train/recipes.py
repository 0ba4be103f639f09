"""The low-precision training recipes (kind ``train``), registered for ``--methods``.

Every recipe name ends in ``-train`` (``fp8-train``, ``mxfp8-train``, ...), so it is never
confused with the post-training quantizers that own ``mxfp8``, ``nvfp4`` and ``w8a8``.
Each replaces the model's linear layers (``layers.target_linears``) by ``LowPrecisionLinear``,
whose forward, grad-input (dgrad) and grad-weight (wgrad) GEMMs are quantised as the
recipe's ``LinearRecipe`` says (``gemm``), and trains under BF16 autocast with FP32 master
weights, like its baseline ``bf16-train``: only the linear layers' GEMMs differ.

Emulated or real: FP8 recipes with tensor or row scales (``fp8-train``, ``halo-train``
with ``format=fp8``, ``coat-train``) take ``real=auto|true|false``: ``auto`` (default)
runs the GEMMs on FP8 tensor cores (``torch._scaled_mm``) where the GPU has them and
emulates them elsewhere, saying so on a GPU; ``true`` refuses to run without them (and
refuses layers whose shapes the FP8 GEMM cannot take); ``false`` always emulates. INT8
per tensor (``halo-train``'s default) takes the same switch: ``auto`` multiplies the codes
in an integer GEMM (``torch._int_mm``, on CPUs and CUDA GPUs alike). The MX and NVFP4
recipes are always emulated here. Every cell stores
``train_gemm_emulated`` (1: some GEMM ran emulated) and ``train_gemm_real_fraction``.

``operand_table`` writes every recipe's operand table (format, block, scale, rounding,
rotation, clipping of X, W and dY in each GEMM) from the declarations themselves; the
README's copy is checked against it (tests/test_recipes_faithful.py).

Plugin module: torch and the machinery are imported inside the methods.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any, Literal

from suite.errors import CellFailure, UserError
from suite.method import Method, MethodContext, MethodTarget, NoConfig
from suite.methods.common import measurements
from suite.metrics import cost
from suite.registry import METHODS, register_method

REAL_CHOICES = {"auto": "auto", "true": "true", "yes": "true", "1": "true", "on": "true",
                "false": "false", "no": "false", "0": "false", "off": "false"}


@dataclass
class RecipeConfig:
    skip: tuple[str, ...] = ()  # layer-name substrings kept in BF16 (e.g. NVIDIA's last blocks)


@dataclass
class RealConfig(RecipeConfig):
    # auto: FP8 tensor cores where the GPU has them, emulated elsewhere; true: refuse without
    # them; false: always emulate
    real: str = "auto"

    def __post_init__(self) -> None:
        value = str(self.real).strip().lower()
        if value not in REAL_CHOICES:
            raise ValueError(f"real must be auto, true or false, got {self.real!r}")
        self.real = REAL_CHOICES[value]


def _bf16_policy(policy: Any) -> Any:
    """BF16 autocast with FP32 master weights: the baseline's policy, shared by every recipe."""
    from suite.precision import BF16_AUTOCAST

    return BF16_AUTOCAST


class TrainRecipe(Method):
    """Shared ``apply``: swap the linear layers, decide real or emulated, leave the rest to train."""

    kind = "train"
    mergeable = True  # the trained weights are plain linear weights
    version = "1"
    Config = RecipeConfig
    metrics = (measurements.GEMM_EMULATED, measurements.GEMM_REAL_FRACTION)

    def linear_recipe(self) -> Any:
        raise NotImplementedError

    def precision_policy(self, policy: Any) -> Any:
        return _bf16_policy(policy)

    def apply(self, model: Any, ctx: MethodContext) -> Any:
        from suite.methods.train.gemm import LayerState, LowPrecisionLinear, check_real_shapes
        from suite.methods.train.layers import (
            freeze_pretrained_embeddings,
            set_module,
            target_linears,
        )

        recipe = self.linear_recipe()
        layers = target_linears(model, ctx, tuple(self.config.skip))
        self.bf16_names = self.kept_in_bf16(model, list(layers))
        layers = {n: m for n, m in layers.items() if n not in self.bf16_names}
        if not layers:
            raise CellFailure(f"{self.name}: every linear layer is kept in BF16 ({len(self.bf16_names)} by "
                              f"position); nothing would train in low precision")
        self.check_layers(layers)
        real = self.use_real(ctx, layers, recipe)
        integer = recipe.int8_products  # torch._int_mm takes any shape (padded)
        bad = set() if integer else {entry.split(" ")[0] for entry in check_real_shapes(layers)}
        history = getattr(self.config, "amax_history", 16)
        for index, (name, linear) in enumerate(layers.items()):
            state = LayerState(name, recipe, seed=ctx.seed * 1_000_003 + index,
                               real=real and name not in bad, amax_history=history)
            set_module(model, name, LowPrecisionLinear.from_linear(linear, state))
        freeze_pretrained_embeddings(model, ctx)
        self.after_apply(model, ctx)
        ctx.notes[f"{self.name}.gemm"] = ("real INT8" if integer else "real FP8") if real else "emulated"
        return model

    def after_apply(self, model: Any, ctx: MethodContext) -> None:
        """Recipe-specific changes beyond the linear layers (COAT's FP8 activations)."""

    def kept_in_bf16(self, model: Any, names: list[str]) -> list[str]:
        """Layers the recipe itself keeps in BF16 by position (NVIDIA's NVFP4 recipe); none here."""
        return []

    def check_layers(self, layers: dict) -> None:
        """Refuse layers the recipe cannot take (HALO's full-size rotation), with the reason."""

    def use_real(self, ctx: MethodContext, layers: dict, recipe: Any) -> bool:
        """Whether the GEMMs run real, FP8 on tensor cores or INT8 codes in an integer GEMM:
        ``real`` against the device and shapes."""
        mode = getattr(self.config, "real", "false")
        if mode == "false":
            return False
        from suite.methods.quant.layers import fp8_matmul_supported, int8_matmul_supported
        from suite.methods.train.gemm import check_real_shapes

        if recipe.int8_products:
            ok, why = int8_matmul_supported(ctx.device)
            if not ok and mode == "true":
                raise UserError(f"{self.name}: real=true asks for INT8 GEMMs (torch._int_mm), but {why}; use "
                                f"real=auto or real=false to emulate them (stored as train_gemm_emulated=1)")
            if not ok:
                print(f"{self.name}: {why}; the GEMMs run emulated (stored as train_gemm_emulated=1)", file=sys.stderr)
            return ok
        if not all(op.real_capable for op in recipe.operands()):
            if mode == "true":
                raise UserError(f"{self.name}: real=true needs every GEMM operand in FP8 with tensor or "
                                f"row scales, or in INT8 per tensor; this configuration has others, which run "
                                f"emulated here. Drop real=true")
            return False
        ok, why = fp8_matmul_supported(ctx.device)
        if not ok:
            if mode == "true":
                raise UserError(f"{self.name}: real=true asks for FP8 GEMMs (torch._scaled_mm), but {why}; "
                                f"use real=auto or real=false to emulate them (stored as "
                                f"train_gemm_emulated=1)")
            if str(ctx.device).startswith("cuda"):
                print(f"{self.name}: {why}; the GEMMs run emulated (stored as train_gemm_emulated=1; "
                      f"real=true refuses instead)", file=sys.stderr)
            return False
        bad = check_real_shapes(layers)
        if bad and mode == "true":
            raise UserError(f"{self.name}: real=true: FP8 GEMMs (cuBLASLt) need both dimensions of a layer "
                            f"divisible by 16, and {len(bad)} layer(s) are not: {', '.join(bad[:6])}"
                            f"{' ...' if len(bad) > 6 else ''}. Keep them in BF16 with skip=<name>, or use "
                            f"real=auto (emulates those layers)")
        return True

    def measurements(self, model: Any) -> dict[str, float]:
        from suite.methods.train.gemm import LowPrecisionLinear

        states = [m.state for m in model.modules() if isinstance(m, LowPrecisionLinear)]
        real = sum(s.real_gemms for s in states)
        emulated = sum(s.emulated_gemms for s in states)
        total = real + emulated
        if total:
            any_emulated = emulated > 0
        else:  # nothing ran (no step, no evaluation): what the layers were set up to do
            any_emulated = not all(s.real for s in states)
        return {"train_lowp_layers": float(len(states)),
                "train_gemm_emulated": 1.0 if any_emulated else 0.0,
                "train_gemm_real_fraction": real / total if total else 0.0}

    def merge(self, model: Any) -> Any:
        from suite.methods.train.gemm import LowPrecisionLinear
        from suite.methods.train.layers import replace_back

        return replace_back(model, LowPrecisionLinear, lambda m: m.to_linear())


BF16_LAYERS = cost("train_bf16_layers", "linear layers kept in BF16", fmt="count",
                   summary="linear layers a recipe keeps in BF16 by their position in the model; each one is "
                           "also stored as train_bf16_layers/<layer name> = 1")


@register_method("bf16-train", kind="train", source="suite",
                 summary="BF16 baseline of the training recipes: forward, dgrad and wgrad GEMMs with BF16 "
                         "operands (autocast), FP32 accumulation and master weights; real on every device",
                 paper="Kalamkar et al. 2019, A Study of BFLOAT16 for Deep Learning Training (arXiv:1905.12322)")
class Bf16Train(TrainRecipe):
    """The baseline: plain training under BF16 autocast with FP32 master weights.

    All three GEMMs (forward ``X W^T``, dgrad ``dY W``, wgrad ``dY^T X``) take BF16 operands
    (autocast rounds them), accumulate in FP32 and return BF16, on the device's own BF16
    kernels (real, not emulated). Nothing else changes: this recipe trains exactly like any
    method under ``--precision bf16``, and every other recipe differs from it only in its
    linear layers' GEMMs.
    """

    Config = NoConfig

    def linear_recipe(self) -> Any:
        """BF16 operands everywhere: what autocast does, declared for the operand table only."""
        from suite.methods.train.gemm import Gemm, LinearRecipe, Operand

        bf16 = Operand("bf16")
        return LinearRecipe(Gemm(bf16, bf16), Gemm(bf16, bf16), Gemm(bf16, bf16))

    def apply(self, model: Any, ctx: MethodContext) -> Any:
        from suite.methods.train.layers import freeze_pretrained_embeddings

        freeze_pretrained_embeddings(model, ctx)
        return model

    def measurements(self, model: Any) -> dict[str, float]:
        return {"train_gemm_emulated": 0.0, "train_gemm_real_fraction": 1.0}

    def merge(self, model: Any) -> Any:
        return model


@dataclass
class Fp8Config(RealConfig):
    scaling: Literal["tensor", "row", "delayed"] = "tensor"
    amax_history: int = 16  # delayed scaling: steps of amax history (TransformerEngine: 1024)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.amax_history < 1:
            raise ValueError("amax_history must be at least 1")


@register_method("fp8-train", kind="train", source="suite",
                 summary="FP8 training (HYBRID): forward X,W E4M3; dgrad dY E5M2 x W E4M3; wgrad dY E5M2 x "
                         "X E4M3; scaling=tensor|row|delayed; torch._scaled_mm on FP8 GPUs, else emulated",
                 paper="Micikevicius et al. 2022, FP8 Formats for Deep Learning (arXiv:2209.05433)")
class Fp8Train(TrainRecipe):
    """FP8 training with TransformerEngine's HYBRID format.

    ============  ===========================  ==========================
    GEMM          A                            B
    ============  ===========================  ==========================
    forward       X   E4M3                     W   E4M3
    dgrad         dY  E5M2                     W^T E4M3
    wgrad         dY^T E5M2                    X^T E4M3
    ============  ===========================  ==========================

    Scales run along each GEMM's contraction: ``scaling=tensor`` (one amax scale per tensor,
    torchao's tensorwise and TransformerEngine's Float8CurrentScaling), ``row`` (one per
    row of the operand as the GEMM reads it: per token for X and dY in the forward and dgrad,
    per output channel for W, per input feature for X^T in the wgrad) or ``delayed`` (per
    tensor, from the largest amax of the last ``amax_history`` steps: TransformerEngine's
    DelayedScaling; values above the range saturate). Rounding to nearest, saturating.
    """

    Config = Fp8Config

    def linear_recipe(self) -> Any:
        from suite.methods.train.gemm import Gemm, LinearRecipe, Operand

        s = self.config.scaling
        e4, e5 = Operand("e4m3", s), Operand("e5m2", s)
        return LinearRecipe(Gemm(e4, e4), Gemm(e5, e4), Gemm(e5, e4))


@dataclass
class Mxfp8Config(RecipeConfig):
    grad_element: Literal["e4m3", "e5m2"] = "e4m3"  # the gradient's element type
    # E8M0 scale: rceil rounds up (no saturation; TransformerEngine's and torchao's training
    # rule), floor is the OCP spec's (the block maximum may saturate)
    scale: Literal["rceil", "floor"] = "rceil"


@dataclass
class Mxfp4Config(RecipeConfig):
    scale: Literal["floor", "rceil"] = "floor"  # floor: the OCP spec's rule, the plain baseline


@register_method("mxfp8-train", kind="train", source="suite",
                 summary="MXFP8 training: all six GEMM operands (X,W fwd; dY,W dgrad; dY,X wgrad) MXFP8 E4M3, "
                         "1x32 blocks along the contraction, E8M0 scales rounded up (scale=floor: OCP); emulated",
                 paper="Rouhani et al. 2023, Microscaling Data Formats for Deep Learning (arXiv:2310.10537)")
class Mxfp8Train(TrainRecipe):
    """MXFP8 training (OCP Microscaling; TransformerEngine's MXFP8BlockScaling, torchao's mxfp8).

    Every operand of every GEMM (X, W forward; dY, W^T dgrad; dY^T, X^T wgrad) is MXFP8:
    E4M3 elements (dY: ``grad_element``), one E8M0 scale per block of 32 consecutive values
    along the GEMM's contraction, so X and W are quantised again along the other axis for
    the backward. Scale: ``2^ceil(log2(amax / max))`` (``scale=rceil``, no saturation, what
    TransformerEngine and torchao train with) or the OCP spec's ``2^(floor(log2 amax) -
    emax)`` (``scale=floor``); rounding to nearest. Emulated: real MX GEMMs need Blackwell
    and are not implemented here.
    """

    Config = Mxfp8Config

    def linear_recipe(self) -> Any:
        from suite.methods.train.gemm import Gemm, LinearRecipe, Operand

        rule = "rceil" if self.config.scale == "rceil" else "block"
        mx = Operand("mxfp8", rule)
        grad = Operand("mxfp8" if self.config.grad_element == "e4m3" else "mxfp8_e5m2", rule)
        return LinearRecipe(Gemm(mx, mx), Gemm(grad, mx), Gemm(grad, mx))


@register_method("mxfp4-train", kind="train", source="suite",
                 summary="MXFP4 round-to-nearest training: all six GEMM operands MXFP4 (E2M1, 1x32 blocks "
                         "along the contraction, E8M0 scales), no rotation, no stochastic rounding; emulated",
                 paper="Rouhani et al. 2023, Microscaling Data Formats for Deep Learning (arXiv:2310.10537)")
class Mxfp4Train(TrainRecipe):
    """Plain MXFP4 training, the baseline Quartet improves on.

    Every operand of every GEMM (X, W forward; dY, W^T dgrad; dY^T, X^T wgrad) is MXFP4:
    E2M1 elements, one E8M0 scale per 32 values along the contraction (the OCP spec's floor
    rule, or ``scale=rceil``), rounded to nearest; no Hadamard rotation, no stochastic
    rounding. Emulated.
    """

    Config = Mxfp4Config

    def linear_recipe(self) -> Any:
        from suite.methods.train.gemm import Gemm, LinearRecipe, Operand

        mx = Operand("mxfp4", "rceil" if self.config.scale == "rceil" else "block")
        return LinearRecipe(Gemm(mx, mx), Gemm(mx, mx), Gemm(mx, mx))


def _block_count(entry: str, blocks: int) -> int:
    """How many blocks ``first:X`` / ``last:X`` names: X a count, or a fraction ``a/b`` of the
    model's blocks rounded half up."""
    amount = entry.split(":", 1)[1]
    if "/" in amount:
        a, b = (float(v) for v in amount.split("/", 1))
        return min(blocks, int(blocks * a / b + 0.5))
    return min(blocks, int(amount))


@dataclass
class Nvfp4Config(RecipeConfig):
    rht: bool = True  # random Hadamard (16-point) on the wgrad GEMM's operands
    stochastic: bool = True  # stochastic rounding of the output gradient dY
    tiles: bool = True  # weights in 16x16 tiles (one scale for W and W^T); false: 1x16 like the rest
    # transformer blocks whose linear layers stay in BF16: first:X / last:X, X a count or a
    # fraction a/b of the blocks (rounded half up); the default is the paper's 12B model's
    # 2 first and 8 last of 62 blocks; none (or empty): every block in NVFP4
    bf16_layers: tuple[str, ...] = ("first:2/62", "last:8/62")

    def __post_init__(self) -> None:
        entries = tuple(str(e).strip() for e in self.bf16_layers if str(e).strip().lower() not in ("", "none"))
        for entry in entries:
            where, _, amount = entry.partition(":")
            parts = amount.split("/")
            ok = where in ("first", "last") and 1 <= len(parts) <= 2 and all(v.strip().isdigit() for v in parts) \
                and (len(parts) == 1 or int(parts[1]) > 0)
            if not ok:
                raise ValueError(f"bf16_layers entries are first:X or last:X with X a count or a fraction a/b "
                                 f"of the blocks (e.g. last:8/62|first:2/62, or none), got {entry!r}")
        self.bf16_layers = entries


@register_method("nvfp4-train", kind="train", source="suite",
                 summary="NVIDIA's NVFP4 recipe: fwd X NVFP4 1x16, W 16x16 tiles; dgrad dY 1x16 stochastic "
                         "x W tiles; wgrad dY^T (stochastic), X^T 1x16 after a random 16-pt Hadamard; first 2/62 "
                         "and last 8/62 of the blocks in BF16; emulated",
                 paper="NVIDIA 2025, Pretraining Large Language Models with NVFP4 (arXiv:2509.25149)")
class Nvfp4Train(TrainRecipe):
    """NVIDIA's NVFP4 pretraining recipe (TransformerEngine's NVFP4BlockScaling).

    ============  =====================================  =====================================
    GEMM          A                                      B
    ============  =====================================  =====================================
    forward       X    NVFP4 1x16, nearest               W    NVFP4 16x16 tiles, nearest
    dgrad         dY   NVFP4 1x16, stochastic            W^T  NVFP4 16x16 tiles (= forward's W)
    wgrad         dY^T NVFP4 1x16, stochastic, RHT       X^T  NVFP4 1x16, nearest, RHT
    ============  =====================================  =====================================

    NVFP4: E2M1 elements, an E4M3 scale per block and an FP32 scale per tensor. RHT: a 16 x 16
    Hadamard with one random sign vector per layer (drawn once from the seed) on the wgrad
    GEMM's contraction (the tokens), which cancels in the product. ``rht``, ``stochastic``
    and ``tiles`` switch the three parts off for ablations.

    Selective BF16 layers: training diverged with every linear layer in NVFP4, so the paper
    keeps the linear layers of a few blocks in BF16, mostly final ones (NVIDIA 2025,
    arXiv:2509.25149, "selective high-precision layers": the 12B model's first 2 and last 8 of
    its 62 blocks, about 16% of the linear layers). ``bf16_layers`` takes those positions as
    fractions of the model's depth (``first:2/62``, ``last:8/62``, rounded half up: a 5-block
    model keeps its last block); ``bf16_layers=none`` quantises every block. The cell stores
    which layers ran in BF16 (``train_bf16_layers``). ``skip`` keeps further layers by name.
    Emulated.
    """

    Config = Nvfp4Config
    # 2: the paper's BF16 blocks kept by default; 3: stochastic rounding by counter-based uniforms
    # (suite.numerics.counter_rng), the wgrad's RHT by butterflies in the quantiser's pass
    version = "3"
    metrics = (*TrainRecipe.metrics, BF16_LAYERS)

    def kept_in_bf16(self, model: Any, names: list[str]) -> list[str]:
        from suite.methods.train.layers import block_index

        where, blocks = block_index(model, names)
        chosen: set[int] = set()
        for entry in self.config.bf16_layers:
            count = _block_count(entry, blocks)
            chosen |= set(range(count)) if entry.startswith("first") else set(range(blocks - count, blocks))
        return [n for n in names if where.get(n) in chosen]

    def measurements(self, model: Any) -> dict[str, float]:
        out = super().measurements(model)
        kept = getattr(self, "bf16_names", [])
        out["train_bf16_layers"] = float(len(kept))
        out.update({f"train_bf16_layers/{name}": 1.0 for name in kept})
        return out

    def linear_recipe(self) -> Any:
        from suite.methods.train.gemm import Gemm, LinearRecipe, Operand

        c = self.config
        block = Operand("nvfp4", "block")
        weight = Operand("nvfp4", "tile") if c.tiles else block
        grad = Operand("nvfp4", "block", "stochastic" if c.stochastic else "nearest")
        return LinearRecipe(Gemm(block, weight), Gemm(grad, weight),
                            Gemm(grad, block, hadamard=16 if c.rht else 0, signs="layer" if c.rht else "none"))


@register_method("quartet-train", kind="train", source="suite",
                 summary="Quartet FP4: fwd X,W MXFP4 after a 32-pt Hadamard with QuEST RMS scale + clip mask; "
                         "dgrad dY x W and wgrad dY^T x X MXFP4 stochastic after random re-rotation; emulated",
                 paper="Castro et al. 2025, Quartet: Native FP4 Training (arXiv:2505.14669)")
class QuartetTrain(TrainRecipe):
    """Quartet: all three GEMMs in MXFP4.

    Forward: X and W rotated by the 32-point Hadamard H along K, then MXFP4 with QuEST's
    scale (per block of 32, the power of two below 2.92 / 6 times the block's RMS about its
    mean), rounded to nearest and clipped at the format's range; the clip masks are kept.
    Backward, from the forward's quantised rotated operands: a fresh random-sign 32-point
    Hadamard on each GEMM's contraction, MXFP4 with stochastic rounding and the OCP scale
    divided by 3/4 (no saturation):

    ============  =====================================  =====================================
    GEMM          A                                      B
    ============  =====================================  =====================================
    forward       X H   MXFP4 QuEST, nearest             W H   MXFP4 QuEST, nearest
    dgrad         dY    MXFP4 SR (re-rotated along N)    (W H)_q^T  MXFP4 SR (re-rotated)
    wgrad         dY^T  MXFP4 SR (re-rotated along M)    (X H)_q^T  MXFP4 SR (re-rotated)
    ============  =====================================  =====================================

    Each gradient (w.r.t. X H and W H) is zeroed where the forward clipped (QuEST's trust
    mask) and rotated back by H. The forward quantiser follows the arithmetic of Quartet's
    kernel (IST-DASLab/Quartet, ``src/models/quantization/quantizers/mxfp4_triton.py``):
    exact ties round toward zero (its thresholds are strict), the variance that rounding
    makes negative is clamped at 0 (where the kernel's square root gives NaN), and a constant
    block saturates with its gradient masked. Emulated.
    """

    # 2: the kernel's tie rule and variance clamp; 3: the backward's stochastic rounding by counter-based
    # uniforms (suite.numerics.counter_rng), the 32-point rotations by butterflies in the quantiser's pass
    version = "3"

    def linear_recipe(self) -> Any:
        from suite.methods.train.gemm import Gemm, LinearRecipe, Operand

        quest = Operand("mxfp4", "quest", ties="down")
        sr = Operand("mxfp4", "sr34", "stochastic")
        return LinearRecipe(Gemm(quest, quest, hadamard=32), Gemm(sr, sr, hadamard=32, signs="step"),
                            Gemm(sr, sr, hadamard=32, signs="step"), from_forward=True)


@dataclass
class HaloConfig(RealConfig):
    format: Literal["int8", "fp8"] = "int8"
    level: int = 2  # 0: no rotation; 1: forward X H, W H; 2: and dY rotated along the tokens in dgrad
    block: int = 0  # 0: full-size Hadamard (HALO's); a power of two: blocks of that size (ablation)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.level not in (0, 1, 2):
            raise ValueError("level must be 0, 1 or 2")
        if self.block < 0 or (self.block and (self.block < 2 or self.block & (self.block - 1))):
            raise ValueError(f"block must be 0 (full size) or a power of two >= 2, got {self.block}")


@register_method("halo-train", kind="train", source="suite",
                 summary="HALO: per-tensor INT8|FP8 E4M3 for all six operands; fwd X H x W H (full-size Hadamard "
                         "on K), dgrad dY rotated along tokens x W (level 2), wgrad dY^T x X^T; real INT8 (torch._int_mm) "
                         "or FP8 GEMMs where the device has them, else emulated",
                 paper="Ashkboos et al. 2025, HALO: Hadamard-Assisted Lower-Precision Optimization "
                       "(arXiv:2501.02625)")
class HaloTrain(TrainRecipe):
    """HALO's Hadamard placements for INT8 and FP8 training and fine-tuning.

    Every operand is quantised per tensor to ``format`` (INT8 symmetric, or FP8 E4M3 for
    gradients too, as HALO does):

    ============  ==========================================  ===========================
    GEMM          A                                           B
    ============  ==========================================  ===========================
    forward       X H (level >= 1)                            W H (level >= 1)
    dgrad         H_M dY (level 2: rotated along the tokens)  W^T
    wgrad         dY^T                                        X^T
    ============  ==========================================  ===========================

    H: the Hadamard of the whole of K on both forward operands (it cancels), as HALO rotates
    (IST-DASLab/HALO, ``qllmt/functional/hadamard.py``): a power of two, or ``H_k (x) H_(2^m)``
    for the widths HALO builds that way (``suite.numerics.hadamard.apply_hadamard``; 352 =
    44 x 8). A width without one is refused before any cell runs; ``block=b`` rotates in
    blocks of ``b`` instead. H_M: the same along the tokens of dY (zero-padded to the next
    size the construction takes), undone on dX. The backward reads the saved high-precision
    X and W.

    ``real`` (auto): INT8 codes are multiplied in an integer GEMM (``gemm.int8_mm``:
    ``torch._int_mm``, CPUs and CUDA GPUs), the products summed exactly in INT32 and scaled
    once by ``scale_a * scale_b`` in FP32, as HALO's INT8 kernel does; FP8 runs on tensor cores
    where the GPU has them. ``real=false`` emulates either: the dequantised values multiplied
    in FP32.
    """

    Config = HaloConfig
    # 2: full-size rotations (were blocks of the largest power of two dividing K); 3: INT8 GEMMs
    # real by default (exact INT32 sums, then the scales), were FP32 products of dequantised values
    version = "3"

    def linear_recipe(self) -> Any:
        from suite.methods.train.gemm import Gemm, LinearRecipe, Operand

        c = self.config
        op = Operand("int8", "tensor") if c.format == "int8" else Operand("e4m3", "tensor")
        size = c.block or -1
        return LinearRecipe(Gemm(op, op, hadamard=size if c.level >= 1 else 0),
                            Gemm(op, op, outer_hadamard=size if c.level >= 2 else 0), Gemm(op, op))

    def _unrotatable(self, layers: Any) -> list[str]:
        from suite.numerics.hadamard import hadamard_factor

        if self.config.block or self.config.level < 1:
            return []
        return [f"{name} (in_features {m.in_features})" for name, m in layers if hadamard_factor(m.in_features) is None]

    def _refusal(self, bad: list[str]) -> str:
        from suite.numerics.hadamard import KRONECKER_ORDERS

        return (f"halo-train rotates each linear layer's input at full size (a power of two, or one times "
                f"{', '.join(map(str, KRONECKER_ORDERS))}, HALO's Kronecker construction), and "
                f"{len(bad)} layer(s) have no such size: {', '.join(bad[:6])}{' ...' if len(bad) > 6 else ''}. "
                f"Rotate in blocks with block=<power of two> (e.g. block=32), or keep them in BF16 with skip=<name>")

    def unsupported(self, target: MethodTarget) -> str | None:
        if self.config.block or self.config.level < 1:
            return None
        skeleton = target.skeleton()
        if skeleton is None:
            return None
        from torch import nn

        linears = [(n, m) for n, m in skeleton.named_modules() if isinstance(m, nn.Linear)
                   and not any(s and (s in n or s.endswith(n)) for s in self.config.skip)]
        bad = self._unrotatable(linears)
        return self._refusal(bad) if bad else None

    def check_layers(self, layers: dict) -> None:
        bad = self._unrotatable(list(layers.items()))
        if bad:
            raise UserError(self._refusal(bad))


@dataclass
class CoatConfig(RealConfig):
    grad_format: Literal["e5m2", "e4m3"] = "e5m2"  # the output gradient dY in dgrad and wgrad; e4m3: ablation
    optimizer_states: Literal["fp8", "recipe"] = "fp8"  # recipe: the --optimizer's own states
    fp8_activations: bool = True  # norms' and activation functions' inputs kept as FP8 per group
    group: int = 16  # values per scale of those activations

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.group < 1:
            raise ValueError("group must be a positive integer")


@register_method("coat-train", kind="train", source="suite",
                 summary="COAT: FP8 per tensor, X and W E4M3, the gradient dY E5M2 (grad_format=e4m3: ablation), "
                         "X kept as FP8; FP8 AdamW states with dynamic range expansion (groups of 128); "
                         "norm/activation inputs FP8 per group of 16",
                 paper="Xi et al. 2025, COAT: Compressing Optimizer states and Activations for FP8 Training "
                       "(arXiv:2410.19313)")
class CoatTrain(TrainRecipe):
    """COAT: FP8 GEMMs plus FP8 optimizer states and FP8 activations.

    ============  =====================  =====================
    GEMM          A                      B
    ============  =====================  =====================
    forward       X    E4M3 per tensor   W    E4M3 per tensor
    dgrad         dY   E5M2 per tensor   W^T  E4M3 per tensor
    wgrad         dY^T E5M2 per tensor   X^T  E4M3 per tensor
    ============  =====================  =====================

    Gradients in E5M2, as COAT ships (NVlabs/COAT, ``coat/utils/_fp8_quantization_config.py``
    and ``examples/OLMo/configs/coat/*.yaml``: ``fabit``, ``fwbit`` E4M3, ``bobit`` E5M2):
    E4M3's range (448 to 2^-9) flushes small gradients that E5M2's keeps; ``grad_format=e4m3``
    is the ablation. The linear layers keep X for the backward as FP8 codes (per tensor). Through the
    optimizer seam, AdamW's two moments are stored as FP8 E4M3 with dynamic range expansion
    (``coat.CoatAdamW``; ``optimizer_states=recipe`` uses the ``--optimizer`` instead), and
    the inputs of norm layers and activation functions are kept as FP8 with one scale per
    ``group`` values (``coat.store_fp8_activations``). The storage is real FP8 on any device;
    the GEMMs are emulated unless ``real`` finds FP8 tensor cores.
    """

    Config = CoatConfig
    version = "2"  # 2: E5M2 gradients
    metrics = (*TrainRecipe.metrics, measurements.OPTIMIZER_STATE)

    def linear_recipe(self) -> Any:
        from suite.methods.train.gemm import Gemm, LinearRecipe, Operand

        op, grad = Operand("e4m3", "tensor"), Operand(self.config.grad_format, "tensor")
        return LinearRecipe(Gemm(op, op), Gemm(grad, op), Gemm(grad, op), store_fp8_input=True)

    def after_apply(self, model: Any, ctx: MethodContext) -> None:
        if self.config.fp8_activations:
            from suite.methods.train.coat import store_fp8_activations

            self.patched = store_fp8_activations(model, self.config.group)

    def make_optimizer(self, model: Any, groups: list[dict], recipe: Any) -> Any:
        if self.config.optimizer_states != "fp8":
            return None
        if recipe.optimizer != "adamw":
            raise UserError(f"coat-train keeps AdamW's states in FP8 and replaces --optimizer "
                            f"{recipe.optimizer}; use optimizer_states=recipe to train with it instead")
        from suite.methods.train.coat import CoatAdamW

        self.optimizer = CoatAdamW(groups, lr=recipe.lr)
        return self.optimizer

    def measurements(self, model: Any) -> dict[str, float]:
        out = super().measurements(model)
        optimizer = getattr(self, "optimizer", None)
        if optimizer is not None:
            out["optimizer_state_bytes"] = float(optimizer.state_bytes())
        out["fp8_activation_layers"] = float(getattr(self, "patched", 0))
        return out


# -- the operand table of the README, from the declarations ---------------------------------------------
TABLE_COLUMNS = ("gemm", "operand", "taken from", "format", "block", "scale", "rounding", "rotation", "clipping")


def operand_table(names: tuple[str, ...] | None = None) -> str:
    """Markdown: for every registered recipe of this module (or ``names``), at its defaults, one
    table with a row per GEMM operand, built from ``linear_recipe().operand_rows()``; the
    README's "Low-precision training" section holds this text verbatim."""
    if names is None:  # in the order this module declares them
        import inspect

        mine = [e for e in METHODS.entries() if e.kind == "train" and e.target.__module__ == __name__]
        names = tuple(e.name for e in sorted(mine, key=lambda e: inspect.getsourcelines(e.target)[1]))
    out = []
    for name in names:
        method = METHODS.get(name).target()  # at its defaults
        recipe = method.linear_recipe()
        out.append(f"`{name}`" + _table_note(method))
        out.append("")
        out.append("| " + " | ".join(TABLE_COLUMNS) + " |")
        out.append("|" + "---|" * len(TABLE_COLUMNS))
        for row in recipe.operand_rows(getattr(method.config, "amax_history", 16)):
            out.append("| " + " | ".join(row[c] for c in TABLE_COLUMNS) + " |")
        out.append("")
    return "\n".join(out).rstrip() + "\n"


def _table_note(method: Any) -> str:
    """What the table of ``method`` leaves out: layers kept in BF16 by position."""
    kept = [e.replace(":", " ") for e in getattr(method.config, "bf16_layers", ())]
    return f": the linear layers of the {' and the '.join(kept)} of the blocks stay in BF16" if kept else ""
