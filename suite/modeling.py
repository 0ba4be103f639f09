"""Models: build tiny ones from configs (tests, smoke), load real ones, count and save them.

Model names: ``tiny-bert``, ``tiny-llama`` and ``tiny-vit`` are built from a config with
random weights (no download); a path to a local folder loads that Hugging Face model;
anything else is a hub id (needs the network or the local cache).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Any

from suite.errors import UserError

TINY_MODELS = ("tiny-bert", "tiny-llama", "tiny-vit")
TINY_FAMILIES = {"tiny-bert": "bert", "tiny-llama": "llama", "tiny-vit": "vit"}
TINY_IMAGE_SIZE = 16
_SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
_CHARS = list("abcdefghijklmnopqrstuvwxyz0123456789.,!?'\"-:;()")


def tiny_vocab(extra_words: tuple[str, ...] = ()) -> list[str]:
    """A WordPiece vocabulary that spells any lowercase English text, plus whole words."""
    words = [w for w in dict.fromkeys(extra_words) if w not in _CHARS]
    return _SPECIALS + _CHARS + [f"##{c}" for c in _CHARS if c.isalnum()] + words


def tiny_tokenizer(extra_words: tuple[str, ...] = ()) -> Any:
    """A BERT-style WordPiece tokenizer over ``tiny_vocab``; built in memory, no files."""
    from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordPiece
    from transformers import PreTrainedTokenizerFast

    vocab = {word: i for i, word in enumerate(tiny_vocab(tuple(extra_words)))}
    core = Tokenizer(WordPiece(vocab, unk_token="[UNK]"))
    core.normalizer = normalizers.BertNormalizer(lowercase=True)
    core.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    core.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
    )
    core.decoder = decoders.WordPiece()
    return PreTrainedTokenizerFast(
        tokenizer_object=core, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
        sep_token="[SEP]", mask_token="[MASK]", model_input_names=["input_ids", "token_type_ids",
                                                                    "attention_mask"],
    )


def tiny_config(name: str, vocab_size: int, **overrides: Any) -> Any:
    """Small enough to train in seconds on a 2-core CPU; real architectures, random weights."""
    if name == "tiny-bert":
        from transformers import BertConfig

        cfg = dict(
            vocab_size=vocab_size, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
            intermediate_size=128, max_position_embeddings=256, hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0,
        )
        cfg.update(overrides)
        return BertConfig(**cfg)
    if name == "tiny-llama":
        from transformers import LlamaConfig

        cfg = dict(
            vocab_size=vocab_size, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, intermediate_size=128, max_position_embeddings=256,
            pad_token_id=0,
        )
        cfg.update(overrides)
        return LlamaConfig(**cfg)
    if name == "tiny-vit":
        from transformers import ViTConfig

        cfg = dict(
            image_size=TINY_IMAGE_SIZE, patch_size=4, num_channels=3, hidden_size=64, num_hidden_layers=2,
            num_attention_heads=4, intermediate_size=128, hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0,
        )
        cfg.update(overrides)
        return ViTConfig(**cfg)
    raise UserError(f"unknown tiny model '{name}'; choose one of: {', '.join(TINY_MODELS)}")


def tiny_image_processor() -> Any:
    """A ViT image processor for ``tiny-vit``: resize to its input size, scale to [-1, 1]."""
    from transformers import ViTImageProcessor

    return ViTImageProcessor(size={"height": TINY_IMAGE_SIZE, "width": TINY_IMAGE_SIZE},
                             image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5])


def model_config(model_name: str) -> Any:
    """The transformers config of a model without loading weights; None when it cannot be had offline."""
    if model_name in TINY_MODELS:
        return tiny_config(model_name, vocab_size=len(tiny_vocab()))
    try:
        from transformers import AutoConfig

        path = resolve_model_path(model_name)
        return AutoConfig.from_pretrained(path, local_files_only=True)
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


def model_family(model: Any) -> str:
    config = getattr(model, "config", None)
    return getattr(config, "model_type", "") or ""


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


def guess_family(model_name: str) -> str:
    """The model family without loading weights: a tiny model's, or config.json's model_type."""
    import json

    if model_name in TINY_FAMILIES:
        return TINY_FAMILIES[model_name]
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

