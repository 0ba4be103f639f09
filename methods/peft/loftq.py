"""LoftQ: a quantised frozen base whose LoRA adapter starts where quantisation lost the most.

Li et al. 2023, LoftQ: LoRA-Fine-Tuning-Aware Quantization (arXiv:2310.08659), Algorithm 1.
For each adapted weight W, alternate T times, from A_0 B_0 = 0:

    Q_t = q(W - B_{t-1} A_{t-1})          (eq. 6: quantise what the adapter does not carry)
    B_t A_t = SVD_r(W - Q_t)              (eq. 7: the best rank-r fit of what q lost)

then train the adapter on the frozen Q_T. At initialisation the model's weight is
Q_T + s B_T A_T (s the LoRA scaling) instead of QLoRA's q(W): the init error
``||W - Q - s B A||`` is below ``||W - q(W)||`` already at T = 1 (Eckart-Young).

Written here rather than through peft, because peft 0.21 quantises with bitsandbytes on
CUDA only and ignores the LoRA scaling when it writes A and B. This version quantises with
the shared formats module (NF4 with double quantisation by default, any weight format by
name: ``loftq:format=int2,block=64``), so it runs on any device, reports the same cost
measurements as the ``quant`` methods, and compares directly with ``nf4+lora`` (QLoRA):
like QLoRA, every linear layer but the task head is quantised, and the adapted ones get
the LoftQ initialisation. Plugin module: torch and peft are imported lazily.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from suite.errors import UserError
from suite.method import MethodContext
from suite.methods.peft.library import LoraConfig
from suite.methods.peft.lora_family import Lora
from suite.methods.quant.quantizers import QuantMethod
from suite.metrics import cost
from suite.registry import register_method


@dataclass
class LoftqConfig(LoraConfig):
    format: str = "nf4"  # any weight format of the formats module (nf4, int2..int8, mxfp4, nvfp4, ...)
    block: int = 64  # NF4 block / integer group size (0: one scale per row for integers)
    symmetric: bool = True  # integer formats only
    double_quant: bool = True  # NF4 only: quantise the block scales too (QLoRA)
    iters: int = 1  # T, alternating steps (the paper uses 1 to 5)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.iters < 1:
            raise ValueError("iters must be at least 1")
        if self.block < 0:
            raise ValueError("block must be 0 or a positive integer")
        from suite.numerics import formats

        try:  # an unknown name fails before any cell runs, naming the method (ValueError)
            formats.resolve_format(self.format)
        except UserError as exc:
            raise ValueError(str(exc)) from None


def weight_options(config: LoftqConfig, in_features: int) -> tuple[str, dict]:
    """The format name and its options for a weight with ``in_features`` columns."""
    from suite.methods.quant import engine
    from suite.numerics import formats as F

    spec = F.resolve_format(config.format)
    if spec.family == "int":
        return spec.name, engine.int_weight_opts(spec.bits, config.block, in_features, config.symmetric)
    if spec.family == "nf4":
        return spec.name, {"block_size": config.block or 64, "double_quant": config.double_quant}
    return spec.name, {}


def loftq_factors(weight: Any, fmt: str, opts: dict, rank: int, scaling: float,
                  iters: int) -> tuple[Any, int, Any, Any]:
    """Algorithm 1 on one weight: (dequantised Q, its storage bytes, B, A) with
    ``Q + scaling * B @ A`` the initial weight. A and B share sqrt(S) of the SVD."""
    import torch

    from suite.methods.peft.svd_linear import top_svd
    from suite.methods.quant import engine

    w = weight.detach().float()
    low_rank = torch.zeros_like(w)
    for _ in range(iters):
        q, nbytes = engine.quantize_weight(w - low_rank, fmt, opts)
        u, s, vh = top_svd(w - q.float(), rank)
        root = (s / scaling).sqrt()
        b, a = u * root, root[:, None] * vh
        low_rank = scaling * (b @ a)
    return q, nbytes, b, a


@register_method("loftq", kind="peft",
                 summary="quantised frozen base (NF4 by default) + LoRA initialised so Q + BA approximates W",
                 source="suite", paper="Li et al. 2023, LoftQ: LoRA-Fine-Tuning-Aware Quantization "
                                       "(arXiv:2310.08659)")
class LoftQ(Lora):
    Config = LoftqConfig
    metrics = (*QuantMethod.metrics, cost("loftq_init_error_mean", "LoftQ initial error"),
               cost("qlora_init_error_mean", "QLoRA initial error"))

    @classmethod
    def peft_argument_map(cls) -> None:
        """Not read from a peft config: LoftQ quantises the base itself, with its own formats."""
        return None

    def __init__(self, config: Any = None):
        super().__init__(config)
        self.records: list = []
        self.calibration_s = 0.0
        self.qlora_errors: list[float] = []
        self.adapted_layers: set[str] = set()

    def apply(self, model: Any, ctx: MethodContext) -> Any:
        """Quantise every linear layer but the head, wrap the targets in LoRA, then write
        the LoftQ factors into the adapters (after wrapping, to read peft's scaling)."""
        import torch

        from suite.methods.common.new_modules import not_adapted
        from suite.methods.common.targets import matching_modules
        from suite.methods.quant import engine
        from suite.methods.quant.algorithms import relative_error

        start = time.perf_counter()
        c = self.config
        layers = engine.target_linears(model, not_adapted(model, ctx))
        adapted = {name for name, _ in matching_modules(model, self.targets(model) or [], torch.nn.Linear)}
        originals: dict[str, Any] = {}
        for name, linear in layers.items():
            fmt, opts = weight_options(c, linear.in_features)
            if name in adapted:
                originals[name] = linear.weight.detach().clone()
            wq, nbytes = engine.quantize_weight(linear.weight, fmt, opts)
            engine.install(model, name, linear, wq, nbytes, self.records)
        peft_model = super().apply(model, ctx)

        inner = peft_model.base_model.model
        errors = {r.name: r for r in self.records}
        with torch.no_grad():
            for name, module in inner.named_modules():
                if name not in originals or not hasattr(module, "lora_A"):
                    continue
                w = originals[name]
                scaling = float(module.scaling["default"])
                fmt, opts = weight_options(c, w.shape[1])
                q, nbytes, b, a = loftq_factors(w, fmt, opts, c.r, scaling, c.iters)
                base = module.get_base_layer()
                base.weight.copy_(q)
                base.storage_bytes = nbytes
                module.lora_A["default"].weight.copy_(a.to(module.lora_A["default"].weight.dtype))
                module.lora_B["default"].weight.copy_(b.to(module.lora_B["default"].weight.dtype))
                self.qlora_errors.append(errors[name].rel_error)  # install() measured ||W - q(W)||
                errors[name].rel_error = relative_error(w, q.float() + scaling * (b @ a))
                errors[name].storage_bytes = nbytes
                self.adapted_layers.add(name)
        if not self.qlora_errors:
            raise UserError(f"method '{self.name}': none of the adapted layers is quantisable")
        self.calibration_s = time.perf_counter() - start
        ctx.notes[f"{self.name}.matmul"] = "simulated"
        return peft_model

    def measurements(self, model: Any) -> dict[str, float]:
        """The quantizers' measurements (``quant_rel_error`` is the initial weight's error:
        Q + sBA against W for adapted layers), plus the mean init error of LoftQ and of
        QLoRA (q(W) alone) over the adapted layers, side by side."""
        from suite.methods.quant import engine

        out = engine.measurements(self.records, model, self.calibration_s, False)
        adapted = [r.rel_error for r in self.records if r.name in self.adapted_layers]
        out["loftq_init_error_mean"] = sum(adapted) / max(len(adapted), 1)
        out["qlora_init_error_mean"] = sum(self.qlora_errors) / max(len(self.qlora_errors), 1)
        return out

    def merge(self, model: Any) -> Any:
        from suite.methods.quant import engine

        return engine.merge_quant_linears(super().merge(model))
