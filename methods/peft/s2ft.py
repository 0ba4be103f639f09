"""S2FT: structured sparse fine-tuning of a few attention heads and FFN channels per block.

Yang et al. 2024, S2FT: Efficient, Scalable and Generalizable LLM Fine-tuning by Structured
Sparsity (arXiv:2412.06289). In each block, choose k attention heads and c FFN channels.
Heads and channels are coupled structures: permuting the rows of Q, K, V (per head) and the
columns of the output projection O the same way leaves the block's function unchanged, and
likewise the rows of the FFN up (and gate) projections and the columns of the down
projection. S2FT co-permutes them so the chosen heads / channels come first; then the
trainable part is a dense column block of O and of W_down (Sec. 3, eq. 4-5):

    O x = O[:, :k d] x[:k d] + O[:, k d:] x[k d:]   (only O[:, :k d] trains, updated in place)

Partial backpropagation: the backward of these layers saves only the k d (resp. c) selected
input columns and computes the weight gradient only for the dense trainable block, so
gradients, optimiser states and the saved activations of these layers shrink by the
selected fraction. Everything else is frozen; the task head trains. Merging reassembles
each weight and undoes the permutation, so the exported model is the original
architecture and layout, changed only in the selected columns of O and W_down.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from functools import cache
from typing import Any

from suite.errors import UserError
from suite.method import Method, MethodContext, MethodTarget
from suite.registry import register_method

# Paths inside one transformer block, per family: q, k, v, o, up projections (rows follow
# the FFN channels), down projection.
LAYOUTS: dict[str, dict[str, Any]] = {
    "bert": dict(q="attention.self.query", k="attention.self.key", v="attention.self.value",
                 o="attention.output.dense", up=("intermediate.dense",), down="output.dense"),
    "llama": dict(q="self_attn.q_proj", k="self_attn.k_proj", v="self_attn.v_proj", o="self_attn.o_proj",
                  up=("mlp.gate_proj", "mlp.up_proj"), down="mlp.down_proj"),
    "vit": dict(q="attention.q_proj", k="attention.k_proj", v="attention.v_proj", o="attention.o_proj",
                up=("mlp.fc1",), down="mlp.fc2"),
}
FAMILY_LAYOUT = {"bert": "bert", "roberta": "bert", "xlm-roberta": "bert", "electra": "bert",
                 "llama": "llama", "mistral": "llama", "qwen2": "llama", "qwen3": "llama", "vit": "vit"}


@cache
def s2ft_classes() -> tuple[type, type]:
    """(autograd Function, Linear module) built lazily so that importing this plugin stays cheap."""
    import torch
    import torch.nn.functional as F

    class S2FTMatmul(torch.autograd.Function):
        """y = x[..., :m] Wt^T + x[..., m:] Wf^T + b, saving only x[..., :m] for Wt's gradient."""

        @staticmethod
        @torch.amp.custom_fwd(device_type="cuda")
        def forward(ctx: Any, x: torch.Tensor, w_train: torch.Tensor, w_frozen: torch.Tensor,
                    bias: torch.Tensor | None) -> torch.Tensor:
            m = w_train.shape[1]
            out = F.linear(x[..., :m], w_train) + F.linear(x[..., m:], w_frozen, bias)
            x_sel = x[..., :m].contiguous() if ctx.needs_input_grad[1] else None
            ctx.save_for_backward(x_sel, w_train, w_frozen)
            return out

        @staticmethod
        @torch.amp.custom_bwd(device_type="cuda")
        def backward(ctx: Any, grad: torch.Tensor) -> tuple:
            x_sel, w_train, w_frozen = ctx.saved_tensors
            grad_x = grad_w = None
            if ctx.needs_input_grad[0]:
                grad_x = torch.cat([grad @ w_train.to(grad.dtype), grad @ w_frozen.to(grad.dtype)], dim=-1)
            if ctx.needs_input_grad[1]:
                g2 = grad.reshape(-1, grad.shape[-1])
                grad_w = (g2.t() @ x_sel.reshape(-1, x_sel.shape[-1]).to(g2.dtype)).to(w_train.dtype)
            return grad_x, grad_w, None, None

    class S2FTLinear(torch.nn.Module):
        """A linear layer whose first ``m`` input columns (after co-permutation) train in place."""

        def __init__(self, linear: torch.nn.Linear, m: int, perm: torch.Tensor):
            super().__init__()
            w = linear.weight.detach()
            self.in_features, self.out_features = linear.in_features, linear.out_features
            self.weight_train = torch.nn.Parameter(w[:, :m].clone())
            self.register_buffer("weight_frozen", w[:, m:].clone())
            self.bias = linear.bias
            if self.bias is not None:
                self.bias.requires_grad_(False)
            self.register_buffer("perm", perm.clone())  # column j here is column perm[j] originally

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return S2FTMatmul.apply(x, self.weight_train, self.weight_frozen, self.bias)

        @torch.no_grad()
        def to_linear(self) -> torch.nn.Linear:
            """A plain nn.Linear in the permuted layout."""
            out = torch.nn.Linear(self.in_features, self.out_features, bias=self.bias is not None,
                                  device=self.weight_frozen.device, dtype=self.weight_frozen.dtype)
            out.weight.copy_(torch.cat([self.weight_train.detach(), self.weight_frozen], dim=1))
            if self.bias is not None:
                out.bias.copy_(self.bias)
            return out

    return S2FTMatmul, S2FTLinear


@dataclass
class S2FTConfig:
    heads: int = 1  # attention heads per block whose output-projection columns train
    channels: int = 32  # FFN channels per block whose down-projection columns train

    def __post_init__(self) -> None:
        if self.heads < 0 or self.channels < 0 or self.heads + self.channels == 0:
            raise ValueError("heads and channels must be >= 0 and not both 0")


@register_method("s2ft", kind="peft",
                 summary="structured sparse FT: a few heads and FFN channels per block, co-permuted, in place",
                 source="suite", paper="Yang et al. 2024, S2FT (arXiv:2412.06289)")
class S2FT(Method):
    Config = S2FTConfig
    mergeable = True
    default_lr = 1e-3

    def __init__(self, config: Any = None):
        super().__init__(config)
        self._coupled: list[tuple[Any, Any]] = []  # (frozen linear, row permutation) to undo at merge
        self.selection: list[dict[str, list[int]]] = []

    def unsupported(self, target: MethodTarget) -> str | None:
        if target.model_type and target.model_type not in FAMILY_LAYOUT:
            return f"it knows the block layout of model families {', '.join(sorted(FAMILY_LAYOUT))} only"
        cfg = target.config
        if cfg is not None:
            heads, channels = getattr(cfg, "num_attention_heads", None), getattr(cfg, "intermediate_size", None)
            if heads is not None and self.config.heads > heads:
                return f"argument 'heads'={self.config.heads} exceeds the model's {heads} attention heads"
            if channels is not None and self.config.channels > channels:
                return f"argument 'channels'={self.config.channels} exceeds the model's {channels} FFN channels"
        return None

    def apply(self, model: Any, ctx: MethodContext) -> Any:
        import torch

        from suite.methods.common.new_modules import train_new_modules
        from suite.methods.common.targets import family_of, set_module, transformer_blocks

        family = family_of(model)
        layout = LAYOUTS.get(FAMILY_LAYOUT.get(family, ""))
        if layout is None:
            raise UserError(f"method 's2ft' cannot apply to model family '{family or 'unknown'}'; "
                            f"it supports: {', '.join(sorted(FAMILY_LAYOUT))}")
        cfg = model.config
        n_heads = cfg.num_attention_heads
        n_kv = getattr(cfg, "num_key_value_heads", None) or n_heads
        head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // n_heads
        n_channels = cfg.intermediate_size
        c = self.config
        if c.heads > n_heads:
            raise UserError(f"method 's2ft': argument 'heads'={c.heads} exceeds the model's {n_heads} heads; "
                            f"valid choices: 0..{n_heads}")
        if c.channels > n_channels:
            raise UserError(f"method 's2ft': argument 'channels'={c.channels} exceeds the model's "
                            f"{n_channels} FFN channels; valid choices: 0..{n_channels}")
        _, s2ft_linear = s2ft_classes()
        for p in model.parameters():
            p.requires_grad_(False)
        generator = torch.Generator().manual_seed(ctx.seed)
        for block in transformer_blocks(model):
            chosen: dict[str, list[int]] = {}
            if c.heads:
                q_perm, kv_perm, heads = _head_permutation(n_heads, n_kv, c.heads, generator)
                chosen["heads"] = heads
                rows_q = _expand(q_perm, head_dim)
                rows_kv = _expand(kv_perm, head_dim)
                self._permute_rows(block.get_submodule(layout["q"]), rows_q)
                self._permute_rows(block.get_submodule(layout["k"]), rows_kv)
                self._permute_rows(block.get_submodule(layout["v"]), rows_kv)
                o = block.get_submodule(layout["o"])
                set_module(block, layout["o"], _permuted_s2ft(s2ft_linear, o, rows_q, c.heads * head_dim))
            if c.channels:
                perm = torch.randperm(n_channels, generator=generator)
                sel = perm[: c.channels].sort().values
                rest = torch.tensor(sorted(set(range(n_channels)) - set(sel.tolist())), dtype=torch.long)
                perm = torch.cat([sel, rest])
                chosen["channels"] = sel.tolist()
                for up in layout["up"]:
                    self._permute_rows(block.get_submodule(up), perm)
                down = block.get_submodule(layout["down"])
                set_module(block, layout["down"], _permuted_s2ft(s2ft_linear, down, perm, c.channels))
            self.selection.append(chosen)
        train_new_modules(ctx)
        return model

    @staticmethod
    def _permute_rows_of(linear: Any, perm: Any) -> None:
        import torch

        with torch.no_grad():
            idx = perm.to(linear.weight.device)
            linear.weight.copy_(linear.weight[idx])
            if linear.bias is not None:
                linear.bias.copy_(linear.bias[idx])

    def _permute_rows(self, linear: Any, perm: Any) -> None:
        self._permute_rows_of(linear, perm)
        self._coupled.append((linear, perm))

    def measurements(self, model: Any) -> dict[str, float]:
        return {"s2ft_heads_per_block": float(self.config.heads),
                "s2ft_channels_per_block": float(self.config.channels)}

    def save_adapter(self, model: Any, path: str) -> None:
        """The trainable column blocks and head, plus the chosen heads/channels per block."""
        from suite.models.accounting import save_trainable

        save_trainable(model, path)
        with open(os.path.join(path, "s2ft_selection.json"), "w", encoding="utf-8") as fh:
            json.dump(self.selection, fh)

    def merge(self, model: Any) -> Any:
        import torch

        from suite.methods.common.targets import set_module

        _, s2ft_linear = s2ft_classes()
        for name, module in list(model.named_modules()):
            if isinstance(module, s2ft_linear):
                linear = module.to_linear()
                inverse = torch.argsort(module.perm).to(linear.weight.device)
                with torch.no_grad():
                    linear.weight.copy_(linear.weight[:, inverse])
                set_module(model, name, linear)
        for linear, perm in self._coupled:
            self._permute_rows_of(linear, torch.argsort(perm))
        self._coupled = []
        return model


def _expand(head_perm: Any, head_dim: int) -> Any:
    """Row permutation of a projection from a permutation of its heads."""
    import torch

    return (head_perm[:, None] * head_dim + torch.arange(head_dim)[None, :]).reshape(-1)


def _head_permutation(n_heads: int, n_kv: int, k: int, generator: Any) -> tuple[Any, Any, list[int]]:
    """(query-head permutation, kv-head permutation, chosen query heads) with the chosen first.

    With grouped-query attention a query head must stay with its key/value head, so whole
    groups move: the chosen heads are the first k query heads of randomly chosen groups.
    """
    import torch

    group = n_heads // n_kv
    n_groups = -(-k // group)
    kv_order = torch.randperm(n_kv, generator=generator)
    kv_perm = torch.cat([kv_order[:n_groups].sort().values, kv_order[n_groups:].sort().values])
    q_perm = (kv_perm[:, None] * group + torch.arange(group)[None, :]).reshape(-1)
    if group == 1:  # plain multi-head attention: any heads may be chosen
        q_perm = kv_perm
    return q_perm, kv_perm, q_perm[:k].tolist()


def _permuted_s2ft(s2ft_linear: type, linear: Any, col_perm: Any, m: int) -> Any:
    import torch

    with torch.no_grad():
        linear.weight.copy_(linear.weight[:, col_perm.to(linear.weight.device)])
    return s2ft_linear(linear, m, col_perm)
