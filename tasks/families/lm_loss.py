"""Language-model loss: the family base of pretraining and continued-pretraining tasks.

A subclass yields raw texts per split (``texts``). Training text is tokenised, joined with
EOS between documents and packed into fixed-length blocks of ``max_length`` tokens,
streamed (an ``IterableDataset``), so corpora larger than memory train; the loop needs
``max_steps`` for a stream. A long document is tokenised in pieces (``pieces``), so one
large document does not cost the tokenizer's memory for all of it at once. Evaluation is
the mean token cross-entropy on the held-out split's blocks (``val_loss``, lower is better)
and its perplexity, streamed batch by batch.

A model built from a config trains from scratch: every module is new, so the bundle's
``new_modules`` is the whole model and every method trains all of it. A pretrained model
(continued pretraining) has nothing new.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator
from functools import cache
from typing import Any

from suite.errors import UserError
from suite.metrics import PERPLEXITY, VAL_LOSS
from suite.task import Metric, ModelBundle, Task

PIECE_CHARS = 1 << 16  # a longer document is tokenised in pieces of at most this many characters


def pieces(text: str) -> Iterator[tuple[str, bool]]:
    """``(piece, is_last)`` of a document: itself when short; a long one cut after a line break (or a
    space), so one large document never goes through the tokenizer at once. Tokens at a cut can differ
    from tokenising the whole (a byte tokenizer's never do)."""
    start = 0
    while len(text) - start > PIECE_CHARS:
        end = start + PIECE_CHARS
        cut = (text.rfind("\n", start, end) + 1) or (text.rfind(" ", start, end) + 1) or end
        yield text[start:cut], False
        start = cut
    yield text[start:], True


@cache
def _packed_blocks_class() -> type:
    import torch

    class PackedBlocks(torch.utils.data.IterableDataset):
        """Texts tokenised, separated by EOS, and cut into blocks of exactly ``block`` tokens."""

        def __init__(self, texts: Callable[[], Iterator[str]], tokenizer: Any, block: int,
                     limit: int | None = None):
            self.texts = texts  # returns a fresh iterator of documents each time
            self.tokenizer = tokenizer
            self.block = block
            self.limit = limit

        def __iter__(self) -> Iterator[dict]:
            buffer: list[int] = []
            produced = 0
            eos = self.tokenizer.eos_token_id
            for text in self.texts():
                for piece, last in pieces(text):
                    buffer += self.tokenizer(piece, add_special_tokens=False)["input_ids"]
                    if last:
                        buffer.append(eos)
                    start = 0  # blocks are cut by offset, and the rest kept once per piece, not per block
                    while len(buffer) - start >= self.block:
                        yield {"input_ids": buffer[start:start + self.block]}
                        start += self.block
                        produced += 1
                        if self.limit and produced >= self.limit:
                            return
                    del buffer[:start]

    return PackedBlocks


def packed_blocks(texts: Callable[[], Iterator[str]], tokenizer: Any, block: int, limit: int | None = None) -> Any:
    """A stream of fixed-length token blocks (a torch IterableDataset); torch is imported on first use."""
    return _packed_blocks_class()(texts, tokenizer, block, limit)


class LanguageModelingTask(Task):
    """A task whose model is a causal LM judged by its loss on held-out text."""

    objective = "language-modeling"
    primary_metric = "val_loss"
    metrics = (VAL_LOSS, PERPLEXITY)
    baseline = "bf16-train"  # what a board of pretraining losses is judged against by default (--baseline)
    higher_is_better = False
    eval_splits = ("valid",)

    # -- model --------------------------------------------------------------------------------
    def build_model(self, model_name: str) -> ModelBundle:
        from suite.models.loading import load_model, model_family

        loaded = load_model(model_name, "causal-lm", task=self.name)
        if loaded.processor.eos_token_id is None:
            raise UserError(f"the tokenizer of '{model_name}' has no EOS token to separate documents")
        # Built from a config, it trains from scratch: all of it is new. A pretrained model has nothing new.
        new = (loaded.model,) if loaded.from_scratch else ()
        return ModelBundle(model=loaded.model, processor=loaded.processor, new_modules=new,
                           family=model_family(loaded.model), name=model_name)

    def trains_from_scratch(self, model_name: str) -> bool:
        """A model the catalog builds from a config (``llama-30m``, ``tiny-llama``) is pretrained from scratch."""
        from suite.errors import UserError
        from suite.models.catalog import lookup

        try:
            return lookup(model_name) is not None
        except UserError:  # a malformed name: building the model says so
            return False

    # -- data ---------------------------------------------------------------------------------
    def texts(self, split: str) -> Iterator[str]:
        """The raw documents of a split, in a fixed order."""
        raise NotImplementedError

    def train_data(self, bundle: ModelBundle, recipe: Any) -> Any:
        return packed_blocks(lambda: self.texts("train"), bundle.tokenizer, recipe.max_length, recipe.limit)

    def collate(self, items: list[dict], bundle: ModelBundle) -> dict:
        import torch

        ids = torch.tensor([it["input_ids"] for it in items])
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()}

    # -- evaluation ---------------------------------------------------------------------------
    def evaluate_split(self, bundle: ModelBundle, recipe: Any, device: str, split: str) -> tuple[list[Metric], Any]:
        import pandas as pd
        import torch

        blocks = iter(packed_blocks(lambda: self.texts(split), bundle.tokenizer, recipe.max_length, recipe.limit))
        losses: list[float] = []
        while chunk := list(itertools.islice(blocks, recipe.eval_batch_size)):  # streamed, never held whole
            batch = self.collate(chunk, bundle)
            logits = bundle.model(input_ids=batch["input_ids"].to(device)).logits.float()
            per_token = torch.nn.functional.cross_entropy(
                logits[:, :-1].reshape(-1, logits.shape[-1]), batch["labels"][:, 1:].reshape(-1).to(device),
                reduction="none").view(len(batch["input_ids"]), -1)
            losses += per_token.mean(dim=1).cpu().tolist()
        if not losses:
            raise UserError(f"task '{self.name}': split '{split}' holds less text than one block of "
                            f"{recipe.max_length} tokens")
        loss = sum(losses) / len(losses)  # blocks have equal length: the mean over tokens
        metrics = [Metric("val_loss", loss, higher_is_better=False),
                   Metric("perplexity", math.exp(min(loss, 50.0)), higher_is_better=False)]
        return metrics, pd.DataFrame({"split": split, "example_id": list(range(len(losses))), "prediction": losses,
                                      "label": float("nan"), "correct": [-v for v in losses]})
