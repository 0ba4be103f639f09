"""VPT: visual prompt tuning, learned prompt tokens inserted after a ViT's [CLS] token.

Jia et al. 2022, Visual Prompt Tuning (arXiv:2203.12119), Section 3.2. ``p`` prompt tokens
of the hidden size ``d`` go between [CLS] and the patch tokens, after the position
embeddings (prompts carry no position). With ``x`` the [CLS] token and ``E`` the patch tokens:

- VPT-Shallow (eq. 4-6): one set ``P`` enters the first layer and travels on like any token,
  ``[x_1, Z_1, E_1] = L_1([x_0, P, E_0])``, ``[x_i, Z_i, E_i] = L_i([x_{i-1}, Z_{i-1}, E_{i-1}])``.
- VPT-Deep (eq. 7-8): a set per layer; what a layer made of its prompts is dropped and the
  next layer gets its own, ``[x_i, _, E_i] = L_i([x_{i-1}, P_{i-1}, E_{i-1}])``, i = 1..N.

The head reads the [CLS] output, ``y = Head(x_N)``, which is what transformers' ViT classifier
does. Prompts start uniform in ``(-v, v)``, ``v = sqrt(6 / (3 * patch_h * patch_w + d))``
(the paper's code: Xavier over the patch projection's fan-in and ``d``), and pass a dropout
(0 by default). The backbone is frozen; the prompts and the task's head train. Prompts are
submodules (``vpt_prompt``) of the embeddings and of each deep layer, inserted by forward
hooks, so the model's own module names stay as they were.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache
from typing import Any

from suite.errors import UserError
from suite.method import Method, MethodContext, MethodTarget
from suite.registry import register_method


@cache
def prompt_class() -> type:
    import torch

    class PromptTokens(torch.nn.Module):
        """``p`` learned tokens of width ``d``, with dropout, expanded over the batch."""

        def __init__(self, num_tokens: int, dim: int, bound: float, dropout: float, like: torch.Tensor):
            super().__init__()
            tokens = torch.empty(num_tokens, dim, device=like.device, dtype=like.dtype)
            self.tokens = torch.nn.Parameter(tokens.uniform_(-bound, bound))
            self.dropout = torch.nn.Dropout(dropout)

        def forward(self, batch_size: int) -> torch.Tensor:
            return self.dropout(self.tokens).unsqueeze(0).expand(batch_size, -1, -1)

    return PromptTokens


def insert_after_cls(module: Any, args: tuple, output: Any) -> Any:
    """Forward hook of the embeddings: [CLS], then the prompts, then the patch tokens."""
    import torch

    prompts = module.vpt_prompt(output.shape[0]).to(output.dtype)
    return torch.cat([output[:, :1], prompts, output[:, 1:]], dim=1)


def replace_prompts(module: Any, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    """Forward pre-hook of a deep layer: its own prompts in place of what the last layer made of them."""
    import torch

    hidden = args[0] if args else kwargs["hidden_states"]
    count = module.vpt_prompt.tokens.shape[0]
    prompts = module.vpt_prompt(hidden.shape[0]).to(hidden.dtype)
    new = torch.cat([hidden[:, :1], prompts, hidden[:, 1 + count:]], dim=1)
    if args:
        return (new, *args[1:]), kwargs
    return args, {**kwargs, "hidden_states": new}


@dataclass
class VPTConfig:
    num_tokens: int = 10  # prompt tokens per set (the paper searches 1 to 200 per task)
    deep: bool = True  # a set per layer (VPT-Deep); false: one set before the first layer (VPT-Shallow)
    dropout: float = 0.0  # dropout on the prompt tokens

    def __post_init__(self) -> None:
        if self.num_tokens < 1:
            raise ValueError("num_tokens must be at least 1")
        if not 0 <= self.dropout < 1:
            raise ValueError("dropout must be in [0, 1)")


@register_method("vpt", kind="peft", summary="visual prompt tuning: prompt tokens after [CLS], every layer "
                 "(deep) or the first (deep=false)", source="suite",
                 paper="Jia et al. 2022, Visual Prompt Tuning (arXiv:2203.12119)")
class VPT(Method):
    Config = VPTConfig

    def unsupported(self, target: MethodTarget) -> str | None:
        from suite.methods.common.targets import VIT_LIKE
        from suite.methods.vision.placement import vit_refusal

        return vit_refusal("vpt", target, VIT_LIKE)

    def apply(self, model: Any, ctx: MethodContext) -> Any:
        from suite.methods.common.new_modules import train_new_modules
        from suite.methods.vision.placement import vit_layout

        layout = vit_layout(model)
        if layout is None:
            raise UserError("method 'vpt' cannot apply to this model: it has no ViT layout (embeddings with "
                            "cls_token, blocks with attention.o_proj and mlp.fc2)")
        embeddings, blocks = layout
        for p in model.parameters():
            p.requires_grad_(False)
        like = embeddings.cls_token
        dim = like.shape[-1]
        patch = embeddings.patch_embeddings.patch_size
        patch_h, patch_w = (patch, patch) if isinstance(patch, int) else patch
        bound = math.sqrt(6.0 / (3 * patch_h * patch_w + dim))
        tokens = prompt_class()
        cfg = self.config
        embeddings.vpt_prompt = tokens(cfg.num_tokens, dim, bound, cfg.dropout, like)
        embeddings.register_forward_hook(insert_after_cls)
        if cfg.deep:
            for block in blocks[1:]:
                block.vpt_prompt = tokens(cfg.num_tokens, dim, bound, cfg.dropout, like)
                block.register_forward_pre_hook(replace_prompts, with_kwargs=True)
        train_new_modules(ctx)
        return model
