"""The one way a task family gets a model, and what can be known of a model without loading it.

``load_model(name, head, ...)`` builds a catalog name (``suite.models.catalog``) from its
config with random weights, or loads a local Hugging Face folder or a hub id with its own
processor, for one of the heads in ``HEADS``; failures end in one message naming the model,
the task and what it needs. The task family then says what it added (its fresh head, or the
whole model when it trains from scratch).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from suite.errors import UserError
from suite.models.catalog import lookup


@dataclass(frozen=True)
class Head:
    """A transformers auto class and the processor that goes with it."""

    auto_class: str
    processor: str  # "tokenizer" | "image"
    needs: str  # what a task with this head needs, for messages


HEADS: dict[str, Head] = {
    "sequence-classification": Head("AutoModelForSequenceClassification", "tokenizer",
                                    "a model with a sequence-classification form in transformers"),
    "image-classification": Head("AutoModelForImageClassification", "image",
                                 "a vision backbone whose folder holds preprocessor_config.json"),
    "causal-lm": Head("AutoModelForCausalLM", "tokenizer", "a causal LM (Llama, Qwen, Mistral, GPT-2, ...)"),
}

# Where transformers' *ForSequenceClassification / *ForImageClassification models keep the
# head they create on top of the backbone (BERT, RoBERTa, ViT: classifier; Llama, GPT-2: score).
HEAD_ATTRIBUTES = ("classifier", "score")
HUB_HINT = "Use a local model folder (--models /path/to/folder) when the Hugging Face hub is not reachable"


@dataclass
class LoadedModel:
    model: Any
    processor: Any
    from_scratch: bool  # built from a catalog config with random weights


def load_model(name: str, head: str, *, task: str, words: tuple[str, ...] = (),
               config: dict[str, Any] | None = None, pretrained: dict[str, Any] | None = None) -> LoadedModel:
    """``name`` as a model with ``head``, for task ``task``.

    ``config`` overrides the catalog config of a named model (``num_labels``); ``pretrained``
    goes to ``from_pretrained`` of a loaded one; ``words`` join a tiny tokenizer's vocabulary.
    """
    import transformers

    spec = HEADS[head]
    auto = getattr(transformers, spec.auto_class)
    named = lookup(name)
    if named is not None:
        entry, tokenizer = named
        processor = entry.make_processor(words, tokenizer, ends_text=head == "causal-lm")
        try:
            model = auto.from_config(entry.make_config(processor, **(config or {})))
        except ValueError:
            raise UserError(f"'{name}' has no {head} form; task '{task}' needs {spec.needs}") from None
        return LoadedModel(model, processor, from_scratch=True)
    path = resolve_model_path(name)
    processor = _load_processor(name, path, spec, task)
    try:
        model = auto.from_pretrained(path, **(pretrained or {}))
    except OSError as exc:
        raise UserError(f"cannot load model '{name}': {exc}. {HUB_HINT}") from None
    except ValueError as exc:
        raise UserError(f"model '{name}' has no {head} form ({_first_sentence(exc)}); task '{task}' needs "
                        f"{spec.needs}") from None
    return LoadedModel(model, processor, from_scratch=False)


def _load_processor(name: str, path: str, spec: Head, task: str) -> Any:
    from transformers import AutoImageProcessor, AutoTokenizer

    kind = "image processor" if spec.processor == "image" else "tokenizer"
    try:
        if spec.processor == "image":
            return AutoImageProcessor.from_pretrained(path)
        return AutoTokenizer.from_pretrained(path)
    except OSError as exc:
        if not Path(path).exists():
            raise UserError(f"cannot load model '{name}': {exc}. {HUB_HINT}") from None
        raise UserError(f"model '{name}' has no {kind} ({_first_sentence(exc)}); task '{task}' needs "
                        f"{spec.needs}") from None
    except ValueError as exc:
        raise UserError(f"model '{name}' has no {kind} ({_first_sentence(exc)}); task '{task}' needs "
                        f"{spec.needs}") from None


def _first_sentence(exc: BaseException) -> str:
    return str(exc).strip().split(". ")[0].splitlines()[0] if str(exc).strip() else type(exc).__name__


def classification_head(model: Any) -> tuple[Any, ...]:
    """The freshly created classification head of a transformers model, as the task's new module."""
    heads = tuple(getattr(model, name) for name in HEAD_ATTRIBUTES if getattr(model, name, None) is not None)
    if not heads:
        raise UserError(f"{type(model).__name__} has no classification head ({' or '.join(HEAD_ATTRIBUTES)}); "
                        f"use a model family with a classification class in transformers")
    return heads[:1]


def model_family(model: Any) -> str:
    """A loaded model's ``model_type`` ("bert", "llama", "vit"), "" when it has no config."""
    config = getattr(model, "config", None)
    return getattr(config, "model_type", "") or ""


# -- without loading weights ----------------------------------------------------------------------
def resolve_model_path(name: str) -> str:
    """A local folder if one exists at ``name`` (with a config.json), else the name itself."""
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").exists():
            raise UserError(
                f"model folder '{name}' has no config.json; point --models at a Hugging Face "
                f"model folder (config.json + weights)"
            )
        return str(path.resolve())
    if name.startswith((".", "/", "~")):
        raise UserError(f"model folder '{name}' does not exist")
    return name


def model_config(model_name: str) -> Any:
    """The transformers config of a model without loading weights; None when it cannot be had offline."""
    named = lookup(model_name)
    if named is not None:
        return named[0].make_config()
    try:
        from transformers import AutoConfig

        return AutoConfig.from_pretrained(resolve_model_path(model_name), local_files_only=True)
    except Exception:  # noqa: BLE001 - unknown here (offline hub id): the cell itself will tell
        return None


@lru_cache(maxsize=8)
def model_skeleton(model_name: str) -> Any:
    """The model's backbone on the meta device (no memory, no weights): its structure, for checks
    made before any cell runs (does it have bias terms, which modules). None when unknown offline."""
    config = model_config(model_name)
    if config is None:
        return None
    try:
        import torch
        from transformers import AutoModel

        with torch.device("meta"):
            return AutoModel.from_config(config)
    except Exception:  # noqa: BLE001 - a family transformers cannot build bare: no structural checks
        return None


def guess_family(model_name: str) -> str:
    """The model family without loading weights: a catalog model's, or config.json's model_type."""
    try:
        named = lookup(model_name)
    except UserError:
        named = None
    if named is not None:
        return named[0].family
    config = Path(model_name).expanduser() / "config.json"
    if config.is_file():
        try:
            return json.loads(config.read_text()).get("model_type", "")
        except (OSError, ValueError):
            return ""
    lowered = model_name.lower()
    for family in ("roberta", "deberta", "bert", "llama", "qwen", "mistral", "gpt2", "t5", "vit"):
        if family in lowered:
            return family
    return ""
