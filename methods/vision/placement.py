"""Where vision methods (VPT, Houlsby and AdaptFormer adapters) attach in a ViT, and when they cannot.

One definition of transformers' ViT layout, shared by the methods that insert tokens or
adapters, so they place themselves alike and refuse a model laid out otherwise before any
cell runs.
"""

from __future__ import annotations

from typing import Any


def vit_layout(model: Any) -> tuple[Any, list[Any]] | None:
    """The embeddings module and the transformer blocks of a ViT in transformers' layout, or None.

    The embeddings are the module holding ``cls_token`` and ``patch_embeddings`` (its output is
    the [CLS] token followed by the patch tokens, position embeddings added); the blocks are the
    model's longest ``ModuleList``, each with ``attention.o_proj`` and an ``mlp`` ending in ``fc2``
    (transformers 5's ViT). Vision methods that insert tokens or adapters (VPT, Houlsby,
    AdaptFormer) place themselves by this, and refuse a model laid out otherwise.
    """
    import torch

    embeddings = next((m for m in model.modules() if isinstance(getattr(m, "cls_token", None), torch.nn.Parameter)
                       and hasattr(m, "patch_embeddings")), None)
    lists = [m for m in model.modules() if isinstance(m, torch.nn.ModuleList)]
    if embeddings is None or not lists:
        return None
    blocks = list(max(lists, key=len))

    def has_linear(module: Any, path: str) -> bool:
        try:
            return isinstance(module.get_submodule(path), torch.nn.Linear)
        except AttributeError:
            return False

    if not blocks or not all(has_linear(b, "attention.o_proj") and has_linear(b, "mlp.fc2") for b in blocks):
        return None
    return embeddings, blocks


def vit_refusal(method: str, target: Any, families: tuple[str, ...]) -> str | None:
    """Why a method that places itself by ``vit_layout`` cannot run on ``target`` (a
    ``suite.method.MethodTarget``) of one of the ViT ``families``; None when it can, or when the
    model is unknown offline (the cell then says what is missing)."""
    if target.task_kind != "image-classification":
        return (f"{method} works on vision transformers for image classification; this task's objective is "
                f"'{target.task_kind}'")
    if target.model_type and target.model_type not in families:
        return (f"{method} places itself in a ViT's blocks (families: {', '.join(families)}); model family "
                f"'{target.model_type}' is laid out otherwise: use lora, ssf or bitfit for it")
    skeleton = target.skeleton()
    if skeleton is not None and vit_layout(skeleton) is None:
        import transformers

        return (f"{method} needs transformers' ViT layout (embeddings with cls_token, blocks with attention.o_proj "
                f"and mlp.fc2), which this model does not have with transformers {transformers.__version__}")
    return None
