"""Quantisation-aware training: ``qat:format=...`` and L4Q's LoRA-wise variant ``l4q``.

``qat`` fine-tunes the linear layers it quantises (and the task's head) with their weights
(and, with ``acts``, their inputs) fake-quantised in the forward and straight-through gradients, then, in
``after_training`` (before the evaluation), converts the model into real quantised layers:
the evaluated model is the converted one. Which implementation:

* torchao's ``QATConfig`` prepare / convert (``backend=auto`` or ``torchao``) where it
  applies on every device: symmetric ``int<b>`` weights (``IntxWeightOnlyConfig``), with
  ``acts=int8`` dynamic per-token asymmetric activations
  (``Int8DynamicActivationIntxWeightConfig``). Its integer grid is torchao's,
  ``[-2^(b-1), 2^(b-1) - 1]`` with ``scale = amax / ((qmax - qmin) / 2)``, not this suite's
  restricted ``int<b>``. torchao's FP8, MX and NVFP4 QAT convert to kernels that need a
  recent NVIDIA GPU, so those formats take the other path.
* the suite's formats otherwise (``backend=suite``, or any other format: FP8, MX, NVFP4,
  NF4, any minifloat, asymmetric ints): ``FakeQuantLinear`` during training and the same
  ``fake_quantize`` at conversion, so conversion changes no output.

``l4q`` (Jeon et al. 2024, arXiv:2402.04902) differs from ``nf4+lora``/``qat+lora``: the
LoRA update is inside the quantiser, ``Q(W0 + s B A)``, trained with the LSQ step sizes,
so the converted layer is a single quantised weight with no side path; only A, B, the
step sizes and the task's head train. Measurements are the quantizers' (bits per weight,
model size, per-layer relative error of the converted weight against the trained one).
Plugin module: torch and torchao are imported lazily.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Literal

from suite.errors import CellFailure, UserError
from suite.method import Method, MethodContext, MethodTarget
from suite.methods.common import measurements
from suite.registry import register_method

TORCHAO_EXTRA = 'pip install "suite[compress]" (torchao)'


def _check_format(name: str, what: str) -> None:
    from suite.numerics import formats

    try:  # an unknown or malformed name fails before any cell runs, naming the part (ValueError)
        formats.resolve_format(name)
    except UserError as exc:
        raise ValueError(f"{what}: {exc}") from None


def _torchao_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("torchao") is not None


@dataclass
class QatConfig:
    format: str = "int4"  # the weight format: int<b>, fp8_e4m3, mxfp4, nvfp4, nf4, any minifloat
    group: int = 128  # int and minifloat weights: inputs per scale (0: one per output channel)
    sym: bool = True  # integer weights
    acts: str = ""  # also fake-quantise the linear inputs (int8, fp8_e4m3, mxfp4, ...); "" none
    backend: Literal["auto", "torchao", "suite"] = "auto"
    skip: tuple[str, ...] = ()
    per_layer_metrics: bool = True

    def __post_init__(self) -> None:
        _check_format(self.format, "format")
        if self.acts:
            _check_format(self.acts, "acts")
        if self.group < 0:
            raise ValueError("group must be 0 (per channel) or a positive integer")


class _QatBase(Method):
    kind = "quant"
    mergeable = True
    metrics = measurements.QUANT

    def __init__(self, config: Any = None):
        super().__init__(config)
        self.records: list = []
        self.converted: dict[int, int] = {}  # id(converted layer) -> its quantised weight bytes
        self.convert_s = 0.0

    def measurements(self, model: Any) -> dict[str, float]:
        from suite.methods.quant import engine

        if not self.records:
            return {}
        out = engine.measurements(self.records, model, self.convert_s, False,
                                  per_layer=self.config.per_layer_metrics)
        # Buffers left out, as QAT has always measured (the post-training quantizers count them).
        out["model_size_bytes"] = float(engine.model_bytes(model, self.converted, buffers=False))
        return out

    def merge(self, model: Any) -> Any:
        from suite.methods.quant import engine

        _dequantize_torchao(model)
        return engine.merge_quant_linears(model)


@register_method("qat", kind="quant",
                 summary="quantisation-aware training: fake-quantised forward, STE, converted before evaluation",
                 source="suite", paper="Jacob et al. 2018; torchao QATConfig (prepare/convert)")
class Qat(_QatBase):
    Config = QatConfig

    def __init__(self, config: Any = None):
        super().__init__(config)
        self.names: list[str] = []
        self.layers: dict[str, Any] = {}  # name -> the fake-quantised module (found by identity later)
        self.torchao_config: Any = None
        self.torchao_group = 0

    def declared_backend(self) -> bool | None:
        """Whether the configuration runs torchao's QAT: True or False, or None where that depends on
        whether torchao is installed (``backend=auto`` where torchao's applies: symmetric int weights,
        int8 or no activations)."""
        from suite.numerics import formats as F

        c = self.config
        spec = F.resolve_format(c.format)
        applies = spec.family == "int" and c.sym and c.acts in ("", "int8")
        if c.backend == "suite":
            return False
        if c.backend == "torchao":
            if not applies:
                raise UserError(f"qat: backend=torchao covers symmetric int<b> weights with acts '' or "
                                f"int8 on every device; format={c.format}, sym={c.sym}, acts={c.acts!r} "
                                f"runs on the suite's formats: use backend=suite or auto")
            return True
        return None if applies else False

    def uses_torchao(self) -> bool:
        """torchao's QAT where it applies (symmetric int weights, int8 or no activations) and, with
        ``backend=auto``, is installed."""
        declared = self.declared_backend()
        return _torchao_available() if declared is None else declared

    def unsupported(self, target: MethodTarget) -> str | None:
        if self.config.backend == "torchao" and not _torchao_available():
            return f"backend=torchao needs torchao: {TORCHAO_EXTRA}, or use backend=suite"
        return None

    def weight_opts(self, k: int) -> tuple[str, dict]:
        from suite.methods.quant import engine

        c = self.config
        return engine.weight_format_options(c.format, c.group, k, c.sym)

    def format_calls(self, k: int, torchao: bool | None = None) -> list[tuple[str, str, tuple | None]]:
        """The format operations of a layer with ``k`` inputs during training (label, description,
        ``suite.numerics.dispatch`` key or None), as ``suite.bench.methods`` lists the kernels each
        method runs: torchao's fake quantisation (PyTorch, never dispatched), or ``FakeQuantLinear``'s
        weight and activations through ``layers.fake_quantize``. ``torchao`` says which path to
        declare; None: the configuration's, both paths where that depends on whether torchao is
        installed (each labelled), so the listing is the same in every environment."""
        from suite.methods.quant import engine
        from suite.methods.quant.layers import format_call

        c = self.config
        what = f"torchao's QAT fake quantisation ({c.format}, group {c.group}{', int8 activations' if c.acts else ''})"
        ours = [format_call("weights", *self.weight_opts(k))]
        if c.acts:
            ours.append(format_call("activations", c.acts, engine.activation_options(c.acts)))
        path = self.declared_backend() if torchao is None else torchao
        if path is None:
            return [("weights where torchao is installed", what, None),
                    *((f"{label} without torchao", desc, call) for label, desc, call in ours)]
        return [("weights", what, None)] if path else ours

    def apply(self, model: Any, ctx: MethodContext) -> Any:
        from suite.methods.common.new_modules import not_adapted, train_new_modules
        from suite.methods.quant import engine
        from suite.methods.quant.qat_layers import FakeQuantLinear

        c = self.config
        layers = engine.target_linears(model, not_adapted(model, ctx), tuple(c.skip))
        self.names = list(layers)
        torchao = self.uses_torchao()
        ctx.notes["qat.backend"] = "torchao" if torchao else "suite"
        if torchao:
            from torchao.quantization import quantize_
            from torchao.quantization.qat import QATConfig

            for lin in layers.values():
                self.weight_opts(lin.in_features)  # a group that does not divide: UserError now
            self.torchao_config = self._torchao_base(layers)
            wanted = set(self.names)
            quantize_(model, QATConfig(self.torchao_config, step="prepare"),
                      filter_fn=lambda m, fqn: fqn in wanted)
            self.layers = {name: model.get_submodule(name) for name in self.names}
        else:
            for name, lin in layers.items():
                fmt, opts = self.weight_opts(lin.in_features)
                act = c.acts or None
                self.layers[name] = FakeQuantLinear.from_linear(
                    lin, fmt, opts, act, engine.activation_options(act) if act else None)
                engine.set_module(model, name, self.layers[name])
        # QAT trains the layers it quantises (weights and biases) and the task's head; like every
        # method but full fine-tuning it leaves embeddings, norms and a causal LM's lm_head alone
        for p in model.parameters():
            p.requires_grad_(False)
        for name in self.names:
            for p in model.get_submodule(name).parameters():
                p.requires_grad_(True)
        train_new_modules(ctx)
        return model

    def _torchao_base(self, layers: dict) -> Any:
        import torch
        from torchao.quantization import Int8DynamicActivationIntxWeightConfig, IntxWeightOnlyConfig
        from torchao.quantization.granularity import PerAxis, PerGroup

        from suite.methods.quant import engine
        from suite.numerics import formats as F

        c = self.config
        bits = F.resolve_format(c.format).bits
        groups = {engine.fit_group(c.group, lin.in_features) for lin in layers.values()}
        if len(groups) != 1:  # one torchao config for the model: one group rule
            raise UserError(f"qat: group={c.group} gives a group for some layers and one scale per "
                            f"channel for others; use backend=suite, or a group every layer takes")
        g = groups.pop()
        self.torchao_group = g
        granularity = PerGroup(g) if g else PerAxis(0)
        dtype = getattr(torch, f"int{bits}")
        if c.acts == "int8":
            return Int8DynamicActivationIntxWeightConfig(weight_dtype=dtype, weight_granularity=granularity)
        return IntxWeightOnlyConfig(weight_dtype=dtype, granularity=granularity)

    def after_training(self, model: Any, ctx: MethodContext) -> Any:
        """Convert: torchao's convert step, or each FakeQuantLinear to its QuantLinear. The layers
        are found by identity, so a method composed after qat (``qat+lora``: peft wraps them)
        keeps its own modules around the converted ones."""
        from suite.methods.quant import engine
        from suite.methods.quant.algorithms import relative_error

        start = time.perf_counter()
        self.records = []
        converted = {}
        for name, module in self.layers.items():
            trained = module.weight.detach().clone()
            if self.torchao_config is not None:
                import torch
                from torchao.quantization import quantize_
                from torchao.quantization.qat import QATConfig

                holder = torch.nn.Sequential(module)
                quantize_(holder, QATConfig(self.torchao_config, step="convert"))
                layer = holder[0]
                w = layer.weight
                deq = w.dequantize() if hasattr(w, "dequantize") else w.detach()
                bits = self._torchao_bits(w.shape[1])
                nbytes = int(round(bits * w.numel() / 8))
            else:
                layer = module.convert()
                deq, nbytes = layer.weight, layer.storage_bytes
                bits = 8.0 * nbytes / trained.numel()
            converted[id(module)] = layer
            self.converted[id(layer)] = nbytes
            self.records.append(engine.LayerRecord(name, trained.numel(), nbytes,
                                                   relative_error(trained, deq), bits))
        missing = _replace_by_identity(model, converted)
        if missing:
            raise CellFailure(f"qat: {missing} fake-quantised layer(s) are no longer in the model "
                              f"(a method composed after qat replaced them); put qat last")
        for p in model.parameters():
            if p.dtype.is_floating_point:
                p.requires_grad_(False)
        self.convert_s = time.perf_counter() - start
        return model

    def _torchao_bits(self, k: int) -> float:
        """Bits per weight of torchao's layout with ideal packing: b-bit codes and one float32
        scale per group or row (its in-memory layout keeps the codes unpacked in int8)."""
        from suite.numerics import formats as F

        bits = F.resolve_format(self.config.format).bits
        return bits + 32.0 / (self.torchao_group or k)


def _replace_by_identity(model: Any, replacements: dict[int, Any]) -> int:
    """Put ``replacements[id(old)]`` wherever ``old`` sits in ``model``; how many were not found."""
    found = set()
    for parent in list(model.modules()):
        for child_name, child in list(parent.named_children()):
            new = replacements.get(id(child))
            if new is not None:
                setattr(parent, child_name, new)
                found.add(id(child))
    return len(set(replacements) - found)


@dataclass
class L4qConfig:
    format: str = "int4"  # the weight format of the converted layer
    group: int = 128  # inputs per scale (0: one per output channel)
    r: int = 8
    alpha: float = 16.0
    learn_scale: bool = True  # integer formats: LSQ step sizes, trained with A and B (L4Q)
    skip: tuple[str, ...] = ()
    per_layer_metrics: bool = True

    def __post_init__(self) -> None:
        _check_format(self.format, "format")
        if self.r < 1:
            raise ValueError("r must be a positive integer")
        if self.group < 0:
            raise ValueError("group must be 0 (per channel) or a positive integer")


@register_method("l4q", kind="quant",
                 summary="L4Q: LoRA inside the quantiser, Q(W0 + BA) with learned step sizes, one quantised weight",
                 source="suite", paper="Jeon et al. 2024, L4Q (arXiv:2402.04902)")
class L4q(_QatBase):
    Config = L4qConfig
    default_lr = 1e-3  # the LoRA family's step size here (suite.methods.peft.library.LORA_FAMILY_LR)

    def __init__(self, config: Any = None):
        super().__init__(config)
        self.layers: dict[str, Any] = {}

    def weight_opts(self, k: int) -> tuple[str, dict]:
        from suite.methods.quant import engine

        return engine.weight_format_options(self.config.format, self.config.group, k, True)

    def format_calls(self, k: int) -> list[tuple[str, str, tuple | None]]:
        """The quantised weight's format operation (see ``Qat.format_calls``): LSQ's learned step
        sizes (integer formats, ``learn_scale``) in PyTorch, else ``layers.fake_quantize``."""
        from suite.methods.quant.layers import format_call
        from suite.methods.quant.qat_layers import L4QLinear

        fmt, opts = self.weight_opts(k)
        if L4QLinear.learns_scale(fmt, opts, self.config.learn_scale):
            return [("weights", f"{fmt} LSQ with learned step sizes ({', '.join(f'{a}={v}' for a, v in opts.items())})",
                     None)]
        return [format_call("weights", fmt, opts)]

    def apply(self, model: Any, ctx: MethodContext) -> Any:
        from suite.methods.common.new_modules import not_adapted, train_new_modules
        from suite.methods.quant import engine
        from suite.methods.quant.qat_layers import L4QLinear

        c = self.config
        layers = engine.target_linears(model, not_adapted(model, ctx), tuple(c.skip))
        for p in model.parameters():
            p.requires_grad_(False)
        for name, lin in layers.items():
            fmt, opts = self.weight_opts(lin.in_features)
            self.layers[name] = L4QLinear(lin, c.r, c.alpha, fmt, opts, c.learn_scale)
            engine.set_module(model, name, self.layers[name])
        train_new_modules(ctx)
        return model

    def after_training(self, model: Any, ctx: MethodContext) -> Any:
        from suite.methods.quant import engine
        from suite.methods.quant.algorithms import relative_error

        start = time.perf_counter()
        self.records = []
        converted = {}
        for name, module in self.layers.items():
            layer = module.convert()
            converted[id(module)] = layer
            self.converted[id(layer)] = layer.storage_bytes
            merged = module.merged_weight().detach()
            self.records.append(engine.LayerRecord(name, merged.numel(), layer.storage_bytes,
                                                   relative_error(merged, layer.weight),
                                                   8.0 * layer.storage_bytes / merged.numel()))
        if _replace_by_identity(model, converted):
            raise CellFailure("l4q: some of its layers are no longer in the model (a method composed "
                              "after l4q replaced them); put l4q last")
        self.convert_s = time.perf_counter() - start
        return model


def _dequantize_torchao(model: Any) -> None:
    """torchao's quantised weights (tensor subclasses) back to plain dequantised parameters, so
    the model saves as an ordinary transformers model."""
    import torch

    for module in model.modules():
        w = getattr(module, "weight", None)
        if isinstance(w, torch.Tensor) and type(w).__name__ != "Parameter" and hasattr(w, "dequantize") \
                and not isinstance(module, torch.nn.Embedding):
            module.weight = torch.nn.Parameter(w.dequantize(), requires_grad=False)
