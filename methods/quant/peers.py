"""Peer implementations side by side with ours: torchao's ``quantize_`` and llm-compressor's
``oneshot``, as methods, so one sweep compares them on the same model, data and calibration
batches (``--methods gptq,llmc-gptq,rtn:bits=8,torchao:config=int8-weight``).

* ``torchao:config=NAME`` wraps ``torchao.quantization.quantize_`` on the same linear layers
  our quantizers take (never the task's head or a causal LM's output embedding). Names
  (``TORCHAO_CONFIGS``): ``int8-weight`` (Int8WeightOnlyConfig), ``intx-weight``
  (IntxWeightOnlyConfig, ``bits``, ``group``), ``int8-dyn-int8`` (dynamic int8 activations,
  int8 weights), ``int8-dyn-intx`` (dynamic int8 activations, ``bits``-bit weights),
  ``float8-weight`` (Float8WeightOnlyConfig), and, on GPUs that have the kernels,
  ``float8-dyn`` (FP8 rows, compute capability 8.9+) and ``int4-weight`` (needs mslk).
* ``llmc-gptq``, ``llmc-sparsegpt``, ``llmc-smoothquant``, ``llmc-awq`` wrap llm-compressor's
  ``oneshot`` with its ``GPTQModifier``, ``SparseGPTModifier``, ``SmoothQuantModifier`` (+
  W8A8 ``QuantizationModifier``) and ``AWQModifier`` (+ W4A16 ``QuantizationModifier``),
  calibrated on the task's batches through a DataLoader. An optional extra: without
  llm-compressor they are refused before any cell runs, naming the extra. Written against
  llm-compressor 0.14's API; its N in ``mask_structure`` counts the pruned weights, so our
  ``2:4`` (keep 2 of 4) is passed as ``2:4`` and ``1:4`` as ``3:4``. Its SmoothQuant and AWQ
  need smooth-layer mappings, which it defines for decoder LMs only: other families are
  refused up front.

Their measurements: bits per weight (ideal packing of the scheme, as ours report) and as
stored in memory, model size as stored, per-layer relative weight error, calibration
time. Plugin module: torch, torchao and llm-compressor are imported lazily.
"""

from __future__ import annotations

import importlib.util
import time
from dataclasses import dataclass
from typing import Any, Literal

from suite.errors import UserError
from suite.method import Method, MethodContext, MethodTarget
from suite.methods.common import measurements
from suite.registry import register_method

TORCHAO_EXTRA = 'pip install "suite[compress]" (torchao>=0.17)'
LLMC_EXTRA = ('pip install "suite[llmc]" (llmcompressor>=0.14; its releases pin transformers, '
              '0.14 to <=5.17, so it needs an environment with such a transformers)')

# name -> (torchao config class, whether it takes bits/group, what it needs beyond a CPU)
TORCHAO_CONFIGS: dict[str, tuple[str, bool, str]] = {
    "int8-weight": ("Int8WeightOnlyConfig", False, ""),
    "intx-weight": ("IntxWeightOnlyConfig", True, ""),
    "int8-dyn-int8": ("Int8DynamicActivationInt8WeightConfig", False, ""),
    "int8-dyn-intx": ("Int8DynamicActivationIntxWeightConfig", True, ""),
    "float8-weight": ("Float8WeightOnlyConfig", False, ""),
    "float8-dyn": ("Float8DynamicActivationFloat8WeightConfig", False, "cuda-fp8"),
    "int4-weight": ("Int4WeightOnlyConfig", False, "cuda"),
}


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


class _PeerMethod(Method):
    kind = "quant"
    mergeable = True
    library = ""
    extra = ""
    metrics = tuple(dict.fromkeys((*measurements.QUANT, *measurements.PRUNE)))

    def __init__(self, config: Any = None):
        super().__init__(config)
        self.layer_errors: dict[str, float] = {}
        self.layer_bits: dict[str, float] = {}
        self.calibration_s = 0.0

    def unsupported(self, target: MethodTarget) -> str | None:
        if not _installed(self.library):
            return f"{self.library} is not installed: {self.extra}"
        return None

    def _targets(self, model: Any, ctx: MethodContext) -> dict:
        from suite.methods.common.new_modules import not_adapted
        from suite.methods.quant import engine

        return engine.target_linears(model, not_adapted(model, ctx), tuple(self.config.skip))

    def _freeze(self, model: Any, ctx: MethodContext) -> None:
        from suite.methods.common.new_modules import train_new_modules

        for p in model.parameters():
            p.requires_grad_(False)
        train_new_modules(ctx)

    def measurements(self, model: Any) -> dict[str, float]:
        if not self.layer_errors:
            return {}
        errors = list(self.layer_errors.values())
        numel = {n: model.get_submodule(n).weight.numel() for n in self.layer_errors}
        total = sum(numel.values())
        out = {
            "bits_per_weight": sum(self.layer_bits[n] * numel[n] for n in numel) / total,
            "stored_bits_per_weight": 8.0 * sum(_stored_bytes(model.get_submodule(n).weight)
                                                for n in numel) / total,
            "model_size_bytes": float(sum(_stored_bytes(t) for t in _unique_tensors(model))),
            "quantized_params": float(total),
            "quantized_layers": float(len(errors)),
            "calibration_time_s": self.calibration_s,
            "quant_rel_error_mean": sum(errors) / len(errors),
            "quant_rel_error_max": max(errors),
        }
        if self.config.per_layer_metrics:
            out.update({f"quant_rel_error/{n}": e for n, e in self.layer_errors.items()})
        return out

    def merge(self, model: Any) -> Any:
        import torch

        for module in model.modules():
            w = getattr(module, "weight", None)
            if isinstance(w, torch.Tensor) and hasattr(w, "dequantize") and type(w) not in (
                    torch.Tensor, torch.nn.Parameter):
                module.weight = torch.nn.Parameter(w.dequantize(), requires_grad=False)
        return model


def _stored_bytes(t: Any) -> int:
    """Bytes a tensor holds, through tensor subclasses (torchao's codes, scales, zero points)."""
    flatten = getattr(t, "__tensor_flatten__", None)
    if flatten is not None and type(t).__name__ not in ("Tensor", "Parameter"):
        names, _ = flatten()
        return sum(_stored_bytes(getattr(t, n)) for n in names)
    return t.numel() * t.element_size()


def _unique_tensors(model: Any) -> list:
    seen: set[int] = set()
    out = []
    for t in list(model.parameters()) + list(model.buffers()):
        if id(t) not in seen:
            seen.add(id(t))
            out.append(t)
    return out


# -- torchao -----------------------------------------------------------------------------------------
@dataclass
class TorchaoConfig:
    config: str = "int8-weight"  # a name of TORCHAO_CONFIGS
    bits: int = 4  # intx-weight / int8-dyn-intx: weight bits (2 to 8)
    group: int = 128  # intx configs: inputs per scale (0: one per output channel)
    skip: tuple[str, ...] = ()
    per_layer_metrics: bool = True

    def __post_init__(self) -> None:
        if self.config not in TORCHAO_CONFIGS:
            raise ValueError(f"config {self.config!r} is not one of {', '.join(TORCHAO_CONFIGS)}")
        if not 2 <= self.bits <= 8:
            raise ValueError("bits must be between 2 and 8")
        if self.group < 0:
            raise ValueError("group must be 0 (per channel) or a positive integer")


@register_method("torchao", kind="quant",
                 summary="torchao's quantize_ with a named config (peer of the suite's quantizers)",
                 source="torchao", paper="torchao (PyTorch), quantize_ API")
class Torchao(_PeerMethod):
    Config = TorchaoConfig
    library = "torchao"
    extra = TORCHAO_EXTRA

    def build(self, k_values: set[int]) -> Any:
        import torch
        import torchao.quantization as tq
        from torchao.quantization.granularity import PerAxis, PerGroup, PerRow

        from suite.methods.quant import engine

        c = self.config
        cls_name, takes_bits, _ = TORCHAO_CONFIGS[c.config]
        cls = getattr(tq, cls_name)
        if c.config == "float8-dyn":
            return cls(granularity=PerRow())
        if c.config == "int4-weight":
            return cls(group_size=c.group or 128)
        if not takes_bits:
            return cls()
        groups = {engine.fit_group(c.group, k) for k in k_values}
        if len(groups) != 1:
            raise UserError(f"torchao: group={c.group} fits some layers and not others; choose a "
                            f"group every layer's input dimension takes, or group=0")
        g = groups.pop()
        granularity = PerGroup(g) if g else PerAxis(0)
        dtype = getattr(torch, f"int{c.bits}")
        if c.config == "intx-weight":
            return cls(weight_dtype=dtype, granularity=granularity)
        return cls(weight_dtype=dtype, weight_granularity=granularity)

    def ideal_bits(self, k: int) -> float:
        """Bits per weight of the scheme with ideal packing (codes + float32 scales)."""
        c = self.config
        if c.config in ("intx-weight", "int8-dyn-intx"):
            g = c.group if c.group and c.group < k else k
            return c.bits + 32.0 / g
        if c.config == "int4-weight":
            return 4 + 2 * 16.0 / (c.group or 128)  # bf16 scale and zero point per group
        return 8 + 32.0 / k  # int8 / float8 with a scale per output channel

    def apply(self, model: Any, ctx: MethodContext) -> Any:
        from torchao.quantization import quantize_

        need = TORCHAO_CONFIGS[self.config.config][2]
        if need and not str(ctx.device).startswith("cuda"):
            raise UserError(f"torchao:config={self.config.config} runs on CUDA GPUs only "
                            f"({'compute capability 8.9+' if need == 'cuda-fp8' else 'with mslk'}); "
                            f"on a CPU use int8-weight, intx-weight, int8-dyn-int8, int8-dyn-intx or float8-weight")
        start = time.perf_counter()
        layers = self._targets(model, ctx)
        originals = {n: lin.weight.detach().float().clone() for n, lin in layers.items()}
        config = self.build({lin.in_features for lin in layers.values()})
        wanted = set(layers)
        try:
            quantize_(model, config, filter_fn=lambda m, fqn: fqn in wanted)
        except (AssertionError, ImportError, NotImplementedError, RuntimeError) as exc:
            raise UserError(f"torchao:config={self.config.config} cannot run here: {exc}") from None
        for name, w0 in originals.items():
            w = model.get_submodule(name).weight
            deq = w.dequantize() if hasattr(w, "dequantize") else w.detach()
            err = (w0 - deq.float()).norm() / w0.norm().clamp(min=1e-30)
            self.layer_errors[name] = float(err)
            self.layer_bits[name] = self.ideal_bits(w0.shape[1])
        self._freeze(model, ctx)
        self.calibration_s = time.perf_counter() - start
        ctx.notes["torchao.matmul"] = "torchao"
        return model


# -- llm-compressor ----------------------------------------------------------------------------------
@dataclass
class LlmcConfig:
    calib_batches: int = 8
    pipeline: Literal["basic", "sequential"] = "basic"  # basic: one pass for all layers
    skip: tuple[str, ...] = ()
    per_layer_metrics: bool = True

    def __post_init__(self) -> None:
        if self.calib_batches < 1:
            raise ValueError("calib_batches must be at least 1")


@dataclass
class LlmcGptqConfig(LlmcConfig):
    bits: int = 4
    group: int = 128  # 0: one scale per output channel
    sym: bool = True
    damp: float = 0.01
    act_order: bool = False


@dataclass
class LlmcSparseGptConfig(LlmcConfig):
    sparsity: str = "0.5"  # as our pruning methods: a fraction or N:M (keep N of every M)
    damp: float = 0.01
    block: int = 128

    def __post_init__(self) -> None:
        super().__post_init__()
        from suite.methods.sparse.masks import SparsityPattern

        SparsityPattern.parse(self.sparsity)


@dataclass
class LlmcSmoothQuantConfig(LlmcConfig):
    alpha: float = 0.5


@dataclass
class LlmcAwqConfig(LlmcConfig):
    bits: int = 4
    group: int = 128
    sym: bool = False


# decoder-LM families llm-compressor has smoothing mappings for (SmoothQuant and AWQ)
LLMC_MAPPED_FAMILIES = ("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3", "phi3",
                        "mixtral", "qwen2_moe", "qwen3_moe", "cohere", "deepseek_v3")


class _Llmc(_PeerMethod):
    library = "llmcompressor"
    extra = LLMC_EXTRA
    needs_mappings = False

    def unsupported(self, target: MethodTarget) -> str | None:
        missing = super().unsupported(target)
        if missing:
            return missing
        if self.needs_mappings and target.model_type and target.model_type not in LLMC_MAPPED_FAMILIES:
            return (f"llm-compressor's {self.name[5:]} needs smooth-layer mappings, which it defines "
                    f"for decoder LMs ({', '.join(LLMC_MAPPED_FAMILIES[:4])}, ...), not for "
                    f"'{target.model_type}'; compare with the suite's own method instead")
        return None

    def recipe(self, ignore: list[str]) -> list:
        raise NotImplementedError

    def apply(self, model: Any, ctx: MethodContext) -> Any:
        import torch
        from llmcompressor import oneshot

        from suite.methods.common.new_modules import not_adapted

        start = time.perf_counter()
        layers = self._targets(model, ctx)
        originals = {n: lin.weight.detach().float().clone() for n, lin in layers.items()}
        keep = list(not_adapted(model, ctx)) + [n for n, _ in model.named_modules()
                                                if any(s and s in n for s in self.config.skip)]
        batches = [{k: v for k, v in b.items() if k != "labels"}
                   for b in ctx.calibration_batches(self.config.calib_batches)]
        loader = torch.utils.data.DataLoader(batches, batch_size=None, collate_fn=lambda b: b)
        was_training = model.training
        model.eval()
        if ctx.tokenizer is None:  # oneshot wants a processor whenever it is given data
            raise UserError(f"{self.name}: llm-compressor's oneshot needs the task's tokenizer, and this "
                            f"task has none")
        import tempfile

        with tempfile.TemporaryDirectory() as folder:
            # oneshot re-reads the config from the model's folder; a model built from a config
            # (tiny-bert) has none, so it gets its own config written to a scratch folder
            original = model.config.name_or_path
            if not original:
                model.config.save_pretrained(folder)
                model.config.name_or_path = folder
            try:
                oneshot(model=model, recipe=self.recipe(keep), dataset=loader, processor=ctx.tokenizer,
                        num_calibration_samples=sum(int(b["input_ids"].shape[0]) for b in batches),
                        pipeline=self.config.pipeline, output_dir=None)
            finally:
                model.config.name_or_path = original
        model.train(was_training)
        for name, w0 in originals.items():
            w = _llmc_effective_weight(model.get_submodule(name)).detach().float()
            self.layer_errors[name] = float((w0 - w).norm() / w0.norm().clamp(min=1e-30))
            self.layer_bits[name] = self.ideal_bits(w0.shape[1])
        self._freeze(model, ctx)
        self.calibration_s = time.perf_counter() - start
        return model

    def ideal_bits(self, k: int) -> float:
        return 32.0

    @staticmethod
    def weight_scheme(bits: int, group: int, sym: bool) -> dict:
        """compressed-tensors weight arguments: ``bits``-bit integers, a scale per group or channel."""
        args = {"num_bits": bits, "type": "int", "symmetric": sym,
                "strategy": "group" if group else "channel"}
        if group:
            args["group_size"] = group
        return args


def _llmc_effective_weight(module: Any) -> Any:
    """The weight a compressed-tensors layer computes with: GPTQ writes quantised values into
    ``weight``, a plain QuantizationModifier fake-quantises it in every forward instead."""
    scheme = getattr(module, "quantization_scheme", None)
    args = getattr(scheme, "weights", None)
    if args is None or not hasattr(module, "weight_scale"):
        return module.weight
    from compressed_tensors.quantization.lifecycle.forward import fake_quantize

    return fake_quantize(module.weight, module.weight_scale, getattr(module, "weight_zero_point", None), args)


def _ignore(names: list[str]) -> list[str]:
    """Module names left alone, as llm-compressor's ``ignore`` (exact names and their children)."""
    return [f"re:^{n.replace('.', '[.]')}([.].*)?$" for n in names]


@register_method("llmc-gptq", kind="quant", summary="llm-compressor's GPTQ (oneshot GPTQModifier), peer of gptq",
                 source="llmcompressor", paper="Frantar et al. 2023, GPTQ; llm-compressor")
class LlmcGptq(_Llmc):
    Config = LlmcGptqConfig

    def recipe(self, ignore: list[str]) -> list:
        from llmcompressor.modifiers.quantization import GPTQModifier

        c = self.config
        groups = {"group_0": {"targets": ["Linear"],
                              "weights": self.weight_scheme(c.bits, c.group, c.sym)}}
        return [GPTQModifier(config_groups=groups, ignore=_ignore(ignore), block_size=128,
                             dampening_frac=c.damp, actorder="static" if c.act_order else None)]

    def ideal_bits(self, k: int) -> float:
        c = self.config
        g = c.group if c.group and c.group < k else k
        return c.bits + 32.0 / g + (0 if c.sym else 8.0 / g)


@register_method("llmc-sparsegpt", kind="prune", summary="llm-compressor's SparseGPT (oneshot SparseGPTModifier)",
                 source="llmcompressor", paper="Frantar & Alistarh 2023, SparseGPT; llm-compressor")
class LlmcSparseGpt(_Llmc):
    Config = LlmcSparseGptConfig

    def recipe(self, ignore: list[str]) -> list:
        from llmcompressor.modifiers.pruning import SparseGPTModifier

        from suite.methods.sparse.masks import SparsityPattern

        c = self.config
        p = SparsityPattern.parse(c.sparsity)
        structure = f"{p.m - p.n}:{p.m}" if p.structured else "0:0"  # llmc's N counts the pruned
        return [SparseGPTModifier(sparsity=p.fraction, mask_structure=structure, targets=["Linear"],
                                  ignore=_ignore(ignore), block_size=c.block, dampening_frac=c.damp)]

    def measurements(self, model: Any) -> dict[str, float]:
        if not self.layer_errors:
            return {}
        zeros = total = 0
        for name in self.layer_errors:
            w = model.get_submodule(name).weight
            zeros += int((w == 0).sum())
            total += w.numel()
        errors = list(self.layer_errors.values())
        out = {"sparsity": zeros / total, "pruned_params": float(total),
               "pruned_layers": float(len(errors)), "calibration_time_s": self.calibration_s,
               "prune_rel_error_mean": sum(errors) / len(errors), "prune_rel_error_max": max(errors)}
        if self.config.per_layer_metrics:
            out.update({f"prune_rel_error/{n}": e for n, e in self.layer_errors.items()})
        return out


@register_method("llmc-smoothquant", kind="quant",
                 summary="llm-compressor's SmoothQuant + W8A8 (oneshot), peer of smoothquant",
                 source="llmcompressor", paper="Xiao et al. 2023, SmoothQuant; llm-compressor")
class LlmcSmoothQuant(_Llmc):
    Config = LlmcSmoothQuantConfig
    needs_mappings = True

    def recipe(self, ignore: list[str]) -> list:
        from llmcompressor.modifiers.quantization import QuantizationModifier
        from llmcompressor.modifiers.transform.smoothquant import SmoothQuantModifier

        return [SmoothQuantModifier(smoothing_strength=self.config.alpha),
                QuantizationModifier(targets=["Linear"], scheme="W8A8", ignore=_ignore(ignore))]

    def ideal_bits(self, k: int) -> float:
        return 8 + 32.0 / k


@register_method("llmc-awq", kind="quant", summary="llm-compressor's AWQ + W4A16 (oneshot), peer of awq",
                 source="llmcompressor", paper="Lin et al. 2024, AWQ; llm-compressor")
class LlmcAwq(_Llmc):
    Config = LlmcAwqConfig
    needs_mappings = True

    def recipe(self, ignore: list[str]) -> list:
        from llmcompressor.modifiers.quantization import QuantizationModifier
        from llmcompressor.modifiers.transform.awq import AWQModifier

        c = self.config
        groups = {"group_0": {"targets": ["Linear"], "weights": self.weight_scheme(c.bits, c.group, c.sym)}}
        return [AWQModifier(), QuantizationModifier(config_groups=groups, ignore=_ignore(ignore))]

    def ideal_bits(self, k: int) -> float:
        c = self.config
        g = c.group if c.group and c.group < k else k
        return c.bits + 32.0 / g + (0 if c.sym else 8.0 / g)
