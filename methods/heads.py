"""Find a model's task head (``classifier``, ``score``, ``lm_head``): methods keep it trainable."""

from __future__ import annotations

from typing import Any

HEAD_NAMES = ("classifier", "score", "lm_head", "qa_outputs")


def head_module_names(model: Any) -> list[str]:
    """Top-level names of the modules that form the task head of a transformers model."""
    names = [n for n in HEAD_NAMES if getattr(model, n, None) is not None]
    if "lm_head" in names and len(names) > 1:
        names.remove("lm_head")
    return names


def head_parameters(model: Any) -> list[Any]:
    return [p for n in head_module_names(model) for p in getattr(model, n).parameters()]
