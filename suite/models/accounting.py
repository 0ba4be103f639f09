"""What a model costs: parameter counts and the bytes a method's trained state takes on disk."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any


def count_parameters(model: Any) -> tuple[int, int]:
    """(trainable, total) parameters, counting shared tensors once."""
    seen: set[int] = set()
    trainable = total = 0
    for p in model.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        total += p.numel()
        if p.requires_grad:
            trainable += p.numel()
    return trainable, total


def non_embedding_parameters(model: Any) -> int:
    """Parameters outside the input and output embeddings (tied ones counted once): what a
    pretraining token budget is proportional to."""
    skip = set()
    for get in ("get_input_embeddings", "get_output_embeddings"):
        module = getattr(model, get, lambda: None)()
        if module is not None:
            skip.update(id(p) for p in module.parameters())
    seen: set[int] = set()
    total = 0
    for p in model.parameters():
        if id(p) in seen or id(p) in skip:
            continue
        seen.add(id(p))
        total += p.numel()
    return total


def trainable_state_dict(model: Any) -> dict[str, Any]:
    return {n: p.detach().contiguous().cpu() for n, p in model.named_parameters() if p.requires_grad}


def save_trainable(model: Any, path: str) -> None:
    """Save the trainable tensors as safetensors: what a method needs to restore its training."""
    from safetensors.torch import save_file

    os.makedirs(path, exist_ok=True)
    save_file(trainable_state_dict(model), os.path.join(path, "trainable.safetensors"))


def folder_size(path: str | os.PathLike) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def measure_adapter_size(method: Any, model: Any) -> int:
    """Bytes the method writes to keep its trained state; written to a temp dir, then deleted."""
    folder = tempfile.mkdtemp(prefix="suite-adapter-")
    try:
        method.save_adapter(model, folder)
        return folder_size(folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
