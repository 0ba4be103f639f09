"""What every method keeps: the modules the task added (``ctx.new_modules``), trained in full.

Methods never decide for themselves what a model's "head" is; the task says what it added
(a fresh classification head) and the context carries it. A causal LM's ``lm_head`` and
embeddings are pretrained, so no adapter method trains them unless a task marks them new.
"""

from __future__ import annotations

from typing import Any

from suite.method import MethodContext


def new_module_names(model: Any, ctx: MethodContext) -> tuple[str, ...]:
    """Where the task's new modules sit in ``model`` (qualified names)."""
    return tuple(ctx.new_module_names(model))


def train_new_modules(ctx: MethodContext) -> None:
    for p in ctx.new_parameters():
        p.requires_grad_(True)


def inside(name: str, prefixes: tuple[str, ...]) -> bool:
    """``name`` is one of ``prefixes`` or a submodule of one."""
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def not_adapted(model: Any, ctx: MethodContext) -> tuple[str, ...]:
    """Modules that adapters and quantizers leave as they are: the task's new modules (which train
    in full) and the output embedding (a causal LM's ``lm_head``: peft's all-linear skips it, and
    quantizers keep it in full precision because its errors reach every logit)."""
    names = list(new_module_names(model, ctx))
    output = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if output is not None:
        names += [n for n, m in model.named_modules() if m is output]
    return tuple(dict.fromkeys(names))
