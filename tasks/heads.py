"""The head a classification task adds to a backbone: the one module every method trains in full."""

from __future__ import annotations

from typing import Any

from suite.errors import UserError

# Where transformers' *ForSequenceClassification / *ForImageClassification models keep the
# head they create on top of the backbone (BERT, RoBERTa, ViT: classifier; Llama, GPT-2: score).
HEAD_ATTRIBUTES = ("classifier", "score")


def classification_head(model: Any) -> tuple[Any, ...]:
    """The freshly created classification head of a transformers model, as the task's new module."""
    heads = tuple(getattr(model, name) for name in HEAD_ATTRIBUTES if getattr(model, name, None) is not None)
    if not heads:
        raise UserError(f"{type(model).__name__} has no classification head ({' or '.join(HEAD_ATTRIBUTES)}); "
                        f"use a model family with a classification class in transformers")
    return heads[:1]
