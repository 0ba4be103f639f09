"""Which linear layers a training recipe runs in low precision, and what trains under a recipe.

Every ``nn.Linear`` of the model runs in low precision except the task's fresh head and the
output embedding (a causal LM's ``lm_head``), which stay in high precision as in torchao's
and TransformerEngine's recipes and in Quartet (their errors reach every logit), and the
layers the user names in ``skip``. A model that is entirely new (pretraining from scratch:
the task marks the whole model new) keeps only its output embedding in high precision.

A recipe changes how the GEMMs run, not what trains: it composes first, and the methods to
its right choose the parameters (``fp8-train+lora``: LoRA on the FP8 base; ``fp8-train+full``:
every parameter). Alone, a recipe trains what is trainable when it is applied, except that
a pretrained model's input and output embeddings are frozen when nothing has chosen yet,
as under every method but ``full`` (a from-scratch model is all new and trains in full).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from suite.errors import CellFailure
from suite.method import MethodContext
from suite.methods.common.new_modules import inside


def high_precision_names(model: nn.Module, ctx: MethodContext) -> tuple[str, ...]:
    """The task's new modules (but not a new root: a from-scratch model) and the output embedding."""
    names = [n for n in ctx.new_module_names(model) if n]
    output = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if output is not None:
        names += [n for n, m in model.named_modules() if m is output]
    return tuple(dict.fromkeys(names))


def target_linears(model: nn.Module, ctx: MethodContext, skip: tuple[str, ...] = (),
                   kinds: tuple[type, ...] = (nn.Linear,), exclude: tuple[type, ...] = ()) -> dict[str, nn.Linear]:
    """The linear layers to run in low precision, by qualified name."""
    keep = high_precision_names(model, ctx)
    out: dict[str, nn.Linear] = {}
    for name, module in model.named_modules():
        if type(module) not in kinds or isinstance(module, exclude):
            continue
        if inside(name, keep) or any(s and s in name for s in skip):
            continue
        out[name] = module
    if not out:
        raise CellFailure("the model has no linear layer to train in low precision (all are the task's "
                          "head, the output embedding or skipped)")
    return out


def block_index(model: nn.Module, names: list[str] | tuple[str, ...]) -> tuple[dict[str, int], int]:
    """Which transformer block each named layer sits in, and how many blocks there are: the
    blocks are the entries of the longest ``nn.ModuleList`` that holds any of ``names`` (a
    decoder's ``layers``, an encoder's ``layer``). Layers outside it are left out; ``({}, 0)``
    for a model without such a list."""
    best, best_len = None, 0
    for list_name, module in model.named_modules():
        if not isinstance(module, nn.ModuleList) or len(module) <= best_len:
            continue
        prefix = f"{list_name}." if list_name else ""
        if any(n.startswith(prefix) and n[len(prefix):].split(".")[0].isdigit() for n in names):
            best, best_len = prefix, len(module)
    if best is None:
        return {}, 0
    found = {n: int(n[len(best):].split(".")[0]) for n in names
             if n.startswith(best) and n[len(best):].split(".")[0].isdigit()}
    return found, best_len


def set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)


def freeze_pretrained_embeddings(model: nn.Module, ctx: MethodContext) -> None:
    """When every parameter is trainable (no method has chosen), freeze the input and output
    embeddings unless the task made them (see the module docstring)."""
    params = list(model.parameters())
    if not params or not all(p.requires_grad for p in params):
        return
    new = {id(p) for p in ctx.new_parameters()}
    for get in ("get_input_embeddings", "get_output_embeddings"):
        module = getattr(model, get, lambda: None)()
        if module is None:
            continue
        for p in module.parameters():
            if id(p) not in new:
                p.requires_grad_(False)


def replace_back(model: nn.Module, kind: type, convert: Any) -> nn.Module:
    """Swap every module of ``kind`` for ``convert(module)`` (a plain layer with its parameters)."""
    for name, module in list(model.named_modules()):
        if isinstance(module, kind):
            set_module(model, name, convert(module))
    return model
