"""The models the suite builds by name from a config, with random weights and no download.

Two groups, with names that say which is which:

- ``tiny-bert``, ``tiny-llama``, ``tiny-vit``: real architectures small enough to train in
  seconds on a 2-core CPU, with a WordPiece tokenizer (or a ViT image processor) built in
  memory. Tests and the smoke preset use them; they check a path, never a method's quality.
- ``llama-250k``, ``llama-500k``, ``llama-tiny`` (1M), ``llama-2m``, ``llama-4m``, ``llama-10m``,
  ``llama-30m``, ``llama-125m``: the Llama-style sizes of the pretraining task (``lm``; the
  smallest five make a scaling grid a CPU can train), trained from scratch on a byte-level tokenizer; the number is the
  count of non-embedding parameters (blocks and final norm, as Kaplan et al. 2020 count), which
  does not depend on the tokenizer. ``llama-30m@<tokenizer>`` trains the size with a real
  tokenizer (a local folder, or a hub id when online).

Anything else is a local model folder or a hub id, loaded by ``suite.models.loading``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from suite.errors import UserError


@dataclass(frozen=True)
class LlamaSize:
    """A Llama-style architecture: SwiGLU MLP, RMSNorm, RoPE, tied input/output embeddings."""

    hidden: int
    layers: int
    heads: int
    intermediate: int

    def non_embedding_params(self) -> int:
        """Blocks (4 d^2 attention + 3 d i MLP + 2 norms each) plus the final norm."""
        d, i = self.hidden, self.intermediate
        return self.layers * (4 * d * d + 3 * d * i + 2 * d) + d

    def settings(self) -> dict[str, Any]:
        return dict(hidden_size=self.hidden, num_hidden_layers=self.layers, num_attention_heads=self.heads,
                    num_key_value_heads=self.heads, intermediate_size=self.intermediate,
                    max_position_embeddings=4096, tie_word_embeddings=True, attention_bias=False, mlp_bias=False)


# Widths and MLP sizes are multiples of 32, so every block format (MX: 32, NVFP4: 16) and
# FP8 GEMM (multiples of 16) takes every linear layer without padding.
# Sizes below llama-tiny (and llama-2m, llama-4m) make a scaling grid that trains on a CPU; every
# size keeps heads of width 32.
LLAMA_SIZES: dict[str, LlamaSize] = {
    "llama-250k": LlamaSize(hidden=64, layers=5, heads=2, intermediate=192),      # 0.27M
    "llama-500k": LlamaSize(hidden=96, layers=5, heads=3, intermediate=256),      # 0.55M
    "llama-tiny": LlamaSize(hidden=128, layers=5, heads=4, intermediate=352),     # 1.0M
    "llama-2m": LlamaSize(hidden=160, layers=6, heads=5, intermediate=448),       # 1.9M
    "llama-4m": LlamaSize(hidden=192, layers=9, heads=6, intermediate=512),       # 4.0M
    "llama-10m": LlamaSize(hidden=256, layers=12, heads=4, intermediate=704),     # 9.6M
    "llama-30m": LlamaSize(hidden=512, layers=10, heads=8, intermediate=1376),    # 31.6M
    "llama-125m": LlamaSize(hidden=768, layers=18, heads=12, intermediate=2048),  # 127M
}


@dataclass(frozen=True)
class NamedModel:
    """One catalog entry: the architecture and the processor it is built with."""

    name: str
    family: str  # transformers' model_type
    summary: str
    processor: Literal["wordpiece", "bytes", "image"]
    config_class: str  # the transformers config class
    settings: Mapping[str, Any] = field(default_factory=dict)

    def make_processor(self, words: tuple[str, ...] = (), tokenizer: str | None = None,
                       ends_text: bool = False) -> Any:
        """The processor: ``words`` join a WordPiece vocabulary whole; ``tokenizer`` replaces the
        byte tokenizer of a pretraining size; ``ends_text`` gives a WordPiece tokenizer an end-of-text
        token ([SEP]), which a causal LM needs to end documents and answers."""
        from suite.models import tokenizers

        if self.processor == "image":
            return tokenizers.tiny_image_processor()
        if self.processor == "bytes":
            return tokenizers.byte_tokenizer() if tokenizer is None else load_tokenizer(tokenizer)
        made = tokenizers.tiny_tokenizer(words)
        if ends_text:
            made.eos_token = "[SEP]"
        return made

    def make_config(self, processor: Any = None, **overrides: Any) -> Any:
        """The transformers config; a tokenizer's size and special ids enter it."""
        import transformers

        from suite.models import tokenizers

        values = dict(self.settings)
        if self.processor == "wordpiece":
            values["vocab_size"] = len(processor) if processor is not None else len(tokenizers.tiny_vocab())
            if processor is not None and processor.eos_token == "[SEP]":
                values.update(pad_token_id=processor.pad_token_id, eos_token_id=processor.eos_token_id)
        elif self.processor == "bytes":
            processor = processor if processor is not None else tokenizers.byte_tokenizer()
            values.update(vocab_size=len(processor), pad_token_id=processor.pad_token_id,
                          eos_token_id=processor.eos_token_id, bos_token_id=processor.bos_token_id)
        values.update(overrides)
        return getattr(transformers, self.config_class)(**values)


_TINY_TEXT = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                  max_position_embeddings=256)

CATALOG: dict[str, NamedModel] = {
    "tiny-bert": NamedModel("tiny-bert", "bert", "BERT, 2 layers of width 64, WordPiece tokenizer (tests)",
                            "wordpiece", "BertConfig",
                            {**_TINY_TEXT, "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}),
    "tiny-llama": NamedModel("tiny-llama", "llama", "Llama, 2 layers of width 64, WordPiece tokenizer (tests)",
                             "wordpiece", "LlamaConfig", {**_TINY_TEXT, "num_key_value_heads": 2, "pad_token_id": 0}),
    "tiny-vit": NamedModel("tiny-vit", "vit", "ViT, 2 layers of width 64 on 16x16 images (tests)", "image",
                           "ViTConfig", dict(image_size=16, patch_size=4, num_channels=3, hidden_size=64,
                                             num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                                             hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)),
    **{name: NamedModel(name, "llama", f"Llama pretraining size, {size.non_embedding_params() / 1e6:.1f}M "
                                       f"non-embedding parameters, byte tokenizer", "bytes", "LlamaConfig",
                        size.settings())
       for name, size in LLAMA_SIZES.items()},
}


def split_model_name(name: str) -> tuple[str, str | None]:
    """``llama-30m@path/to/tokenizer`` -> ("llama-30m", "path/to/tokenizer")."""
    size, sep, tokenizer = name.partition("@")
    return size, (tokenizer or None) if sep else None


def lookup(name: str) -> tuple[NamedModel, str | None] | None:
    """The catalog entry a model name builds, with the tokenizer named after '@'; None for a
    folder or hub id. A tokenizer goes only with a pretraining size."""
    base, tokenizer = split_model_name(name)
    if tokenizer is not None and base not in LLAMA_SIZES:
        if os.path.exists(os.path.expanduser(name)):
            return None  # a folder whose name holds an '@'
        raise UserError(f"'{name}': a tokenizer after '@' goes with a pretraining size ({', '.join(LLAMA_SIZES)})")
    entry = CATALOG.get(base)
    return (entry, tokenizer) if entry is not None else None


def load_tokenizer(name: str) -> Any:
    """A real tokenizer for a pretraining size: it must end documents, and pads with EOS if it has no PAD."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(os.path.expanduser(name))
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot load tokenizer '{name}': {exc}") from None
    if tokenizer.eos_token_id is None:
        raise UserError(f"tokenizer '{name}' has no EOS token to separate documents")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer
