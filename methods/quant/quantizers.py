"""The quantizer methods (kind ``quant``), registered for ``--methods``.

Plugin module: torch and the implementation modules are imported inside the methods, so
``suite list`` stays fast. Every quantizer swaps the model's linear layers (all but the
task head) for ``QuantLinear`` and reports, through ``measurements``: effective bits per
weight (scales included), model size in bytes, calibration time, the per-layer relative
weight error (mean, max and each layer), and whether the matmul ran for real
(``quant_real_matmul`` 1) or simulated (0). Compose left to right: ``nf4+lora`` is QLoRA.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Literal

from suite.errors import CellFailure, UserError
from suite.method import Method, MethodContext
from suite.methods.common import measurements
from suite.metrics import cost
from suite.registry import register_method


@dataclass
class QuantBaseConfig:
    skip: tuple[str, ...] = ()  # layer-name substrings left in full precision
    per_layer_metrics: bool = True


class QuantMethod(Method):
    """Shared apply(): time the work, collect calibration data, install quantised layers."""

    kind = "quant"
    mergeable = True
    needs_calibration = False
    version = "2"  # 2: the quantised base is frozen; alone, only the task's new head trains
    metrics = (*measurements.QUANT, cost("hawq_bits", "bits chosen by HAWQ"))

    def __init__(self, config: Any = None):
        super().__init__(config)
        self.records: list = []
        self.calibration_s = 0.0
        self.real_matmul = False

    def apply(self, model: Any, ctx: MethodContext) -> Any:
        from suite.methods.common.new_modules import not_adapted, train_new_modules
        from suite.methods.quant import engine

        self.check(ctx)
        start = time.perf_counter()
        layers = engine.target_linears(model, not_adapted(model, ctx), tuple(self.config.skip))
        batches = None
        if self.needs_calibration:
            n = self.config.calib_batches
            if n < 1:
                raise UserError(f"{self.name}: calib_batches must be at least 1")
            batches = ctx.calibration_batches(n)
        was_training = model.training
        model.eval()
        self.quantize(model, layers, batches, ctx)
        model.train(was_training)
        # A quantised model is a frozen base: only the task's new modules train after it (a method
        # composed to its right, such as LoRA in nf4+lora, chooses its own parameters).
        for p in model.parameters():
            p.requires_grad_(False)
        train_new_modules(ctx)
        self.calibration_s = time.perf_counter() - start
        ctx.notes[f"{self.name}.matmul"] = "real" if self.real_matmul else "simulated"
        return model

    def check(self, ctx: MethodContext) -> None:
        """Refuse impossible requests before any work (e.g. real FP8 on a CPU)."""

    def layer_formats(self, k: int) -> tuple[tuple[str, dict], tuple[str, dict] | None] | None:
        """(weight format and options, activation format and options or None) of a layer with ``k``
        inputs, as ``quantize`` installs it: the weight fake-quantised once (``engine.quantize_weight``),
        the activations at every forward (``QuantLinear``). None where the method computes its
        weights with its own algorithm (GPTQ's error feedback); HAWQ, which may choose one of
        several widths per layer, declares ``format_calls`` itself."""
        return None

    def format_calls(self, k: int) -> list[tuple[str, str, tuple | None]] | None:
        """The format operations of a layer with ``k`` inputs, from ``layer_formats``: (label,
        description, ``suite.numerics.dispatch`` key or None where no dispatched form exists), as
        ``suite.bench.methods`` lists the kernels each method runs; None: not declared."""
        from suite.methods.quant.layers import format_call

        formats = self.layer_formats(k)
        if formats is None:
            return None
        (wfmt, wopts), act = formats
        calls = [format_call("weights", wfmt, wopts)]
        return calls + [format_call("activations", *act)] if act is not None else calls

    def quantize(self, model: Any, layers: dict, batches: list | None, ctx: MethodContext) -> None:
        raise NotImplementedError

    def measurements(self, model: Any) -> dict[str, float]:
        from suite.methods.quant import engine

        return engine.measurements(self.records, model, self.calibration_s, self.real_matmul,
                                   per_layer=self.config.per_layer_metrics)

    def merge(self, model: Any) -> Any:
        from suite.methods.quant import engine

        return engine.merge_quant_linears(model)

    def save_adapter(self, model: Any, path: str) -> None:
        from suite.models.accounting import save_trainable

        save_trainable(model, path)


# -- weight-only: RTN and NF4 -------------------------------------------------------------------
@dataclass
class RtnConfig(QuantBaseConfig):
    bits: int = 4
    group: int = 128  # 0: one scale per output channel
    sym: bool = True
    format: str = ""  # any number format name instead of int<bits> (e.g. fp8_e4m3, mxfp4)

    def __post_init__(self) -> None:
        if not 2 <= self.bits <= 8:
            raise ValueError("bits must be between 2 and 8")
        if self.format:
            from suite.numerics import formats

            try:  # an unknown name fails before any cell runs, naming the method (ValueError)
                formats.resolve_format(self.format)
            except UserError as exc:
                raise ValueError(str(exc)) from None


@register_method("rtn", kind="quant", summary="round-to-nearest weight-only (W8A16, W4A16 with groups)",
                 source="suite", paper="baseline of Frantar et al. 2023 (GPTQ)")
class Rtn(QuantMethod):
    Config = RtnConfig

    def weight_format(self, k: int) -> tuple[str, dict]:
        from suite.methods.quant import engine

        c = self.config
        if c.format:  # any minifloat: a float32 scale per group (or row), as int<b>
            return engine.weight_format_options(c.format, c.group, k, c.sym)
        return f"int{c.bits}", engine.int_weight_opts(c.bits, c.group, k, c.sym)

    def layer_formats(self, k: int) -> tuple[tuple[str, dict], None]:
        return self.weight_format(k), None

    def quantize(self, model, layers, batches, ctx) -> None:
        from suite.methods.quant import engine

        for name, lin in layers.items():
            (fmt, opts), _ = self.layer_formats(lin.in_features)
            wq, nbytes = engine.quantize_weight(lin.weight, fmt, opts)
            engine.install(model, name, lin, wq, nbytes, self.records,
                           packed=engine.pack_weight(lin.weight, fmt, opts))


@dataclass
class Nf4Config(QuantBaseConfig):
    block: int = 64
    double_quant: bool = True


@register_method("nf4", kind="quant", summary="NF4 frozen base with double quantisation (QLoRA base)",
                 source="suite", paper="Dettmers et al. 2023, QLoRA (arXiv:2305.14314)")
class Nf4(QuantMethod):
    Config = Nf4Config

    def layer_formats(self, k: int) -> tuple[tuple[str, dict], None]:
        return ("nf4", {"block_size": self.config.block, "double_quant": self.config.double_quant}), None

    def quantize(self, model, layers, batches, ctx) -> None:
        from suite.methods.quant import engine

        for name, lin in layers.items():
            (_, opts), _ = self.layer_formats(lin.in_features)
            wq, nbytes = engine.quantize_weight(lin.weight, "nf4", opts)
            engine.install(model, name, lin, wq, nbytes, self.records,
                           packed=engine.pack_weight(lin.weight, "nf4", opts))


# -- weights and activations ----------------------------------------------------------------------
def act_options(fmt: str) -> dict:
    """Dynamic activation quantisation: per token for INT/FP8/minifloats, per block for MX/NVFP4."""
    from suite.methods.quant import engine

    return engine.activation_options(fmt)


@dataclass
class W8A8Config(QuantBaseConfig):
    format: Literal["int8", "fp8"] = "int8"
    real: bool = False  # FP8 only: run the matmul through torch._scaled_mm
    # FP8 only. row: a scale per weight row and per token; block: DeepSeek-V3 style, a scale
    # per block x block weight tile and per 1 x block slice of each token
    scaling: Literal["row", "block"] = "row"
    block: int = 128

    def __post_init__(self) -> None:
        if self.block < 1:
            raise ValueError("block must be a positive integer")


@register_method("w8a8", kind="quant",
                 summary="8-bit weights (per channel) and activations (dynamic per token), INT8 or FP8",
                 source="suite", paper="Dettmers et al. 2022 (LLM.int8); Micikevicius et al. 2022 (FP8)")
class W8A8(QuantMethod):
    Config = W8A8Config

    def check(self, ctx: MethodContext) -> None:
        if self.config.real:
            if self.config.format != "fp8":
                raise UserError("w8a8: real=true is available for format=fp8 only (torch._scaled_mm); "
                                "INT8 runs simulated")
            if self.config.scaling != "row":
                raise UserError("w8a8: real=true runs FP8 matmuls with row scaling only; "
                                "scaling=block runs simulated, drop real=true")
            from suite.methods.quant.layers import fp8_matmul_supported

            ok, why = fp8_matmul_supported(ctx.device)
            if not ok:
                raise UserError(f"w8a8: real=true asks for FP8 matmuls, but {why}; "
                                f"drop real=true to simulate them")

    def layer_formats(self, k: int) -> tuple[tuple[str, dict], tuple[str, dict]]:
        c = self.config
        fmt = "int8" if c.format == "int8" else "fp8_e4m3"
        if c.scaling == "block":
            return (fmt, {"granularity": "tile", "block_size": c.block}), \
                (fmt, {"granularity": "block", "block_size": c.block})
        wopts = ({"granularity": "channel", "symmetric": True} if fmt == "int8"
                 else {"granularity": "row"})
        return (fmt, wopts), (fmt, act_options(fmt))

    def quantize(self, model, layers, batches, ctx) -> None:
        from suite.methods.quant import engine

        c = self.config
        if c.scaling == "block" and c.format != "fp8":
            raise UserError("w8a8: scaling=block is defined for format=fp8; INT8 uses row scaling")
        for name, lin in layers.items():
            (fmt, wopts), (_, aopts) = self.layer_formats(lin.in_features)
            wq, nbytes = engine.quantize_weight(lin.weight, fmt, wopts)
            layer = engine.install(model, name, lin, wq, nbytes, self.records,
                                   act_fmt=fmt, act_opts=aopts,
                                   packed=engine.pack_weight(lin.weight, fmt, wopts))
            if c.real:
                layer.enable_real_fp8()
        self.real_matmul = c.real


@dataclass
class MicroscalingConfig(QuantBaseConfig):
    acts: bool = True  # also quantise activations (W4A4 / W8A8 in the format)
    element: str = ""  # mxfp8: e4m3 | e5m2; mxfp6: e2m3 | e3m2


class _BlockFormat(QuantMethod):
    Config = MicroscalingConfig
    base_format = ""
    elements: tuple[str, ...] = ()

    def format_name(self) -> str:
        e = self.config.element
        if not e:
            return self.base_format if not self.elements else f"{self.base_format}_{self.elements[0]}"
        if e not in self.elements:
            raise UserError(f"{self.name}: element {e!r} is not one of {', '.join(self.elements) or '(none)'}")
        return f"{self.base_format}_{e}"

    def layer_formats(self, k: int) -> tuple[tuple[str, dict], tuple[str, dict] | None]:
        fmt = self.format_name()
        return (fmt, {}), ((fmt, {}) if self.config.acts else None)

    def quantize(self, model, layers, batches, ctx) -> None:
        from suite.methods.quant import engine

        for name, lin in layers.items():
            (fmt, opts), act = self.layer_formats(lin.in_features)
            wq, nbytes = engine.quantize_weight(lin.weight, fmt, opts)
            engine.install(model, name, lin, wq, nbytes, self.records,
                           act_fmt=act[0] if act else None, act_opts=act[1] if act else {},
                           packed=engine.pack_weight(lin.weight, fmt, opts))


@register_method("mxfp4", kind="quant", summary="OCP MXFP4 (E2M1, blocks of 32, E8M0 scale) weights+activations",
                 source="suite", paper="OCP Microscaling Formats v1.0 (2023)")
class Mxfp4(_BlockFormat):
    base_format = "mxfp4"


@register_method("mxfp6", kind="quant", summary="OCP MXFP6 (E2M3 or E3M2) weights+activations",
                 source="suite", paper="OCP Microscaling Formats v1.0 (2023)")
class Mxfp6(_BlockFormat):
    base_format = "mxfp6"
    elements = ("e2m3", "e3m2")


@register_method("mxfp8", kind="quant", summary="OCP MXFP8 (E4M3 or E5M2) weights+activations",
                 source="suite", paper="OCP Microscaling Formats v1.0 (2023)")
class Mxfp8(_BlockFormat):
    base_format = "mxfp8"
    elements = ("e4m3", "e5m2")


@register_method("nvfp4", kind="quant",
                 summary="NVFP4 (E2M1, blocks of 16, E4M3 + FP32 scales) weights+activations",
                 source="suite", paper="NVIDIA Blackwell NVFP4 (2025)")
class Nvfp4(_BlockFormat):
    base_format = "nvfp4"


# -- calibrated: GPTQ, AWQ, SmoothQuant ----------------------------------------------------------
@dataclass
class GptqConfig(QuantBaseConfig):
    bits: int = 4
    group: int = 128
    sym: bool = True
    damp: float = 0.01
    act_order: bool = False
    calib_batches: int = 8
    # True: quantise stage by stage, each from the outputs of the quantised layers before
    # it (the paper's procedure); False: all Hessians from one full-precision pass (faster).
    sequential: bool = True


@register_method("gptq", kind="quant", summary="GPTQ: second-order error feedback, weight-only INT",
                 source="suite", paper="Frantar et al. 2023, GPTQ (arXiv:2210.17323)")
class Gptq(QuantMethod):
    Config = GptqConfig
    version = "3"  # 2: sequential calibration by default; 3: frozen base (QuantMethod 2)
    needs_calibration = True

    def quantize(self, model, layers, batches, ctx) -> None:
        from suite.methods.quant import algorithms as A

        if not self.config.sequential:
            self.quantize_stage(model, layers, A.collect_input_stats(model, layers, batches, hessian=True))
            return
        # GPTQ as published: each layer's Hessian comes from inputs that already went
        # through the quantised layers before it, so later layers correct earlier error.
        for stage in A.forward_stages(model, layers, batches[0]):
            stage_layers = {name: layers[name] for name in stage}
            stats = A.collect_input_stats(model, stage_layers, batches, stop_when_seen=True, hessian=True)
            self.quantize_stage(model, stage_layers, stats)

    def quantize_stage(self, model, layers, stats) -> None:
        from suite.methods.quant import algorithms as A
        from suite.methods.quant import engine
        from suite.numerics import formats as F

        c = self.config
        for name, lin in layers.items():
            if stats[name].xtx is None:
                raise CellFailure(f"gptq: layer '{name}' saw no calibration input; skip it with skip={name}")
            g = engine.fit_group(c.group, lin.in_features)
            wq, codes = A.gptq_quantize(lin.weight, stats[name].hessian_matrix(), c.bits, g, c.sym,
                                        c.damp, act_order=c.act_order, return_codes=True)
            wq = wq.to(lin.weight.dtype)
            opts = engine.int_weight_opts(c.bits, c.group, lin.in_features, c.sym)
            bits = F.effective_bits(f"int{c.bits}", tuple(lin.weight.shape), **opts)
            nbytes = int(round(bits * lin.weight.numel() / 8))
            engine.install(model, name, lin, wq, nbytes, self.records,
                           packed=engine.pack_gptq(codes, c.bits, g, c.sym, lin.weight.dtype))


@dataclass
class AwqConfig(QuantBaseConfig):
    bits: int = 4
    group: int = 128
    sym: bool = False
    grid: int = 20
    calib_batches: int = 8
    search_tokens: int = 512


@register_method("awq", kind="quant", summary="AWQ: activation-aware per-channel scaling, weight-only INT",
                 source="suite", paper="Lin et al. 2024, AWQ (arXiv:2306.00978)")
class Awq(QuantMethod):
    Config = AwqConfig
    needs_calibration = True

    def layer_formats(self, k: int) -> tuple[tuple[str, dict], None]:
        """The scaled weights (``W s``; ``1/s`` folded back after): its scale search fake-quantises each
        candidate, then the chosen one, in this format."""
        from suite.methods.quant import engine

        c = self.config
        return (f"int{c.bits}", engine.int_weight_opts(c.bits, c.group, k, c.sym)), None

    def quantize(self, model, layers, batches, ctx) -> None:
        import torch

        from suite.methods.quant import algorithms as A
        from suite.methods.quant import engine
        from suite.methods.quant.layers import fake_quantize

        c = self.config
        stats = A.collect_input_stats(model, layers, batches, keep_samples=c.search_tokens)
        for name, lin in layers.items():
            (fmt, opts), _ = self.layer_formats(lin.in_features)
            x = torch.cat(stats[name].samples).to(lin.weight.device)
            # the scale search's candidates quantised as the weights are (a kernel where one serves)
            s, _alpha = A.awq_search(lin.weight, x, stats[name].abs_mean,
                                     lambda w, f=fmt, o=opts: fake_quantize(w, f, o), c.grid)
            # weight-only: fold 1/s back into the dequantised weight, no runtime transform
            wq_scaled, nbytes = engine.quantize_weight(lin.weight.float() * s, fmt, opts)
            wq = (wq_scaled.float() / s).to(lin.weight.dtype)
            packed = engine.pack_weight(lin.weight.float() * s, fmt, opts, col_divisor=s,
                                        dtype=lin.weight.dtype)
            engine.install(model, name, lin, wq, nbytes + 4 * s.numel(), self.records, packed=packed)


@dataclass
class SmoothQuantConfig(QuantBaseConfig):
    alpha: float = 0.5
    format: Literal["int8", "fp8"] = "int8"
    calib_batches: int = 8


@register_method("smoothquant", kind="quant",
                 summary="SmoothQuant: migrate activation outliers into weights, then W8A8",
                 source="suite", paper="Xiao et al. 2023, SmoothQuant (arXiv:2211.10438)")
class SmoothQuant(QuantMethod):
    Config = SmoothQuantConfig
    needs_calibration = True

    def layer_formats(self, k: int) -> tuple[tuple[str, dict], tuple[str, dict]]:
        """The weights after the smoothing scales are folded in, the smoothed activations."""
        fmt = "int8" if self.config.format == "int8" else "fp8_e4m3"
        wopts = {"granularity": "channel"} if fmt == "int8" else {"granularity": "row"}
        return (fmt, wopts), (fmt, act_options(fmt))

    def quantize(self, model, layers, batches, ctx) -> None:
        from suite.methods.quant import algorithms as A
        from suite.methods.quant import engine

        c = self.config
        if not 0 <= c.alpha <= 1:
            raise UserError("smoothquant: alpha must be in [0, 1]")
        stats = A.collect_input_stats(model, layers, batches)
        for name, lin in layers.items():
            (fmt, wopts), (_, aopts) = self.layer_formats(lin.in_features)
            s = A.smoothquant_scales(stats[name].abs_max, lin.weight, c.alpha).to(lin.weight.device)
            w_s = lin.weight.float() * s
            wq, nbytes = engine.quantize_weight(w_s, fmt, wopts)
            engine.install(model, name, lin, wq, nbytes + 4 * s.numel(), self.records,
                           reference=w_s, input_scale=s, act_fmt=fmt, act_opts=aopts,
                           packed=engine.pack_weight(w_s, fmt, wopts, dtype=lin.weight.dtype))


# -- rotation ------------------------------------------------------------------------------------------
@dataclass
class QuarotConfig(QuantBaseConfig):
    format: str = "int4"  # int4 | int8 | mxfp4 | nvfp4 | mxfp8 ... (weights and activations)
    acts: bool = True
    group: int = 0  # int weights: 0 = per channel
    max_block: int = 1 << 30  # cap on the Hadamard block size


@register_method("quarot", kind="quant",
                 summary="Hadamard rotation of every linear input before W4A4 / FP4 quantisation",
                 source="suite", paper="Ashkboos et al. 2024, QuaRot (arXiv:2404.00456)")
class Quarot(QuantMethod):
    Config = QuarotConfig

    def layer_formats(self, k: int) -> tuple[tuple[str, dict], tuple[str, dict] | None]:
        """The rotated weights and the rotated activations."""
        from suite.methods.quant import engine
        from suite.numerics import formats as F

        c = self.config
        spec = F.resolve_format(c.format)
        opts = (engine.int_weight_opts(spec.bits, c.group, k)
                if spec.family == "int" else {"granularity": "row"} if spec.family == "float" else {})
        return (spec.name, opts), ((spec.name, act_options(spec.name)) if c.acts else None)

    def quantize(self, model, layers, batches, ctx) -> None:
        from suite.methods.quant import engine
        from suite.numerics.hadamard import apply_block_hadamard, hadamard_block_size

        c = self.config
        for name, lin in layers.items():
            block = hadamard_block_size(lin.in_features, c.max_block)
            if block < 2:
                raise UserError(f"quarot: layer {name} has an odd input dimension {lin.in_features}; "
                                f"no Hadamard block fits")
            w_rot = apply_block_hadamard(lin.weight.float(), block)
            (fmt, opts), act = self.layer_formats(lin.in_features)
            wq, nbytes = engine.quantize_weight(w_rot, fmt, opts)
            engine.install(model, name, lin, wq, nbytes, self.records, reference=w_rot,
                           hadamard_block=block, act_fmt=act[0] if act else None,
                           act_opts=act_options(fmt),
                           packed=engine.pack_weight(w_rot, fmt, opts, dtype=lin.weight.dtype))


# -- mixed precision ---------------------------------------------------------------------------------
@dataclass
class HawqConfig(QuantBaseConfig):
    budget: float = 4.0  # average bits per weight (element bits, before scales)
    # No 2-bit choice by default: its perturbation is outside the second-order regime the
    # trace criterion assumes. MiniLM + SST-2 after full FT (FP32 0.849, RTN-4 0.834):
    # choices 2;4;8 gave 0.756, 3;4;8 gave 0.813 with 2 batches x 8 probes and 0.831 with
    # 8 x 16 (the traces need the samples).
    choices: tuple[int, ...] = (3, 4, 8)
    group: int = 128
    samples: int = 16  # Hutchinson probes per batch
    calib_batches: int = 8
    # trace: HAWQ-V2's tr(H)/n * ||Q(W) - W||^2; loss: the measured loss increase with only
    # that layer quantised (one forward pass per layer and bit width, no second derivatives).
    # On MiniLM + SST-2 neither beat uniform 4-bit at budget 4 (trace 0.831, loss 0.803,
    # RTN-4 0.834): one-layer-at-a-time effects are small, noisy and not additive there.
    sensitivity: Literal["trace", "loss"] = "trace"


@register_method("hawq", kind="quant",
                 summary="mixed-precision bits per layer from Hessian traces (Hutchinson) under a budget",
                 source="suite", paper="Dong et al. 2020, HAWQ-V2 (arXiv:1911.03852)")
class Hawq(QuantMethod):
    Config = HawqConfig
    version = "3"  # 2: defaults 3;4;8 bits, 8 batches x 16 probes; 3: frozen base (QuantMethod 2)
    needs_calibration = True

    def quantize(self, model, layers, batches, ctx) -> None:
        import torch

        from suite.methods.quant import algorithms as A
        from suite.methods.quant import engine

        c = self.config
        if not c.choices or any(not 2 <= b <= 8 for b in c.choices):
            raise UserError("hawq: choices must be bit widths between 2 and 8, e.g. 2;4;8")
        if c.sensitivity == "loss":
            traces: dict[str, float] = {}
            measured = A.layer_loss_sensitivity(model, layers, batches, self.quantized_weight, c.choices)
            sens = {n: {b: max(d, 0.0) for b, d in per_bits.items()} for n, per_bits in measured.items()}
        else:
            traces = A.layer_hessian_traces(model, layers, batches, c.samples, ctx.seed)
            sens = self.sensitivities(layers, traces)
        self.bits = A.allocate_bits(sens, {n: lin.weight.numel() for n, lin in layers.items()}, c.budget)
        with torch.no_grad():
            for name, lin in layers.items():
                b = self.bits[name]
                opts = engine.int_weight_opts(b, c.group, lin.in_features)
                wq, nbytes = engine.quantize_weight(lin.weight, f"int{b}", opts)  # = quantized_weight's
                engine.install(model, name, lin, wq, nbytes, self.records,
                               packed=engine.pack_weight(lin.weight, f"int{b}", opts))
        self.traces = traces

    def format_calls(self, k: int) -> list[tuple[str, str, tuple | None]]:
        """Round-to-nearest int<b> weights at every bit width it may choose (``quantized_weight``: each
        width's sensitivity, then each layer's allocated width), the declaration
        ``QuantMethod.format_calls`` makes from one format."""
        from suite.methods.quant import engine
        from suite.methods.quant.layers import format_call

        return [format_call(f"weights at {b} bits", f"int{b}", engine.int_weight_opts(b, self.config.group, k))
                for b in self.config.choices]

    def sensitivities(self, layers: dict, traces: dict[str, float]) -> dict[str, dict[int, float]]:
        """HAWQ-V2's predicted loss increase per layer and bit width:
        ``tr(H) / n * ||Q_b(W) - W||^2`` (negative trace estimates count as 0)."""
        out: dict[str, dict[int, float]] = {}
        for name, lin in layers.items():
            w = lin.weight.detach().float()
            out[name] = {b: max(traces[name], 0.0) / w.numel()
                         * float((self.quantized_weight(name, lin, b).float() - w).pow(2).sum())
                         for b in self.config.choices}
        return out

    def quantized_weight(self, name: str, lin: Any, bits: int) -> Any:
        """The layer's weight round-to-nearest quantised to ``bits`` (dequantised)."""
        from suite.methods.quant import engine

        opts = engine.int_weight_opts(bits, self.config.group, lin.in_features)
        return engine.quantize_weight(lin.weight, f"int{bits}", opts)[0]

    def measurements(self, model: Any) -> dict[str, float]:
        out = super().measurements(model)
        bits = getattr(self, "bits", {})
        if bits:
            total = sum(r.numel for r in self.records)
            out["hawq_avg_element_bits"] = sum(bits[r.name] * r.numel for r in self.records) / total
            if self.config.per_layer_metrics:
                out.update({f"hawq_bits/{n}": float(b) for n, b in bits.items()})
                out.update({f"hessian_trace/{n}": t for n, t in self.traces.items()})
        return out
