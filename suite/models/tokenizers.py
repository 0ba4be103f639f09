"""Processors built in memory for the catalog's models: no files, no download.

The tiny models get a WordPiece tokenizer that spells any lowercase English text (plus whole
words a task names) and a ViT image processor; the Llama pretraining sizes get a byte-level
tokenizer. Bytes spell any UTF-8 text without an unknown token, need no training on the
corpus (so the vocabulary cannot leak a validation split) and keep the same ids everywhere;
the price is about four tokens per English word, which a token budget counts.
"""

from __future__ import annotations

from typing import Any

TINY_IMAGE_SIZE = 16
_SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
_CHARS = list("abcdefghijklmnopqrstuvwxyz0123456789.,!?'\"-:;()")
BYTE_SPECIALS = ("<|eos|>", "<|pad|>", "<|bos|>")  # ids 256, 257, 258


def tiny_vocab(extra_words: tuple[str, ...] = ()) -> list[str]:
    """A WordPiece vocabulary that spells any lowercase English text, plus whole words."""
    words = [w for w in dict.fromkeys(extra_words) if w not in _CHARS]
    return _SPECIALS + _CHARS + [f"##{c}" for c in _CHARS if c.isalnum()] + words


def tiny_tokenizer(extra_words: tuple[str, ...] = ()) -> Any:
    """A BERT-style WordPiece tokenizer over ``tiny_vocab``."""
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


def tiny_image_processor() -> Any:
    """A ViT image processor for ``tiny-vit``: resize to its input size, scale to [-1, 1]."""
    from transformers import ViTImageProcessor

    return ViTImageProcessor(size={"height": TINY_IMAGE_SIZE, "width": TINY_IMAGE_SIZE},
                             image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5])


def _bytes_to_unicode() -> dict[int, str]:
    """The printable stand-in of every byte that byte-level BPE tokenizers use (GPT-2's map)."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) \
        + list(range(ord("®"), ord("ÿ") + 1))
    chars = list(keep)
    extra = 0
    for b in range(256):
        if b not in keep:
            keep.append(b)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(keep, map(chr, chars), strict=True))


def byte_tokenizer() -> Any:
    """A byte-level tokenizer: token id = byte value (0..255), then EOS, PAD and BOS.

    A ``PreTrainedTokenizerFast`` over a BPE model with no merges, so every byte of the UTF-8
    text is one token; it saves, loads and decodes like any Hugging Face tokenizer.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {char: byte for byte, char in _bytes_to_unicode().items()}
    core = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, model_input_names=["input_ids", "attention_mask"])
    tokenizer.add_special_tokens({"eos_token": BYTE_SPECIALS[0], "pad_token": BYTE_SPECIALS[1],
                                  "bos_token": BYTE_SPECIALS[2]})
    return tokenizer
