"""Peers of the training recipes: torchao's float8 and MXFP8 training, wrapped as methods.

``torchao-float8:recipe=tensorwise|rowwise|rowwise_with_gw_hp`` converts the same linear
layers our recipes convert (``suite.methods.train.layers``: all but the task's head and the
output embedding, and ``skip``) with ``torchao.float8.convert_to_float8_training``;
``torchao-mxfp8`` swaps them for torchao's ``MXFP8Linear``. Both train under BF16 autocast
with FP32 master weights, like ``bf16-train`` and the ``*-train`` recipes, so a sweep
compares them on the same data, steps and precision of everything else.

Emulated or real: torchao's own choice. float8 runs its FP8 GEMMs where the GPU has FP8
tensor cores (compute capability 8.9+; rowwise needs 9.0) and otherwise with
``Float8LinearConfig(emulate=True)``; MXFP8 runs real kernels on Blackwell (10.0+) and
otherwise ``KernelPreference.EMULATED``. ``emulate=true`` forces emulation. The cell stores
``train_gemm_emulated``.

Two adaptations, neither changing torchao's arithmetic: each converted layer casts its input
to the autocast dtype and runs with autocast off (torchao does exactly this on CUDA; on a
CPU its emulated matmuls would otherwise run under CPU autocast, and ``rowwise_with_gw_hp``
fails there on mixed dtypes), and ``torchao-mxfp8`` pads the tokens with zero rows to a
multiple of 32, the block size its weight-gradient cast needs along the tokens (zero rows
add nothing to any product and are dropped from the output).

Plugin module: torch and torchao are imported inside the methods.
"""

from __future__ import annotations

import importlib.util
import types
from dataclasses import dataclass
from typing import Any, Literal

from suite.method import Method, MethodContext, MethodTarget
from suite.methods.common import measurements
from suite.registry import register_method


@dataclass
class TorchaoConfig:
    skip: tuple[str, ...] = ()  # layer-name substrings kept in BF16
    emulate: bool = False  # true: emulate even on a GPU with the real kernels


@dataclass
class Float8Config(TorchaoConfig):
    recipe: Literal["tensorwise", "rowwise", "rowwise_with_gw_hp"] = "tensorwise"


@dataclass
class Mxfp8PeerConfig(TorchaoConfig):
    scale: Literal["rceil", "floor"] = "rceil"  # E8M0 scale rule (torchao's default: rceil)
    wgrad_hp: bool = False  # the weight-gradient GEMM in high precision


class TorchaoTraining(Method):
    kind = "train"
    mergeable = True
    version = "1"
    metrics = (measurements.GEMM_EMULATED, measurements.GEMM_REAL_FRACTION)
    min_capability: tuple[int, int] = (8, 9)
    pad_rows = 0  # zero-pad the tokens to a multiple of this (0: no padding)
    cast_input = True  # cast the input to the autocast dtype (False: to the weight's, and cast the output)

    def unsupported(self, target: MethodTarget) -> str | None:
        if importlib.util.find_spec("torchao") is None:
            return "torchao is not installed (pip install torchao)"
        return None

    def precision_policy(self, policy: Any) -> Any:
        from suite.precision import BF16_AUTOCAST

        return BF16_AUTOCAST

    def real_kernels(self, device: str) -> bool:
        """Whether torchao's real kernels can run here (else its emulation)."""
        import torch

        if self.config.emulate or not str(device).startswith("cuda") or not torch.cuda.is_available():
            return False
        return torch.cuda.get_device_capability(torch.device(device)) >= self.min_capability

    def apply(self, model: Any, ctx: MethodContext) -> Any:
        from suite.methods.train.layers import freeze_pretrained_embeddings, target_linears

        layers = target_linears(model, ctx, tuple(self.config.skip))
        # torchao's GEMMs need both dimensions of a layer divisible by 16: others stay in BF16
        self.targets = {n for n, m in layers.items() if m.in_features % 16 == 0 and m.out_features % 16 == 0}
        self.kept = len(layers) - len(self.targets)
        self.real = self.real_kernels(ctx.device)
        self.convert(model, ctx)
        for name, module in model.named_modules():
            if name in self.targets:
                _autocast_like_torchao(module, self.pad_rows, self.cast_input)
        freeze_pretrained_embeddings(model, ctx)
        return model

    def convert(self, model: Any, ctx: MethodContext) -> None:
        raise NotImplementedError

    def measurements(self, model: Any) -> dict[str, float]:
        return {"train_lowp_layers": float(len(getattr(self, "targets", ()))),
                "train_bf16_layers_kept": float(getattr(self, "kept", 0)),
                "train_gemm_emulated": 0.0 if getattr(self, "real", False) else 1.0,
                "train_gemm_real_fraction": 1.0 if getattr(self, "real", False) else 0.0}

    def merge(self, model: Any) -> Any:
        import torch

        from suite.methods.train.layers import set_module

        for name, module in list(model.named_modules()):
            if name in getattr(self, "targets", ()):
                plain = torch.nn.Linear(module.in_features, module.out_features, bias=module.bias is not None,
                                        device="meta")
                plain.weight, plain.bias = module.weight, module.bias
                set_module(model, name, plain)
        return model


@register_method("torchao-float8", kind="train", source="torchao",
                 summary="torchao float8 training (peer of fp8-train): recipe=tensorwise (E4M3 fwd, E5M2 grads, "
                         "per tensor) | rowwise (E4M3 all, per row) | rowwise_with_gw_hp (wgrad in BF16)",
                 paper="torchao float8 training (github.com/pytorch/ao, torchao.float8)")
class TorchaoFloat8(TorchaoTraining):
    """torchao's ``convert_to_float8_training`` with one of its recipes (emulated off FP8 GPUs).

    tensorwise: X, W E4M3 and dY E5M2, one scale per tensor, all three GEMMs in FP8;
    rowwise: every operand E4M3 with power-of-two row scales along the contraction;
    rowwise_with_gw_hp: rowwise forward and dgrad, the weight-gradient GEMM in high precision.
    """

    Config = Float8Config

    def convert(self, model: Any, ctx: MethodContext) -> None:
        import dataclasses

        from torchao.float8 import Float8LinearConfig, convert_to_float8_training

        if self.config.recipe != "tensorwise":
            self.min_capability = (9, 0)  # rowwise scaled GEMMs: CUTLASS on Hopper
            self.real = self.real_kernels(ctx.device)
        config = dataclasses.replace(Float8LinearConfig.from_recipe_name(self.config.recipe), emulate=not self.real)
        targets = self.targets
        convert_to_float8_training(model, config=config, module_filter_fn=lambda _m, fqn: fqn in targets)


@register_method("torchao-mxfp8", kind="train", source="torchao",
                 summary="torchao MXFP8 training (peer of mxfp8-train): X, W, dY MXFP8 E4M3, 1x32 blocks along "
                         "each GEMM's contraction, E8M0 scales (rceil); all three GEMMs; emulated off Blackwell",
                 paper="torchao MX training (github.com/pytorch/ao, torchao.prototype.moe_training)")
class TorchaoMxfp8(TorchaoTraining):
    """torchao's ``MXFP8Linear``: every operand of the three GEMMs MXFP8 E4M3 (blocks of 32 along
    the contraction, E8M0 scales by ``scale``); ``wgrad_hp`` keeps the wgrad GEMM in BF16."""

    Config = Mxfp8PeerConfig
    min_capability = (10, 0)
    pad_rows = 32
    cast_input = False  # MXFP8Linear dequantises both operands to their own dtypes: keep X with W (FP32)

    def convert(self, model: Any, ctx: MethodContext) -> None:
        from torchao.prototype.moe_training.mxfp8_linear import MXFP8Linear
        from torchao.prototype.mx_formats.config import ScaleCalculationMode
        from torchao.quantization.quantize_.common.kernel_preference import KernelPreference

        from suite.methods.train.layers import set_module

        preference = KernelPreference.AUTO if self.real else KernelPreference.EMULATED
        mode = ScaleCalculationMode.RCEIL if self.config.scale == "rceil" else ScaleCalculationMode.FLOOR
        for name, module in list(model.named_modules()):
            if name not in self.targets:
                continue
            layer = MXFP8Linear(module.in_features, module.out_features, bias=module.bias is not None,
                                device="meta", kernel_preference=preference, scale_calculation_mode=mode,
                                wgrad_with_hp=self.config.wgrad_hp)
            layer.weight, layer.bias = module.weight, module.bias
            layer.train(module.training)
            set_module(model, name, layer)


def _autocast_like_torchao(module: Any, pad_rows: int = 0, cast_input: bool = True) -> None:
    """Run ``module`` with autocast off and its input cast to the autocast dtype (``cast_input``;
    else to the weight's dtype, and the output to the autocast dtype; see the module docstring);
    with ``pad_rows``, zero-pad the flattened tokens to a multiple of it."""
    import torch

    original = module.forward

    def forward(self: Any, x: torch.Tensor) -> torch.Tensor:
        device_type = x.device.type
        autocast = torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else None
        x = x.to(autocast) if autocast is not None and cast_input else x.to(self.weight.dtype)
        shape = x.shape
        flat = x.reshape(-1, shape[-1])
        extra = (-flat.shape[0]) % pad_rows if pad_rows else 0
        if extra:
            flat = torch.nn.functional.pad(flat, (0, 0, 0, extra))
        with torch.autocast(device_type=device_type, enabled=False):
            y = original(flat)
        if autocast is not None:
            y = y.to(autocast)
        return y[:flat.shape[0] - extra].reshape(*shape[:-1], y.shape[-1])

    module.forward = types.MethodType(forward, module)
