"""Bottleneck adapters in every block of a ViT: Houlsby (sequential) and AdaptFormer (parallel).

Both add a bottleneck ``up(act(down(h)))`` (``d -> m -> d``) to each transformer block, every
block alike, and train it with the task's head while the backbone stays frozen. They differ
in where the branch sits:

- Houlsby et al. 2019, Parameter-Efficient Transfer Learning for NLP (arXiv:1902.00751),
  Section 2.1 and Figure 2: two adapters per layer, "after the projection following
  multi-headed attention and after the two feed-forward layers", each with its own skip
  connection, ``h <- h + up(act(down(h)))``, applied to the sub-layer's output before the
  block's residual. Near-identity at the start: weights from a zero-mean Gaussian with
  standard deviation 1e-2, truncated at two standard deviations, zero biases. The layer
  normalisation parameters train too (Section 2.1). The nonlinearity is GELU, as in the
  authors' adapter-bert code. In transformers' ViT: after ``attention.o_proj`` and after
  ``mlp.fc2``.
- AdaptFormer, Chen et al. 2022 (arXiv:2205.13535), eq. (1)-(2): one AdaptMLP per block,
  parallel to the MLP on the same normalised input,
  ``x_l = MLP(LN(x'_l)) + s * up(ReLU(down(LN(x'_l)))) + x'_l``, with scale ``s = 0.1``;
  the up-projection starts at zero (their code's LoRA-style init: down Kaiming-uniform,
  biases zero), so the model starts exactly as the backbone. In transformers' ViT: on the
  ``mlp`` module, whose input is ``layernorm_after``'s output.

Both default to a bottleneck of 8, so they compare at the same width. The adapters are
submodules of the module they attach to (``houlsby_adapter``, ``adaptformer_adapter``),
added by forward hooks, so the model's own module names stay as they were.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any, Literal

from suite.errors import UserError
from suite.method import Method, MethodContext, MethodTarget
from suite.registry import register_method


@cache
def bottleneck_class() -> type:
    import torch

    class Bottleneck(torch.nn.Module):
        """``scale * up(act(down(x)))``: an adapter's branch, added to the stream by a hook."""

        def __init__(self, dim: int, width: int, activation: str, scale: float, like: torch.Tensor):
            super().__init__()
            kwargs = {"device": like.device, "dtype": like.dtype}
            self.down = torch.nn.Linear(dim, width, **kwargs)
            self.up = torch.nn.Linear(width, dim, **kwargs)
            self.act = torch.nn.GELU() if activation == "gelu" else torch.nn.ReLU()
            self.scale = scale

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.scale * self.up(self.act(self.down(x)))

    return Bottleneck


def add_houlsby(module: Any, args: tuple, output: Any) -> Any:
    """Forward hook of a sub-layer's last projection: ``h + adapter(h)``."""
    return output + module.houlsby_adapter(output)


def add_adaptformer(module: Any, args: tuple, output: Any) -> Any:
    """Forward hook of the MLP: ``MLP(z) + s * adapter(z)`` on the MLP's own input ``z = LN(x')``."""
    return output + module.adaptformer_adapter(args[0])


def _vit_blocks(model: Any, method: str) -> list[Any]:
    from suite.methods.vision.placement import vit_layout

    layout = vit_layout(model)
    if layout is None:
        raise UserError(f"method '{method}' cannot apply to this model: it has no ViT layout (blocks with "
                        f"attention.o_proj and mlp.fc2)")
    return layout[1]


def _refusal(method: str, target: MethodTarget) -> str | None:
    from suite.methods.common.targets import VIT_LIKE
    from suite.methods.vision.placement import vit_refusal

    return vit_refusal(method, target, VIT_LIKE)


@dataclass
class HoulsbyConfig:
    bottleneck: int = 8  # m, the adapter's inner width
    activation: Literal["gelu", "relu"] = "gelu"
    init_std: float = 1e-2  # near-identity start: truncated normal weights, zero biases
    train_norms: bool = True  # the paper trains the layer norms with the adapters

    def __post_init__(self) -> None:
        if self.bottleneck < 1:
            raise ValueError("bottleneck must be at least 1")
        if self.init_std < 0:
            raise ValueError("init_std must be >= 0")


@register_method("houlsby", kind="peft", summary="bottleneck adapters after attention and after the MLP of "
                 "every block (and the layer norms)", source="suite",
                 paper="Houlsby et al. 2019, Parameter-Efficient Transfer Learning for NLP (arXiv:1902.00751)")
class Houlsby(Method):
    Config = HoulsbyConfig

    def unsupported(self, target: MethodTarget) -> str | None:
        return _refusal("houlsby", target)

    def apply(self, model: Any, ctx: MethodContext) -> Any:
        import torch

        from suite.methods.common.new_modules import train_new_modules

        blocks = _vit_blocks(model, "houlsby")
        for p in model.parameters():
            p.requires_grad_(False)
        cfg = self.config
        adapter = bottleneck_class()
        for block in blocks:
            for path in ("attention.o_proj", "mlp.fc2"):
                linear = block.get_submodule(path)
                branch = adapter(linear.out_features, cfg.bottleneck, cfg.activation, 1.0, linear.weight)
                with torch.no_grad():
                    for layer in (branch.down, branch.up):
                        torch.nn.init.trunc_normal_(layer.weight, std=cfg.init_std, a=-2 * cfg.init_std,
                                                    b=2 * cfg.init_std)
                        layer.bias.zero_()
                linear.houlsby_adapter = branch
                linear.register_forward_hook(add_houlsby)
        if cfg.train_norms:
            for module in model.modules():
                if isinstance(module, torch.nn.LayerNorm):
                    for p in module.parameters():
                        p.requires_grad_(True)
        train_new_modules(ctx)
        return model


@dataclass
class AdaptFormerConfig:
    bottleneck: int = 8  # the AdaptMLP's inner width
    scale: float = 0.1  # s in eq. (2)

    def __post_init__(self) -> None:
        if self.bottleneck < 1:
            raise ValueError("bottleneck must be at least 1")


@register_method("adaptformer", kind="peft", summary="a scaled bottleneck MLP in parallel with the MLP of "
                 "every block", source="suite",
                 paper="Chen et al. 2022, AdaptFormer (arXiv:2205.13535)")
class AdaptFormer(Method):
    Config = AdaptFormerConfig

    def unsupported(self, target: MethodTarget) -> str | None:
        return _refusal("adaptformer", target)

    def apply(self, model: Any, ctx: MethodContext) -> Any:
        import math

        import torch

        from suite.methods.common.new_modules import train_new_modules

        blocks = _vit_blocks(model, "adaptformer")
        for p in model.parameters():
            p.requires_grad_(False)
        adapter = bottleneck_class()
        for block in blocks:
            mlp = block.mlp
            fc2 = mlp.get_submodule("fc2")
            branch = adapter(fc2.out_features, self.config.bottleneck, "relu", self.config.scale, fc2.weight)
            with torch.no_grad():
                torch.nn.init.kaiming_uniform_(branch.down.weight, a=math.sqrt(5))
                torch.nn.init.zeros_(branch.up.weight)
                torch.nn.init.zeros_(branch.down.bias)
                torch.nn.init.zeros_(branch.up.bias)
            mlp.adaptformer_adapter = branch
            mlp.register_forward_hook(add_adaptformer)
        train_new_modules(ctx)
        return model
