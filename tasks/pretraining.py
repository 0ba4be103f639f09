"""lm: language-model pretraining from scratch (or continued), judged by held-out loss.

Models
------
The Llama-style pretraining sizes of the model catalog (``suite.models.catalog``):
``llama-tiny`` (~1M non-embedding parameters, for tests), ``llama-10m``, ``llama-30m``,
``llama-125m``, built from a config with random weights on a byte-level tokenizer;
``llama-30m@<tokenizer>`` trains a size with a real tokenizer, and a pretrained model (a
folder or hub id) continues pretraining with its own tokenizer.

Data
----
From the hub, streamed (``datasets``): ``lm`` is FineWeb-Edu (``sample-10BT``; it has no
validation split, so every 100th document is held out and training skips it),
``lm-c4`` is C4 English (its validation split) and ``lm-wikitext`` WikiText-103 raw (its
validation split). With ``--data-dir`` the files of a local folder, read as they come:
``train*`` and ``valid*`` / ``validation*`` / ``val*`` files, each plain text (documents
separated by blank lines), jsonl with a ``text`` field, or parquet with a ``text`` column of
strings; UTF-8, with or without a byte-order mark. Without a validation file every 100th
training document is held out, so the training files need at least 100 documents. Documents
are tokenised, joined with EOS and packed into blocks of ``--max-length`` tokens.

Budget
------
``--tokens-per-param`` (default 20, Chinchilla's ratio) times the non-embedding
parameters, or ``--train-tokens``, sets the number of training tokens; ``--max-steps``
overrides both. The loop needs a step count for a stream, so the budget becomes a dataset
of exactly that many blocks (see ``TokenBudget``); ``--epochs`` multiplies it.

Evaluation
----------
Mean token cross-entropy (``val_loss``, the primary metric, lower is better) and
perplexity on the first ``--eval-tokens`` tokens of the held-out split (default 2^18; the
same tokens for every cell), at the end and every ``--eval-every`` optimizer steps: a
fixed number of tokens per step, so these are fixed token intervals. Those evaluations are
stored as the cell's curve (the store's ``curves`` table) beside the training loss.
"""

from __future__ import annotations

import glob
import itertools
import json
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass, replace
from functools import cache
from typing import Any, ClassVar

from suite.config import option
from suite.errors import UserError
from suite.registry import register_task
from suite.task import EvalOutput, ModelBundle
from suite.tasks.families.lm_loss import LanguageModelingTask, packed_blocks
from suite.tasks.text_files import open_text

HOLDOUT_EVERY = 100  # without a validation split, every 100th document is held out
SELECT_EVERY = 10  # a selection view (tuning) holds out every 10th training document and trains on the rest
TEXT_SUFFIXES = (".txt", ".text", ".jsonl", ".json", ".parquet")


# -- reading documents ------------------------------------------------------------------------
def read_documents(path: str) -> Iterator[str]:
    """Documents of one local file, streamed: plain text (blank-line separated), jsonl, parquet."""
    lower = path.lower()
    if lower.endswith(".parquet"):
        yield from _parquet_documents(path)
    elif lower.endswith((".jsonl", ".json")):
        yield from _jsonl_documents(path)
    else:
        yield from _text_documents(path)


def _jsonl_documents(path: str) -> Iterator[str]:
    with open_text(path) as fh:
        for line_no, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError:
                raise UserError(f"{path}, line {line_no}: not valid JSON; each line must be one "
                                f'{{"text": ...}} object') from None
            text = row.get("text") if isinstance(row, dict) else None
            if not isinstance(text, str):
                raise UserError(f"{path}, line {line_no}: no string field 'text' (found: "
                                f"{', '.join(row) if isinstance(row, dict) else type(row).__name__})")
            if text:
                yield text


def _text_documents(path: str) -> Iterator[str]:
    with open_text(path) as fh:
        lines: list[str] = []
        for line in fh:
            if line.strip():
                lines.append(line)
            elif lines:
                yield "".join(lines).strip("\n")
                lines = []
        if lines:
            yield "".join(lines).strip("\n")


def _parquet_documents(path: str) -> Iterator[str]:
    handle = parquet_file(path)
    for group in range(handle.num_row_groups):
        for text in handle.read_row_group(group, columns=["text"]).column("text").to_pylist():
            if text:
                yield text


def parquet_file(path: str) -> Any:
    """An open parquet file whose ``text`` column holds strings; the footer alone is read."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        handle = pq.ParquetFile(path)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for a broken file
        raise UserError(f"{path}: cannot read as parquet ({exc})") from None
    schema = handle.schema_arrow
    if "text" not in schema.names:
        raise UserError(f"{path}: no column 'text' (columns: {', '.join(schema.names)})")
    kind = schema.field("text").type
    if pa.types.is_dictionary(kind):  # pandas' categorical strings
        kind = kind.value_type
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)
            or getattr(pa.types, "is_string_view", lambda _: False)(kind)):
        raise UserError(f"{path}: column 'text' holds {schema.field('text').type}, not strings; write each "
                        f"document as a string in column 'text'")
    return handle


def local_split_files(folder: str, split: str) -> list[str]:
    """Files of a split in ``folder``: ``train*`` or ``valid*`` / ``validation*`` / ``val*``."""
    stems = ("train",) if split == "train" else ("valid", "validation", "val")
    found: list[str] = []
    for stem in stems:
        for path in sorted(glob.glob(os.path.join(folder, f"{stem}*"))):
            rest = os.path.basename(path)[len(stem):]
            if stem == "val" and rest.startswith(("id", "idation")):
                continue  # valid*/validation* were matched already
            if os.path.isfile(path) and path.lower().endswith(TEXT_SUFFIXES) and path not in found:
                found.append(path)
    return found


def holdout(documents: Iterator[str], split: str) -> Iterator[str]:
    """Every ``HOLDOUT_EVERY``-th document is validation; training gets the others."""
    for i, doc in enumerate(documents):
        if (i % HOLDOUT_EVERY == HOLDOUT_EVERY - 1) == (split != "train"):
            yield doc


# -- the token budget ---------------------------------------------------------------------------
@cache
def _token_budget_class() -> type:
    import torch

    class TokenBudget(torch.utils.data.Dataset):
        """Exactly ``n`` packed blocks of a stream, as a map-style dataset so the loop derives its
        step count from the length; the stream restarts when the corpus runs out.

        The index is not used: a packed stream has no random access, so items come in stream
        order (as from the ``IterableDataset`` the base class streams), whichever index the
        loop's sampler asks for. ``n`` is a whole number of optimizer steps of blocks.
        """

        def __init__(self, blocks: Any, n: int):
            self.blocks = blocks  # an iterable of blocks, re-iterable (a PackedBlocks)
            self.n = n
            self._it: Iterator[dict] | None = None

        def __len__(self) -> int:
            return self.n

        def __getitem__(self, index: int) -> dict:
            for _ in range(2):
                if self._it is None:
                    self._it = iter(self.blocks)
                try:
                    return next(self._it)
                except StopIteration:
                    self._it = None
            raise UserError("the training corpus holds less text than one block of the chosen "
                            "--max-length; use a shorter --max-length or more text")

    return TokenBudget


@dataclass(frozen=True)
class PretrainingOptions:
    """The token budget of a pretraining task (``--tokens-per-param``, ``--train-tokens``,
    ``--eval-tokens``). They were recipe fields once; marked ``recipe=True``, they are still stored
    and hashed with the recipe, so cells from then keep their ids."""

    tokens_per_param: float = option(20.0, "train on this many tokens per non-embedding parameter (Chinchilla: "
                                           "20) unless max_steps or train_tokens is set", recipe=True)
    train_tokens: int | None = option(None, "train on this many tokens (overrides tokens_per_param; max_steps "
                                            "overrides both)", recipe=True)
    eval_tokens: int | None = option(2**18, "evaluate on the first N held-out tokens, the same for every cell "
                                           "(none: the whole split)", recipe=True)

    def __post_init__(self) -> None:
        if not (math.isfinite(self.tokens_per_param) and self.tokens_per_param > 0):
            raise ValueError("tokens_per_param must be a positive number")
        if self.train_tokens is not None and self.train_tokens <= 0:
            raise ValueError("train_tokens must be positive")
        if self.eval_tokens is not None and self.eval_tokens <= 0:
            raise ValueError("eval_tokens must be positive")


def budget_tokens(options: PretrainingOptions, model: Any) -> tuple[int, str]:
    """The number of training tokens the options ask for, and how it was set."""
    from suite.models.accounting import non_embedding_parameters

    if options.train_tokens is not None:
        return int(options.train_tokens), f"train_tokens={options.train_tokens}"
    params = non_embedding_parameters(model)
    return (int(math.ceil(options.tokens_per_param * params)),
            f"{options.tokens_per_param:g} tokens x {params:,} non-embedding parameters")


# -- the tasks -----------------------------------------------------------------------------------
class PretrainingTask(LanguageModelingTask):
    """Causal-LM pretraining on a corpus from the hub or a local folder (see the module docstring)."""

    default_model = "llama-tiny"
    version = "1"
    # (dataset path, config name, train split, validation split or None to hold out)
    hub: ClassVar[tuple[str, str | None, str, str | None]] = ("", None, "train", None)
    Options: ClassVar[type] = PretrainingOptions
    eval_splits = ("valid",)

    # -- data --------------------------------------------------------------------------------
    def data_source(self) -> str:
        if self.data_dir:
            return f"dir:{os.path.abspath(self.data_dir)}"
        path, name, _, _ = self.hub
        return f"hub:{path}" + (f"/{name}" if name else "")

    def check_data(self) -> None:
        if self.data_dir:
            self._check_local_files()
            return
        import importlib.util

        if importlib.util.find_spec("datasets") is None:
            raise UserError(f"task '{self.name}' streams {self.hub[0]} from the hub with the "
                            f"'datasets' package, which is not installed; pip install datasets, or "
                            f"point --data-dir at local files")

    def _check_local_files(self) -> None:
        """Before any cell: a training file, parquet columns of strings, the first documents readable,
        and a hold-out that is not empty. Only the first documents are read, so the check does not grow
        with the corpus; a bad line further on is named when training reaches it."""
        train, valid = local_split_files(self.data_dir, "train"), local_split_files(self.data_dir, "valid")
        if not train:
            raise UserError(f"task '{self.name}': no training file in '{self.data_dir}'; expected "
                            f"train.txt, train.jsonl (a 'text' field per line) or train*.parquet "
                            f"(a 'text' column), and optionally valid.* / validation.*")
        for path in train + valid:
            if path.lower().endswith(".parquet"):
                parquet_file(path)
        for path in valid:
            next(read_documents(path), None)
        documents = sum(1 for _ in itertools.islice(self._files(train), HOLDOUT_EVERY))
        if not valid and documents < HOLDOUT_EVERY:
            raise UserError(f"task '{self.name}': '{self.data_dir}' has no valid* file, and without one every "
                            f"{HOLDOUT_EVERY}th training document is held out for validation, but its training "
                            f"files hold only {documents}; add a valid.txt or valid.jsonl file, or at least "
                            f"{HOLDOUT_EVERY} documents")

    def for_selection(self) -> PretrainingTask:
        """Tuning trains on the training documents but every ``SELECT_EVERY``-th and is scored on those,
        never on the validation text the board reports."""
        import copy

        view = copy.copy(self)
        view.selection = True
        view.eval_splits = ("val",)
        return view

    def examples(self, split: str, limit: int | None = None) -> list:
        """The first documents of a split; the check before a search reads one of each part."""
        if self.selection and next(iter(self.texts("val")), None) is None:
            raise UserError(f"task '{self.name}': too few training documents to hold out every "
                            f"{SELECT_EVERY}th for tuning")
        return list(itertools.islice(self.texts(split), limit))

    def texts(self, split: str) -> Iterator[str]:
        if self.selection:
            held = split != "train"
            documents = enumerate(self._texts("train"))
            return (doc for i, doc in documents if (i % SELECT_EVERY == SELECT_EVERY - 1) == held)
        return self._texts(split)

    def _texts(self, split: str) -> Iterator[str]:
        if self.data_dir:
            files = local_split_files(self.data_dir, split)
            if split != "train" and not files:  # no validation file: hold out part of train
                return holdout(self._files(local_split_files(self.data_dir, "train")), split)
            if split == "train" and not local_split_files(self.data_dir, "valid"):
                return holdout(self._files(files), split)
            return self._files(files)
        return self._hub_texts(split)

    @staticmethod
    def _files(files: list[str]) -> Iterator[str]:
        for path in files:
            yield from read_documents(path)

    def _hub_texts(self, split: str) -> Iterator[str]:
        path, name, train_split, valid_split = self.hub
        try:
            from datasets import load_dataset

            wanted = train_split if split == "train" or valid_split is None else valid_split
            stream = load_dataset(path, name, split=wanted, streaming=True)
        except Exception as exc:  # noqa: BLE001 - offline, missing dataset, auth: one message
            raise UserError(f"task '{self.name}': cannot stream {path} ({name or 'default'}) from the hub: "
                            f"{type(exc).__name__}: {exc}. Offline, download it and use --data-dir") from None
        docs = (row["text"] for row in stream if row.get("text"))
        return holdout(docs, split) if valid_split is None else docs

    def train_data(self, bundle: ModelBundle, recipe: Any) -> Any:
        blocks = packed_blocks(lambda: self.texts("train"), bundle.tokenizer, recipe.max_length, recipe.limit)
        if recipe.max_steps is not None:
            return blocks
        steps, _, _ = token_budget_of(bundle, recipe, self.options)
        return _token_budget_class()(blocks, steps * recipe.batch_size * recipe.grad_accum)

    # -- evaluation ----------------------------------------------------------------------------
    def evaluate(self, bundle: ModelBundle, recipe: Any, device: str) -> EvalOutput:
        """The base class's loss and perplexity on the first ``eval_tokens`` held-out tokens."""
        cap = self.options.eval_tokens
        if cap is not None:
            blocks = max(1, cap // recipe.max_length)
            recipe = replace(recipe, limit=min(recipe.limit or blocks, blocks))
        return super().evaluate(bundle, recipe, device)

    def default_recipe(self, model_family: str) -> dict[str, Any]:
        # From-scratch pretraining of small Llamas: AdamW at 1e-3 with warm-up and cosine decay,
        # weight decay 0.1, one pass over a Chinchilla budget of 20 tokens per parameter.
        return {"lr": 1e-3, "schedule": "cosine", "warmup_ratio": 0.05, "weight_decay": 0.1,
                "batch_size": 32, "max_length": 256, "eval_batch_size": 32, "epochs": 1.0}


@register_task("lm", kind="language-modeling",
               summary="pretraining loss: FineWeb-Edu streamed (or --data-dir text/jsonl/parquet), "
                       "Llama sizes llama-250k to llama-125m, token budget, val loss + perplexity",
               paper="Penedo et al. 2024, FineWeb (arXiv:2406.17557)")
class LmTask(PretrainingTask):
    family = "lm"
    hub = ("HuggingFaceFW/fineweb-edu", "sample-10BT", "train", None)


@register_task("lm-c4", kind="language-modeling",
               summary="pretraining loss on C4 English (streamed; validation split), as task 'lm'",
               paper="Raffel et al. 2020, T5 / C4 (arXiv:1910.10683)")
class LmC4Task(PretrainingTask):
    family = "lm-c4"
    hub = ("allenai/c4", "en", "train", "validation")


@register_task("lm-wikitext", kind="language-modeling",
               summary="pretraining loss on WikiText-103 raw (validation split), as task 'lm'",
               paper="Merity et al. 2016, WikiText (arXiv:1609.07843)")
class LmWikiTextTask(PretrainingTask):
    family = "lm-wikitext"
    hub = ("Salesforce/wikitext", "wikitext-103-raw-v1", "train", "validation")


def token_budget_of(bundle: ModelBundle, recipe: Any, options: PretrainingOptions) -> tuple[int, int, str]:
    """(optimizer steps, tokens, how) that ``train_data`` derives from the budget for ``bundle``."""
    tokens, how = budget_tokens(options, bundle.model)
    per_step = recipe.batch_size * recipe.grad_accum
    steps = max(1, round(tokens / (per_step * recipe.max_length)))
    return steps, steps * per_step * recipe.max_length, how

